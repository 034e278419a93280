from django.urls import path
from orders import views

urlpatterns = [
    path("orders", views.create_order),
    path("orders/<int:order_id>", views.order_status),
    path("orders/<int:order_id>/start", views.start_order),
    path("orders/<int:order_id>/paid", views.payment_webhook),
]

import contextlib
import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import fluxo
from fluxo.contrib.django import get_engine
from orders.models import Order
from orders.workflows import order_flow


def run_id(order_id: int) -> str:
    return f"order-{order_id}"


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    cents = int(json.loads(request.body)["cents"])
    with transaction.atomic():  # the order and its run commit together, or neither does
        order = Order.objects.create(cents=cents)
        get_engine().start(order_flow.options(id=run_id(order.pk)), order.pk, cents)
    return JsonResponse({"id": order.pk, "status": order.status}, status=201)


@csrf_exempt
@require_POST
def payment_webhook(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    with contextlib.suppress(fluxo.RunStateError):  # called again after the run finished
        get_engine().signal(run_id(order.pk), "paid")
    return JsonResponse({"id": order.pk}, status=202)


@require_GET
def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    return JsonResponse({"id": order.pk, "status": order.status, "times_paid": order.times_paid})

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


def start_flow(order: Order) -> fluxo.RunHandle[str]:
    # The run's id comes from the order: starting it again returns the same run.
    return get_engine().start(order_flow.options(id=run_id(order.pk)), order.pk, order.cents)


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    cents = int(json.loads(request.body)["cents"])
    with transaction.atomic():  # the order and its run commit together, or neither does
        order = Order.objects.create(cents=cents)
        start_flow(order)
    return JsonResponse({"id": order.pk, "status": order.status}, status=201)


@csrf_exempt
@require_POST
def start_order(request: HttpRequest, order_id: int) -> JsonResponse:
    """Start the order's run again, should its start have been lost (harmless if it was not)."""
    order = get_object_or_404(Order, pk=order_id)
    return JsonResponse({"id": order.pk, "run": start_flow(order).id}, status=202)


@csrf_exempt
@require_POST
def payment_webhook(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    try:
        get_engine().signal(run_id(order.pk), "paid")
    except fluxo.RunNotFoundError:  # its start was lost (under "START": "on_commit")
        error = f"order {order.pk} has no run: POST /orders/{order.pk}/start, then send this again"
        return JsonResponse({"id": order.pk, "error": error}, status=409)
    except fluxo.RunStateError:  # called again after the run finished: harmless
        pass
    return JsonResponse({"id": order.pk}, status=202)


@require_GET
def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    return JsonResponse({"id": order.pk, "status": order.status, "times_paid": order.times_paid})

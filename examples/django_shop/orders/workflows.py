"""The order flow, found by Fluxo's autodiscovery (a ``workflows.py`` module of an app)."""

from django.db.models import F

import fluxo
from orders.models import Order


@fluxo.step(retry=3)
def charge(order_id: int, cents: int) -> str:
    charge_id = f"ch_{order_id}"  # ask the payment provider to charge here
    Order.objects.filter(pk=order_id).update(status="charged", charge_id=charge_id)
    return charge_id


@fluxo.step
def mark_paid(order_id: int) -> None:
    # A step may run twice after a crash: the status condition makes it count once.
    Order.objects.filter(pk=order_id).exclude(status="paid").update(
        status="paid", times_paid=F("times_paid") + 1
    )


@fluxo.workflow
def order_flow(order_id: int, cents: int) -> str:
    charge_id = charge(order_id, cents)
    fluxo.wait_for_signal("paid")  # sent by the payment provider's webhook
    mark_paid(order_id)
    return charge_id

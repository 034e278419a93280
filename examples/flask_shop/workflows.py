"""An order's payment: charge it, wait for the provider's webhook, then mark it paid."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

import fluxo
from flask_shop.models import Order, db

PAYMENT_WINDOW = timedelta(days=1)


@fluxo.step(retry=5)
def charge(order_id: int, cents: int) -> str:
    """Ask the payment provider to charge the order; it calls our webhook once paid."""
    return f"pay-{order_id}"  # the provider's API here, with the order id as idempotency key


def _settle(order_id: int, **values: object) -> None:
    # A step runs again if its worker dies before recording it: only a pending order changes.
    still_pending = (Order.id == order_id) & (Order.status == "pending")
    db.session.execute(update(Order).where(still_pending).values(**values))
    db.session.commit()


@fluxo.step
def mark_paid(order_id: int) -> None:
    """Mark the order paid; steps run inside the app context, so db.session works."""
    _settle(order_id, status="paid", times_paid=Order.times_paid + 1)


@fluxo.step
def expire(order_id: int) -> None:
    """Give up on an order nobody paid."""
    _settle(order_id, status="expired")


@fluxo.workflow
def checkout(order_id: int, cents: int) -> str:
    """Charge the order and wait (durably, for up to a day) for the payment to arrive."""
    charge(order_id, cents)
    try:
        fluxo.wait_for_signal("paid", timeout=PAYMENT_WINDOW)
    except fluxo.SignalTimeout:
        expire(order_id)
        return "expired"
    mark_paid(order_id)
    return "paid"

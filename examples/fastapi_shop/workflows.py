"""An order's payment: charge it, wait for the provider's webhook, then say how it ended.

The order flow of the Flask and Django shops, for a shop that keeps no table of
its own: the run is the order. Its id comes from the order's, its input holds the
amount, and its result says how the order ended: ``"paid"`` or ``"expired"``.
"""

from __future__ import annotations

from datetime import timedelta

import fluxo

PAYMENT_WINDOW = timedelta(days=1)


# Names are what histories record: set here, they stay the same whether the module is
# imported as fastapi_shop.workflows (from examples/) or by another path.
@fluxo.step(name="shop.charge", retry=5)
def charge(order_id: str, cents: int) -> str:
    """Ask the payment provider to charge the order; it calls our webhook once paid."""
    return f"pay-{order_id}"  # the provider's API here, with the order id as idempotency key


@fluxo.workflow(name="shop.checkout")
def checkout(order_id: str, cents: int) -> str:
    """Charge the order and wait (durably, for up to a day) for the payment to arrive."""
    charge(order_id, cents)
    try:
        fluxo.wait_for_signal("paid", timeout=PAYMENT_WINDOW)
    except fluxo.SignalTimeout:
        return "expired"
    return "paid"

"""An order workflow with a cooling-off period, a manual approval and a card payment.

``examples/test_order_workflow.py`` tests it with ``fluxo.testing.WorkflowEnvironment``:
the three days pass in milliseconds and the card is never really charged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import fluxo

COOLING_OFF = timedelta(days=3)
APPROVAL_WINDOW = timedelta(days=7)


@dataclass
class Receipt:
    """What the payment provider hands back."""

    id: str
    cents: int


@fluxo.step
def reserve_stock(order_id: str) -> None:
    """Hold the items of the order in the warehouse."""
    print(f"reserving stock for {order_id}")


@fluxo.step
def release_stock(order_id: str) -> None:
    """Give the held items back."""
    print(f"releasing stock for {order_id}")


@fluxo.step(retry=fluxo.Retry(max_attempts=5, initial=timedelta(seconds=30)))
def charge_card(order_id: str, cents: int) -> Receipt:
    """Charge the customer's card through the payment provider."""
    raise ConnectionError("no payment provider is configured in this example")


@fluxo.step
def ship(order_id: str, receipt: Receipt) -> str:
    """Hand the order to the carrier; return the tracking number."""
    return f"track-{order_id}-{receipt.id}"


@fluxo.workflow
def fulfil_order(order_id: str, cents: int) -> str:
    """Reserve, wait out the cooling-off period, wait for approval, charge, ship."""
    reserve_stock(order_id)
    fluxo.sleep(COOLING_OFF)  # the customer may still withdraw
    try:
        approved = fluxo.wait_for_signal("approved", timeout=APPROVAL_WINDOW, type=bool)
    except fluxo.SignalTimeout:
        approved = False
    if not approved:
        release_stock(order_id)
        return "cancelled"
    receipt = charge_card(order_id, cents)
    return ship(order_id, receipt)

"""Module-level workflows and steps, for tests about default names and plain calls."""

from __future__ import annotations

import dataclasses

import fluxo


@dataclasses.dataclass
class Receipt:
    """What ``charge`` returns."""

    id: str
    cents: int


CHARGES: list[tuple[str, int]] = []


@fluxo.step
def charge(order_id: str, cents: int) -> Receipt:
    """Charge an order."""
    CHARGES.append((order_id, cents))
    return Receipt(id=f"r-{order_id}", cents=cents)


@fluxo.step()
def charge_as_dict(order_id: str, cents: int) -> Receipt:
    """Return a dict; the annotation says it is a Receipt."""
    return {"id": f"r-{order_id}", "cents": cents}  # type: ignore[return-value]


@fluxo.step(name="shop.refund", aliases=["shop.refund_v0", "old.refund"], retry=3)
def refund(receipt: Receipt) -> int:
    """Refund a receipt."""
    return -receipt.cents


@fluxo.workflow
def checkout(order_id: str, cents: int) -> str:
    """Charge an order and return the receipt id."""
    receipt = charge(order_id, cents)
    return receipt.id


@fluxo.workflow()
def checkout_called(order_id: str) -> str:
    """The called form of the decorator."""
    return order_id


@fluxo.workflow(name="shop.checkout", aliases=("shop.checkout_v1",))
def named_checkout(order_id: str, cents: int = 100) -> int:
    """A workflow with an explicit name and an alias."""
    return charge(order_id, cents).cents


class Holder:
    """Methods' qualnames contain the class name, and no ``<locals>``."""

    @staticmethod
    @fluxo.step
    def nested_step(x: int) -> int:
        """A step defined in a class body."""
        return x + 1


@fluxo.workflow
def calls_a_workflow() -> str:
    """Calls another workflow as if it were a function: it runs as a child run."""
    return checkout("o-1", 5)

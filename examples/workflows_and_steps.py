"""Workflows, steps, names and values: what a history refers to and what it holds.

Run it with ``python examples/workflows_and_steps.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

import fluxo


class Tier(enum.Enum):
    """How fast an order ships."""

    STANDARD = "standard"
    EXPRESS = "express"


@dataclass
class Quote:
    """A shipping price, valid for a while."""

    cents: Decimal
    tier: Tier
    valid_until: datetime


# Named explicitly: the history says "shop.quote", whatever the module is called.
# aliases= keeps runs recorded under an older name replaying after a rename.
@fluxo.step(name="shop.quote", aliases=["shop.price"])
def quote(order_id: str, express: bool) -> Quote:
    tier = Tier.EXPRESS if express else Tier.STANDARD
    valid_until = datetime(2030, 1, 1, tzinfo=timezone.utc)
    return Quote(Decimal("42.00") if express else Decimal("12.50"), tier, valid_until)


@fluxo.workflow(name="shop.ship")
def ship(order_id: str, express: bool) -> str:
    offer = quote(order_id, express)  # a Quote, decoded from its record, live and on replay
    return f"{order_id}: {offer.tier.value} for {offer.cents}"


# A step called outside a workflow is a plain function call: unit tests need nothing.
print(quote("o-1", express=False).cents)  # prints: 12.50

with fluxo.Engine("memory://", workflows=[ship]) as engine:
    print(engine.run(ship, "o-17", True))  # prints: o-17: express for 42.00
    run = engine.list_runs()[0]
    for event in engine.history(run.id):
        print(event.describe())
    # prints: workflow_started shop.ship
    # prints: step_completed shop.quote
    # prints: workflow_completed

# A type the codec could not decode (a workflow's parameters, a step's or workflow's
# result) is refused when the function is decorated, naming it.
try:

    @fluxo.step(name="shop.lookup")
    def lookup(customer_id: str) -> object: ...

except fluxo.DefinitionError as exc:
    print(type(exc).__name__, "return annotation" in str(exc))  # prints: DefinitionError True

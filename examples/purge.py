"""Retention: delete finished runs once they are old enough, with engine.purge.

Run it with ``python examples/purge.py``.
"""

from __future__ import annotations

import time
from datetime import timedelta

import fluxo

DAY = 24 * 60 * 60


@fluxo.step
def charge(order_id: str, cents: int) -> str:
    if cents <= 0:
        raise ValueError(f"cannot charge {cents} cents")
    return f"r-{order_id}"


@fluxo.workflow
def checkout(order_id: str, cents: int) -> str:
    return charge(order_id, cents)


@fluxo.workflow
def subscription(customer: str) -> None:
    fluxo.wait_for_signal("ended")  # still going a month later


def a_month_on() -> float:
    """This demo's clock for "a month later": 31 days from now."""
    return time.time() + 31 * DAY


store = fluxo.open_store("memory://")  # or "sqlite:///shop.db", "postgresql://..."
today = fluxo.Engine(store, workflows=[checkout, subscription])
for order_id, cents in (("o-1", 4200), ("o-2", 990), ("o-3", 0)):
    today.start(checkout.options(id=order_id), order_id, cents)
today.start(subscription.options(id="sub-ana"), "ana")
today.worker().process_one()  # o-1 and o-2 complete, o-3 fails, sub-ana waits
print(today.purge(older_than=timedelta(days=30)))  # prints: 0

later = fluxo.Engine(store, workflows=[checkout, subscription], clock=a_month_on)
print(later.purge(older_than=timedelta(days=30), dry_run=True))  # prints: 3
print(later.purge(older_than=timedelta(days=30), status="completed"))  # prints: 2
print(sorted(run.id for run in later.list_runs()))  # prints: ['o-3', 'sub-ana']
print(later.purge(older_than=timedelta(days=30)))  # prints: 1
print([run.id for run in later.list_runs()])  # prints: ['sub-ana']

try:  # a run that has not finished is never purged
    later.purge(older_than=timedelta(days=30), status="waiting")
except fluxo.DefinitionError as exc:
    print(type(exc).__name__, "finished runs only" in str(exc))  # prints: DefinitionError True
today.close()
later.close()
store.close()

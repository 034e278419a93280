"""Watching runs: a logging observer, in-memory metrics, and an observer of your own.

Run it with ``python examples/observability.py``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import fluxo
from fluxo import observe

attempts = {"charge": 0}


@fluxo.step(
    name="shop.charge", retry=fluxo.Retry(max_attempts=3, initial=timedelta(milliseconds=10))
)
def charge(order_id: str) -> str:
    attempts["charge"] += 1
    if attempts["charge"] == 1:
        raise ConnectionError("the payment service hung up")
    return f"receipt-{order_id}"


@fluxo.step(name="shop.ship")
def ship(order_id: str) -> str:
    return f"parcel-{order_id}"


@fluxo.workflow(name="shop.checkout")
def checkout(order_id: str) -> str:
    receipt = charge(order_id)
    ship(order_id)
    return receipt


class SlowSteps(fluxo.Observer):
    """An observer of your own: it hears of every step that took longer than it should."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def step_completed(self, event: fluxo.RunEvent) -> None:
        """Called for every step completed, live or met again as a run replays."""
        if not event.replayed and event.duration is not None and event.duration > self.limit:
            print(f"slow: {event.step} took {event.duration:.3f}s in run {event.run_id}")


# Lines as a log shipper would take them: the structured fields are in `extra`.
handler = logging.StreamHandler(sys.stdout)
fields = "run=%(fluxo_run_id)s step=%(fluxo_step)s attempt=%(fluxo_attempt)s"
handler.setFormatter(
    logging.Formatter(
        f"%(levelname)s %(fluxo_event)s {fields}",
        defaults={"fluxo_step": "-", "fluxo_attempt": "-"},
    )
)
events = logging.getLogger("shop.events")
events.addHandler(handler)
events.setLevel(logging.INFO)
events.propagate = False

metrics = observe.BasicMetrics()
url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'fluxo.db'}"
with fluxo.Engine(
    url,
    workflows=[checkout],
    observers=[observe.LoggingObserver(events), metrics, SlowSteps(limit=60.0)],
) as engine:
    receipt = engine.run(checkout.options(id="order-17"), "o-17")
    engine.flush_observers()  # the logging observer writes from a thread of its own

# prints: INFO run_started run=order-17 step=- attempt=-
# prints: INFO step_started run=order-17 step=shop.charge attempt=1
# prints: WARNING step_retried run=order-17 step=shop.charge attempt=1
# prints: INFO step_completed run=order-17 step=shop.charge attempt=2
# prints: INFO step_completed run=order-17 step=shop.ship attempt=1
# prints: INFO run_completed run=order-17 step=- attempt=-
print(receipt)  # prints: receipt-o-17

snapshot = metrics.snapshot()
print("steps completed:", snapshot.events["step_completed"])  # prints: steps completed: 2
print("attempts retried:", snapshot.events["step_retried"])  # prints: attempts retried: 1
print("runs:", snapshot.runs)  # prints: runs: {'running': 0, 'completed': 1}
charged = snapshot.steps["shop.charge"]
print(f"charge: {charged.count} timed attempts, p95 {charged.p95 * 1000:.1f} ms")

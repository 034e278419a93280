"""The workflows whose recorded histories live in ``histories/``: one per shape.

Each has an explicit ``name=``, the persisted contract its histories refer to, so
the module can move without breaking them. This is today's code: the golden
histories were recorded by earlier runs (see ``regen.py``), and must replay here.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta

import fluxo

ATTEMPTS: dict[str, int] = {}
"""Attempts per step key, so recording runs can make a step fail before it succeeds."""


@dataclasses.dataclass
class Receipt:
    """What ``charge`` returns."""

    id: str
    cents: int


@fluxo.step(name="golden.reserve")
def reserve(order_id: str) -> str:
    """Reserve the goods."""
    return f"res-{order_id}"


@fluxo.step(name="golden.charge")
def charge(order_id: str, cents: int) -> Receipt:
    """Charge the customer."""
    return Receipt(id=f"rcpt-{order_id}", cents=cents)


@fluxo.step(name="golden.ship")
def ship(order_id: str, reservation: str) -> None:
    """Ship the order."""


@fluxo.workflow(name="golden.checkout")
def checkout(order_id: str, cents: int) -> str:
    """Steps in a row, a dataclass result and a recorded time."""
    reservation = reserve(order_id)
    receipt = charge(order_id, cents)
    fluxo.now()
    ship(order_id, reservation)
    return receipt.id


@fluxo.step(name="golden.fetch", retry=fluxo.Retry(max_attempts=3, initial=0.001))
def fetch(key: str) -> int:
    """Fail twice per key, then return its length."""
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 3:
        raise ConnectionError(f"attempt {ATTEMPTS[key]} at {key} failed")
    return len(key)


@fluxo.step(name="golden.lookup", retry=1)
def lookup(key: str) -> int:
    """Always fail."""
    raise KeyError(key)


@fluxo.workflow(name="golden.flaky")
def flaky(key: str) -> int:
    """A step retried until it succeeds, and a step failure the workflow handles."""
    size = fetch(key)
    try:
        lookup(key)
    except fluxo.StepError:
        size += 100
    return size


@fluxo.step(name="golden.notify")
def notify(order_id: str, approved: bool) -> str:
    """Tell the customer."""
    return f"{order_id}: {'approved' if approved else 'rejected'}"


@fluxo.workflow(name="golden.approval")
def approval(order_id: str) -> str:
    """A durable timer, a received signal, a signal that times out, a patch."""
    fluxo.sleep(timedelta(hours=1))
    approved = fluxo.wait_for_signal("approved", timeout=timedelta(days=1), type=bool)
    with contextlib.suppress(fluxo.SignalTimeout):
        fluxo.wait_for_signal("comment", timeout=timedelta(minutes=5), type=str)
    if fluxo.patched("notify-once"):
        return notify(order_id, approved)
    notify(order_id, approved)
    return notify(order_id, approved)


@fluxo.step(name="golden.release", retry=1)
def release(order_id: str) -> None:
    """Give the reservation back."""


@fluxo.workflow(name="golden.cancellable")
def cancellable(order_id: str) -> str:
    """Cancelled while it waits; a ``finally:`` records a cleanup step."""
    reserve(order_id)
    try:
        return str(fluxo.wait_for_signal("go", type=str))
    finally:
        release(order_id)


@fluxo.workflow(name="golden.failing")
def failing(key: str) -> int:
    """A step's final failure ends the run failed."""
    return lookup(key)


@fluxo.step(name="golden.settle", retry=1)
def settle(order_id: str) -> str:
    """Fail on the first attempt of every order, succeed on the next."""
    ATTEMPTS[f"settle:{order_id}"] = ATTEMPTS.get(f"settle:{order_id}", 0) + 1
    if ATTEMPTS[f"settle:{order_id}"] == 1:
        raise RuntimeError("the bank is closed")
    return f"settled-{order_id}"


@fluxo.workflow(name="golden.retried")
def retried(order_id: str) -> str:
    """Failed at a step, then resumed by an operator (``engine.retry``) and completed."""
    reserve(order_id)
    return settle(order_id)


@fluxo.step(name="golden.send_sms")
def send_sms(order_id: str) -> None:
    """The new way to tell the customer."""


@fluxo.workflow(name="golden.legacy")
def legacy(order_id: str) -> None:
    """The patch ``sms`` is retired; histories that recorded its marker still replay."""
    fluxo.deprecate_patch("sms")
    send_sms(order_id)


@fluxo.workflow(name="golden.fanout")
def fanout(keys: list[str]) -> int:
    """A map whose branches retry, and a parallel block with a failed branch, handled."""
    total = sum(fluxo.map(fetch, keys, max_concurrency=1))
    try:
        fluxo.parallel(reserve.bind("o-8"), lookup.bind("gone"), max_concurrency=1)
    except fluxo.StepError:
        total += 100
    return total


@fluxo.workflow(name="golden.poll")
def poll(round: int, seen: int) -> int:
    """A loop that goes on in a fresh run each round, so no history grows."""
    if round >= 2:
        return seen
    seen += len(reserve(f"poll-{round}"))
    fluxo.continue_as_new(round + 1, seen)


@fluxo.workflow(name="golden.family")
def family(order_id: str) -> str:
    """Child runs: one called and completed, one failed, one cancelled, one detached."""
    receipt = checkout(order_id, 1200)
    try:
        failing(order_id)
    except fluxo.WorkflowFailedError as exc:
        receipt += f" ({exc.type_name})"
    waiting = fluxo.start_child(cancellable, order_id)
    waiting.cancel()
    try:
        waiting.result()
    except fluxo.WorkflowCancelledError:
        receipt += " (cancelled)"
    fluxo.start_child(checkout.options(detached=True), f"{order_id}-gift", 0)
    return receipt


class WorkerDies(BaseException):
    """Stands in for the worker process dying (``kill -9``) while a step runs."""


DYING: set[str] = set()
"""Orders whose ``golden.pack`` kills the worker executing it, while recording."""


@fluxo.step(name="golden.pack")
def pack(order_id: str) -> str:
    """Kill the worker while the order is in ``DYING``."""
    if order_id in DYING:
        raise WorkerDies(order_id)
    return f"packed-{order_id}"


@fluxo.workflow(name="golden.fragile", max_recoveries=1)
def fragile(order_id: str) -> str:
    """Its executions died in ``pack`` until it ended dead; then retried and completed."""
    reserve(order_id)
    return pack(order_id)


@fluxo.workflow(name="golden.progress")
def progress(order_ids: list[str]) -> int:
    """Progress a page may poll: an event set after each step (``fluxo.set_event``)."""
    for done, order_id in enumerate(order_ids, 1):
        reserve(order_id)
        fluxo.set_event("progress", {"done": done, "of": len(order_ids)})
    return len(order_ids)


WORKFLOWS = [
    checkout,
    flaky,
    approval,
    cancellable,
    failing,
    retried,
    legacy,
    fanout,
    poll,
    family,
    fragile,
    progress,
]
"""Every workflow of the golden histories, as the replayer is given them."""

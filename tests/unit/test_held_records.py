"""A completed step's record held for the next write, attacked.

A step whose completion no observer times is not recorded at once: its record
goes with the run's next write (``RunContext._record_later``), the run's end
included. These tests look for what could read the history's length, or let the
step's result out of the run, while the record is still held, and for ways the
held record could be lost while the run records something after it.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history

from .conftest import MakeEngine
from .helpers import FakeClock, SpyStore, execute, kinds

Outcome = _executor.Outcome


class BlipStore(SpyStore):
    """A store whose appends numbered in ``down_for`` fail, as a database blip would."""

    def __init__(self, inner: fluxo.Store) -> None:
        super().__init__(inner)
        self.down_for: set[int] = set()
        self.appends = 0

    def append(self, run_id: str, seq: int, events: Any, *args: Any, **kwargs: Any) -> None:
        self.appends += 1
        if self.appends in self.down_for:
            raise fluxo.StoreUnavailableError("the database went away")
        self.inner.append(run_id, seq, events, *args, **kwargs)


class RefusingStore(SpyStore):
    """A store that refuses, for good, any append holding an event of one of ``refused``."""

    def __init__(self, inner: fluxo.Store, *refused: str) -> None:
        super().__init__(inner)
        self.refused = set(refused)

    def append(self, run_id: str, seq: int, events: Any, *args: Any, **kwargs: Any) -> None:
        if any(e.kind in self.refused for e in events):
            raise fluxo.StoreRejectedError("value too long for type character varying(10)")
        self.inner.append(run_id, seq, events, *args, **kwargs)


tokens = itertools.count(1)


@fluxo.step(name="held.token")
def token() -> int:
    """A different value on every live attempt, as a payment id would be."""
    return next(tokens)


@fluxo.step(name="held.token_async")
async def token_async() -> int:
    return next(tokens)


@fluxo.workflow(name="held.kid")
def kid() -> int:
    return token()


@fluxo.workflow(name="held.waiter")
def waiter() -> int:
    value: int = fluxo.wait_for_signal("ping", type=int)
    return value


# -- an async workflow: a step call made by the next durable call --------------------


@fluxo.workflow(name="held.async_parent")
async def async_parent() -> str:
    pending = token_async()  # joins the batch: made by the next durable call
    handle = await fluxo.start_child_async(kid.options(detached=True))
    await pending
    return handle.id


def test_an_async_child_id_is_the_position_of_its_start(make_engine: MakeEngine) -> None:
    engine = make_engine(async_parent, kid)
    handle = engine.start(async_parent)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    events = engine.history(handle.id)
    assert kinds(events) == [
        "workflow_started",
        "step_completed",
        "child_started",
        "workflow_completed",
    ]
    child = handle.result(timeout=1)
    assert events[2].name == child == history.child_id(handle.id, 2)


def test_an_async_child_is_created_once_when_its_start_is_not_recorded(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = BlipStore(fluxo.open_store("memory://"))
    engine = make_engine(async_parent, kid, store=store)
    handle = engine.start(async_parent)
    store.down_for = {2}  # the step's record is written; the child's start is not
    assert execute(engine, handle.id, "a") is Outcome.BROKEN
    clock.advance(31)
    assert execute(engine, handle.id, "b") is Outcome.COMPLETED
    children = store.list_runs(workflows=["held.kid"])
    assert [run.id for run in children] == [handle.result(timeout=1)]


@fluxo.workflow(name="held.async_signaller")
async def async_signaller(target: str) -> int:
    pending = token_async()
    await fluxo.signal_async(target, "ping", 7)
    return await pending


def test_an_async_signal_is_sent_once_when_its_record_is_not_written(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = BlipStore(fluxo.open_store("memory://"))
    engine = make_engine(async_signaller, waiter, store=store)
    target = engine.start(waiter)
    handle = engine.start(async_signaller, target.id)
    store.down_for = {2}  # the step's record is written; the signal's is not
    assert execute(engine, handle.id, "a") is Outcome.BROKEN
    clock.advance(31)
    assert execute(engine, handle.id, "b") is Outcome.COMPLETED
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_completed",
        "signal_sent",
        "workflow_completed",
    ]
    assert [s.name for s in store.load(target.id).signals] == ["ping"]  # once, not twice


# -- a child run tells its parent only what its history holds --------------------------


@fluxo.workflow(name="held.parent")
def parent() -> int:
    return kid()


class EndBlip(SpyStore):
    """A store that fails the first write of a run's completion, once."""

    def __init__(self, inner: fluxo.Store) -> None:
        super().__init__(inner)
        self.failed = False

    def append(self, run_id: str, seq: int, events: Any, *args: Any, **kwargs: Any) -> None:
        if not self.failed and any(isinstance(e, history.WorkflowCompleted) for e in events):
            self.failed = True
            raise fluxo.StoreUnavailableError("the database went away")
        self.inner.append(run_id, seq, events, *args, **kwargs)


def test_a_parent_takes_the_result_its_child_recorded(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = EndBlip(fluxo.open_store("memory://"))
    engine = make_engine(parent, kid, store=store)
    handle = engine.start(parent)
    assert execute(engine, handle.id, "a") is Outcome.SUSPENDED  # waits for its child
    child = history.child_id(handle.id, 1)
    # The child's last step runs, then its end is not written: it runs again later.
    assert execute(engine, child, "a") is Outcome.BROKEN
    # Meanwhile the parent takes the outcome its child sent before that write.
    assert execute(engine, handle.id, "a") is Outcome.COMPLETED
    clock.advance(31)
    assert execute(engine, child, "b") is Outcome.COMPLETED
    # The child's step ran once, and its end is what its parent took.
    assert kinds(engine.history(child)) == [
        "workflow_started",
        "step_completed",
        "workflow_completed",
    ]
    assert handle.result(timeout=1) == engine.handle(child).result(timeout=1)


# -- a refused end keeps the step's record ------------------------------------------------


def test_a_refused_completion_keeps_the_last_step_recorded(make_engine: MakeEngine) -> None:
    ran: list[str] = []

    @fluxo.step(name="held.charge")
    def charge() -> str:
        ran.append("charge")
        return "ok"

    @fluxo.workflow(name="held.too_big")
    def too_big() -> str:
        return charge() + "!"

    store = RefusingStore(fluxo.open_store("memory://"), "workflow_completed")
    engine = make_engine(too_big, store=store)
    handle = engine.start(too_big)
    assert execute(engine, handle.id) is Outcome.FAILED
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_completed",
        "workflow_failed",
    ]
    with pytest.raises(fluxo.WorkflowFailedError, match="position 2"):
        handle.result(timeout=1)
    # An operator's retry replays the step, which does not run again.
    store.refused.clear()
    engine.retry(handle.id)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "ok!"
    assert ran == ["charge"]


def test_a_refused_step_record_still_fails_the_run_once(make_engine: MakeEngine) -> None:
    @fluxo.step(name="held.refused")
    def refused() -> str:
        return "what the store refuses"

    @fluxo.workflow(name="held.refusing")
    def refusing() -> str:
        return refused()

    store = RefusingStore(fluxo.open_store("memory://"), "step_completed")
    engine = make_engine(refusing, store=store)
    handle = engine.start(refusing)
    assert execute(engine, handle.id) is Outcome.FAILED
    assert kinds(engine.history(handle.id)) == ["workflow_started", "workflow_failed"]
    with pytest.raises(fluxo.WorkflowFailedError, match="position 1"):
        handle.result(timeout=1)


class Positions:
    """An observer of timers, children and signals (it times no step): their positions."""

    inline = True

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []

    def _keep(self, event: fluxo.RunEvent) -> None:
        self.seen.append((event.kind, event.position))

    timer_set = timer_fired = child_started = run_completed = _keep


@fluxo.workflow(name="held.async_sleeper")
async def async_sleeper() -> int:
    pending = token_async()
    await fluxo.sleep_async(0)  # due at once: set and fired in one write
    await pending
    child = await fluxo.start_child_async(kid.options(detached=True))
    return len(child.id)


def test_observers_are_told_the_positions_the_history_holds(make_engine: MakeEngine) -> None:
    observer = Positions()
    engine = make_engine(async_sleeper, kid, observers=[observer])
    handle = engine.start(async_sleeper)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_completed",
        "timer_started",
        "timer_fired",
        "child_started",
        "workflow_completed",
    ]
    assert observer.seen == [
        ("timer_set", 2),
        ("timer_fired", 3),
        ("child_started", 4),
        ("run_completed", 5),
    ]


# -- a write of the step and the end that the store refuses as a whole --------------------


class SizeLimitStore(SpyStore):
    """A store that refuses, for good, an append whose payloads pass ``limit`` bytes."""

    def __init__(self, inner: fluxo.Store, limit: int) -> None:
        super().__init__(inner)
        self.limit = limit

    def append(self, run_id: str, seq: int, events: Any, *args: Any, **kwargs: Any) -> None:
        if sum(len(e.data or b"") for e in events) > self.limit:
            raise fluxo.StoreRejectedError("more than the server takes in one statement")
        self.inner.append(run_id, seq, events, *args, **kwargs)


def test_a_step_and_an_end_the_store_takes_one_by_one_complete(make_engine: MakeEngine) -> None:
    @fluxo.step(name="held.report")
    def report() -> str:
        return "x" * 600

    @fluxo.workflow(name="held.reporting")
    def reporting() -> str:
        return report()

    store = SizeLimitStore(fluxo.open_store("memory://"), limit=1000)
    engine = make_engine(reporting, store=store)
    handle = engine.start(reporting)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "x" * 600
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_completed",
        "workflow_completed",
    ]

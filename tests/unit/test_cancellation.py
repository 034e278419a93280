"""Cancelling running runs: delivered at the next durable call soon, and never lost at the end.

A worker's heartbeat reads the records of the runs it executes about twice a
second (``Heartbeat.check``), so a running run hears of its cancellation without
waiting for a lease renewal. A cancellation accepted after the workflow function
returned but before its completion is recorded ends the run ``cancelled``: the
store refuses the completion (``append(unless_cancel_requested=True)``).
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import pytest

import fluxo
from fluxo import _executor, _worker, history
from fluxo.stores.memory import MemoryStore
from fluxo.testing import replay

from .conftest import MakeEngine
from .helpers import WAIT, Box, FakeClock, SimulatedCrash, claim, execute, kinds, named

Outcome = _executor.Outcome
Status = fluxo.RunStatus

CALLS: collections.Counter[str] = collections.Counter()
ENTERED = threading.Event()
RELEASE = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    ENTERED.clear()
    RELEASE.clear()


@fluxo.step(name="cx.first")
def first() -> str:
    CALLS["first"] += 1
    ENTERED.set()
    assert RELEASE.wait(WAIT)
    return "a"


@fluxo.step(name="cx.second")
def second() -> str:
    CALLS["second"] += 1
    return "b"


@fluxo.workflow(name="cx.two_steps")
def two_steps() -> str:
    return first() + second()


@fluxo.workflow(name="cx.one_step")
def one_step() -> str:
    return second()


@fluxo.workflow(name="cx.tidy")
def tidy() -> str:
    first()
    try:
        return second()
    except fluxo.Cancelled:
        return "tidied"


@fluxo.workflow(name="cx.parent")
def parent() -> str:
    try:
        return one_step()
    except fluxo.WorkflowCancelledError:
        return "child cancelled"


@fluxo.workflow(name="cx.chain")
def chain(n: int) -> str:
    if n == 0:
        return second()
    fluxo.continue_as_new(n - 1)


class Recorder:
    """A store that forwards everything and records which thread called what."""

    def __init__(self, inner: fluxo.Store) -> None:
        self.inner = inner
        self.calls: list[tuple[int, str]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((threading.get_ident(), name))
            return attr(*args, **kwargs)

        return call

    def called_here(self) -> list[str]:
        me = threading.get_ident()
        return [name for thread, name in self.calls if thread == me]


class CancelAtTheEnd:
    """A store on which a run is cancelled just before its end is recorded.

    ``engine.cancel`` is accepted (the run is running) after the workflow function
    returned and before the store records its end: the interleaving that used to
    end such a run ``completed`` with its cancellation lost.
    """

    def __init__(
        self, inner: fluxo.Store, kind: type[history.Event], only: str | None = None
    ) -> None:
        self.inner = inner
        self.kind = kind
        self.only = only
        self.cancelled: list[str] = []
        self.before_forwarding: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def append(self, run_id: str, seq: int, events: Any, **kwargs: Any) -> None:
        chosen = self.only is None or run_id == self.only
        if (
            chosen
            and run_id not in self.cancelled
            and any(isinstance(e, self.kind) for e in events)
        ):
            self.cancelled.append(run_id)
            assert self.inner.request_cancel(run_id, now=kwargs["now"]).status is Status.RUNNING
            if self.before_forwarding is not None:
                self.before_forwarding(run_id)
        self.inner.append(run_id, seq, events, **kwargs)


# -- the heartbeat reads cancellations between its renewals -----------------------------


def test_a_heartbeat_check_delivers_a_cancellation_before_the_next_step(
    make_engine: MakeEngine, store_url: str
) -> None:
    store = Recorder(fluxo.open_store(store_url))
    engine = make_engine(two_steps, store=store)  # type: ignore[arg-type]
    handle = engine.start(two_steps)
    claim(engine, handle.id, "w", lease=600)
    heartbeat = _worker.Heartbeat(engine, "w", 600)  # not started: the test makes it look
    box = Box()
    box.run(lambda: engine.execute_claimed(handle.id, "w", heartbeat=heartbeat))
    assert ENTERED.wait(WAIT)
    engine.cancel(handle.id)

    store.calls.clear()
    heartbeat.check()
    assert store.called_here() == ["get_runs"]  # one read; no renewal, no write

    RELEASE.set()
    assert box.get() is Outcome.CANCELLED
    assert CALLS == {"first": 1}  # the second step never ran
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_completed",
        "cancel_requested",
        "workflow_cancelled",
    ]
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=0)


def test_a_heartbeat_check_stops_a_run_whose_lease_passed_to_another_worker(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(two_steps)
    handle = engine.start(two_steps)
    claim(engine, handle.id, "w", lease=10)
    heartbeat = _worker.Heartbeat(engine, "w", 10)
    box = Box()
    box.run(lambda: engine.execute_claimed(handle.id, "w", heartbeat=heartbeat))
    assert ENTERED.wait(WAIT)
    clock.advance(11)
    claim(engine, handle.id, "thief", lease=10)

    heartbeat.check()

    RELEASE.set()
    assert box.get() is Outcome.STOPPED
    assert CALLS == {"first": 1}
    assert engine.get_run(handle.id).lease_owner == "thief"  # left to the new owner
    assert kinds(engine.history(handle.id)) == ["workflow_started", "step_completed"]


def test_a_heartbeat_check_without_runs_reads_nothing(make_engine: MakeEngine) -> None:
    store = Recorder(MemoryStore())
    engine = make_engine(two_steps, store=store)  # type: ignore[arg-type]
    heartbeat = _worker.Heartbeat(engine, "w", 30)
    heartbeat.track("claimed-but-not-begun")  # renewed, but nothing to tell yet

    heartbeat.check()

    assert store.called_here() == []


def test_a_back_off_ends_when_the_run_is_cancelled_or_stopped(make_engine: MakeEngine) -> None:
    engine = make_engine(one_step)
    handle = engine.start(one_step)
    contexts: list[_executor.RunContext] = []
    assert execute(engine, handle.id, hook=contexts.append) is Outcome.COMPLETED
    context = contexts[0]
    assert context.pause == context._wait_interruptibly  # what a step's retry waits with

    for flag in (context.cancel_requested, context.stop_requested):
        context._cancel_delivered = False
        context.cancel_requested.clear()
        context.stop_requested.clear()
        box = Box()
        box.run(lambda: context.pause(600))
        assert not box.done.wait(0.05)
        flag.set()
        box.get()  # returned long before the 600 s

    context._cancel_delivered = True  # one it already raised does not cut cleanups short
    context.cancel_requested.set()
    context.stop_requested.clear()
    box = Box()
    box.run(lambda: context.pause(600))
    assert not box.done.wait(0.2)
    context.stop_requested.set()
    box.get()


# -- a cancellation accepted before the end is recorded ---------------------------------


def test_a_cancel_accepted_after_the_function_returned_ends_the_run_cancelled(
    make_engine: MakeEngine, store_url: str
) -> None:
    store = CancelAtTheEnd(fluxo.open_store(store_url), history.WorkflowCompleted)
    engine = make_engine(one_step, store=store)  # type: ignore[arg-type]
    handle = engine.start(one_step)

    assert execute(engine, handle.id) is Outcome.CANCELLED

    assert store.cancelled == [handle.id]
    assert engine.get_run(handle.id).status is Status.CANCELLED
    assert named(engine.history(handle.id))[1:] == [
        ("step_completed", "cx.second"),
        ("cancel_requested", "cancelled"),
        ("workflow_cancelled", "cancelled"),
    ]
    with pytest.raises(fluxo.WorkflowCancelledError) as info:
        handle.result(timeout=0)
    assert not isinstance(info.value, fluxo.WorkflowTimeoutError)
    assert CALLS == {"second": 1}
    replay(engine.export_history(handle.id), workflows=[one_step])  # no mismatch


def test_engine_run_raises_for_a_cancel_accepted_before_the_end(make_engine: MakeEngine) -> None:
    store = CancelAtTheEnd(MemoryStore(), history.WorkflowCompleted)
    engine = make_engine(one_step, store=store)  # type: ignore[arg-type]

    with pytest.raises(fluxo.WorkflowCancelledError):
        engine.run(one_step.options(id="inline"))

    assert engine.get_run("inline").status is Status.CANCELLED


def test_a_run_that_caught_its_cancellation_still_completes(make_engine: MakeEngine) -> None:
    engine = make_engine(tidy)
    handle = engine.start(tidy)
    claim(engine, handle.id, "w")
    heartbeat = _worker.Heartbeat(engine, "w", 30)
    box = Box()
    box.run(lambda: engine.execute_claimed(handle.id, "w", heartbeat=heartbeat))
    assert ENTERED.wait(WAIT)
    engine.cancel(handle.id)
    heartbeat.check()
    RELEASE.set()

    assert box.get() is Outcome.COMPLETED  # its completion is not refused: it saw the cancel

    assert handle.result(timeout=0) == "tidied"
    assert kinds(engine.history(handle.id))[2:] == ["cancel_requested", "workflow_completed"]
    replay(engine.export_history(handle.id), workflows=[tidy])


def test_a_history_that_ends_cancelled_after_the_last_call_replays_for_a_returning_function(
    make_engine: MakeEngine,
) -> None:
    store = CancelAtTheEnd(MemoryStore(), history.WorkflowCompleted)
    engine = make_engine(two_steps, one_step, store=store)  # type: ignore[arg-type]
    handle = engine.start(one_step)
    execute(engine, handle.id)
    document = engine.export_history(handle.id)

    replay(document, workflows=[one_step])

    @fluxo.workflow(name="cx.one_step")
    def one_more_step() -> str:
        return second() + second()  # cancelled at its next call: the same history

    replay(document, workflows=[one_more_step])

    @fluxo.workflow(name="cx.one_step")
    def no_step() -> str:
        return "b"  # returns where the history goes on

    with pytest.raises(fluxo.NondeterminismError):
        replay(document, workflows=[no_step])


def test_a_child_cancelled_before_its_end_was_recorded_tells_its_parent(
    make_engine: MakeEngine, store_url: str
) -> None:
    child = "p~child-1"
    store = CancelAtTheEnd(fluxo.open_store(store_url), history.WorkflowCompleted, only=child)
    engine = make_engine(parent, one_step, store=store)  # type: ignore[arg-type]
    handle = engine.start(parent.options(id="p"))
    parent_outcomes: list[Outcome] = []

    def run_the_parent_meanwhile(run_id: str) -> None:
        if run_id == child:  # it told its parent "completed"; its end is not recorded yet
            parent_outcomes.append(execute(engine, "p", "parent-worker"))

    store.before_forwarding = run_the_parent_meanwhile
    assert execute(engine, "p") is Outcome.SUSPENDED  # waits for its child
    assert execute(engine, child) is Outcome.CANCELLED

    # The parent, executed while the child's completion was on its way, did not take it.
    assert parent_outcomes == [Outcome.SUSPENDED]
    assert execute(engine, "p") is Outcome.COMPLETED
    assert handle.result(timeout=0) == "child cancelled"
    assert ("child_cancelled", child) in named(engine.history("p"))
    assert engine.get_run(child).status is Status.CANCELLED


def test_a_cancel_accepted_as_the_run_continues_as_new_reaches_the_next_run(
    make_engine: MakeEngine,
) -> None:
    store = CancelAtTheEnd(MemoryStore(), history.ContinuedAsNew)
    crashes = [1]
    inner_append = store.append

    def append_then_crash(run_id: str, seq: int, events: Any, **kwargs: Any) -> None:
        inner_append(run_id, seq, events, **kwargs)
        if crashes and any(isinstance(e, history.ContinuedAsNew) for e in events):
            crashes.pop()
            raise SimulatedCrash  # right after the end was recorded

    store.append = append_then_crash  # type: ignore[method-assign]
    engine = make_engine(chain, store=store)  # type: ignore[arg-type]
    handle = engine.start(chain.options(id="loop"), 1)

    with pytest.raises(SimulatedCrash):
        execute(engine, "loop")

    assert engine.history("loop")[-1] == history.ContinuedAsNew("loop~1")
    assert engine.get_run("loop~1", follow=False).cancel_requested  # passed on before the end
    assert engine.worker().process_one() == 1
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=0)
    assert kinds(engine.history("loop~1")) == [
        "workflow_started",
        "cancel_requested",
        "workflow_cancelled",
    ]
    assert CALLS == {}  # the next run never began

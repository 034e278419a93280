"""Workers: draining runs, concurrency, graceful stop, leases, unknown workflows."""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fluxo
from fluxo import _executor, _worker, history
from fluxo.stores.memory import MemoryStore

from .conftest import MakeEngine
from .helpers import WAIT, Box, FakeClock, SpyStore, claim, execute, kinds

Outcome = _executor.Outcome
Status = fluxo.RunStatus

CALLS: collections.Counter[str] = collections.Counter()
GATE = {"entered": threading.Event(), "release": threading.Event()}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATE["entered"].clear()
    GATE["release"].clear()


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll for something another thread does; fail after a generous bound."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@fluxo.step
def quick(n: int) -> int:
    CALLS["quick"] += 1
    return n * 10


@fluxo.workflow
def quick_flow(n: int) -> int:
    return quick(n) + 1


@fluxo.step
def gated() -> str:
    CALLS["gated"] += 1
    GATE["entered"].set()
    assert GATE["release"].wait(WAIT)
    return "through"


@fluxo.workflow
def gated_flow() -> str:
    value = gated()
    quick(1)
    return value


# -- draining runs ----------------------------------------------------------------------


def test_a_worker_drains_runs_with_the_concurrency_it_was_given(make_engine: MakeEngine) -> None:
    barrier = threading.Barrier(2, timeout=WAIT)
    lock = threading.Lock()
    active = {"now": 0, "max": 0}

    @fluxo.step(name="w.paired")
    def paired() -> None:
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        try:
            barrier.wait()  # breaks (and fails the step) unless two runs overlap
        finally:
            with lock:
                active["now"] -= 1

    @fluxo.workflow(name="w.pairs")
    def pairs(i: int) -> int:
        paired()
        return i

    engine = make_engine(pairs)
    handles = [engine.start(pairs, i) for i in range(6)]
    with engine.worker(concurrency=2, idle_timeout=0.05) as worker:
        assert [h.result(timeout=WAIT) for h in handles] == list(range(6))
    assert active["max"] == 2
    assert worker.completed == 6
    assert {run.status for run in engine.list_runs()} == {Status.COMPLETED}


def test_a_worker_picks_up_runs_started_while_it_serves(make_engine: MakeEngine) -> None:
    engine = make_engine(quick_flow)
    with engine.worker(concurrency=2, idle_timeout=0.05):
        handles = [engine.start(quick_flow, n) for n in range(5)]
        assert [h.result(timeout=WAIT) for h in handles] == [1, 11, 21, 31, 41]
    assert CALLS["quick"] == 5


def test_process_one_executes_what_is_runnable_now(make_engine: MakeEngine) -> None:
    engine = make_engine(quick_flow)
    worker = engine.worker()
    assert worker.process_one() == 0
    handles = [engine.start(quick_flow, n) for n in range(3)]
    assert worker.process_one() == 3
    assert [h.result(timeout=1) for h in handles] == [1, 11, 21]
    assert worker.process_one() == 0
    assert CALLS["quick"] == 3


# -- stopping ---------------------------------------------------------------------------


def test_stop_lets_the_run_in_flight_finish(make_engine: MakeEngine) -> None:
    engine = make_engine(gated_flow, quick_flow)
    first = engine.start(gated_flow)
    worker = engine.worker(concurrency=1, idle_timeout=0.05)
    worker.start()
    assert GATE["entered"].wait(WAIT)
    stopper = Box()
    stopper.run(worker.stop)
    assert worker._stopping.wait(WAIT)
    later = engine.start(quick_flow, 1)
    assert not stopper.done.wait(0.1)  # stop() waits for the run in flight
    GATE["release"].set()
    stopper.get()
    assert first.result(timeout=1) == "through"
    assert engine.get_run(later.id).status is Status.PENDING  # not claimed while stopping
    assert CALLS == {"gated": 1, "quick": 1}


def test_stop_past_its_timeout_hands_the_run_back_intact(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fluxo._worker")
    engine = make_engine(gated_flow)
    handle = engine.start(gated_flow)
    worker = engine.worker(concurrency=1, idle_timeout=0.05, shutdown_timeout=0.05)
    worker.start()
    assert GATE["entered"].wait(WAIT)
    stopper = Box()
    stopper.run(worker.stop)
    wait_until(
        lambda: any("still executing" in r.getMessage() for r in caplog.records),
        "the shutdown timeout",
    )
    GATE["release"].set()  # the step finishes; the run stops at its next durable call
    stopper.get()

    run = engine.get_run(handle.id)
    assert run.status is Status.PENDING
    assert run.lease_owner is None
    assert kinds(engine.history(handle.id)) == ["workflow_started", "step_completed"]
    assert CALLS == {"gated": 1}

    assert engine.worker().process_one() == 1
    assert handle.result(timeout=1) == "through"
    assert CALLS == {"gated": 1, "quick": 1}  # the recorded step did not run again


def test_a_worker_cannot_be_started_twice(make_engine: MakeEngine) -> None:
    engine = make_engine(quick_flow)
    worker = engine.worker(idle_timeout=0.05)
    with worker, pytest.raises(fluxo.RunStateError, match="already started"):
        worker.start()


def test_run_blocks_until_sigterm_and_restores_signal_handlers(make_engine: MakeEngine) -> None:
    engine = make_engine(quick_flow)
    handle = engine.start(quick_flow, 4)
    worker = engine.worker(idle_timeout=0.05)
    before = signal.getsignal(signal.SIGTERM)

    def terminate_when_done() -> None:
        handle.result(timeout=WAIT)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = Box()
    killer.run(terminate_when_done)
    worker.run()  # returns once SIGTERM arrives
    killer.get()
    assert handle.result(timeout=1) == 41
    assert signal.getsignal(signal.SIGTERM) is before


def test_run_without_signal_handlers_stops_on_stop(make_engine: MakeEngine) -> None:
    engine = make_engine(quick_flow)
    handle = engine.start(quick_flow, 2)
    worker = engine.worker(idle_timeout=0.05)

    def stop_when_done() -> None:
        handle.result(timeout=WAIT)
        worker.stop()

    stopper = Box()
    stopper.run(stop_when_done)
    worker.run(install_signal_handlers=False)
    stopper.get()
    assert handle.result(timeout=1) == 21


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "2"}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"lease": 0}, "lease"),
        ({"lease": -1}, "lease"),
        ({"lease": "30"}, "lease"),
        ({"lease": float("nan")}, "lease"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"idle_timeout": None}, "idle_timeout"),
        ({"sticky": -1}, "sticky"),
        ({"sticky": "5"}, "sticky"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
    ],
)
def test_invalid_settings_are_refused(
    make_engine: MakeEngine, settings: dict[str, Any], complaint: str
) -> None:
    engine = make_engine(quick_flow)
    with pytest.raises(fluxo.DefinitionError, match=complaint):
        engine.worker(**settings)


def test_every_invalid_setting_is_reported_at_once(make_engine: MakeEngine) -> None:
    engine = make_engine(quick_flow)
    with pytest.raises(fluxo.DefinitionError) as info:
        engine.worker(concurrency=0, lease=0, idle_timeout=0)
    message = str(info.value)
    assert "concurrency" in message
    assert "lease" in message
    assert "idle_timeout" in message


def test_worker_ids_are_unique_unless_given(make_engine: MakeEngine) -> None:
    engine = make_engine(quick_flow)
    assert engine.worker().id != engine.worker().id
    assert engine.worker(worker_id="w-1").id == "w-1"
    assert engine.instance_id in engine.worker().id


# -- unknown workflows ------------------------------------------------------------------


def test_a_run_of_an_unknown_workflow_is_left_alone_and_logged_once(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fluxo._worker")
    store = MemoryStore()
    knows_gated = make_engine(gated_flow, store=store)
    knows_quick = make_engine(quick_flow, store=store)
    stranger = knows_gated.start(gated_flow)
    mine = knows_quick.start(quick_flow, 3)

    with knows_quick.worker(idle_timeout=0.05) as worker:
        assert mine.result(timeout=WAIT) == 31
    worker._report_unknown()  # a later periodic check does not repeat the warning

    warnings = [r for r in caplog.records if stranger.id in r.getMessage()]
    assert len(warnings) == 1
    assert gated_flow.name in warnings[0].getMessage()
    assert "Engine(workflows=[...])" in warnings[0].getMessage()
    assert warnings[0].fluxo_run_id == stranger.id  # type: ignore[attr-defined]
    run = store.get_run(stranger.id)
    assert run.status is Status.PENDING
    assert run.lease_owner is None
    assert kinds(store.load(stranger.id).events) == ["workflow_started"]
    assert CALLS["gated"] == 0
    assert knows_quick.worker().process_one() == 0  # not claimable by this engine


def test_a_worker_on_a_new_database_warns_of_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fluxo._worker")
    engine = fluxo.Engine(f"sqlite:///{tmp_path}/new.db", workflows=[quick_flow])
    with engine, engine.worker(idle_timeout=0.05):
        assert engine.start(quick_flow, 1).result(timeout=WAIT) == 11
    assert [r.getMessage() for r in caplog.records] == []


@fluxo.workflow(name="worker.refuses")
def refuses(reason: str) -> None:
    raise ValueError(reason)


def test_each_run_a_worker_ends_is_logged_at_info_with_its_age(
    make_engine: MakeEngine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxo._worker")
    engine = make_engine(quick_flow, refuses)
    done = engine.start(quick_flow.options(id="done"), 1)
    failed = engine.start(refuses.options(id="failed"), "no\nmore")
    clock.advance(2.5)
    with engine.worker(idle_timeout=0.05):
        assert done.result(timeout=WAIT) == 11
        with pytest.raises(fluxo.WorkflowFailedError):
            failed.result(timeout=WAIT)
    ended = {
        r.fluxo_run_id: r.getMessage()  # type: ignore[attr-defined]
        for r in caplog.records
        if r.levelno == logging.INFO and "after it was created" in r.getMessage()
    }
    assert ended == {
        "done": f"run done of {quick_flow.name} completed 2.500s after it was created",
        "failed": "run failed of worker.refuses failed 2.500s after it was created "
        "(builtins.ValueError: no)",
    }


def test_a_run_named_in_main_is_explained(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fluxo._worker")
    engine = make_engine(quick_flow)
    engine.store.create_run("from-repl", "__main__.checkout", b"{}", now=engine.clock())
    engine.worker()._report_unknown()
    (warning,) = [r.getMessage() for r in caplog.records if "from-repl" in r.getMessage()]
    assert "give the workflow name='checkout' or aliases=['__main__.checkout']" in warning
    assert "Engine(workflows=[...])" not in warning


def test_executing_a_claimed_run_of_an_unknown_workflow_gives_it_back(
    make_engine: MakeEngine,
) -> None:
    store = MemoryStore()
    knows_gated = make_engine(gated_flow, store=store)
    knows_quick = make_engine(quick_flow, store=store)
    handle = knows_gated.start(gated_flow)
    claim(knows_gated, handle.id, "confused-worker")
    with pytest.raises(fluxo.UnknownWorkflowError, match=gated_flow.name):
        execute(knows_quick, handle.id, "confused-worker", claimed=True)
    run = store.get_run(handle.id)
    assert run.status is Status.PENDING
    assert run.lease_owner is None


# -- leases -----------------------------------------------------------------------------


def test_lease_renewal_keeps_a_long_step_from_being_stolen(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = SpyStore(MemoryStore())
    engine = make_engine(gated_flow, store=store)
    handle = engine.start(gated_flow)
    with engine.worker(lease=0.3, idle_timeout=0.05) as worker:
        assert GATE["entered"].wait(WAIT)
        for _ in range(4):  # 0.8 s of engine time pass: far beyond the first lease
            clock.advance(0.2)
            store.wait_renewals(2)  # the second surely read the advanced clock
        run = store.get_run(handle.id)
        assert run.lease_owner == worker.id
        assert run.lease_until is not None
        assert run.lease_until > clock()
        stolen = store.claim(
            "thief", [gated_flow.name], now=clock(), lease_until=clock() + 10, limit=1
        )
        assert stolen == []
        GATE["release"].set()
        assert handle.result(timeout=WAIT) == "through"
    assert CALLS == {"gated": 1, "quick": 1}


def test_a_heartbeat_that_finds_its_lease_taken_stops_the_run(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(gated_flow)
    handle = engine.start(gated_flow)
    claim(engine, handle.id, "worker-a", lease=10)
    heartbeat = _worker.Heartbeat(engine, "worker-a", 10)
    outcome = Box()
    outcome.run(
        lambda: engine.execute_claimed(handle.id, "worker-a", heartbeat=heartbeat),
    )
    assert GATE["entered"].wait(WAIT)
    clock.advance(11)
    claim(engine, handle.id, "worker-b", lease=10)
    heartbeat.beat()  # finds the lease gone: the run must stop at its next durable call
    GATE["release"].set()
    assert outcome.get() is Outcome.STOPPED
    assert CALLS == {"gated": 1}  # quick() was not started
    assert engine.get_run(handle.id).lease_owner == "worker-b"  # not released by A

    assert execute(engine, handle.id, "worker-b", claimed=True) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "through"
    assert CALLS == {"gated": 1, "quick": 1}
    assert kinds(engine.history(handle.id)).count("step_completed") == 2


class PoisonStore(SpyStore):
    """A store that cannot load one run's history (written by a newer Fluxo, say)."""

    def __init__(self, inner: fluxo.Store, poison: set[str]) -> None:
        super().__init__(inner)
        self.poison = poison
        self.poisoned_loads = 0

    def load(self, run_id: str) -> history.RunState:
        if run_id in self.poison:
            self.poisoned_loads += 1
            raise ValueError("unknown history event kind 'from_the_future'")
        return self.inner.load(run_id)


def test_a_run_that_cannot_be_executed_does_not_stall_the_worker(
    make_engine: MakeEngine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fluxo._worker")
    poison: set[str] = set()
    store = PoisonStore(MemoryStore(), poison)
    engine = make_engine(quick_flow, store=store)
    bad = engine.start(quick_flow, 0)
    poison.add(bad.id)
    clock.advance(1)
    good = engine.start(quick_flow, 5)
    with engine.worker(concurrency=1, idle_timeout=0.05):
        assert good.result(timeout=WAIT) == 51
    # The broken run was tried once and keeps its lease until it expires: no hot loop.
    assert store.poisoned_loads == 1
    assert store.get_run(bad.id).status is Status.RUNNING
    assert any(
        "execution broke off" in r.getMessage() and r.exc_info is not None for r in caplog.records
    )
    clock.advance(60)  # once the lease expires, another attempt is made
    poison.clear()
    assert engine.worker().process_one() == 1
    assert bad.result(timeout=1) == 1


def test_completed_counts_only_runs_the_worker_finished(make_engine: MakeEngine) -> None:
    engine = make_engine(quick_flow, waits_forever, clock=time.time)
    finished = engine.start(quick_flow, 1)
    waiting = engine.start(waits_forever)
    with engine.worker(concurrency=2, sticky=0) as worker:
        finished.result(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while waiting.status() is not fluxo.RunStatus.WAITING:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert worker.completed == 1  # the suspended run was executed but not finished


@fluxo.workflow(name="worker.waits_forever")
def waits_forever() -> None:
    fluxo.wait_for_signal("never")


loop_claimed = threading.Event()
"""Set once the worker's claim loop has claimed the held run (see RacingStore)."""
steps_run: list[str] = []


@fluxo.step
def after_the_signal() -> str:
    steps_run.append("after")
    loop_claimed.wait(WAIT)  # the loop is now deciding what to do with its claim
    time.sleep(0.1)
    return "done"


@fluxo.workflow
def waits_then_steps() -> str:
    fluxo.wait_for_signal("go")
    return after_the_signal()


class RacingStore:
    """A memory store on which the claim loop claims a held run while its holder takes it back.

    The holder, woken by the run's signal, takes an execution slot, then reads the
    run: that read waits until the loop (which ignores the changes of held runs,
    so its idle timeout wakes it) has claimed the run and dispatched its claim,
    while the holder is still taking the run back.
    """

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.claimed = threading.Event()
        self.handed = False
        self.loads = 0
        self.worker: _worker.Worker | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def load(self, run_id: str) -> history.RunState:
        self.loads += 1
        return self.inner.load(run_id)

    def get_run(self, run_id: str) -> history.RunInfo:
        run = self.inner.get_run(run_id)
        worker = self.worker
        if run.wake_requested and worker is not None:  # the holder, woken
            assert self.claimed.wait(WAIT), "the loop never claimed the held run"

            def dispatched() -> bool:
                entry = worker._inflight.get(run_id)
                return entry is not None and (entry.handed or run_id in worker._reclaimed)

            wait_until(dispatched, "the loop to dispatch its claim")
            self.handed = worker._inflight[run_id].handed
        return run

    def claim(self, *args: Any, **kwargs: Any) -> list[history.RunInfo]:
        worker = self.worker
        entry = worker._inflight.get("held") if worker is not None else None
        if self.loads == 1 and entry is not None:
            context = entry.context
            holder_has_slot = (
                entry.state == _worker._EXECUTING and context is not None and context.shared.holding
            )
            if not holder_has_slot:
                # The woken holder has not taken its slot back yet: the loop finds
                # nothing this time, so its claim comes while the holder takes the
                # run back, whatever the threads' timing.
                return []
        runs = self.inner.claim(*args, **kwargs)
        if runs and self.loads == 1:  # the held run, woken by its signal
            self.claimed.set()
            loop_claimed.set()
        return runs


def test_a_held_run_claimed_by_its_own_worker_meanwhile_executes_once(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    loop_claimed.clear()
    steps_run.clear()
    store = RacingStore()
    engine = make_engine(waits_then_steps, store=store, clock=time.time)  # type: ignore[arg-type]
    handle = engine.start(waits_then_steps.options(id="held"))
    store.worker = engine.worker(concurrency=2, sticky=5, idle_timeout=0.05)
    with caplog.at_level(logging.WARNING), store.worker:
        wait_until(lambda: engine.get_run("held").status is fluxo.RunStatus.WAITING, "the wait")
        engine.signal("held", "go")
        assert handle.result(timeout=WAIT) == "done"
    assert store.claimed.is_set()  # the race did happen
    assert store.handed  # while the holder was taking the run back
    assert steps_run == ["after"]  # one execution went on, not two
    assert store.loads == 3  # the first execution, its holder's reload, result()
    assert "recorded by another worker" not in caplog.text


@fluxo.workflow
def signal_waiter() -> str:
    return str(fluxo.wait_for_signal("go"))


@fluxo.workflow
def prompt() -> int:
    return 1


def test_a_held_signal_wait_lets_go_of_its_slot_when_its_window_ends(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(signal_waiter, prompt, clock=time.time)
    handle = engine.start(signal_waiter)
    with engine.worker(concurrency=2, sticky=0.2) as worker:
        wait_until(lambda: handle.status() is fluxo.RunStatus.WAITING, "the wait")
        wait_until(lambda: not worker._inflight, "the hold to end")  # and not renewed
        engine.signal(handle.id, "go", "late")
        assert handle.result(timeout=WAIT) == "late"


BODIES: collections.Counter[int] = collections.Counter()
"""How often the body of ``counted_waiter(i)`` began: once, plus once per replay."""


@fluxo.step
def after_go(i: int, value: str) -> str:
    CALLS[f"after_go {i}"] += 1
    return f"{i}:{value}"


@fluxo.workflow
def counted_waiter(i: int) -> str:
    BODIES[i] += 1
    return after_go(i, str(fluxo.wait_for_signal("go")))


def holding(worker: _worker.Worker) -> int:
    """How many waits the worker holds now."""
    return sum(entry.state == _worker._HOLDING for entry in list(worker._inflight.values()))


def test_a_held_wait_leaves_its_slot_to_a_run_that_is_due(make_engine: MakeEngine) -> None:
    BODIES.clear()
    engine = make_engine(counted_waiter, prompt, clock=time.time)
    waiting = engine.start(counted_waiter, 0)
    with engine.worker(concurrency=1, sticky=600) as worker:  # a hold that outlasts the test
        wait_until(lambda: holding(worker) == 1, "the wait to be held")
        assert engine.start(prompt).result(timeout=WAIT) == 1  # ran in the one slot
        assert holding(worker) == 1  # and the wait still holds: it never had the slot
        engine.signal(waiting.id, "go", "held")
        assert waiting.result(timeout=WAIT) == "0:held"
    assert BODIES == {0: 1}  # it went on in its thread: no replay
    assert CALLS["after_go 0"] == 1


def test_a_worker_holds_at_most_concurrency_waits_and_parks_the_others(
    make_engine: MakeEngine,
) -> None:
    BODIES.clear()
    engine = make_engine(counted_waiter, clock=time.time)
    handles = [engine.start(counted_waiter, i) for i in range(6)]
    with engine.worker(concurrency=2, sticky=600) as worker:
        wait_until(
            lambda: all(h.status() is fluxo.RunStatus.WAITING for h in handles), "every wait"
        )
        wait_until(lambda: len(worker._inflight) == 2, "the unheld waits to unwind")
        assert holding(worker) == 2
        for i, handle in enumerate(handles):
            engine.signal(handle.id, "go", str(i))
        assert [h.result(timeout=WAIT) for h in handles] == [f"{i}:{i}" for i in range(6)]
    assert all(CALLS[f"after_go {i}"] == 1 for i in range(6))  # each step ran once
    assert sorted(BODIES.values()).count(1) <= 2  # only held waits went on without replay
    assert set(BODIES.values()) <= {1, 2}


# -- leases from the claim on ------------------------------------------------------------


class StealOnClaim:
    """A store on which a worker's lease runs out between its claim and its execution.

    ``thief`` (when given) then claims the run, as another worker would.
    """

    def __init__(self, inner: fluxo.Store, clock: FakeClock, lease: float, thief: str | None):
        self.inner = inner
        self.clock = clock
        self.lease = lease
        self.thief = thief
        self.done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def claim(self, worker_id: str, workflows: Any, **kwargs: Any) -> list[history.RunInfo]:
        runs = self.inner.claim(worker_id, workflows, **kwargs)
        if runs and not self.done:
            self.done = True
            self.clock.advance(self.lease + 1)
            if self.thief is not None:
                now = self.clock()
                stolen = self.inner.claim(
                    self.thief, workflows, now=now, lease_until=now + 30, limit=1
                )
                assert [r.id for r in stolen] == [runs[0].id]
        return runs


def test_a_run_whose_lease_passed_to_another_worker_before_it_began_is_not_executed(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = StealOnClaim(MemoryStore(), clock, lease=30, thief="thief")
    engine = make_engine(quick_flow, store=store)  # type: ignore[arg-type]
    handle = engine.start(quick_flow, 2)

    assert engine.worker(lease=30).process_one() == 1

    assert CALLS == {}  # not executed: the run is the thief's now
    assert engine.get_run(handle.id).lease_owner == "thief"
    assert execute(engine, handle.id, "thief", claimed=True) is Outcome.COMPLETED
    assert handle.result(timeout=1) == 21
    assert CALLS == {"quick": 1}  # the step ran once, never twice at once


def test_a_run_whose_lease_ran_out_unclaimed_is_leased_afresh_and_executed(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = StealOnClaim(MemoryStore(), clock, lease=30, thief=None)
    engine = make_engine(quick_flow, store=store)  # type: ignore[arg-type]
    handle = engine.start(quick_flow, 2)

    assert engine.worker(lease=30).process_one() == 1

    assert handle.result(timeout=1) == 21
    assert CALLS == {"quick": 1}


class SlowLoad(SpyStore):
    """A store whose history reads wait until the test lets them through."""

    def __init__(self, inner: fluxo.Store) -> None:
        super().__init__(inner)
        self.loading = threading.Event()
        self.go = threading.Event()

    def load(self, run_id: str) -> history.RunState:
        self.loading.set()
        assert self.go.wait(WAIT)
        return self.inner.load(run_id)


def test_a_claimed_run_is_renewed_from_its_claim_before_its_execution_begins(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = SlowLoad(MemoryStore())
    engine = make_engine(quick_flow, store=store)
    handle = engine.start(quick_flow, 1)
    with engine.worker(lease=0.3, idle_timeout=0.05) as worker:
        assert store.loading.wait(WAIT)  # claimed; its history is still being read
        for _ in range(4):  # 0.8 s of engine time pass: far beyond the first lease
            clock.advance(0.2)
            store.wait_renewals(2)
        run = store.get_run(handle.id)
        assert (run.lease_owner, run.status) == (worker.id, fluxo.RunStatus.RUNNING)
        assert run.lease_until is not None
        assert run.lease_until > clock()
        store.go.set()
        assert handle.result(timeout=WAIT) == 11
    assert CALLS == {"quick": 1}


# -- a held timer that fires while every slot is busy ------------------------------------


@fluxo.workflow
def short_nap() -> int:
    fluxo.sleep(60)
    return quick(4)


def test_a_held_timer_that_fires_with_every_slot_busy_makes_its_run_ready_at_once(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(short_nap, gated_flow)
    napping = engine.start(short_nap)
    with engine.worker(concurrency=1, sticky=600, lease=600, idle_timeout=0.05) as worker:
        wait_until(lambda: holding(worker) == 1, "the timer to be held")
        fire_at = clock() + 60
        assert engine.get_run(napping.id).ready_at == fire_at + _executor.STICKY_GRACE
        busy = engine.start(gated_flow)
        assert GATE["entered"].wait(WAIT)  # the one slot is busy
        clock.advance(61)  # the timer fires; the grace that reserves it has not passed
        wait_until(lambda: holding(worker) == 0, "the hold to let go")
        run = engine.get_run(napping.id)
        assert run.status is fluxo.RunStatus.PENDING
        assert run.lease_owner is None
        assert run.ready_at is not None
        assert run.ready_at <= clock() < fire_at + _executor.STICKY_GRACE  # ready now
        GATE["release"].set()
        assert busy.result(timeout=WAIT) == "through"
        assert napping.result(timeout=WAIT) == 40
    assert kinds(engine.history(napping.id)).count("timer_fired") == 1


# -- a store that keeps failing: back off, log once, remind, recover -------------------


class FlakyStore:
    """Forwards to another store; the first ``failures`` calls of ``method`` raise.

    The error's text spans lines, as psycopg's does (``LINE 3: ...`` and a caret).
    ``on_success`` is called before the first call that goes through.
    """

    def __init__(self, inner: fluxo.Store, method: str, failures: int) -> None:
        self.inner = inner
        self.method = method
        self.failures = failures
        self.calls = 0
        self.on_success: Callable[[], None] = lambda: None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name != self.method:
            return attribute

        def flaky(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= self.failures:
                raise fluxo.StoreUnavailableError(
                    'relation "fluxo_runs" does not exist\nLINE 3: FROM fluxo_runs\n     ^'
                )
            if self.calls == self.failures + 1:
                self.on_success()
            return attribute(*args, **kwargs)

        return flaky


class FakeTime:
    """A monotonic clock that moves only when the code under test waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def lines(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


def test_failing_claims_back_off_and_are_logged_once_then_once_a_minute(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(MemoryStore(), "claim", failures=40)
    engine = make_engine(quick_flow, store=store)
    worker = engine.worker(idle_timeout=0.25, worker_id="w")
    fake = FakeTime()
    worker._pause = fake.wait  # type: ignore[method-assign]
    worker._claims.clock = fake.clock
    store.on_success = worker.stop
    caplog.set_level(logging.INFO, logger="fluxo._worker")

    worker.run(install_signal_handlers=False)

    assert store.calls == 41
    cap = _worker.BACKOFF_CAP
    assert fake.waits[:9] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, cap, cap, cap]
    assert set(fake.waits[6:]) == {cap}  # capped
    failures = lines(caplog, logging.ERROR, "worker w: claim")
    # The first failure at 0 s; then 40 failures over about 356 s: a reminder a minute.
    assert sum(fake.waits[:40]) == pytest.approx(15.75 + 34 * cap)
    assert len(failures) == 1 + 5
    assert failures[0] == (
        'worker w: claim failed (relation "fluxo_runs" does not exist); retrying with backoff'
    )
    assert "still failing after 12 attempts" in failures[1]
    assert all("\n" not in line and "LINE 3" not in line for line in failures)
    assert lines(caplog, logging.INFO, "worker w: claim") == [
        "worker w: claim works again after 40 failed attempts"
    ]


def test_a_claim_that_works_again_starts_the_backoff_afresh(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    trouble = _worker.Trouble("claims", first=1.0, clock=FakeTime().clock)
    error = fluxo.StoreUnavailableError("down")

    first = [trouble.failed(error) for _ in range(4)]
    trouble.succeeded()
    again = [trouble.failed(error) for _ in range(2)]

    assert first == [1.0, 2.0, 4.0, 8.0]
    assert again == [1.0, 2.0]


def test_failing_lease_renewals_warn_once_then_once_a_minute(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(MemoryStore(), "renew", failures=30)
    engine = make_engine(quick_flow, store=store)
    heartbeat = _worker.Heartbeat(engine, "w", lease=30.0)
    fake = FakeTime()
    heartbeat.renewals.clock = fake.clock
    heartbeat.track("r1")
    caplog.set_level(logging.INFO, logger="fluxo._worker")

    for _ in range(31):  # a beat every 10 s: five minutes of failures, then one that works
        heartbeat.beat()
        fake.wait(10.0)

    assert store.calls == 31  # renewing never backs off: the leases depend on it
    warnings = lines(caplog, logging.WARNING, "renewing leases")
    assert len(warnings) == 1 + 4  # at 0 s, then at 60, 120, 180 and 240 s
    assert "still failing after 7 attempts" in warnings[1]
    assert lines(caplog, logging.INFO, "renewing leases") == [
        "worker w: renewing leases works again after 30 failed attempts"
    ]


def test_failing_reads_of_the_next_wake_up_warn_once_then_once_a_minute(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(MemoryStore(), "next_wake", failures=12)
    engine = make_engine(quick_flow, store=store)
    worker = engine.worker(worker_id="w", idle_timeout=0.01)
    fake = FakeTime()
    worker._wakes.clock = fake.clock
    caplog.set_level(logging.INFO, logger="fluxo._worker")

    for _ in range(13):  # an idle worker reads it about every idle_timeout
        worker._idle(engine.workflow_names, store.change_token(None))
        fake.wait(10.0)

    warnings = lines(caplog, logging.WARNING, "next wake-up")
    assert len(warnings) == 1 + 1  # at 0 s, and a reminder at 60 s
    assert "still failing after 7 attempts" in warnings[1]
    assert len(lines(caplog, logging.INFO, "next wake-up works again")) == 1


class _Watched:
    """What the heartbeat reads of a running run's context."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.lease_epoch = 0
        self.lease_released = False
        self.stop_requested = threading.Event()
        self.cancel_requested = threading.Event()


def test_failing_reads_of_running_runs_back_off(make_engine: MakeEngine) -> None:
    store = FlakyStore(MemoryStore(), "get_runs", failures=1000)
    engine = make_engine(quick_flow, store=store)
    heartbeat = _worker.Heartbeat(engine, "w", lease=30.0)
    fake = FakeTime()
    heartbeat.checks.clock = fake.clock
    heartbeat._contexts["r1"] = _Watched("r1")  # type: ignore[assignment]

    for _ in range(1200):  # ten minutes of ticks, every CHECK_INTERVAL
        heartbeat.check()
        fake.wait(_worker.CHECK_INTERVAL)

    # 0.5, 1, 2, 4, 8, then every BACKOFF_CAP (10 s): about 64, not 1,200 reads
    assert 50 <= store.calls <= 70


def test_failing_reads_for_unknown_workflows_are_logged_in_one_line_until_they_work(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(MemoryStore(), "list_runs", failures=10)
    engine = make_engine(quick_flow, store=store)
    worker = engine.worker(worker_id="w")
    fake = FakeTime()
    worker._unknowns.clock = fake.clock
    caplog.set_level(logging.INFO, logger="fluxo._worker")

    for _ in range(11):  # once a minute, as the claim loop does
        worker._report_unknown()
        fake.wait(61.0)

    warnings = lines(caplog, logging.WARNING, "unknown workflows")
    assert len(warnings) == 10  # the first, then a reminder at each minute's attempt
    assert "\n" not in "".join(warnings)
    assert len(lines(caplog, logging.INFO, "unknown workflows works again")) == 1

"""Worker liveness: a dead worker's runs are resumed without waiting for their leases.

The engine's clock is a fake here, so who is dead is decided by the test: a worker
is dead once the clock passes the ``alive_until`` of its last beat.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import fluxo
from fluxo import _leases, _worker
from fluxo.stores.memory import MemoryStore

from .conftest import MakeEngine
from .helpers import WAIT, FakeClock, claim

Status = fluxo.RunStatus
CALLS: list[int] = []


@fluxo.step
def noted(n: int) -> int:
    CALLS.append(n)
    return n * 10


@fluxo.workflow
def noted_flow(n: int) -> int:
    return noted(n) + 1


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


class BeatSpy:
    """Forwards to a store and records each liveness beat (its ``reap``) and forget."""

    def __init__(self, inner: fluxo.Store) -> None:
        self.inner = inner
        self.beats: list[tuple[str, bool]] = []
        self.forgotten: list[str] = []
        self.failing = False
        self.changed = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def beat_worker(self, worker_id: str, **kwargs: Any) -> list[str]:
        if self.failing:
            raise fluxo.StoreUnavailableError("the store is down for this test")
        freed = self.inner.beat_worker(worker_id, **kwargs)
        with self.changed:
            self.beats.append((worker_id, kwargs["reap"]))
            self.changed.notify_all()
        return freed

    def forget_worker(self, worker_id: str) -> None:
        self.inner.forget_worker(worker_id)
        self.forgotten.append(worker_id)

    def wait_beats(self, worker_id: str, count: int, *, reaping: bool = False) -> None:
        """Block until ``worker_id`` beat ``count`` more times (reaping ones, if asked)."""

        def seen() -> int:
            return sum(w == worker_id and (reap or not reaping) for w, reap in self.beats)

        with self.changed:
            target = seen() + count
            assert self.changed.wait_for(lambda: seen() >= target, WAIT), "no beat in time"


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    event = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return
        event.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_dead_workers_run_is_resumed_long_before_its_lease_ends(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    spy = BeatSpy(MemoryStore())
    engine = make_engine(noted_flow, store=spy)  # type: ignore[arg-type]
    engine.start(noted_flow.options(id="r1"), 4)
    spy.beat_worker("ghost", now=clock(), alive_until=clock() + 2, reap=False)
    claim(engine, "r1", "ghost", lease=600)  # then its process dies, mid-run

    with engine.worker(dead_after=2) as worker:
        spy.wait_beats(worker.id, 1)
        clock.advance(3)  # the ghost's last beat is 3 s old: dead
        spy.wait_beats(worker.id, 1, reaping=True)  # unbroken beats since 3 s ago
        clock.advance(0.1)  # the freed lease ended at the beat's time: claimable after it
        wait_until(lambda: engine.get_run("r1").status is Status.COMPLETED, "r1 resumed")

    assert engine.handle("r1").result(timeout=WAIT) == 41
    assert CALLS == [4]


def test_a_worker_restarted_under_its_id_takes_its_own_runs_back_at_once(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    spy = BeatSpy(MemoryStore())
    engine = make_engine(noted_flow, store=spy)  # type: ignore[arg-type]
    engine.start(noted_flow.options(id="r1"), 2)
    spy.beat_worker("w-fixed", now=clock(), alive_until=clock() + 2, reap=False)
    claim(engine, "r1", "w-fixed", lease=600)  # the earlier process, which died

    with engine.worker(worker_id="w-fixed"):
        spy.wait_beats("w-fixed", 1)  # the first, which frees what the id held
        clock.advance(0.1)
        wait_until(lambda: engine.get_run("r1").status is Status.COMPLETED, "r1 resumed")

    assert engine.handle("r1").result(timeout=WAIT) == 21


def test_a_run_of_an_owner_that_never_beats_waits_for_its_lease(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    spy = BeatSpy(MemoryStore())
    engine = make_engine(noted_flow, store=spy)  # type: ignore[arg-type]
    engine.start(noted_flow.options(id="r1"), 3)
    claim(engine, "r1", "engine-run-in-place", lease=600)

    with engine.worker(dead_after=2) as worker:
        spy.wait_beats(worker.id, 1)
        clock.advance(3)
        spy.wait_beats(worker.id, 2, reaping=True)
        run = engine.get_run("r1")
        assert (run.status, run.lease_owner) == (Status.RUNNING, "engine-run-in-place")
        assert CALLS == []


def test_a_live_worker_keeps_its_long_step_while_others_reap(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    spy = BeatSpy(MemoryStore())
    engine = make_engine(noted_flow, store=spy)  # type: ignore[arg-type]
    engine.start(noted_flow.options(id="r1"), 5)
    spy.beat_worker("busy", now=clock(), alive_until=clock() + 2, reap=False)
    claim(engine, "r1", "busy", lease=600)

    with engine.worker(dead_after=2) as worker:
        spy.wait_beats(worker.id, 1)
        for _ in range(3):  # "busy" beats on, as a live worker's heartbeat does
            clock.advance(1)
            spy.beat_worker("busy", now=clock(), alive_until=clock() + 2, reap=False)
            spy.wait_beats(worker.id, 1)
        spy.wait_beats(worker.id, 1, reaping=True)
        assert engine.get_run("r1").lease_owner == "busy"
        assert CALLS == []


def test_a_worker_that_stops_cleanly_is_forgotten(make_engine: MakeEngine) -> None:
    spy = BeatSpy(MemoryStore())
    engine = make_engine(noted_flow, store=spy)  # type: ignore[arg-type]
    worker = engine.worker()
    worker.start()
    spy.wait_beats(worker.id, 1)
    worker.stop()

    assert spy.forgotten == [worker.id]


def test_after_a_store_outage_a_worker_reaps_only_after_unbroken_beats() -> None:
    clock = FakeClock()
    spy = BeatSpy(MemoryStore())

    class Host:
        store = spy

    Host.clock = clock  # type: ignore[attr-defined]
    heartbeat = _leases.Heartbeat(Host(), "w1", 30, dead_after=2)  # type: ignore[arg-type]

    heartbeat.live()
    clock.advance(2.5)
    heartbeat.live()
    spy.failing = True
    clock.advance(0.5)
    heartbeat.live()  # the store is down: logged, not raised
    spy.failing = False
    for _ in range(5):  # the beats from T0+3.5 on: 2 s of them by T0+5.5
        clock.advance(0.5)
        heartbeat.live()

    assert [reap for _, reap in spy.beats] == [False, True, False, False, False, False, True]


@pytest.mark.parametrize("dead_after", [0, -1, "2", None, float("nan"), float("inf")])
def test_an_invalid_dead_after_is_refused(make_engine: MakeEngine, dead_after: Any) -> None:
    engine = make_engine(noted_flow)
    with pytest.raises(fluxo.DefinitionError, match="dead_after"):
        engine.worker(dead_after=dead_after)


def test_the_worker_heartbeat_beats_for_liveness_and_engine_run_does_not() -> None:
    assert _worker.Heartbeat(None, "w", 30, dead_after=2).dead_after == 2  # type: ignore[arg-type]
    assert _leases.Heartbeat(None, "w", 30).dead_after is None  # type: ignore[arg-type]

"""Workers on every store: cancellations reach running runs promptly; bursts never over-claim.

Each test runs on the memory store, SQLite, PostgreSQL, Redis and MongoDB. They
assert behaviour (which steps ran, how many runs a worker held leased, how runs
ended), never how long anything took; ``benchmarks/burst.py`` measures the times.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fluxo
from fluxo import history
from fluxo.stores.memory import MemoryStore

WAIT = 30.0
"""Generous upper bound for anything another thread or process does."""

CALLS: collections.Counter[str] = collections.Counter()
ENTERED = threading.Event()
RELEASE = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    ENTERED.clear()
    RELEASE.clear()


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("mongo", marks=pytest.mark.mongo),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Watch]:
    """The store under test, watched; closed afterwards."""
    if request.param == "memory":
        inner: fluxo.Store = MemoryStore()
    elif request.param == "sqlite":
        inner = fluxo.open_store(f"sqlite:///{tmp_path}/fluxo.db")
    else:
        inner = fluxo.open_store(request.getfixturevalue(f"clean_{request.param}_url"))
    watched = Watch(inner)
    yield watched
    inner.close()


class Watch:
    """A store that forwards everything and watches what workers do with it.

    * ``most_leased``: after every claim, the most runs ever leased to one worker
      at once (read back from the store);
    * every ``get_runs`` result, so a test can wait until a heartbeat's read
      reported a cancellation (and the read after it, so the run was told);
    * ``renewals``: how many times leases were renewed;
    * ``cancel_at_end``: run ids cancelled just before their completion is recorded.
    """

    def __init__(self, inner: fluxo.Store) -> None:
        self.inner = inner
        self.most_leased: collections.Counter[str] = collections.Counter()
        self.reads: list[dict[str, history.RunInfo]] = []
        self.renewals = 0
        self.cancel_at_end: set[str] = set()
        self._changed = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _sample(self, owner: str) -> None:
        running = self.inner.list_runs(statuses=[fluxo.RunStatus.RUNNING], limit=10_000)
        leased = sum(run.lease_owner == owner for run in running)
        with self._changed:
            self.most_leased[owner] = max(self.most_leased[owner], leased)

    def claim(self, worker_id: str, workflows: Any, **kwargs: Any) -> list[history.RunInfo]:
        runs = self.inner.claim(worker_id, workflows, **kwargs)
        self._sample(worker_id)
        return runs

    def claim_run(self, worker_id: str, run_id: str, **kwargs: Any) -> history.RunInfo | None:
        run = self.inner.claim_run(worker_id, run_id, **kwargs)
        self._sample(worker_id)
        return run

    def renew(self, worker_id: str, run_ids: Any, **kwargs: Any) -> dict[str, bool]:
        self.renewals += 1
        return self.inner.renew(worker_id, run_ids, **kwargs)

    def get_runs(self, run_ids: Any) -> dict[str, history.RunInfo]:
        found = self.inner.get_runs(run_ids)
        with self._changed:
            self.reads.append(found)
            self._changed.notify_all()
        return found

    def append(self, run_id: str, seq: int, events: Any, **kwargs: Any) -> None:
        if run_id in self.cancel_at_end and any(
            isinstance(e, history.WorkflowCompleted) for e in events
        ):
            self.cancel_at_end.discard(run_id)
            self.inner.request_cancel(run_id, now=kwargs["now"])
        self.inner.append(run_id, seq, events, **kwargs)

    def wait_cancel_read(self, run_id: str) -> None:
        """Block until a heartbeat's read reported the run's cancellation, and one more read."""

        def seen() -> bool:
            return any(run_id in r and r[run_id].cancel_requested for r in self.reads)

        with self._changed:
            assert self._changed.wait_for(seen, WAIT), "no heartbeat read saw the cancellation"
            count = len(self.reads)
            assert self._changed.wait_for(lambda: len(self.reads) > count, WAIT)


class Box:
    """A thread's outcome: what it returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:
            self.error = exc

    def get(self) -> Any:
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the thread did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = threading.Event()
    timer = threading.Timer(WAIT, deadline.set)
    timer.start()
    try:
        while not predicate():
            assert not deadline.wait(0.01), f"timed out waiting for {what}"
    finally:
        timer.cancel()


@fluxo.step(name="ws.first")
def first() -> str:
    CALLS["first"] += 1
    ENTERED.set()
    assert RELEASE.wait(WAIT)
    return "a"


@fluxo.step(name="ws.second")
def second() -> str:
    CALLS["second"] += 1
    return "b"


@fluxo.workflow(name="ws.two_steps")
def two_steps() -> str:
    return first() + second()


@fluxo.workflow(name="ws.one_step")
def one_step() -> str:
    return second()


@fluxo.step(name="ws.note")
def note(what: str) -> str:
    CALLS[what] += 1
    return what


@fluxo.workflow(name="ws.parked")
def parked(i: int) -> str:
    note(f"before {i}")
    value = fluxo.wait_for_signal("go", type=str)
    return note(f"after {i} {value}")


WORKFLOWS = [two_steps, one_step, parked]

HISTORY_CANCELLED_BETWEEN_STEPS = [
    "workflow_started",
    "step_completed",
    "cancel_requested",
    "workflow_cancelled",
]


# -- cancellation reaches a running run at its next durable call --------------------------


def test_a_worker_stops_a_cancelled_run_before_its_next_step(store: Watch) -> None:
    engine = fluxo.Engine(store, workflows=WORKFLOWS)  # type: ignore[arg-type]
    handle = engine.start(two_steps)
    # A lease of 600 s is renewed every 200 s: no renewal can tell the run here.
    with engine.worker(concurrency=1, lease=600, idle_timeout=0.05):
        assert ENTERED.wait(WAIT)
        engine.cancel(handle.id)
        store.wait_cancel_read(handle.id)  # the heartbeat's read between renewals
        RELEASE.set()
        with pytest.raises(fluxo.WorkflowCancelledError):
            handle.result(timeout=WAIT)
    assert CALLS == {"first": 1}  # the second step never ran
    assert [e.kind for e in engine.history(handle.id)] == HISTORY_CANCELLED_BETWEEN_STEPS
    assert store.renewals == 0
    engine.close()


def test_engine_run_stops_a_cancelled_run_before_its_next_step(store: Watch) -> None:
    engine = fluxo.Engine(store, workflows=WORKFLOWS)  # type: ignore[arg-type]
    running = Box(lambda: engine.run(two_steps.options(id="inline")))
    assert ENTERED.wait(WAIT)
    engine.cancel("inline")
    store.wait_cancel_read("inline")
    RELEASE.set()
    with pytest.raises(fluxo.WorkflowCancelledError):
        running.get()
    assert CALLS == {"first": 1}
    assert [e.kind for e in engine.history("inline")] == HISTORY_CANCELLED_BETWEEN_STEPS
    engine.close()


def test_a_cancel_accepted_before_the_end_is_recorded_ends_the_run_cancelled(
    store: Watch,
) -> None:
    engine = fluxo.Engine(store, workflows=WORKFLOWS)  # type: ignore[arg-type]
    store.cancel_at_end.add("late")
    handle = engine.start(one_step.options(id="late"))
    with (
        engine.worker(concurrency=1, idle_timeout=0.05),
        pytest.raises(fluxo.WorkflowCancelledError),
    ):
        handle.result(timeout=WAIT)
    assert not store.cancel_at_end  # the cancellation did land just before the end
    assert CALLS == {"second": 1}
    assert engine.get_run("late").status is fluxo.RunStatus.CANCELLED
    assert [e.kind for e in engine.history("late")] == HISTORY_CANCELLED_BETWEEN_STEPS
    engine.close()


# -- bursts of runs that wait for signals -------------------------------------------------


def test_a_burst_of_waiting_runs_parks_and_resumes_without_over_claiming(store: Watch) -> None:
    count, concurrency = 12, 2
    engine = fluxo.Engine(store, workflows=WORKFLOWS)  # type: ignore[arg-type]
    handles = [engine.start(parked, i) for i in range(count)]
    with engine.worker(concurrency=concurrency, idle_timeout=0.05) as worker:  # sticky=5
        wait_until(
            lambda: len(engine.list_runs(status="waiting", limit=100)) == count, "every run parked"
        )
        assert store.most_leased[worker.id] <= concurrency
        for i, handle in enumerate(handles):
            engine.signal(handle.id, "go", str(i))
        results = [handle.result(timeout=WAIT) for handle in handles]
    assert results == [f"after {i} {i}" for i in range(count)]
    assert store.most_leased[worker.id] <= concurrency  # never more leases than slots
    once = {f"before {i}": 1 for i in range(count)} | {f"after {i} {i}": 1 for i in range(count)}
    assert dict(CALLS) == once  # each step of each run executed once: none twice
    for handle in handles:  # one wait, one signal each: no position recorded twice
        kinds = [e.kind for e in engine.history(handle.id)]
        assert kinds.count("signal_wait_started") == 1
        assert kinds.count("signal_received") == 1
    engine.close()

"""Poison runs: a run that can never make progress fails once, loudly, and never loops.

Each test runs a real worker thread for a window measured in the worker's own
claim rounds (never in time), with a clock that does not move, so a lease never
expires: a run is executed again within the window only if some code path hands
it straight back to a claim. The store wrapper counts what the worker did.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history

from .conftest import MakeEngine
from .helpers import WAIT, CountingStore, FakeClock, execute

Status = fluxo.RunStatus

ROUNDS = 30
"""Claim rounds a worker makes after the run settled: the window a loop would show in."""


class WatchedStore(CountingStore):
    """Counts history reads (``loads_of``) and claim rounds, and lets a test wait for rounds."""

    def __init__(self, inner: fluxo.Store) -> None:
        super().__init__(inner)
        self.rounds = 0
        self.claimed: list[str] = []
        self.changed = threading.Condition()

    def claim(self, worker_id: str, workflows: Any, **kw: Any) -> list[history.RunInfo]:
        runs = self.inner.claim(worker_id, workflows, **kw)
        with self.changed:
            self.rounds += 1
            self.claimed.extend(run.id for run in runs)
            self.changed.notify_all()
        return runs

    def more_rounds(self, count: int) -> None:
        with self.changed:
            target = self.rounds + count
            assert self.changed.wait_for(lambda: self.rounds >= target, WAIT), "worker stalled"


def serve_window(engine: fluxo.Engine, store: WatchedStore, settled: Any) -> None:
    """Run a worker until ``settled()`` holds, then for ROUNDS more claim rounds."""
    with engine.worker(concurrency=2, idle_timeout=0.01, sticky=0):
        for _ in range(int(WAIT / 0.01)):
            if settled():
                break
            store.more_rounds(1)
        store.more_rounds(ROUNDS)


@fluxo.step(name="poison.add")
def add(n: int) -> int:
    return n + 1


@fluxo.workflow(name="poison.flow")
def flow(n: int) -> int:
    n = add(n)
    fluxo.sleep(60)
    return add(n)


def _suspended_run(engine: fluxo.Engine, clock: FakeClock) -> None:
    """Start run r1 of flow; run it to its timer; make the timer due."""
    engine.start(flow.options(id="r1"), 1)
    engine.worker(sticky=0).process_one()
    assert [e.kind for e in engine.history("r1")][-1] == "timer_started"
    clock.advance(61)


def test_a_history_with_a_gap_fails_once_and_is_never_claimed_again(
    make_engine: MakeEngine, clock: FakeClock, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gap.db"
    inner = fluxo.open_store(f"sqlite:///{path}")
    store = WatchedStore(inner)
    engine = make_engine(flow, store=store)
    _suspended_run(engine, clock)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM fluxo_events WHERE run_id = 'r1' AND seq = 1")
    store.loads_of.clear()
    store.claimed.clear()

    with caplog.at_level(logging.WARNING):
        serve_window(engine, store, lambda: inner.get_run("r1").status.is_terminal)

    assert store.loads_of["r1"] == 1
    assert store.claimed.count("r1") == 1
    assert inner.get_run("r1").status is Status.FAILED
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "position 1 is missing" in errors[0].getMessage()
    with pytest.raises(fluxo.HistoryCorruptError) as caught:
        engine.handle("r1").result(timeout=0)
    assert (caught.value.run_id, caught.value.seq) == ("r1", 1)
    inner.close()


def test_an_unknown_event_kind_fails_the_run_once_on_memory_and_sqlite(
    make_engine: MakeEngine, clock: FakeClock, store_url: str
) -> None:
    inner = fluxo.open_store(store_url)
    store = WatchedStore(inner)
    engine = make_engine(flow, store=store)
    _suspended_run(engine, clock)
    from tests.stores.conformance.damage import damage_for

    damage_for(inner).set_kind("r1", 1, "from_the_future")
    store.loads_of.clear()
    store.claimed.clear()

    serve_window(engine, store, lambda: inner.get_run("r1").status.is_terminal)

    assert store.loads_of["r1"] == 1
    assert inner.get_run("r1").status is Status.FAILED
    with pytest.raises(fluxo.HistoryCorruptError, match="from_the_future"):
        engine.handle("r1").result(timeout=0)
    inner.close()


class FailingStore(WatchedStore):
    """A watched store whose ``load`` or ``append`` of run r1 raises what the test says."""

    def __init__(self, inner: fluxo.Store) -> None:
        super().__init__(inner)
        self.load_error: Exception | None = None
        self.append_error: Exception | None = None

    def load(self, run_id: str) -> history.RunState:
        state = super().load(run_id)
        if run_id == "r1" and self.load_error is not None:
            raise self.load_error
        return state

    def append(self, run_id: str, *args: Any, **kwargs: Any) -> None:
        if run_id == "r1" and self.append_error is not None:
            raise self.append_error
        self.inner.append(run_id, *args, **kwargs)


def test_a_damaged_run_whose_failure_cannot_be_recorded_waits_for_its_lease(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = FailingStore(fluxo.open_store("memory://"))
    engine = make_engine(flow, store=store)
    _suspended_run(engine, clock)
    store.load_error = fluxo.HistoryCorruptError("r1", 1, "position 1 is missing", 3)
    store.append_error = fluxo.StoreUnavailableError("the database is down")
    store.loads_of.clear()
    store.claimed.clear()

    serve_window(engine, store, lambda: store.loads_of["r1"] >= 1)

    # The lease is kept: with a clock that does not move it never expires, so the
    # run is not executed again (a moving clock retries it once per lease).
    assert store.loads_of["r1"] == 1
    assert store.claimed == ["r1"]
    assert store.inner.get_run("r1").status is Status.RUNNING
    store.inner.close()


def test_a_run_whose_load_keeps_failing_is_retried_once_per_lease(
    make_engine: MakeEngine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FailingStore(fluxo.open_store("memory://"))
    engine = make_engine(flow, store=store)
    _suspended_run(engine, clock)
    store.load_error = fluxo.StoreUnavailableError("the database is down")
    store.loads_of.clear()
    store.claimed.clear()

    with caplog.at_level(logging.ERROR):
        serve_window(engine, store, lambda: store.loads_of["r1"] >= 1)

    assert store.loads_of["r1"] == 1  # "execution broke off": the lease spaces attempts
    assert len([r for r in caplog.records if "broke off" in r.getMessage()]) == 1


def test_a_run_of_a_workflow_the_worker_does_not_know_is_never_loaded(
    make_engine: MakeEngine,
) -> None:
    store = WatchedStore(fluxo.open_store("memory://"))
    store.create_run("stranger", "someone.else", b"{}", now=0.0)
    engine = make_engine(flow, store=store)

    serve_window(engine, store, lambda: True)

    assert store.loads_of["stranger"] == 0
    assert store.claimed == []
    store.inner.close()


class PickyCodec(fluxo.JSONCodec):
    """A custom codec that raises its own error (not a Fluxo one) for one input."""

    def decode(self, data: bytes, type: Any = Any) -> Any:
        if data == b'{"n":666}':
            raise ValueError("the picky codec refuses this input")
        return super().decode(data, type)


def test_a_run_whose_input_never_decodes_fails_once(make_engine: MakeEngine) -> None:
    store = WatchedStore(fluxo.open_store("memory://"))
    engine = make_engine(flow, store=store, codec=PickyCodec())
    # Recorded by a program whose codec still read it (engine.start would refuse it).
    store.inner.create_run("r1", flow.name, b'{"n":666}', now=engine.clock())

    serve_window(engine, store, lambda: store.inner.get_run("r1").status.is_terminal)

    assert store.loads_of["r1"] == 1
    with pytest.raises(fluxo.WorkflowFailedError, match="picky codec") as caught:
        engine.handle("r1").result(timeout=0)
    assert caught.value.is_instance(fluxo.DecodeError)
    store.inner.close()


@fluxo.workflow(name="poison.child")
def child() -> int:
    return add(1)


@fluxo.workflow(name="poison.parent")
def parent() -> str:
    try:
        return str(fluxo.start_child(child.options(id="kid")).result())
    except fluxo.WorkflowFailedError as exc:
        return f"the child failed: {exc.type_name}"


def test_a_damaged_child_fails_once_and_its_parent_hears_of_it(make_engine: MakeEngine) -> None:
    store = WatchedStore(fluxo.open_store("memory://"))
    engine = make_engine(parent, child, store=store)
    engine.start(parent.options(id="p"))
    assert execute(engine, "p") is _executor.Outcome.SUSPENDED  # the child is pending
    assert store.inner.get_run("kid").status is Status.PENDING
    from tests.stores.conformance.damage import damage_for

    damage_for(store.inner).set_kind("kid", 0, "from_the_future")
    store.loads_of.clear()

    serve_window(engine, store, lambda: store.inner.get_run("p").status.is_terminal)

    assert store.loads_of["kid"] == 1
    assert engine.handle("p").result(timeout=0) == "the child failed: fluxo.HistoryCorruptError"
    store.inner.close()


def test_a_corrupt_outcome_signal_fails_the_wait_once(make_engine: MakeEngine) -> None:
    store = WatchedStore(fluxo.open_store("memory://"))
    engine = make_engine(parent, child, store=store)
    engine.start(parent.options(id="p"))
    assert execute(engine, "p") is _executor.Outcome.SUSPENDED  # the child is pending
    store.send_signal("p", history.child_signal_name("kid"), b"\xffnot json", now=0.0)
    store.loads_of.clear()

    serve_window(engine, store, lambda: store.inner.get_run("p").status.is_terminal)

    assert store.loads_of["p"] == 1
    assert engine.handle("p").result(timeout=0) == "the child failed: fluxo.CorruptedOutcome"
    store.inner.close()


class RefusingStore(WatchedStore):
    """A watched store that refuses, for good, to record events of the names it is given."""

    def __init__(self, inner: fluxo.Store, *refused: str) -> None:
        super().__init__(inner)
        self.refused = set(refused)

    def append(self, run_id: str, expected_seq: int, events: Any, **kwargs: Any) -> None:
        if any(e.kind in self.refused or e.name in self.refused for e in events):
            raise fluxo.StoreRejectedError("value too long for type character varying(10)")
        self.inner.append(run_id, expected_seq, events, **kwargs)


STEPS: list[str] = []


@fluxo.step(name="poison.refused")
def refused_step() -> str:
    STEPS.append("refused")
    return "a result the store refuses"


@fluxo.workflow(name="poison.refusing")
def refusing() -> str:
    try:
        return refused_step()
    except Exception:  # the refusal is not the workflow's to swallow
        return "swallowed"


def test_a_record_the_store_refuses_fails_the_run_once(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    STEPS.clear()
    store = RefusingStore(fluxo.open_store("memory://"), "poison.refused")
    engine = make_engine(refusing, store=store)
    engine.start(refusing.options(id="r1"))

    with caplog.at_level(logging.WARNING):
        serve_window(engine, store, lambda: store.inner.get_run("r1").status.is_terminal)

    assert STEPS == ["refused"]
    assert store.loads_of["r1"] == 1
    with pytest.raises(fluxo.WorkflowFailedError, match="refused") as caught:
        engine.handle("r1").result(timeout=0)
    assert caught.value.is_instance(fluxo.StoreRejectedError)
    assert "position 1" in caught.value.error_message
    assert "character varying(10)" in caught.value.error_message
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1
    assert "refused" in logged[0]


def test_a_run_whose_failure_is_refused_too_waits_for_its_lease(make_engine: MakeEngine) -> None:
    STEPS.clear()
    store = RefusingStore(fluxo.open_store("memory://"), "poison.refused", "workflow_failed")
    engine = make_engine(refusing, store=store)
    engine.start(refusing.options(id="r1"))

    serve_window(engine, store, lambda: store.loads_of["r1"] >= 1)

    assert STEPS == ["refused"]
    assert store.loads_of["r1"] == 1
    assert store.claimed == ["r1"]
    assert store.inner.get_run("r1").status is Status.RUNNING  # leased, until it expires

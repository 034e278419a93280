"""Watched threads: a worker whose heartbeat (or another thread) dies logs it and stops.

A heartbeat that dies silently lets every lease expire while the worker goes on
executing. Each side thread runs under watch (``fluxo._watch``): its death is
logged at ERROR with the traceback, the executions it served stop at their next
durable call and give their leases back, and the worker stops: ``run()`` raises,
so that a supervisor restarts it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import pytest

import fluxo
from fluxo import _watch
from fluxo.stores.memory import MemoryStore

from .conftest import MakeEngine
from .helpers import WAIT, Box, SimulatedCrash, kinds

CALLS: collections.Counter[str] = collections.Counter()
GATE = {"entered": threading.Event(), "release": threading.Event()}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATE["entered"].clear()
    GATE["release"].clear()


@fluxo.step(name="watch.gated")
def gated() -> str:
    CALLS["gated"] += 1
    GATE["entered"].set()
    assert GATE["release"].wait(WAIT)
    return "through"


@fluxo.step(name="watch.after")
def after() -> int:
    CALLS["after"] += 1
    return 1


@fluxo.workflow(name="watch.flow")
def flow() -> str:
    value = gated()
    after()
    return value


@fluxo.step(name="watch.crashing")
def crashing() -> None:
    CALLS["crashing"] += 1
    raise SimulatedCrash("the thread goes down")


@fluxo.workflow(name="watch.crash_flow")
def crash_flow() -> None:
    crashing()


class FailingStore:
    """Forwards to a store; once armed, the heartbeat's reads and renewals raise a bug.

    ``RuntimeError`` is no ``StoreError``: nothing in the heartbeat is meant to
    catch it, as it would not catch a bug of its own.
    """

    def __init__(self, inner: fluxo.Store) -> None:
        self.inner = inner
        self.armed = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_runs(self, run_ids: Collection[str]) -> Any:
        if self.armed.is_set():
            raise RuntimeError("a bug in the heartbeat's read")
        return self.inner.get_runs(run_ids)

    def renew(self, worker_id: str, run_ids: Collection[str], *, lease_until: float) -> Any:
        if self.armed.is_set():
            raise RuntimeError("a bug in the heartbeat's renewal")
        return self.inner.renew(worker_id, run_ids, lease_until=lease_until)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll for something another thread does; fail after a generous bound."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _deaths(caplog: pytest.LogCaptureFixture, thread: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "fluxo._watch"
        and r.levelno == logging.ERROR
        and f"thread {thread} died" in r.getMessage()
    ]


@pytest.mark.parametrize("mode", ["run", "start"])
def test_a_worker_whose_heartbeat_dies_stops_its_runs_and_itself_with_a_logged_error(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.WARNING)
    store = FailingStore(MemoryStore())
    engine = make_engine(flow, store=store)  # type: ignore[arg-type]
    handle = engine.start(flow)
    worker = engine.worker(worker_id="w1", shutdown_timeout=WAIT)
    box = Box()
    if mode == "run":
        box.run(lambda: worker.run(install_signal_handlers=False))
    else:
        worker.start()
    assert GATE["entered"].wait(WAIT)

    store.armed.set()  # the heartbeat's next read (within half a second) raises
    assert worker._stopping.wait(WAIT), "the worker did not notice its heartbeat died"
    GATE["release"].set()  # the step returns, and the run stops at its next durable call

    stop = box.get if mode == "run" else worker.stop
    with pytest.raises(fluxo.FluxoError, match="fluxo-heartbeat-w1 died") as stopped:
        stop()
    assert isinstance(stopped.value.__cause__, RuntimeError)

    (death,) = _deaths(caplog, "fluxo-heartbeat-w1")
    assert death.exc_info is not None
    assert isinstance(death.exc_info[1], RuntimeError)
    assert any(
        r.levelno == logging.ERROR and "worker w1 stops" in r.getMessage() for r in caplog.records
    )
    run = engine.get_run(handle.id)
    assert run.status is fluxo.RunStatus.PENDING  # given back, not left to a dead lease
    assert run.lease_owner is None
    assert kinds(engine.history(handle.id)) == ["workflow_started", "step_completed"]
    assert CALLS == {"gated": 1}  # it ran no further without its lease

    store.armed.clear()
    assert engine.worker().process_one() == 1  # any worker finishes it
    assert handle.result(timeout=0) == "through"
    assert CALLS == {"gated": 1, "after": 1}


def test_a_worker_whose_heartbeat_died_claims_nothing_more(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    store = FailingStore(MemoryStore())
    engine = make_engine(flow, store=store)  # type: ignore[arg-type]
    first = engine.start(flow)
    worker = engine.worker(worker_id="w2", concurrency=1, shutdown_timeout=WAIT)
    worker.start()
    assert GATE["entered"].wait(WAIT)
    store.armed.set()
    assert worker._stopping.wait(WAIT)
    second = engine.start(flow)  # ready now, and the worker's slot frees up soon
    GATE["release"].set()

    with pytest.raises(fluxo.FluxoError, match="heartbeat"):
        worker.stop()
    assert engine.get_run(second.id).status is fluxo.RunStatus.PENDING
    assert kinds(engine.history(second.id)) == ["workflow_started"]
    assert engine.get_run(first.id).lease_owner is None


def test_engine_run_stops_when_its_heartbeat_dies_and_the_run_stays_intact(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    store = FailingStore(MemoryStore())
    engine = make_engine(flow, store=store)  # type: ignore[arg-type]
    box = Box()
    box.run(lambda: engine.run(flow.options(id="inline")))
    assert GATE["entered"].wait(WAIT)
    store.armed.set()
    wait_until(lambda: any(r.name == "fluxo._watch" for r in caplog.records), "the death")
    GATE["release"].set()  # the run stops at its next durable call

    with pytest.raises(fluxo.FluxoError, match="a worker resumes it from its history"):
        box.get()
    assert len([r for r in caplog.records if r.name == "fluxo._watch"]) == 1
    assert engine.get_run("inline").lease_owner is None
    store.armed.clear()
    assert engine.worker().process_one() == 1
    assert engine.handle("inline").result(timeout=0) == "through"
    assert CALLS == {"gated": 1, "after": 1}


def test_an_execution_thread_that_dies_stops_the_worker_loudly(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    engine = make_engine(crash_flow)
    handle = engine.start(crash_flow)
    worker = engine.worker(worker_id="w3")
    worker.start()
    assert worker._stopping.wait(WAIT), "the worker went on after an execution thread died"

    with pytest.raises(fluxo.FluxoError, match="died") as stopped:
        worker.stop()
    assert isinstance(stopped.value.__cause__, SimulatedCrash)
    deaths = [r for r in caplog.records if r.name == "fluxo._watch"]
    assert len(deaths) == 1
    assert deaths[0].exc_info is not None
    assert isinstance(deaths[0].exc_info[1], SimulatedCrash)
    # As after a crash: what was recorded stays, and the lease expires unrenewed.
    assert kinds(engine.history(handle.id)) == ["workflow_started"]
    assert engine.get_run(handle.id).lease_owner == "w3"
    assert CALLS == {"crashing": 1}


# -- the watch itself ------------------------------------------------------------------


def test_a_watched_thread_that_raises_is_logged_with_its_traceback_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    deaths: list[tuple[str, BaseException]] = []

    def broken() -> None:
        raise ValueError("nope")

    thread = _watch.start("fluxo-test-broken", broken, lambda n, e: deaths.append((n, e)))
    thread.join(WAIT)

    assert thread.name == "fluxo-test-broken"
    assert thread.daemon
    assert [(name, type(exc)) for name, exc in deaths] == [("fluxo-test-broken", ValueError)]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert "thread fluxo-test-broken died: ValueError: nope" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[1] is deaths[0][1]


def test_a_watched_thread_that_returns_is_no_death(caplog: pytest.LogCaptureFixture) -> None:
    deaths: list[str] = []
    thread = _watch.start("fluxo-test-fine", lambda: None, lambda n, e: deaths.append(n))
    thread.join(WAIT)
    assert deaths == []
    assert caplog.records == []


def test_an_owner_that_fails_to_stop_is_logged_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)

    def on_death(name: str, exc: BaseException) -> None:
        raise KeyError("owner")

    _watch.died("fluxo-test-owner", RuntimeError("first"), on_death)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("thread fluxo-test-owner died: RuntimeError: first")
    assert "stopping what needed it failed too" in messages[1]

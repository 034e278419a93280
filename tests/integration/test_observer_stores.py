"""Observers on every store: one that raises on every call changes no result and no history.

Each store runs the same workflow twice, once with an observer that raises on
every event (and from ``headers``) and once without any, and the two histories
must be the same event for event. A recording observer beside the raising one
shows that events were told all along.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

import fluxo
from fluxo import _observers, history
from tests._observer_doubles import Raising, RaisingFold

WAIT = 30.0


class RaisingLater(Raising):
    """The same, called from a thread of its own."""

    inline = False


class Kinds(fluxo.Observer):
    inline = True

    def __init__(self) -> None:
        self.kinds: set[str] = set()

    def _keep(self, event: fluxo.RunEvent) -> None:
        self.kinds.add(event.kind)

    run_started = run_resumed = run_suspended = run_completed = _keep
    step_started = step_completed = step_retried = timer_set = timer_fired = _keep
    signal_sent = signal_received = child_started = _keep


_attempts: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    _attempts.clear()


@fluxo.step(name="obsstores.flaky", retry=fluxo.Retry(max_attempts=3, initial=timedelta(0)))
def flaky(key: str) -> int:
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise ConnectionError("first attempt fails")
    return _attempts[key]


@fluxo.step(name="obsstores.double")
def double(n: int) -> int:
    return 2 * n


@fluxo.workflow(name="obsstores.child")
def child(n: int) -> int:
    return double(n)


@fluxo.workflow(name="obsstores.main")
def main(key: str) -> list[int]:
    attempts = flaky(key)
    doubled = fluxo.map(double, [1, 2])
    fluxo.sleep(timedelta(milliseconds=1))
    from_child = child(5)
    answer: int = fluxo.wait_for_signal("answer", type=int)
    return [attempts, *doubled, from_child, answer]


def waiting_for_signal(engine: fluxo.Engine, run_id: str) -> bool:
    try:
        events = engine.history(run_id)
    except (fluxo.RunNotFoundError, fluxo.StoreError):  # (no tables before the first run)
        return False
    return any(isinstance(event, history.SignalWaitStarted) for event in events)


def run_once(engine: fluxo.Engine, run_id: str) -> list[int]:
    """Run ``main`` inline in a thread, signal it once it waits, return its result."""
    outcome: list[Any] = []
    thread = threading.Thread(
        target=lambda: outcome.append(engine.run(main.options(id=run_id), run_id))
    )
    thread.start()
    deadline = time.monotonic() + WAIT
    while not waiting_for_signal(engine, run_id):  # signalled at the same point every time
        assert time.monotonic() < deadline
        time.sleep(0.005)
    engine.signal(run_id, "answer", 42)
    thread.join(WAIT)
    assert not thread.is_alive()
    return outcome[0]  # type: ignore[no-any-return]


def shape(engine: fluxo.Engine, run_id: str) -> list[tuple[str, str, bytes | None]]:
    """A run's history, its run id taken out of names (a child's id is made from it)."""
    found = []
    for event in engine.history(run_id):
        data = (
            None
            if isinstance(event, (history.TimerStarted, history.ValueRecorded))
            else (event.data)
        )
        if isinstance(event, history.StepAttemptFailed):
            data = None  # holds a traceback
        if data is not None:
            data = data.replace(run_id.encode(), b"RUN")
        found.append((event.kind, event.name.replace(run_id, "RUN"), data))
    return found


def test_an_observer_that_raises_changes_no_result_and_no_history(
    store: fluxo.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_observers, "KEEP", 1)  # every execution's end folds the step times
    loud, quiet, kinds, folding = Raising(), RaisingLater(), Kinds(), RaisingFold()
    workflows = [main, child]
    observers = [loud, quiet, kinds, folding]
    with fluxo.Engine(store, workflows=workflows, observers=observers) as observed:
        assert run_once(observed, "observed") == [2, 2, 4, 10, 42]
        assert observed.flush_observers(WAIT)
        observed_history = shape(observed, "observed")
        assert observed.get_run("observed").headers == {}  # headers() raised: none recorded
    with fluxo.Engine(store, workflows=workflows) as plain:
        assert run_once(plain, "plain") == [2, 2, 4, 10, 42]
        assert shape(plain, "plain") == observed_history
    assert loud.calls > 0
    assert quiet.calls == loud.calls  # called for every event, from its own thread
    assert folding.folds > 0  # its step times were folded (and it raised) as executions ended
    assert {
        "run_started",
        "run_resumed",
        "step_started",
        "step_retried",
        "step_completed",
        "timer_set",
        "timer_fired",
        "child_started",
        "signal_sent",
        "signal_received",
        "run_completed",
    } <= kinds.kinds

"""``@fluxo.step(timeout=...)``: an attempt past its timeout is abandoned and fails.

A timed-out attempt's thread cannot be killed; these tests release it at the end
so no thread outlives its test.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history

from .conftest import MakeEngine
from .helpers import WAIT, execute, kinds, no_sleep

Outcome = _executor.Outcome


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds timed-out attempts; opened at teardown so their threads end."""
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "5", True, timedelta(0)])
def test_a_bad_timeout_is_refused_at_decoration(bad: Any) -> None:
    with pytest.raises(fluxo.DefinitionError, match="positive timedelta or number of seconds"):
        fluxo.step(timeout=bad)


def test_a_timeout_is_kept_in_seconds() -> None:
    @fluxo.step(name="to.timed", timeout=timedelta(milliseconds=1500))
    def timed() -> None: ...

    @fluxo.step(name="to.untimed")
    def untimed() -> None: ...

    assert timed.timeout == 1.5
    assert untimed.timeout is None


def test_a_step_within_its_timeout_behaves_as_usual(make_engine: MakeEngine) -> None:
    threads: list[str] = []
    kinds_seen: list[tuple[bool, bool]] = []

    @fluxo.step(name="to.quick", timeout=WAIT)
    def quick(x: int) -> int:
        threads.append(threading.current_thread().name)
        assert not fluxo.in_workflow()  # inside a step, as always
        return x + 1

    @fluxo.step(name="to.raises", timeout=WAIT)
    def raises() -> None:
        raise KeyError("k")

    @fluxo.workflow(name="to.usual")
    def usual() -> str:
        try:
            raises()
        except fluxo.StepError as exc:
            kinds_seen.append((exc.is_instance(KeyError), exc.is_instance(fluxo.StepTimeout)))
        return str(quick(1))

    engine = make_engine(usual)
    handle = engine.start(usual)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "2"
    assert threads == ["fluxo-step-to.quick"]  # an attempt thread of its own
    assert kinds_seen == [(True, False)]


def test_a_timed_out_step_fails_with_step_timeout(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    @fluxo.step(name="to.stuck", timeout=0.05)
    def stuck() -> str:
        gate.wait(WAIT)
        return "too late"

    @fluxo.workflow(name="to.stuck_flow")
    def stuck_flow() -> str:
        try:
            stuck()
        except fluxo.StepError as exc:
            return f"{exc.is_instance(fluxo.StepTimeout)} {exc.is_instance(TimeoutError)} " + (
                exc.error_message
            )
        return "no timeout"

    engine = make_engine(stuck_flow)
    handle = engine.start(stuck_flow)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == (
        "True True step 'to.stuck' did not finish within its timeout of 0.05s; its thread was "
        "abandoned and may still be running"
    )
    events = engine.history(handle.id)
    assert kinds(events) == ["workflow_started", "step_failed", "workflow_completed"]
    info = engine.codec.decode(events[1].data or b"", Any)
    assert info["type"] == "fluxo.StepTimeout"


def test_a_timeout_is_a_failed_attempt_that_retries(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    attempts: list[int] = []
    sleeps: list[float] = []

    @fluxo.step(name="to.slow_once", timeout=0.05, retry=fluxo.Retry(max_attempts=3, initial=2))
    def slow_once() -> int:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            gate.wait(WAIT)  # the first attempt hangs
        return len(attempts)

    @fluxo.workflow(name="to.retried")
    def retried() -> int:
        return slow_once()

    engine = make_engine(retried)
    handle = engine.start(retried)
    assert execute(engine, handle.id, hook=no_sleep(sleeps)) is Outcome.COMPLETED
    assert handle.result(timeout=1) == 2
    assert sleeps == [2]
    assert kinds(engine.history(handle.id))[1:] == [
        "step_attempt_failed",
        "step_completed",
        "workflow_completed",
    ]


def test_a_parallel_branch_times_out_on_its_own(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    @fluxo.step(name="to.branch", timeout=0.05)
    def branch(index: int) -> int:
        if index == 1:
            gate.wait(WAIT)
        return index

    @fluxo.workflow(name="to.fan")
    def fan() -> str:
        try:
            fluxo.map(branch, range(3))
        except fluxo.StepError as exc:
            return f"{exc.step}: {exc.type_name}"
        return "no timeout"

    engine = make_engine(fan)
    handle = engine.start(fan)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "to.branch: fluxo.StepTimeout"
    outcomes = {
        e.name: e.kind for e in engine.history(handle.id) if isinstance(e, history.BRANCH_KINDS)
    }
    assert outcomes == {
        "to.branch#0": "branch_completed",
        "to.branch#1": "branch_failed",
        "to.branch#2": "branch_completed",
    }


def test_outside_a_workflow_a_timed_step_is_a_plain_call() -> None:
    @fluxo.step(name="to.plain", timeout=0.001)
    def plain() -> str:
        return threading.current_thread().name

    assert plain() == threading.current_thread().name

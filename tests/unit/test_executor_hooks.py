"""The executor's hooks for tooling: ``step_runner``, ``replay_only``, ``restart_after_record``.

The test environment and the replayer build on these; here they are tested on
their own, through ``Engine.execute_claimed``'s ``context_hook``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history
from fluxo.stores.memory import MemoryStore

from .conftest import MakeEngine
from .helpers import FakeClock, execute, kinds

Outcome = _executor.Outcome

RAN: list[str] = []


@fluxo.step(name="hooks.double")
def double(x: int) -> int:
    RAN.append("double")
    return 2 * x


@fluxo.step(name="hooks.shout")
def shout(text: str) -> str:
    RAN.append("shout")
    return text.upper()


@fluxo.workflow(name="hooks.flow")
def flow(x: int) -> str:
    y = double(x)
    fluxo.sleep(60)
    return shout(f"n{y}")


@fluxo.workflow(name="hooks.failing")
def failing(x: int) -> int:
    double(x)
    raise ValueError("no")


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


def _replay_only(context: _executor.RunContext) -> None:
    context.replay_only = True


class _ReadOnlyStore(MemoryStore):
    """A memory store that fails the test on any write after it is frozen."""

    frozen = False

    def append(self, *args: Any, **kwargs: Any) -> None:
        assert not self.frozen, "replay_only wrote to the store"
        super().append(*args, **kwargs)

    def send_signal(self, *args: Any, **kwargs: Any) -> None:
        assert not self.frozen, "replay_only sent a signal"
        super().send_signal(*args, **kwargs)


def _replay(engine: fluxo.Engine, run_id: str) -> tuple[Outcome, _executor.RunContext]:
    """Replay ``run_id`` from its stored history with ``replay_only`` set."""
    state = engine.store.load(run_id)
    context = _executor.RunContext(
        state=state,
        workflow=engine.lookup(state.run.workflow),
        store=engine.store,
        codec=engine.codec,
        clock=engine.clock,
    )
    context.replay_only = True
    return context.execute(), context


def test_step_runner_replaces_the_live_call_and_its_result_is_recorded(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(flow)
    handle = engine.start(flow, 4)
    calls: list[tuple[str, tuple[Any, ...]]] = []

    def runner(step: fluxo.Step[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        calls.append((step.name, tuple(args)))
        return 100 if step.name == "hooks.double" else "stubbed"

    def hook(context: _executor.RunContext) -> None:
        context.step_runner = runner

    assert execute(engine, handle.id, hook=hook) is Outcome.SUSPENDED
    clock.advance(61)
    assert execute(engine, handle.id, hook=hook) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "stubbed"
    assert calls == [("hooks.double", (4,)), ("hooks.shout", ("n100",))]
    assert RAN == []  # the real functions never ran


def test_restart_after_record_replays_every_position_once_more(make_engine: MakeEngine) -> None:
    engine = make_engine(flow)
    handle = engine.start(flow, 3)
    contexts: list[_executor.RunContext] = []

    def hook(context: _executor.RunContext) -> None:
        context.restart_after_record = True
        contexts.append(context)

    assert execute(engine, handle.id, hook=hook) is Outcome.SUSPENDED
    # double recorded (restart), then the timer suspends the run: two executions.
    assert len(contexts) == 2
    assert RAN == ["double"]
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_completed",
        "timer_started",
    ]


def test_replay_only_stops_at_the_end_of_an_inflight_history(make_engine: MakeEngine) -> None:
    store = _ReadOnlyStore()
    engine = make_engine(flow, store=store)
    handle = engine.start(flow, 3)
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    RAN.clear()
    store.frozen = True
    outcome, context = _replay(engine, handle.id)
    assert outcome is Outcome.REPLAYED
    assert context.error is None
    assert RAN == []


def test_replay_only_matches_a_completed_history(make_engine: MakeEngine, clock: FakeClock) -> None:
    store = _ReadOnlyStore()
    engine = make_engine(flow, store=store)
    handle = engine.start(flow, 3)
    execute(engine, handle.id)
    clock.advance(61)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    RAN.clear()
    store.frozen = True
    outcome, _ = _replay(engine, handle.id)
    assert outcome is Outcome.REPLAYED
    assert RAN == []


def test_replay_only_matches_a_failed_history(make_engine: MakeEngine) -> None:
    store = _ReadOnlyStore()
    engine = make_engine(failing, store=store)
    handle = engine.start(failing, 1)
    assert execute(engine, handle.id) is Outcome.FAILED
    store.frozen = True
    outcome, _ = _replay(engine, handle.id)
    assert outcome is Outcome.REPLAYED


def test_replay_only_reports_changed_code_without_recording(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = _ReadOnlyStore()
    engine = make_engine(flow, store=store)
    handle = engine.start(flow, 3)
    execute(engine, handle.id)
    clock.advance(61)
    execute(engine, handle.id)
    RAN.clear()
    store.frozen = True

    @fluxo.workflow(name="hooks.flow")
    def changed(x: int) -> str:
        return shout(str(x))  # the recorded history called double first

    state = engine.store.load(handle.id)
    context = _executor.RunContext(
        state=state, workflow=changed, store=store, codec=engine.codec, clock=engine.clock
    )
    context.replay_only = True
    assert context.execute() is Outcome.FAILED
    assert context.error is not None
    assert "hooks.shout" in context.error.message
    assert "hooks.double" in context.error.message
    assert RAN == []


def test_replay_only_reports_a_workflow_that_ends_differently(make_engine: MakeEngine) -> None:
    store = _ReadOnlyStore()
    engine = make_engine(failing, store=store)
    handle = engine.start(failing, 1)
    execute(engine, handle.id)
    store.frozen = True

    @fluxo.workflow(name="hooks.failing")
    def now_returns(x: int) -> int:
        return double(x)

    state = engine.store.load(handle.id)
    context = _executor.RunContext(
        state=state, workflow=now_returns, store=store, codec=engine.codec, clock=engine.clock
    )
    context.replay_only = True
    assert context.execute() is Outcome.FAILED
    assert context.error is not None
    assert context.error.type.endswith("NondeterminismError")
    assert [e.kind for e in engine.store.load(handle.id).events][-1] == (
        history.WorkflowFailed.kind
    )

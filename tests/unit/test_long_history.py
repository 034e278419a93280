"""A workflow with a history of 10,000 steps completes and resumes with one read.

No timings here: ``benchmarks/long_history.py`` measures whether a step costs
more as the history grows. These tests pin what must hold at any speed.
"""

from __future__ import annotations

import fluxo
from fluxo import _executor, history

from .conftest import MakeEngine
from .helpers import CountingStore, FakeClock, execute

STEPS = 10_000


@fluxo.step(name="long.noop")
def noop(i: int) -> int:
    return i


@fluxo.workflow(name="long.steps_then_sleep")
def steps_then_sleep(n: int) -> int:
    total = 0
    for i in range(n):
        total += noop(i)
    fluxo.sleep(60)
    return total + noop(-1)


def test_ten_thousand_steps_complete_and_a_resume_reads_the_history_once(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = CountingStore(fluxo.open_store("memory://"))
    engine = make_engine(steps_then_sleep, store=store)  # type: ignore[arg-type]
    handle = engine.start(steps_then_sleep, STEPS)
    assert execute(engine, handle.id) is _executor.Outcome.SUSPENDED
    assert len(engine.history(handle.id)) == 1 + STEPS + 1  # started, the steps, the timer

    clock.advance(60)
    store.loads = 0
    assert execute(engine, handle.id) is _executor.Outcome.COMPLETED
    assert store.loads == 1  # the whole history in one read, never one per step

    assert handle.result(timeout=0) == STEPS * (STEPS - 1) // 2 - 1
    events = engine.history(handle.id)
    assert len(events) == 1 + STEPS + 4  # + timer fired, the last step, completed
    assert sum(isinstance(e, history.StepCompleted) for e in events) == STEPS + 1
    assert [e.kind for e in events[-4:]] == [
        "timer_started",
        "timer_fired",
        "step_completed",
        "workflow_completed",
    ]

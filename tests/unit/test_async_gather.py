"""``asyncio.gather`` and ``TaskGroup`` over step calls in ``async def`` workflows.

The step calls a workflow makes until its event loop runs out of work are made
together: two or more as one parallel block whose branches run at once, one
alone as a plain step. No timings here: concurrency is proven by steps that
cannot finish unless all of them have started.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

import fluxo
from fluxo.testing import WorkflowEnvironment, replay

live: list[str] = []
_meeting: dict[str, object] = {}
_lock = threading.Lock()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    live.clear()
    _meeting.clear()


@fluxo.step(name="gather.meet", timeout=20, retry=fluxo.Retry(max_attempts=1))
async def meet(i: int, n: int) -> int:
    """Finish only once ``n`` calls have started: run one after another, it times out."""
    with _lock:
        arrived = _meeting.setdefault("arrived", [])
        assert isinstance(arrived, list)
        arrived.append(i)
        everyone = _meeting.setdefault("everyone", asyncio.Event())
        assert isinstance(everyone, asyncio.Event)
        if len(arrived) == n:
            everyone.set()
    await everyone.wait()
    live.append(f"meet {i}")
    return i * 10


@fluxo.step(name="gather.plain_meet", timeout=20, retry=fluxo.Retry(max_attempts=1))
def plain_meet(i: int, n: int) -> int:
    """:func:`meet` for a plain step, on a thread."""
    with _lock:
        arrived = _meeting.setdefault("plain", [])
        assert isinstance(arrived, list)
        arrived.append(i)
        everyone = _meeting.setdefault("plain_event", threading.Event())
        assert isinstance(everyone, threading.Event)
        if len(arrived) == n:
            everyone.set()
    assert everyone.wait(20), "the plain steps did not run at once"
    live.append(f"plain {i}")
    return i


@fluxo.step(name="gather.note")
async def note(label: str) -> str:
    live.append(label)
    return label


@fluxo.step(name="gather.refuse", retry=fluxo.Retry(max_attempts=1))
async def refuse(why: str) -> str:
    live.append(f"refuse {why}")
    raise ValueError(why)


@fluxo.workflow(name="gather.gathered")
async def gathered(n: int) -> list[int]:
    return list(await asyncio.gather(*(meet(i, n) for i in range(n))))


@fluxo.workflow(name="gather.grouped")
async def grouped(n: int) -> list[int]:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(meet(i, n)) for i in range(n)]
    return [task.result() for task in tasks]


@fluxo.workflow(name="gather.mixed")
async def mixed() -> list[int]:
    """Async and plain steps gathered together."""
    made = await asyncio.gather(
        meet(0, 2), meet(1, 2), *(plain_meet.call_async(i, 2) for i in (0, 1))
    )
    return list(made)


@fluxo.workflow(name="gather.pipelines")
async def pipelines() -> list[str]:
    """Two tasks, each awaiting one step and then another: two blocks of two."""

    async def pipeline(name: str) -> str:
        first = await note(f"{name}-1")
        return await note(f"{first}+{name}-2")

    return list(await asyncio.gather(pipeline("a"), pipeline("b")))


@fluxo.workflow(name="gather.one_by_one")
async def one_by_one() -> str:
    first = await note("first")
    return await note(f"{first} then second")


@fluxo.workflow(name="gather.with_failure")
async def with_failure() -> list[str]:
    made = await asyncio.gather(note("fine"), refuse("no"), return_exceptions=True)
    return [f"{type(x).__name__}: {x}" if isinstance(x, BaseException) else x for x in made]


@fluxo.workflow(name="gather.barrier")
async def barrier() -> str:
    """A step called, then a timer before it is awaited: the step is recorded first."""
    pending = note("before the timer")
    await fluxo.sleep_async(timedelta(minutes=5))
    return await pending


WORKFLOWS = [gathered, grouped, mixed, pipelines, one_by_one, with_failure, barrier]


@pytest.fixture
def engine() -> Iterator[fluxo.Engine]:
    with fluxo.Engine("memory://", workflows=WORKFLOWS) as made:
        yield made


def kinds(engine: fluxo.Engine | WorkflowEnvironment, run_id: str) -> list[str]:
    return [e.kind for e in engine.history(run_id)]


def test_gathered_steps_run_at_once_as_one_parallel_block(engine: fluxo.Engine) -> None:
    assert engine.run(gathered.options(id="g"), 10) == [i * 10 for i in range(10)]

    assert kinds(engine, "g") == [
        "workflow_started",
        "parallel_started",
        *["branch_completed"] * 10,
        "workflow_completed",
    ]
    assert sorted(live) == sorted(f"meet {i}" for i in range(10))


def test_a_forced_replay_of_a_gather_agrees_with_the_live_run(engine: fluxo.Engine) -> None:
    engine.run(gathered.options(id="g-replay"), 8)
    live.clear()

    replay(engine.export_history("g-replay"), workflows=WORKFLOWS)  # raises on a mismatch

    assert live == []


def test_a_gather_replays_the_same_after_every_record() -> None:
    with WorkflowEnvironment(workflows=WORKFLOWS) as env:  # restarts after each record
        assert env.run(gathered.options(id="g-env"), 6) == [0, 10, 20, 30, 40, 50]
        assert kinds(env, "g-env").count("branch_completed") == 6
    assert sorted(live) == sorted(f"meet {i}" for i in range(6))  # each ran once


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is Python 3.11+")
def test_a_task_group_of_step_calls_runs_them_at_once(engine: fluxo.Engine) -> None:
    assert engine.run(grouped.options(id="tg"), 5) == [0, 10, 20, 30, 40]
    assert kinds(engine, "tg")[1:-1] == ["parallel_started", *["branch_completed"] * 5]


def test_async_and_plain_steps_gathered_together_run_at_once(engine: fluxo.Engine) -> None:
    assert engine.run(mixed.options(id="mixed")) == [0, 10, 0, 1]
    assert sorted(live) == ["meet 0", "meet 1", "plain 0", "plain 1"]


def test_tasks_that_await_in_turn_make_a_block_per_round(engine: fluxo.Engine) -> None:
    assert engine.run(pipelines.options(id="p")) == ["a-1+a-2", "b-1+b-2"]
    assert kinds(engine, "p")[1:-1] == [
        "parallel_started",
        "branch_completed",
        "branch_completed",
        "parallel_started",
        "branch_completed",
        "branch_completed",
    ]


def test_steps_awaited_one_by_one_are_recorded_as_plain_steps(engine: fluxo.Engine) -> None:
    assert engine.run(one_by_one.options(id="seq")) == "first then second"
    assert kinds(engine, "seq") == [
        "workflow_started",
        "step_completed",
        "step_completed",
        "workflow_completed",
    ]


def test_each_gathered_call_gets_its_own_outcome(engine: fluxo.Engine) -> None:
    assert engine.run(with_failure.options(id="fail")) == [
        "fine",
        "StepError: step 'gather.refuse' failed after 1 attempt: builtins.ValueError: no",
    ]
    events = engine.history("fail")
    assert [e.kind for e in events[2:4]] == sorted(["branch_completed", "branch_failed"])
    live.clear()
    replay(engine.export_history("fail"), workflows=WORKFLOWS)
    assert live == []


def test_a_step_not_yet_made_is_recorded_before_the_next_durable_call() -> None:
    with WorkflowEnvironment(workflows=WORKFLOWS) as env:
        handle = env.start(barrier.options(id="b"))
        env.advance(timedelta(minutes=5))
        assert handle.result() == "before the timer"
        assert kinds(env, "b")[1:3] == ["step_completed", "timer_started"]


def test_a_gather_whose_branches_changed_is_caught_on_replay(engine: fluxo.Engine) -> None:
    engine.run(gathered.options(id="g-changed"), 3)
    exported = engine.export_history("g-changed")

    @fluxo.workflow(name="gather.gathered")
    async def changed(n: int) -> list[int]:
        return list(await asyncio.gather(*(meet(i, n) for i in range(n + 1))))

    with pytest.raises(fluxo.NondeterminismError, match="parallel"):
        replay(exported, workflows=[changed])


def test_a_step_called_from_another_thread_of_an_async_workflow_is_refused(
    engine: fluxo.Engine,
) -> None:
    @fluxo.workflow(name="gather.threaded")
    async def threaded() -> str:
        made = await asyncio.to_thread(lambda: note("from a thread"))
        return str(made)

    with fluxo.Engine("memory://", workflows=[threaded]) as other:
        run = other.start(threaded)
        with (
            other.worker(),
            pytest.raises(fluxo.WorkflowFailedError, match="outside the event loop"),
        ):
            run.result(timeout=30)
    assert live == []

"""Step calls made together run together: attacked where asyncio and durability meet.

Each test runs a workflow live, then checks that a forced replay of its history
agrees (and runs no step), or runs it under ``WorkflowEnvironment``, which
replays after every record. No test asserts a timing: orders are forced with
events, and the one blocked thread waits on a gate the test opens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import fluxo
from fluxo import _aio, _executor
from fluxo.testing import WorkflowEnvironment, replay

from .conftest import MakeEngine
from .helpers import WAIT, FakeClock, SimulatedCrash, execute, kinds

Outcome = _executor.Outcome

live: list[str] = []
_lock = threading.Lock()

needs_task_group = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio.TaskGroup is Python 3.11+"
)


@pytest.fixture(autouse=True)
def _no_asyncio_complaints(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No "exception was never retrieved" from the workflow loops, once garbage is collected."""
    live.clear()
    yield
    gc.collect()
    complaints = [
        r.getMessage()
        for r in caplog.get_records("call") + caplog.records
        if r.name == "asyncio" and r.levelname == "ERROR"
    ]
    assert complaints == []


def ran(label: str) -> None:
    with _lock:
        live.append(label)


@fluxo.step(name="adv.note")
async def note(label: str) -> str:
    ran(label)
    return label


@fluxo.step(name="adv.refuse", retry=fluxo.Retry(max_attempts=1))
async def refuse(why: str) -> str:
    ran(f"refuse {why}")
    raise ValueError(why)


def check_replay(engine: fluxo.Engine, run_id: str, *workflows: fluxo.Workflow[Any, Any]) -> None:
    """A forced replay of the run's history agrees with the code and runs no step."""
    before = list(live)
    assert replay(engine.export_history(run_id), workflows=workflows).ok
    assert live == before


# -- how calls form batches ---------------------------------------------------------------


@fluxo.workflow(name="adv.staggered")
async def staggered() -> list[str]:
    """Tasks that reach their step after 0, 1, 2 and 0 turns of the loop."""

    async def after(turns: int, label: str) -> str:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await note(label)

    return list(await asyncio.gather(*(after(t, f"s{i}") for i, t in enumerate((0, 1, 2, 0)))))


def test_tasks_reaching_their_step_after_different_turns_batch_alike_live_and_replayed() -> None:
    shape = [
        "workflow_started",
        "parallel_started",  # s0 and s3: the tasks that called at once
        "branch_completed",
        "branch_completed",
        "step_completed",  # s1, alone a turn later
        "step_completed",  # s2
        "workflow_completed",
    ]
    with fluxo.Engine("memory://", workflows=[staggered]) as engine:
        assert engine.run(staggered.options(id="st")) == ["s0", "s1", "s2", "s3"]
        assert kinds(engine.history("st")) == shape
        check_replay(engine, "st", staggered)
    with WorkflowEnvironment(workflows=[staggered]) as env:
        assert env.run(staggered.options(id="st")) == ["s0", "s1", "s2", "s3"]
        assert kinds(env.history("st")) == shape


@fluxo.workflow(name="adv.completed_order")
async def completed_order() -> list[str]:
    tasks = [asyncio.ensure_future(note(x)) for x in ("c", "a", "b")]
    return [await done for done in asyncio.as_completed(tasks)]


@fluxo.workflow(name="adv.first_completed")
async def first_completed() -> list[int]:
    tasks = [asyncio.ensure_future(note(str(i))) for i in range(3)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    return [len(done), len(pending)]


def test_a_batch_settles_at_once_so_as_completed_yields_call_order() -> None:
    """Design: a batch's awaiters all wake together, in call order, live and on replay."""
    workflows = [completed_order, first_completed]
    with fluxo.Engine("memory://", workflows=workflows) as engine:
        assert engine.run(completed_order.options(id="ac")) == ["c", "a", "b"]
        assert engine.run(first_completed.options(id="fc")) == [3, 0]
        check_replay(engine, "ac", *workflows)
        check_replay(engine, "fc", *workflows)
    with WorkflowEnvironment(workflows=workflows) as env:  # Restart reaches every task
        assert env.run(completed_order.options(id="ac")) == ["c", "a", "b"]
        assert env.run(first_completed.options(id="fc")) == [3, 0]


@fluxo.workflow(name="adv.split")
async def split() -> list[str]:
    first = note("a")
    fluxo.now()  # a durable call: the steps called before it are made first
    return [await first, await note("b")]


def test_a_durable_call_between_two_step_calls_splits_their_batch() -> None:
    with fluxo.Engine("memory://", workflows=[split]) as engine:
        assert engine.run(split.options(id="sp")) == ["a", "b"]
        assert kinds(engine.history("sp"))[1:-1] == [
            "step_completed",
            "value_recorded",
            "step_completed",
        ]
        check_replay(engine, "sp", split)


# -- awaiters cancelled, calls never awaited ---------------------------------------------


@fluxo.workflow(name="adv.withdrawn")
async def withdrawn() -> str:
    async def call() -> str:
        return await note("withdrawn")

    task = asyncio.ensure_future(call())
    await asyncio.sleep(0)  # the task calls the step, which waits in the batch
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return "not cancelled"


def test_a_call_whose_awaiter_is_cancelled_before_its_batch_is_made_is_not_made() -> None:
    with fluxo.Engine("memory://", workflows=[withdrawn]) as engine:
        assert engine.run(withdrawn.options(id="w")) == "cancelled"
        assert kinds(engine.history("w")) == ["workflow_started", "workflow_completed"]
        check_replay(engine, "w", withdrawn)
    with WorkflowEnvironment(workflows=[withdrawn]) as env:
        assert env.run(withdrawn) == "cancelled"
    assert live == []


async def _invalid() -> str:
    raise ValueError("invalid order")


async def _charge() -> str:
    return await note("charged")


@fluxo.workflow(name="adv.aborted_group")
async def aborted_group(validate_first: bool) -> list[str]:
    try:
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined,unused-ignore]
            for make in (_invalid, _charge) if validate_first else (_charge, _invalid):
                group.create_task(make())
    except Exception as exc:  # ExceptionGroup (3.11+ only, like TaskGroup)
        return [repr(e) for e in exc.exceptions]  # type: ignore[attr-defined]
    return []


@needs_task_group
def test_a_task_group_aborted_before_its_batch_is_made_withdraws_the_calls() -> None:
    with fluxo.Engine("memory://", workflows=[aborted_group]) as engine:
        # The failing task ends first: the group cancels the sibling whose call waits.
        assert engine.run(aborted_group.options(id="tg1"), True) == ["ValueError('invalid order')"]
        assert kinds(engine.history("tg1")) == ["workflow_started", "workflow_completed"]
        assert live == []
        check_replay(engine, "tg1", aborted_group)
        # The call was made when the loop ran out of work, before the group heard of
        # the failure: it is made and recorded, and a replay makes it too.
        assert engine.run(aborted_group.options(id="tg2"), False) == ["ValueError('invalid order')"]
        assert kinds(engine.history("tg2"))[1:-1] == ["step_completed"]
        assert live == ["charged"]
        check_replay(engine, "tg2", aborted_group)


@fluxo.workflow(name="adv.unawaited")
async def unawaited() -> str:
    refuse("nobody awaits")  # made all the same, with its batch
    task = asyncio.ensure_future(refuse("cancelled before it ran"))
    task.cancel()  # the call was made when refuse() was called, not by the task
    await note("after")
    return "done"


def test_calls_never_awaited_are_made_and_their_failures_are_quiet() -> None:
    with fluxo.Engine("memory://", workflows=[unawaited]) as engine:
        assert engine.run(unawaited.options(id="u")) == "done"
        recorded = kinds(engine.history("u"))
        assert recorded[1] == "parallel_started"
        assert sorted(recorded[2:-1]) == ["branch_completed", "branch_failed", "branch_failed"]
        check_replay(engine, "u", unawaited)
    with WorkflowEnvironment(workflows=[unawaited]) as env:
        assert env.run(unawaited) == "done"
    # (the autouse fixture: no "Future exception was never retrieved")


@fluxo.step(name="adv.signalled")
async def signalled() -> str:
    return "value"


@fluxo.workflow(name="adv.twice")
async def twice() -> list[str]:
    value = signalled()
    failed = refuse("twice")
    payload = fluxo.wait_for_signal_async("go", type=str)
    got = [await value, await value, await payload, await payload]
    for _ in range(2):
        try:
            await failed
        except fluxo.StepError as exc:
            got.append(exc.type_name)
    return got


def test_awaiting_a_durable_call_twice_gives_its_outcome_again() -> None:
    with WorkflowEnvironment(workflows=[twice]) as env:
        handle = env.start(twice.options(id="tw"))
        env.signal(handle.id, "go", "yes")
        assert handle.result() == [
            "value",
            "value",
            "yes",
            "yes",
            "builtins.ValueError",
            "builtins.ValueError",
        ]


# -- unwinding: finally blocks, cancellation, continue-as-new ----------------------------


@fluxo.workflow(name="adv.cleanup")
async def cleanup() -> str:
    try:
        return await fluxo.wait_for_signal_async("go", type=str)
    finally:
        await asyncio.gather(note("undo-a"), note("undo-b"))


def test_steps_in_finally_are_not_made_while_the_run_suspends_then_made_once() -> None:
    with WorkflowEnvironment(workflows=[cleanup]) as env:
        handle = env.start(cleanup.options(id="fin"))
        assert live == []  # the finally ran as the run suspended: nothing was made
        assert kinds(env.history("fin"))[-1] == "signal_wait_started"
        env.signal(handle.id, "go", "now")
        assert handle.result() == "now"
        assert kinds(env.history("fin"))[-5:] == [
            "signal_received",
            "parallel_started",
            "branch_completed",
            "branch_completed",
            "workflow_completed",
        ]
    assert sorted(live) == ["undo-a", "undo-b"]


def test_steps_in_finally_after_a_cancellation_run_as_one_block() -> None:
    with WorkflowEnvironment(workflows=[cleanup]) as env:
        handle = env.start(cleanup.options(id="fin-c"))
        env.cancel(handle.id)
        with pytest.raises(fluxo.WorkflowCancelledError):
            handle.result()
        assert kinds(env.history("fin-c"))[-5:] == [
            "cancel_requested",
            "parallel_started",
            "branch_completed",
            "branch_completed",
            "workflow_cancelled",
        ]
    assert sorted(live) == ["undo-a", "undo-b"]


contexts: list[_executor.RunContext] = []


@fluxo.step(name="adv.cancels")
async def cancels(i: int) -> int:
    ran(f"cancels {i}")
    contexts[-1].cancel_requested.set()  # as the heartbeat delivers engine.cancel
    return i


@fluxo.workflow(name="adv.cancelled_gather")
async def cancelled_gather(swallow: bool) -> list[str]:
    try:
        made = await asyncio.gather(*(cancels(i) for i in range(3)), return_exceptions=swallow)
    except fluxo.Cancelled:
        await note("compensate")
        raise
    return [type(x).__name__ for x in made]


@pytest.mark.parametrize("swallow", [False, True])
def test_a_cancellation_during_a_gathered_block_reaches_every_awaiter(
    make_engine: MakeEngine, swallow: bool
) -> None:
    contexts.clear()
    engine = make_engine(cancelled_gather, parallel_threads=1)  # one branch at a time
    handle = engine.start(cancelled_gather, swallow)
    outcome = execute(engine, handle.id, hook=contexts.append)
    assert live[0] == "cancels 0"
    events = kinds(engine.history(handle.id))
    assert events[1:4] == ["parallel_started", "branch_completed", "cancel_requested"]
    if swallow:
        # Design: return_exceptions=True hands the cancellation back as a value, as
        # asyncio hands back a child's CancelledError; the function saw it, and the
        # run completes unless the code re-raises it (docs/async.md).
        assert outcome is Outcome.COMPLETED
        # Design: as fluxo.parallel raises Cancelled at the block, every awaiter of
        # the block gets it, the one whose step completed (and is recorded) too.
        assert handle.result(timeout=1) == ["Cancelled"] * 3
    else:
        assert outcome is Outcome.CANCELLED
        assert events[-2:] == ["step_completed", "workflow_cancelled"]
        assert live[-1] == "compensate"
    check_replay(engine, handle.id, cancelled_gather)


@fluxo.workflow(name="adv.lost_cancel")
async def lost_cancel() -> str:
    async def background() -> None:
        await cancels(0)
        await note("taken here")  # the cancellation is delivered to this task alone

    left = asyncio.ensure_future(background())  # never awaited
    for _ in range(10):
        await asyncio.sleep(0)
    assert left.done()
    return "went on"


def test_a_cancellation_taken_by_a_task_nobody_awaits_is_lost_to_the_run_but_reported(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Design: Cancelled goes to the awaiters of the call that takes it, once."""
    contexts.clear()
    engine = make_engine(lost_cancel)
    handle = engine.start(lost_cancel)
    assert execute(engine, handle.id, hook=contexts.append) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "went on"
    assert kinds(engine.history(handle.id))[1:] == [
        "step_completed",
        "cancel_requested",
        "workflow_completed",
    ]
    check_replay(engine, handle.id, lost_cancel)
    gc.collect()
    reported = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert reported
    assert all("exception=Cancelled(" in m for m in reported)
    caplog.clear()


@fluxo.workflow(name="adv.chain")
async def chain(n: int) -> int:
    if n == 0:
        note("pending")  # not awaited
        asyncio.ensure_future(note("in a task"))  # noqa: RUF006 (never awaited either)
        fluxo.continue_as_new(n + 1)
    return n


def test_calls_pending_at_continue_as_new_are_made_before_the_run_ends() -> None:
    with WorkflowEnvironment(workflows=[chain]) as env:
        handle = env.start(chain.options(id="ch"), 0)
        assert handle.result() == 1
        assert kinds(env.history("ch"))[1:] == [
            "parallel_started",
            "branch_completed",
            "branch_completed",
            "continued_as_new",
        ]
    assert sorted(live) == ["in a task", "pending"]


# -- gathers that mix steps with other durable calls --------------------------------------


@fluxo.workflow(name="adv.kid")
async def kid(n: int) -> int:
    return len(await note(f"kid {n}"))


@fluxo.workflow(name="adv.mixed_calls")
async def mixed_calls() -> list[Any]:
    made = await asyncio.gather(
        note("a"),
        fluxo.sleep_async(timedelta(minutes=1)),
        note("b"),
        fluxo.wait_for_signal_async("go", type=str),
        note("c"),
        note("d"),
    )
    return list(made)


def test_a_gather_makes_timers_and_signal_waits_in_call_order_between_steps() -> None:
    """Design: a timer or signal wait is made when called, after the steps called before it."""
    with WorkflowEnvironment(workflows=[mixed_calls]) as env:
        handle = env.start(mixed_calls.options(id="mx"))
        env.advance(timedelta(minutes=1))
        env.signal(handle.id, "go", "yes")
        assert handle.result() == ["a", None, "b", "yes", "c", "d"]
        assert kinds(env.history("mx"))[1:-1] == [
            "step_completed",
            "timer_started",
            "timer_fired",
            "step_completed",
            "signal_wait_started",
            "signal_received",
            "parallel_started",  # c and d, called together after the wait
            "branch_completed",
            "branch_completed",
        ]


@fluxo.workflow(name="adv.kids_gathered")
async def kids_gathered() -> list[int]:
    return list(await asyncio.gather(kid(1), kid(22)))


@fluxo.workflow(name="adv.kids_started")
async def kids_started() -> list[int]:
    first = await fluxo.start_child_async(kid, 1)
    second = await fluxo.start_child_async(kid, 22)
    return list(await asyncio.gather(first.result_async(), second.result_async()))


def test_gathered_child_calls_run_one_by_one_and_started_children_run_at_once() -> None:
    """Design: ``await child(x)`` starts and awaits the child when called."""
    workflows = [kids_gathered, kids_started, kid]
    with WorkflowEnvironment(workflows=workflows) as env:
        assert env.run(kids_gathered.options(id="kg")) == [5, 6]
        assert kinds(env.history("kg"))[1:-1] == ["child_started", "child_completed"] * 2
        assert env.run(kids_started.options(id="ks")) == [5, 6]
        assert kinds(env.history("ks"))[1:-1] == [
            "child_started",
            "child_started",
            "child_completed",
            "child_completed",
        ]


# -- retries, timeouts and crashes inside a block -----------------------------------------

runs: dict[str, int] = {}
watched: list[tuple[fluxo.Engine, str]] = []


def count(label: str) -> int:
    with _lock:
        runs[label] = runs.get(label, 0) + 1
        return runs[label]


async def recorded(kind: str, at_least: int) -> None:
    """Wait, on the step loop, until the watched run's history has that many ``kind``."""
    engine, run_id = watched[-1]
    for _ in range(int(WAIT / 0.005)):
        if kinds(engine.history(run_id)).count(kind) >= at_least:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the run never recorded {at_least} {kind}")


@fluxo.step(name="adv.crashy")
async def crashy(label: str) -> str:
    if count(label) == 1 and label == "b2":
        await recorded("branch_completed", 5)  # round 1's three, and a2 and c2
        raise SimulatedCrash("the worker dies with b2 running")
    return label


@fluxo.workflow(name="adv.rounds")
async def rounds() -> list[str]:
    async def pipeline(name: str) -> str:
        first = await crashy(f"{name}1")
        return first + await crashy(f"{name}2")

    return list(await asyncio.gather(pipeline("a"), pipeline("b"), pipeline("c")))


def resume(engine: fluxo.Engine, clock: FakeClock, run_id: str) -> Outcome:
    """Let the crashed execution's lease expire, and execute the run again."""
    clock.advance(3600)
    return execute(engine, run_id, "resumer")


@pytest.fixture
def fresh_runs() -> Iterator[None]:
    runs.clear()
    watched.clear()
    yield
    watched.clear()


@pytest.mark.usefixtures("fresh_runs")
def test_a_crash_mid_block_resumes_by_forming_the_same_batches(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(rounds)
    handle = engine.start(rounds)
    watched.append((engine, handle.id))
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    check_replay(engine, handle.id, rounds)  # the history so far, round 2 half made
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == ["a1a2", "b1b2", "c1c2"]
    assert runs == {"a1": 1, "b1": 1, "c1": 1, "a2": 1, "b2": 2, "c2": 1}
    block = ["parallel_started", *["branch_completed"] * 3]
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        *block,
        *block,
        "workflow_completed",
    ]
    check_replay(engine, handle.id, rounds)


@fluxo.step(name="adv.flaky", retry=fluxo.Retry(max_attempts=3, initial=timedelta(0)))
async def flaky(label: str) -> str:
    attempt = count(label)
    if attempt == 1:
        raise ConnectionError(f"{label} flaked")
    if label == "q" and attempt == 2:
        await recorded("branch_completed", 1)  # p is done
        raise SimulatedCrash("the worker dies in q's second attempt")
    return label


@fluxo.workflow(name="adv.retried")
async def retried() -> list[str]:
    return list(await asyncio.gather(flaky("p"), flaky("q")))


@pytest.mark.usefixtures("fresh_runs")
def test_a_gathered_step_keeps_its_retry_budget_across_a_crash(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(retried)
    handle = engine.start(retried)
    watched.append((engine, handle.id))
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == ["p", "q"]
    assert runs == {"p": 2, "q": 3}  # q: one failure recorded, one lost to the crash
    events = engine.history(handle.id)
    assert sorted((e.kind, e.name) for e in events[2:-1]) == [
        ("branch_attempt_failed", "adv.flaky#0"),
        ("branch_attempt_failed", "adv.flaky#1"),
        ("branch_completed", "adv.flaky#0"),
        ("branch_completed", "adv.flaky#1"),
    ]
    check_replay(engine, handle.id, retried)
    with WorkflowEnvironment(workflows=[retried]) as env:  # replays after every record
        runs.clear()
        env.stub(flaky, lambda label: label)
        assert env.run(retried) == ["p", "q"]


gate = threading.Event()


@fluxo.step(name="adv.stuck", timeout=0.05, retry=fluxo.Retry(max_attempts=1))
async def stuck() -> str:
    await asyncio.Event().wait()  # never set: cancelled at the timeout
    return "never"


@fluxo.step(name="adv.plain_stuck", timeout=0.05, retry=fluxo.Retry(max_attempts=1))
def plain_stuck() -> str:
    gate.wait(WAIT)  # its thread is abandoned at the timeout; the test opens the gate
    return "late"


@fluxo.workflow(name="adv.timeouts")
async def timeouts() -> list[str]:
    made = await asyncio.gather(
        stuck(), plain_stuck.call_async(), note("fast"), return_exceptions=True
    )
    return [x.type_name if isinstance(x, fluxo.StepError) else str(x) for x in made]


def test_a_step_timeout_in_a_gather_fails_only_that_call() -> None:
    gate.clear()
    try:
        with fluxo.Engine("memory://", workflows=[timeouts]) as engine:
            expected = ["fluxo.StepTimeout", "fluxo.StepTimeout", "fast"]
            assert engine.run(timeouts.options(id="to")) == expected
            check_replay(engine, "to", timeouts)
    finally:
        gate.set()


def test_an_attempt_overdue_before_a_step_thread_took_it_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1)  # every step thread busy
    monkeypatch.setattr(_aio._shared, "threads", pool)
    busy, release = threading.Event(), threading.Event()
    pool.submit(lambda: (busy.set(), release.wait(WAIT)))
    assert busy.wait(WAIT)
    try:
        with pytest.raises(_aio.Overdue):
            _aio.run_on_thread(lambda: ran("overdue attempt"), 0.01)
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert live == []  # recorded as timed out: it must not run afterwards


def test_an_async_attempt_overdue_before_the_step_loop_began_it_is_closed() -> None:
    loop = _aio.step_loop()
    busy, release = threading.Event(), threading.Event()
    loop.call_soon_threadsafe(lambda: (busy.set(), release.wait(WAIT)))
    assert busy.wait(WAIT)

    async def attempt() -> None:
        ran("overdue attempt")

    try:
        with pytest.raises(_aio.Overdue):
            _aio.run_on_step_loop(attempt(), 0.01)
    finally:
        release.set()
    assert _aio.run_on_step_loop(asyncio.sleep(0, "free"), None) == "free"
    gc.collect()  # no "coroutine 'attempt' was never awaited" (warnings are errors)
    assert live == []


@fluxo.step(name="adv.exits", timeout=WAIT, retry=fluxo.Retry(max_attempts=1))
async def exits() -> str:
    raise SystemExit(3)  # a library that calls sys.exit() inside a step


@fluxo.workflow(name="adv.exiting")
async def exiting(awaited: bool) -> str:
    if awaited:
        return await exits()
    exits()  # never awaited
    fluxo.now()  # makes it first
    return await note("went on")


@pytest.fixture
def own_step_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A step loop for this test alone, stopped and closed after it."""
    monkeypatch.setattr(_aio._shared, "loop", None)
    yield
    loop = _aio._shared.loop
    if loop is not None:
        loop.call_soon_threadsafe(loop.stop)
        for _ in range(int(WAIT / 0.005)):
            if not loop.is_running():
                break
            threading.Event().wait(0.005)
        loop.close()


@pytest.mark.usefixtures("own_step_loop")
def test_system_exit_in_an_async_step_reaches_the_run_and_the_step_loop_lives_on() -> None:
    with fluxo.Engine("memory://", workflows=[exiting]) as engine:
        for awaited in (True, False):
            with pytest.raises(SystemExit):
                engine.run(exiting.options(id=f"exit-{awaited}"), awaited)
        assert _aio.run_on_step_loop(asyncio.sleep(0, "alive"), WAIT) == "alive"
    assert live == []  # the run stopped where the step raised it: "went on" never ran

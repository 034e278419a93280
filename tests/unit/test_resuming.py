"""Resuming a cancelled run (``engine.resume``): where it is safe, and how it goes on.

Runs on the memory store with a fake clock; workers are driven with
``process_one()``. A resumed run replays its history without the cancellation and
goes on from the durable call that took delivery of it, so no step runs twice.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner

import fluxo
from fluxo import _executor, cli, history
from fluxo.stores.memory import MemoryStore
from fluxo.testing import _replay, replay

from .conftest import MakeEngine
from .helpers import FakeClock, execute, kinds, named
from .test_cancellation import CancelAtTheEnd

Status = fluxo.RunStatus
Outcome = _executor.Outcome
CALLS: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


@fluxo.step(name="rs.prepare")
def prepare() -> str:
    CALLS["prepare"] += 1
    return "p"


@fluxo.step(name="rs.finish")
def finish(text: str) -> str:
    CALLS["finish"] += 1
    return text + "!"


@fluxo.step(name="rs.cleanup")
def cleanup() -> None:
    CALLS["cleanup"] += 1


@fluxo.workflow(name="rs.waiter")
def waiter() -> str:
    got = fluxo.wait_for_signal("go", type=str)
    return finish(prepare() + got)


@fluxo.workflow(name="rs.stepper")
def stepper() -> str:
    first = prepare()
    return finish(first + fluxo.wait_for_signal("go", type=str))


@fluxo.workflow(name="rs.tidy")
def tidy() -> str:
    prepare()
    try:
        return fluxo.wait_for_signal("go", type=str)
    finally:
        cleanup()


@fluxo.workflow(name="rs.looping")
def looping(n: int) -> str:
    if n > 0:
        fluxo.continue_as_new(n - 1)
    return finish(fluxo.wait_for_signal("go", type=str))


@fluxo.workflow(name="rs.queued", queue="rs.q")
def queued() -> str:
    return finish(fluxo.wait_for_signal("go", type=str))


@fluxo.workflow(name="rs.boom")
def boom() -> str:
    raise ValueError("boom")


@fluxo.workflow(name="rs.parent")
def parent() -> str:
    prepare()
    try:
        return stepper()
    except fluxo.WorkflowCancelledError:
        return "child cancelled"


WORKFLOWS = [waiter, stepper, tidy, looping, queued, boom, parent]


@pytest.fixture
def engine(make_engine: MakeEngine) -> fluxo.Engine:
    return make_engine(*WORKFLOWS, queues=[fluxo.Queue("rs.q", concurrency=1)])


def run_all(engine: fluxo.Engine) -> None:
    """Execute every run that is ready, until none is."""
    worker = engine.worker(queues=["default", "rs.q"])
    while worker.process_one():
        pass


def cancelled_while_waiting(engine: fluxo.Engine, wf: Any = stepper, run_id: str = "r1") -> None:
    engine.start(wf.options(id=run_id))
    run_all(engine)
    assert engine.get_run(run_id).status is Status.WAITING
    engine.cancel(run_id)
    run_all(engine)
    assert engine.get_run(run_id).status is Status.CANCELLED


# -- what resumes -----------------------------------------------------------------------


def test_a_run_cancelled_while_waiting_resumes_gets_its_signal_and_completes(
    engine: fluxo.Engine,
) -> None:
    cancelled_while_waiting(engine)
    assert CALLS == {"prepare": 1}

    handle = engine.resume("r1")

    assert handle.id == "r1"
    run = engine.get_run("r1")
    assert (run.status, run.cancel_requested) == (Status.PENDING, False)
    run_all(engine)
    assert engine.get_run("r1").status is Status.WAITING  # waits for its signal again
    engine.signal("r1", "go", "x")
    run_all(engine)
    assert handle.result(timeout=0) == "px!"
    assert CALLS == {"prepare": 1, "finish": 1}  # no step ran twice
    assert kinds(engine.history("r1")) == [
        "workflow_started",
        "step_completed",
        "signal_wait_started",
        "cancel_requested",
        "workflow_cancelled",
        "run_retried",
        "signal_received",
        "step_completed",
        "workflow_completed",
    ]
    replay(engine.export_history("r1"), workflows=[stepper])  # no mismatch


def test_a_run_cancelled_before_it_began_runs_from_the_start(engine: fluxo.Engine) -> None:
    engine.start(waiter.options(id="r1"))
    engine.cancel("r1")
    assert kinds(engine.history("r1")) == [
        "workflow_started",
        "cancel_requested",
        "workflow_cancelled",
    ]

    engine.resume("r1")
    engine.signal("r1", "go", "y")
    run_all(engine)

    assert engine.handle("r1").result(timeout=0) == "py!"
    assert CALLS == {"prepare": 1, "finish": 1}
    replay(engine.export_history("r1"), workflows=[waiter])


def test_a_run_can_be_cancelled_and_resumed_again(engine: fluxo.Engine) -> None:
    cancelled_while_waiting(engine)
    engine.resume("r1")
    run_all(engine)
    engine.cancel("r1")
    run_all(engine)
    assert engine.get_run("r1").status is Status.CANCELLED

    engine.resume("r1")
    engine.signal("r1", "go", "z")
    run_all(engine)

    assert engine.handle("r1").result(timeout=0) == "pz!"
    assert CALLS == {"prepare": 1, "finish": 1}
    assert kinds(engine.history("r1")).count("run_retried") == 2
    replay(engine.export_history("r1"), workflows=[stepper])


def test_a_resumed_run_keeps_a_deadline_still_ahead(engine: fluxo.Engine, clock: FakeClock) -> None:
    engine.start(stepper.options(id="r1", timeout=timedelta(hours=1)))
    run_all(engine)
    engine.cancel("r1")
    run_all(engine)

    engine.resume("r1")
    engine.signal("r1", "go", "x")
    run_all(engine)

    assert engine.handle("r1").result(timeout=0) == "px!"


def test_the_latest_run_of_a_chain_is_resumed(engine: fluxo.Engine) -> None:
    engine.start(looping.options(id="loop"), 1)
    run_all(engine)
    engine.cancel("loop")
    run_all(engine)
    assert engine.get_run("loop~1", follow=False).status is Status.CANCELLED

    handle = engine.resume("loop")

    assert handle.id == "loop~1"
    engine.signal("loop", "go", "end")
    run_all(engine)
    assert engine.handle("loop").result(timeout=0) == "end!"
    assert engine.get_run("loop", follow=False).status is Status.COMPLETED


def test_a_run_of_a_named_queue_awaits_admission_again(engine: fluxo.Engine) -> None:
    cancelled_while_waiting(engine, queued, "q1")
    engine.start(queued.options(id="q2"))
    run_all(engine)  # q2 takes the queue's only place

    engine.resume("q1")

    run = engine.get_run("q1")
    assert (run.status, run.ready_at, run.start_at is not None) == (Status.PENDING, None, True)
    run_all(engine)
    assert engine.get_run("q1").start_at is not None  # q2 holds the place
    engine.signal("q2", "go", "2")
    run_all(engine)
    assert engine.get_run("q1").status is Status.WAITING  # admitted, waiting again
    engine.signal("q1", "go", "1")
    run_all(engine)
    assert engine.handle("q1").result(timeout=0) == "1!"


def test_a_resumed_run_awaiting_admission_is_cancelled_at_once(engine: fluxo.Engine) -> None:
    cancelled_while_waiting(engine, queued, "q1")
    engine.start(queued.options(id="q2"))
    run_all(engine)
    engine.resume("q1")

    engine.cancel("q1")
    run_all(engine)  # its queue is full, yet it is admitted to end

    assert engine.get_run("q1").status is Status.CANCELLED


def test_children_cancelled_with_their_parent_stay_cancelled(engine: fluxo.Engine) -> None:
    engine.start(parent.options(id="p"))
    run_all(engine)
    engine.cancel("p")
    run_all(engine)
    assert engine.get_run("p~child-2").status is Status.CANCELLED
    assert named(engine.history("p"))[-2:] == [
        ("cancel_requested", "cancelled"),
        ("workflow_cancelled", "cancelled"),
    ]

    engine.resume("p")
    run_all(engine)

    assert engine.handle("p").result(timeout=0) == "child cancelled"
    assert engine.get_run("p~child-2").status is Status.CANCELLED
    replay(engine.export_history("p"), workflows=[parent])


def test_children_cancelled_with_their_parent_are_met_running_once_resumed(
    engine: fluxo.Engine,
) -> None:
    engine.start(parent.options(id="p"))
    run_all(engine)
    engine.cancel("p")
    run_all(engine)

    engine.resume("p~child-2")  # first, so that the parent finds it running
    engine.resume("p")
    run_all(engine)
    assert engine.get_run("p").status is Status.WAITING  # waits for its child again
    engine.signal("p~child-2", "go", "c")
    run_all(engine)

    assert engine.handle("p").result(timeout=0) == "pc!"
    assert CALLS == {"prepare": 2, "finish": 1}  # the parent's and the child's, once each


def test_a_parent_does_not_take_the_cancellation_of_a_child_resumed_since(
    engine: fluxo.Engine,
) -> None:
    engine.start(parent.options(id="p"))
    run_all(engine)
    engine.cancel("p~child-2")
    assert execute(engine, "p~child-2") is Outcome.CANCELLED  # it tells its parent
    assert engine.get_run("p").status is Status.PENDING  # woken by the outcome

    engine.resume("p~child-2")  # before the parent took delivery of it
    assert execute(engine, "p") is Outcome.SUSPENDED  # that outcome is superseded
    engine.signal("p~child-2", "go", "c")
    run_all(engine)

    assert engine.handle("p").result(timeout=0) == "pc!"
    assert "child_cancelled" not in kinds(engine.history("p"))


def test_a_child_resumed_then_cancelled_at_its_end_is_not_taken_as_completed(
    make_engine: MakeEngine,
) -> None:
    child = "p~child-2"
    store = CancelAtTheEnd(MemoryStore(), history.WorkflowCompleted, only=child)
    engine = make_engine(*WORKFLOWS, store=store)  # type: ignore[arg-type]
    engine.start(parent.options(id="p"))
    run_all(engine)
    engine.cancel(child)
    execute(engine, child)
    engine.resume(child)  # its history holds the cancellation it took before
    assert execute(engine, "p") is Outcome.SUSPENDED
    parent_outcomes: list[Outcome] = []

    def run_the_parent_meanwhile(run_id: str) -> None:
        parent_outcomes.append(execute(engine, "p", "parent-worker"))

    store.before_forwarding = run_the_parent_meanwhile
    engine.signal(child, "go", "c")
    assert execute(engine, child) is Outcome.CANCELLED  # cancelled as it completed

    assert parent_outcomes == [Outcome.SUSPENDED]  # the completion did not stand
    run_all(engine)
    assert engine.handle("p").result(timeout=0) == "child cancelled"


def test_a_resumed_run_can_be_forked_past_its_resumed_cancellation(engine: fluxo.Engine) -> None:
    cancelled_while_waiting(engine)
    engine.resume("r1")
    engine.signal("r1", "go", "x")
    run_all(engine)
    end = len(engine.history("r1")) - 1  # before workflow_completed: finish is redone

    forked = engine.fork("r1", from_position=end)
    run_all(engine)

    assert forked.result(timeout=0) == "px!"
    assert CALLS == {"prepare": 1, "finish": 1}  # finish was recorded before the cut
    replay(engine.export_history(forked.id), workflows=[stepper])


# -- what is refused --------------------------------------------------------------------


def test_a_cancellation_that_recorded_cleanup_is_not_resumed(engine: fluxo.Engine) -> None:
    cancelled_while_waiting(engine, tidy)
    before = engine.history("r1")

    with pytest.raises(fluxo.RunStateError) as info:
        engine.resume("r1")

    message = str(info.value)
    assert "recorded step_completed rs.cleanup before it ended cancelled" in message
    assert "engine.fork('r1', from_position=3)" in message
    assert isinstance(before[3], history.CancelRequested)
    assert engine.history("r1") == before
    assert engine.get_run("r1").status is Status.CANCELLED
    forked = engine.fork("r1", from_position=3)  # the way the message points to works
    engine.signal(forked.id, "go", "f")
    run_all(engine)
    assert forked.result(timeout=0) == "f"


def test_a_run_cancelled_by_its_deadline_is_not_resumed(
    engine: fluxo.Engine, clock: FakeClock
) -> None:
    engine.start(stepper.options(id="r1", timeout=timedelta(seconds=60)))
    run_all(engine)
    clock.advance(61)
    run_all(engine)
    assert named(engine.history("r1"))[-2] == ("cancel_requested", "deadline")

    with pytest.raises(fluxo.RunStateError, match="cancelled by its deadline") as info:
        engine.resume("r1")

    assert "engine.fork('r1', from_position=3)" in str(info.value)
    assert engine.get_run("r1").status is Status.CANCELLED


def test_a_run_cancelled_then_past_its_deadline_is_not_resumed(
    engine: fluxo.Engine, clock: FakeClock
) -> None:
    engine.start(stepper.options(id="r1", timeout=timedelta(seconds=60)))
    run_all(engine)
    engine.cancel("r1")
    run_all(engine)
    clock.advance(61)

    with pytest.raises(fluxo.RunStateError, match="is past its deadline"):
        engine.resume("r1")


@pytest.mark.parametrize("done", ["completed", "failed"])
def test_a_run_that_is_not_cancelled_is_not_resumed(engine: fluxo.Engine, done: str) -> None:
    if done == "completed":
        cancelled_while_waiting(engine)
        engine.resume("r1")
        engine.signal("r1", "go", "x")
    else:
        engine.start(boom.options(id="r1"))
    run_all(engine)
    assert engine.get_run("r1").status.value == done

    with pytest.raises(fluxo.RunStateError) as info:
        engine.resume("r1")

    assert f"run 'r1' is {done}, not cancelled" in str(info.value)
    if done == "failed":
        assert "engine.retry('r1')" in str(info.value)


def test_an_active_run_is_not_resumed(engine: fluxo.Engine) -> None:
    engine.start(stepper.options(id="r1"))

    with pytest.raises(fluxo.RunStateError, match="is pending, not cancelled"):
        engine.resume("r1")


def test_retry_refuses_a_cancelled_run_and_points_to_resume(engine: fluxo.Engine) -> None:
    cancelled_while_waiting(engine)

    with pytest.raises(fluxo.RunStateError, match=r"resume a cancelled run with engine\.resume"):
        engine.retry("r1")

    assert engine.get_run("r1").status is Status.CANCELLED


def test_resume_of_an_unknown_run_or_a_bad_id_raises(engine: fluxo.Engine) -> None:
    with pytest.raises(fluxo.RunNotFoundError):
        engine.resume("nope")
    with pytest.raises(fluxo.DefinitionError):
        engine.resume(17)  # type: ignore[arg-type]


# -- replay, the async engine and the command line ---------------------------------------


def test_a_replay_report_marks_the_resumed_cancellation(
    engine: fluxo.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_replay, "CONTEXT_LINES", 10)  # show the report from its start
    cancelled_while_waiting(engine)
    engine.resume("r1")
    engine.signal("r1", "go", "x")
    run_all(engine)
    document = engine.export_history("r1")

    @fluxo.workflow(name="rs.stepper")
    def changed() -> str:
        first = prepare()
        fluxo.wait_for_signal("go", type=str)
        return first  # no longer calls finish

    with pytest.raises(fluxo.NondeterminismError) as info:
        replay(document, workflows=[changed])

    lines = str(info.value).splitlines()
    assert [line.split()[-1] for line in lines if line.strip()[:1] in "3456"] == [
        "resumed",  # 3: cancellation (cancelled)
        "resumed",  # 4: the workflow ended cancelled
        "operator",  # 5: retried by an operator
        "matched",  # 6: wait_for_signal go (received)
    ], lines


def test_the_async_engine_resumes_a_cancelled_run(engine: fluxo.Engine) -> None:
    cancelled_while_waiting(engine)

    async def main() -> str:
        async with fluxo.AsyncEngine(engine) as aengine:
            handle = await aengine.resume("r1")
            return handle.id

    assert asyncio.run(main()) == "r1"
    assert engine.get_run("r1").status is Status.PENDING


STATE: dict[str, Any] = {}
APP = "tests.unit.test_resuming:resume_app"


def resume_app() -> fluxo.Engine:
    """The app the command line loads: a new engine on the test's store."""
    return fluxo.Engine(STATE["store"], workflows=WORKFLOWS, clock=STATE["clock"])


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[fluxo.Engine]:
    store = MemoryStore()
    monkeypatch.setitem(STATE, "store", store)
    monkeypatch.setitem(STATE, "clock", clock)
    engine = resume_app()
    yield engine
    engine.close()
    store.close()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli.cli,
        list(args),
        catch_exceptions=False,
        env={"FLUXO_STORE_URL": None, "FLUXO_APP": None},
    )
    return result.exit_code, result.output


def test_runs_resume_resumes_a_cancelled_run_and_explains_a_refusal(app: fluxo.Engine) -> None:
    cancelled_while_waiting(app)
    cancelled_while_waiting(app, tidy, "t1")

    code, out = invoke("runs", "resume", "r1", "--app", APP)
    assert code == 0, out
    assert "run 'r1' is pending again" in out
    assert app.get_run("r1").status is Status.PENDING

    code, out = invoke("runs", "resume", "t1", "--app", APP)
    assert code == 1
    assert "engine.fork('t1', from_position=3)" in out
    assert app.get_run("t1").status is Status.CANCELLED

"""Durable timers, signals, cancellation of waiting runs, patches and durable back-off.

Most tests drive a fake clock and execute runs by hand, so a wait is a recorded
suspension and a resume is a replay; a few use the real clock and a worker to
check the held ("sticky") waits and the wake-ups.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history
from fluxo._executor import Outcome

from .conftest import MakeEngine
from .helpers import WAIT, FakeClock, execute, kinds, named

Status = fluxo.RunStatus
BODY: list[str] = []
"""Each workflow below appends here whenever its body starts: live, replay, or resume."""


@pytest.fixture(autouse=True)
def _reset_body() -> None:
    BODY.clear()


@fluxo.step(name="w.note")
def note(text: str) -> str:
    return text.upper()


@fluxo.workflow(name="w.nap")
def nap(seconds: float) -> str:
    BODY.append("nap")
    before = note("before")
    fluxo.sleep(seconds)
    return before + note("after")


@fluxo.workflow(name="w.nap_until")
def nap_until(when: datetime) -> str:
    fluxo.sleep_until(when)
    return note("woke")


@fluxo.workflow(name="w.approval")
def approval(timeout: float | None) -> str:
    BODY.append("approval")
    try:
        ok = fluxo.wait_for_signal("approved", timeout=timeout, type=bool)
    except fluxo.SignalTimeout:
        return note("timed out")
    return note(f"approved={ok}")


@fluxo.workflow(name="w.two_signals")
def two_signals() -> list[int]:
    first = fluxo.wait_for_signal("n", type=int)
    second = fluxo.wait_for_signal("n", type=int)
    return [first, second]


@fluxo.step(name="w.cleanup")
def cleanup() -> str:
    return "cleaned"


@fluxo.workflow(name="w.stubborn_sleeper")
def stubborn_sleeper() -> str:
    try:
        try:
            fluxo.sleep(3600)
        except Exception:
            return "swallowed"  # must never happen: cancellation is not an Exception
    finally:
        cleanup()
    return "slept"


def test_sleep_records_its_fire_time_and_suspends(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(nap)
    handle = engine.start(nap, 60)
    assert execute(engine, handle.id) is Outcome.SUSPENDED

    run = engine.get_run(handle.id)
    assert run.status is Status.WAITING
    assert run.ready_at == clock() + 60
    assert run.lease_owner is None  # the worker is free
    started = engine.history(handle.id)[-1]
    assert isinstance(started, history.TimerStarted)
    assert engine.codec.decode(started.data or b"", float) == clock() + 60

    clock.advance(59.9)
    assert engine.store.claim("w", ["w.nap"], now=clock(), lease_until=clock() + 30, limit=1) == []

    clock.advance(0.1)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=WAIT) == "BEFOREAFTER"
    assert kinds(engine.history(handle.id))[1:] == [
        "step_completed",
        "timer_started",
        "timer_fired",
        "step_completed",
        "workflow_completed",
    ]
    assert BODY == ["nap", "nap"]  # resumed by replaying from the top


def test_a_timer_already_due_when_reached_fires_at_once(make_engine: MakeEngine) -> None:
    engine = make_engine(nap)
    handle = engine.start(nap, 0)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert "timer_fired" in kinds(engine.history(handle.id))


def test_a_resume_after_the_fire_time_fires_at_once(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(nap)
    handle = engine.start(nap, 5)
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    clock.advance(3600)  # no worker was up at the fire time
    assert execute(engine, handle.id) is Outcome.COMPLETED


def test_sleep_until_takes_an_aware_datetime(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(nap_until)
    when = datetime.fromtimestamp(clock() + 10, timezone.utc)
    handle = engine.start(nap_until, when)
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    assert engine.get_run(handle.id).ready_at == pytest.approx(clock() + 10)
    clock.advance(10)
    assert execute(engine, handle.id) is Outcome.COMPLETED


def test_sleep_until_refuses_a_naive_datetime() -> None:
    with pytest.raises(fluxo.DefinitionError, match="timezone-aware"):
        fluxo.sleep_until(datetime(2030, 1, 1))


def test_sleep_refuses_a_bad_duration() -> None:
    with pytest.raises(fluxo.DefinitionError, match="timedelta or a number of seconds"):
        fluxo.sleep("5s")  # type: ignore[arg-type]


def test_sleep_outside_a_workflow_is_a_plain_sleep() -> None:
    started = time.monotonic()
    fluxo.sleep(timedelta(milliseconds=20))
    assert time.monotonic() - started >= 0.02


# -- signals -------------------------------------------------------------------------


def test_a_signal_sent_before_the_wait_is_delivered(make_engine: MakeEngine) -> None:
    engine = make_engine(approval)
    handle = engine.start(approval, None)
    engine.signal(handle.id, "approved", True)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=WAIT) == "APPROVED=TRUE"
    assert kinds(engine.history(handle.id))[1:3] == ["signal_received", "step_completed"]


def test_a_signal_wakes_a_waiting_run(make_engine: MakeEngine) -> None:
    engine = make_engine(approval)
    handle = engine.start(approval, None)
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    run = engine.get_run(handle.id)
    assert run.status is Status.WAITING
    assert run.ready_at is None  # nothing but a signal (or a cancel) wakes it

    engine.signal(handle.id, "approved", False)
    assert engine.get_run(handle.id).status is Status.PENDING
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=WAIT) == "APPROVED=FALSE"
    assert kinds(engine.history(handle.id))[1:3] == ["signal_wait_started", "signal_received"]


def test_signals_with_one_name_are_delivered_in_order_once_each(make_engine: MakeEngine) -> None:
    engine = make_engine(two_signals)
    handle = engine.start(two_signals)
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    engine.signal(handle.id, "n", 1)
    engine.signal(handle.id, "n", 2)
    engine.signal(handle.id, "n", 3)  # kept: nobody asked for it
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=WAIT) == [1, 2]
    received = [e for e in engine.history(handle.id) if isinstance(e, history.SignalReceived)]
    assert [e.data for e in received] == [b"1", b"2"]


def test_a_signal_that_arrives_while_the_run_suspends_is_not_lost(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(approval)
    handle = engine.start(approval, None)

    def signal_just_before_suspending(context: _executor.RunContext) -> None:
        real = context._record_many

        def record_many(events: Any, status: Any = None, ready_at: Any = None) -> None:
            if status is Status.WAITING:
                engine.signal(handle.id, "approved", True)  # after the load, before the write
            real(events, status, ready_at)

        context._record_many = record_many  # type: ignore[method-assign]

    assert execute(engine, handle.id, hook=signal_just_before_suspending) is Outcome.SUSPENDED
    assert engine.get_run(handle.id).status is Status.PENDING  # woken, not stranded
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=WAIT) == "APPROVED=TRUE"


def test_a_signal_timeout_fires_on_time_and_survives_a_restart(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = fluxo.open_store("memory://")
    first = make_engine(approval, store=store)
    handle = first.start(approval, 120)
    assert execute(first, handle.id) is Outcome.SUSPENDED
    assert first.get_run(handle.id).ready_at == clock() + 120
    first.close()

    clock.advance(119)
    second = make_engine(approval, store=store)  # a fresh process on the same store
    assert (
        second.store.claim("x", ["w.approval"], now=clock(), lease_until=clock() + 9, limit=1) == []
    )
    clock.advance(1)
    assert execute(second, handle.id) is Outcome.COMPLETED
    assert second.handle(handle.id).result(timeout=WAIT) == "TIMED OUT"
    assert "signal_timed_out" in kinds(second.history(handle.id))
    assert BODY == ["approval", "approval"]


def test_a_signal_to_a_finished_or_unknown_run_is_an_error(make_engine: MakeEngine) -> None:
    engine = make_engine(approval)
    handle = engine.start(approval, 0)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    with pytest.raises(fluxo.RunStateError, match="has finished"):
        engine.signal(handle.id, "approved", True)
    with pytest.raises(fluxo.RunNotFoundError):
        engine.signal("nope", "approved", True)


def test_a_signal_with_an_unencodable_payload_is_refused(make_engine: MakeEngine) -> None:
    engine = make_engine(approval)
    handle = engine.start(approval, None)
    with pytest.raises(fluxo.EncodeError, match="approved"):
        engine.signal(handle.id, "approved", object())
    assert engine.store.load(handle.id).signals == ()


def test_wait_for_signal_outside_a_workflow_explains() -> None:
    with pytest.raises(fluxo.DefinitionError, match="inside a workflow"):
        fluxo.wait_for_signal("x")


class Crash(BaseException):
    """Stands for the process dying: nothing in the workflow can catch it."""


@fluxo.workflow(name="w.notifier")
def notifier(target: str) -> str:
    fluxo.signal(target, "approved", True)
    return note("sent")


def test_a_workflow_signals_another_run_exactly_once(make_engine: MakeEngine) -> None:
    engine = make_engine(approval, notifier)
    waiting = engine.start(approval, None)
    sender = engine.start(notifier, waiting.id)

    def crash_after_sending(context: _executor.RunContext) -> None:
        real = context._record_many

        def record_many(events: Any, status: Any = None, ready_at: Any = None, **kw: Any) -> None:
            if any(isinstance(e, history.SignalSent) for e in events):
                raise Crash("the process died after sending, before recording")
            real(events, status, ready_at, **kw)

        context._record_many = record_many  # type: ignore[method-assign]

    with pytest.raises(Crash):
        execute(engine, sender.id, hook=crash_after_sending)
    assert len(engine.store.load(waiting.id).signals) == 1
    engine.store.release("tester", sender.id, now=engine.clock())
    assert execute(engine, sender.id) is Outcome.COMPLETED  # replays, sends nothing new
    assert len(engine.store.load(waiting.id).signals) == 1
    assert execute(engine, waiting.id) is Outcome.COMPLETED
    assert waiting.result(timeout=WAIT) == "APPROVED=TRUE"


def test_signalling_a_missing_run_from_a_workflow_fails_the_same_way_on_replay(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(notifier)
    handle = engine.start(notifier, "no-such-run")
    assert execute(engine, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        handle.result(timeout=WAIT)
    assert info.value.is_instance(fluxo.SignalError)
    sent = [e for e in engine.history(handle.id) if isinstance(e, history.SignalSent)]
    assert len(sent) == 1
    assert sent[0].data is not None  # the failure is recorded


# -- cancellation of waiting runs ----------------------------------------------------


@pytest.mark.parametrize("workflow", [stubborn_sleeper, approval])
def test_cancelling_a_waiting_run_ends_it_cancelled_after_its_cleanup(
    make_engine: MakeEngine, workflow: fluxo.Workflow[Any, Any]
) -> None:
    engine = make_engine(stubborn_sleeper, approval)
    args = () if workflow is stubborn_sleeper else (None,)
    handle = engine.start(workflow, *args)
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    engine.cancel(handle.id)
    assert engine.get_run(handle.id).status is Status.PENDING  # woken to unwind
    assert execute(engine, handle.id) is Outcome.CANCELLED
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=WAIT)
    recorded = kinds(engine.history(handle.id))
    assert "cancel_requested" in recorded
    assert recorded[-1] == "workflow_cancelled"
    if workflow is stubborn_sleeper:
        assert recorded[-3:] == ["cancel_requested", "step_completed", "workflow_cancelled"]


def test_a_cancellation_arriving_while_the_run_suspends_is_not_lost(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(stubborn_sleeper)
    handle = engine.start(stubborn_sleeper)

    def cancel_just_before_suspending(context: _executor.RunContext) -> None:
        real = context._record_many

        def record_many(events: Any, status: Any = None, ready_at: Any = None) -> None:
            if status is Status.WAITING:
                engine.cancel(handle.id)
            real(events, status, ready_at)

        context._record_many = record_many  # type: ignore[method-assign]

    assert execute(engine, handle.id, hook=cancel_just_before_suspending) is Outcome.SUSPENDED
    assert engine.get_run(handle.id).status is Status.PENDING
    assert execute(engine, handle.id) is Outcome.CANCELLED


# -- versioning ----------------------------------------------------------------------


@fluxo.step(name="w.old_way")
def old_way() -> str:
    return "old"


@fluxo.step(name="w.new_way")
def new_way() -> str:
    return "new"


@fluxo.workflow(name="w.versioned")
def versioned_v1() -> str:
    first = old_way()
    fluxo.wait_for_signal("go")
    return first + "-done"


@fluxo.workflow(name="w.versioned")
def versioned_v2() -> str:
    first = new_way() if fluxo.patched("use-new-way") else old_way()
    fluxo.wait_for_signal("go")
    return first + "-done"


@fluxo.workflow(name="w.versioned")
def versioned_v3() -> str:
    fluxo.deprecate_patch("use-new-way")
    first = new_way()
    fluxo.wait_for_signal("go")
    return first + "-done"


def test_patched_keeps_old_runs_on_the_old_branch(make_engine: MakeEngine) -> None:
    store = fluxo.open_store("memory://")
    old_code = make_engine(versioned_v1, store=store)
    old_run = old_code.start(versioned_v1)
    assert execute(old_code, old_run.id) is Outcome.SUSPENDED  # in flight during the deploy

    new_code = make_engine(versioned_v2, store=store)
    new_code.signal(old_run.id, "go")
    assert execute(new_code, old_run.id) is Outcome.COMPLETED
    assert new_code.handle(old_run.id).result(timeout=WAIT) == "old-done"

    new_run = new_code.start(versioned_v2)
    new_code.signal(new_run.id, "go")
    assert execute(new_code, new_run.id) is Outcome.COMPLETED
    assert new_run.result(timeout=WAIT) == "new-done"
    assert "patch_marker" in kinds(new_code.history(new_run.id))
    assert "patch_marker" not in kinds(new_code.history(old_run.id))


def test_deprecate_patch_replays_runs_that_recorded_the_marker(make_engine: MakeEngine) -> None:
    store = fluxo.open_store("memory://")
    v2 = make_engine(versioned_v2, store=store)
    marked = v2.start(versioned_v2)
    v2.signal(marked.id, "go")
    assert execute(v2, marked.id) is Outcome.COMPLETED

    v3 = make_engine(versioned_v3, store=store)
    # replaying the v2 history under v3 code (as `fluxo replay` would) still matches
    recorded = store.load(marked.id)
    state = history.RunState(recorded.run, recorded.events[:-1], recorded.signals)
    context = _executor.RunContext(
        state=state, workflow=versioned_v3, store=store, codec=v3.codec, clock=v3.clock
    )
    context._record_many = lambda *a, **k: None  # type: ignore[method-assign]
    assert context.execute() is Outcome.COMPLETED

    fresh = v3.start(versioned_v3)
    v3.signal(fresh.id, "go")
    assert execute(v3, fresh.id) is Outcome.COMPLETED
    assert fresh.result(timeout=WAIT) == "new-done"
    assert "patch_marker" not in kinds(v3.history(fresh.id))


def test_patched_outside_a_workflow_is_true() -> None:
    assert fluxo.patched("anything") is True


# -- durable retry back-off ----------------------------------------------------------

FLAKY: list[int] = []


@fluxo.step(
    name="w.flaky",
    retry=fluxo.Retry(max_attempts=3, initial=timedelta(hours=1), max_interval=timedelta(hours=3)),
)
def flaky() -> str:
    FLAKY.append(1)
    if len(FLAKY) < 3:
        raise ConnectionError("down")
    return "up"


@fluxo.workflow(name="w.patient")
def patient() -> str:
    return flaky()


def test_a_long_retry_backoff_waits_on_a_durable_timer(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    FLAKY.clear()
    engine = make_engine(patient)
    handle = engine.start(patient)
    assert execute(engine, handle.id) is Outcome.SUSPENDED  # the worker is free
    run = engine.get_run(handle.id)
    assert run.status is Status.WAITING
    assert run.ready_at == clock() + 3600

    clock.advance(3600)  # a crash during the hour would lose nothing: it is all recorded
    assert execute(engine, handle.id) is Outcome.SUSPENDED  # second attempt, then 2 h
    assert engine.get_run(handle.id).ready_at == clock() + 7200
    clock.advance(7200)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=WAIT) == "up"
    assert len(FLAKY) == 3
    assert kinds(engine.history(handle.id))[1:-1] == [
        "step_attempt_failed",
        "timer_started",
        "timer_fired",
        "step_attempt_failed",
        "timer_started",
        "timer_fired",
        "step_completed",
    ]


# -- held ("sticky") waits, on the real clock ----------------------------------------


def test_a_worker_holds_a_short_sleep_and_resumes_without_replay(make_engine: MakeEngine) -> None:
    engine = make_engine(nap, clock=time.time)
    handle = engine.start(nap, 0.3)
    started = time.time()
    with engine.worker(concurrency=1, sticky=5):
        assert handle.result(timeout=WAIT) == "BEFOREAFTER"
    fired = engine.history(handle.id)
    timer = next(e for e in fired if isinstance(e, history.TimerStarted))
    fire_at = engine.codec.decode(timer.data or b"", float)
    assert fire_at >= started + 0.3
    assert BODY == ["nap"]  # resumed in the thread: no replay


def test_without_holding_a_worker_resumes_at_the_fire_time(make_engine: MakeEngine) -> None:
    engine = make_engine(nap, clock=time.time)
    handle = engine.start(nap, 0.3)
    with engine.worker(concurrency=1, sticky=0):
        assert handle.result(timeout=WAIT) == "BEFOREAFTER"
    assert BODY == ["nap", "nap"]


def test_a_held_signal_wait_resumes_when_the_signal_arrives(make_engine: MakeEngine) -> None:
    engine = make_engine(approval, clock=time.time)
    handle = engine.start(approval, None)
    with engine.worker(concurrency=1, sticky=10):
        deadline = time.monotonic() + WAIT
        while engine.get_run(handle.id).status is not Status.WAITING:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        threading.Timer(0.05, engine.signal, (handle.id, "approved", True)).start()
        assert handle.result(timeout=WAIT) == "APPROVED=TRUE"
    assert BODY == ["approval"]


def test_engine_run_waits_out_a_sleep_in_the_calling_thread(make_engine: MakeEngine) -> None:
    engine = make_engine(nap, clock=time.time)
    assert engine.run(nap, 0.2) == "BEFOREAFTER"
    assert BODY == ["nap"]


def test_a_held_wait_never_consumes_a_signal_twice(make_engine: MakeEngine) -> None:
    engine = make_engine(two_signals, clock=time.time)
    handle = engine.start(two_signals)

    def waits() -> int:
        return kinds(engine.history(handle.id)).count("signal_wait_started")

    with engine.worker(concurrency=2, sticky=10):
        for value, count in ((1, 1), (2, 2)):
            deadline = time.monotonic() + WAIT
            while waits() < count:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            engine.signal(handle.id, "n", value)
        assert handle.result(timeout=WAIT) == [1, 2]
    assert kinds(engine.history(handle.id)).count("signal_received") == 2


# -- deadlines -----------------------------------------------------------------------


def test_a_run_past_its_deadline_is_cancelled_at_its_next_durable_call(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(stubborn_sleeper)
    handle = engine.start(stubborn_sleeper.options(timeout=timedelta(minutes=5)))
    assert engine.get_run(handle.id).deadline == clock() + 300
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    assert engine.get_run(handle.id).ready_at == clock() + 300  # woken at the deadline

    clock.advance(300)
    assert execute(engine, handle.id) is Outcome.CANCELLED
    with pytest.raises(fluxo.WorkflowTimeoutError):
        handle.result(timeout=WAIT)
    with pytest.raises(fluxo.WorkflowCancelledError):  # a timeout is a cancellation
        handle.result(timeout=WAIT)
    recorded = named(engine.history(handle.id))
    assert ("cancel_requested", "deadline") in recorded
    assert recorded[-2:] == [("step_completed", "w.cleanup"), ("workflow_cancelled", "deadline")]


def test_a_run_never_started_before_its_deadline_does_not_run(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(nap)
    handle = engine.start(nap.options(timeout=1), 0)
    clock.advance(2)
    assert execute(engine, handle.id) is Outcome.CANCELLED
    assert BODY == []
    with pytest.raises(fluxo.WorkflowTimeoutError):
        handle.result(timeout=WAIT)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(fluxo.DefinitionError, match="positive"):
        nap.options(timeout=0)
    with pytest.raises(fluxo.DefinitionError, match="positive"):
        nap.options(timeout="soon")  # type: ignore[arg-type]


# -- the signal inbox -------------------------------------------------------------------


def _signal(signal_id: int, name: str, payload: bytes) -> history.Signal:
    return history.Signal(signal_id, name, payload, 0.0)


def test_the_inbox_takes_in_new_signals_behind_the_pending_ones_of_their_name() -> None:
    from fluxo._executor import _waits

    inbox = _waits.SignalInbox([_signal(1, "go", b"1"), _signal(2, "stop", b"2")])
    inbox.consume("go")
    inbox.take([_signal(2, "stop", b"2"), _signal(3, "go", b"3"), _signal(4, "go", b"4")])

    assert inbox.seen == 4
    assert {name: list(queue) for name, queue in inbox.pending.items()} == {
        "go": [b"3", b"4"],
        "stop": [b"2"],  # taken in once, though read twice
    }


def test_a_signal_consumed_before_the_inbox_took_it_in_is_not_pending_after() -> None:
    from fluxo._executor import _waits

    inbox = _waits.SignalInbox([])
    inbox.consume("go")  # replay met its SignalReceived before the signal was read

    inbox.take([_signal(1, "go", b"1"), _signal(2, "go", b"2")])

    assert list(inbox.pending["go"]) == [b"2"]

"""fluxo.testing.WorkflowEnvironment: virtual time, stubs, call records, always-replay.

Every test here runs on the virtual clock: nothing sleeps, so a workflow that
waits for days finishes in milliseconds of wall time.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import fluxo
from fluxo import history
from fluxo.testing import StepCall, Stub, WorkflowEnvironment

pytest_plugins = ["pytester"]

Status = fluxo.RunStatus
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@dataclasses.dataclass
class Receipt:
    id: str
    cents: int


class CardDeclined(Exception):
    pass


@pytest.fixture
def env() -> Iterator[WorkflowEnvironment]:
    with WorkflowEnvironment(start_time=T0) as environment:
        yield environment


# -- workflows and steps ----------------------------------------------------------------


@fluxo.step
def reserve(order_id: str) -> str:
    return f"res-{order_id}"


@fluxo.step(retry=fluxo.Retry(max_attempts=3, initial=1.0, backoff=2.0))
def charge(order_id: str, cents: int) -> Receipt:
    raise AssertionError("the real card network was called; tests must stub charge")


@fluxo.step(
    retry=fluxo.Retry(
        max_attempts=3, initial=timedelta(minutes=10), backoff=2.0, max_interval=timedelta(hours=1)
    )
)
def charge_patiently(order_id: str, cents: int) -> Receipt:
    raise AssertionError("the real card network was called; tests must stub charge_patiently")


@fluxo.step
def ship(order_id: str, receipt: Receipt) -> str:
    return f"shipped {order_id} with {receipt.id}"


@fluxo.step
def note(text: str) -> str:
    return text


@fluxo.step
def stamp() -> float:
    return fluxo.now().timestamp()  # outside a workflow: the real clock


@fluxo.workflow
def checkout(order_id: str, cents: int) -> str:
    reserve(order_id)
    fluxo.sleep(timedelta(days=3))
    if not fluxo.wait_for_signal("approved", type=bool):
        return "rejected"
    receipt = charge(order_id, cents)
    return ship(order_id, receipt)


@fluxo.workflow
def pay(order_id: str, cents: int) -> str:
    return charge(order_id, cents).id


@fluxo.workflow
def pay_patiently(order_id: str, cents: int) -> str:
    return charge_patiently(order_id, cents).id


@fluxo.workflow
def nap(duration: float) -> list[str]:
    before = fluxo.now()
    fluxo.sleep(duration)
    after = fluxo.now()
    return [before.isoformat(), after.isoformat(), note("awake")]


@fluxo.workflow
def approval(timeout: float | None) -> str:
    try:
        ok = fluxo.wait_for_signal("approved", timeout=timeout, type=bool)
    except fluxo.SignalTimeout:
        return note("timed out")
    return note(f"approved={ok}")


@fluxo.workflow
def collect(count: int) -> list[int]:
    return [fluxo.wait_for_signal("item", type=int) for _ in range(count)]


@fluxo.workflow
def guarded(order_id: str) -> str:
    try:
        fluxo.sleep(timedelta(days=1))
        return note("slept")
    finally:
        note(f"cleanup {order_id}")


@fluxo.workflow
def fails() -> str:
    note("about to fail")
    raise ValueError("out of stock")


@fluxo.workflow
def slow_step_then_stamp() -> float:
    before = fluxo.now()
    note("slow")  # its stub advances the clock, as a step that takes two hours would
    return (fluxo.now() - before).total_seconds()


# Nondeterministic on purpose: the branch depends on how often the body has executed
# in this process, which a replay changes.
EXECUTIONS = {"count": 0}


@fluxo.workflow
def counts_its_executions() -> str:
    EXECUTIONS["count"] += 1
    if EXECUTIONS["count"] == 1:
        note("first")
    else:
        reserve("again")
    return note("done")


@pytest.fixture(autouse=True)
def _reset_executions() -> None:
    EXECUTIONS["count"] = 0


# -- time skipping ----------------------------------------------------------------------


def test_a_three_day_sleep_finishes_in_well_under_a_second(env: WorkflowEnvironment) -> None:
    env.stub(charge, returns=Receipt("r-1", 4200))
    started = time.perf_counter()
    handle = env.start(checkout, "o-1", 4200)
    env.signal(handle, "approved", True)  # kept until the workflow waits for it
    assert handle.result() == "shipped o-1 with r-1"
    assert time.perf_counter() - started < 1.0
    assert env.now() == T0 + timedelta(days=3)
    assert env.steps_run(handle) == [reserve, charge, ship]


def test_fluxo_now_in_a_workflow_follows_the_virtual_clock(env: WorkflowEnvironment) -> None:
    before, after, awake = env.run(nap, timedelta(hours=5).total_seconds())
    assert datetime.fromisoformat(before) == T0
    assert datetime.fromisoformat(after) == T0 + timedelta(hours=5)
    assert awake == "awake"


def test_the_clock_starts_at_the_real_time_by_default() -> None:
    real = datetime.now(timezone.utc)
    with WorkflowEnvironment() as env:
        assert abs((env.now() - real).total_seconds()) < 60


def test_advance_by_hand_fires_timers_at_their_time(env: WorkflowEnvironment) -> None:
    handle = env.start(nap, 3600.0)
    assert handle.status() is Status.WAITING
    env.advance(timedelta(minutes=30))
    assert handle.status() is Status.WAITING
    assert env.steps_run(handle) == []
    env.advance(1800)
    assert handle.status() is Status.COMPLETED
    assert env.steps_run(handle) == [note]
    assert env.now() == T0 + timedelta(hours=1)
    assert handle.result()[1] == (T0 + timedelta(hours=1)).isoformat()


def test_advance_past_several_timers_fires_each_at_its_own_time(env: WorkflowEnvironment) -> None:
    handles = [env.start(nap, hours * 3600.0) for hours in (3, 1, 2)]
    env.advance(timedelta(days=1))
    assert env.now() == T0 + timedelta(days=1)
    woke = [datetime.fromisoformat(h.result()[1]) for h in handles]
    assert woke == [T0 + timedelta(hours=h) for h in (3, 1, 2)]  # not all at the end
    assert [call.run_id for call in env.calls(note)] == [handles[i].id for i in (1, 2, 0)]


def test_advance_rejects_going_back_and_values_that_are_not_durations(
    env: WorkflowEnvironment,
) -> None:
    with pytest.raises(fluxo.DefinitionError, match="forward only"):
        env.advance(-1)
    with pytest.raises(fluxo.DefinitionError, match="timedelta or a number of seconds"):
        env.advance("1h")  # type: ignore[arg-type]
    with pytest.raises(fluxo.DefinitionError, match="timedelta or a number of seconds"):
        env.advance(True)
    env.advance(0)
    assert env.now() == T0


def test_result_with_a_timeout_lets_only_that_much_virtual_time_pass(
    env: WorkflowEnvironment,
) -> None:
    handle = env.start(nap, timedelta(days=1).total_seconds())
    with pytest.raises(fluxo.RunNotFinishedError, match="timer 'sleep' fires at 2030-01-02"):
        handle.result(timeout=timedelta(hours=1))
    assert env.now() == T0 + timedelta(hours=1)
    assert handle.result(timeout=timedelta(days=1))[2] == "awake"
    with pytest.raises(fluxo.DefinitionError, match="must not be negative"):
        handle.result(timeout=-1)


def test_a_step_may_advance_the_clock_to_pretend_it_took_long(env: WorkflowEnvironment) -> None:
    env.stub(note, lambda text: env.advance(timedelta(hours=2)) or text)
    assert env.run(slow_step_then_stamp) == 7200.0


# -- signals ----------------------------------------------------------------------------


def test_a_signal_wakes_a_waiting_run_at_once(env: WorkflowEnvironment) -> None:
    handle = env.start(approval, None)
    assert handle.status() is Status.WAITING
    env.signal(handle.id, "approved", True)
    assert handle.status() is Status.COMPLETED  # the environment ran it before returning
    assert handle.result() == "approved=True"
    assert env.now() == T0


def test_signals_are_delivered_in_order_each_once(env: WorkflowEnvironment) -> None:
    handle = env.start(collect, 3)
    for item in (3, 1, 2):
        env.signal(handle, "item", item)
    assert handle.result() == [3, 1, 2]


def test_wait_for_signal_times_out_in_virtual_time(env: WorkflowEnvironment) -> None:
    started = time.perf_counter()
    assert env.run(approval, timedelta(days=7).total_seconds()) == "timed out"
    assert env.now() == T0 + timedelta(days=7)
    assert time.perf_counter() - started < 1.0


def test_a_run_waiting_for_a_signal_that_never_comes_raises_instead_of_hanging(
    env: WorkflowEnvironment,
) -> None:
    handle = env.start(approval.options(id="lonely"), None)
    with pytest.raises(fluxo.RunNotFinishedError) as raised:
        handle.result()
    message = str(raised.value)
    assert "'lonely'" in message
    assert "waits for signal 'approved'" in message
    assert "env.signal('lonely', 'approved', payload)" in message
    assert handle.status() is Status.WAITING  # nothing was harmed
    env.signal(handle, "approved", False)
    assert handle.result() == "approved=False"


def test_a_signal_to_an_unknown_or_finished_run_is_an_error(env: WorkflowEnvironment) -> None:
    with pytest.raises(fluxo.RunNotFoundError, match="nope"):
        env.signal("nope", "approved", True)
    handle = env.start(approval, 0.0)
    assert handle.result() == "timed out"
    with pytest.raises(fluxo.RunStateError, match="finished"):
        env.signal(handle, "approved", True)


# -- deadlines and cancellation -----------------------------------------------------------


def test_a_workflow_deadline_passes_in_virtual_time(env: WorkflowEnvironment) -> None:
    with pytest.raises(fluxo.WorkflowTimeoutError):
        env.run(guarded.options(timeout=timedelta(hours=1)), "o-7")
    assert env.now() == T0 + timedelta(hours=1)  # not the day the workflow meant to sleep
    assert env.steps_run() == [note]
    assert env.calls(note)[0].args == ("cleanup o-7",)  # its finally: block ran


def test_cancel_stops_a_waiting_run_and_runs_its_cleanup(env: WorkflowEnvironment) -> None:
    handle = env.start(guarded, "o-8")
    run = env.cancel(handle)
    assert run.status is Status.CANCELLED
    assert [c.args for c in env.calls(run=handle)] == [("cleanup o-8",)]
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result()
    assert history.CancelRequested.kind in [e.kind for e in env.history(handle)]


def test_cancel_through_the_handle(env: WorkflowEnvironment) -> None:
    handle = env.start(guarded, "o-9")
    assert handle.cancel().status is Status.CANCELLED
    with pytest.raises(fluxo.RunStateError, match="nothing to cancel"):
        env.cancel(env.start(fails.options(id="failed")).id)


# -- results and failures ---------------------------------------------------------------


def test_run_raises_as_engine_run_does(env: WorkflowEnvironment) -> None:
    with pytest.raises(fluxo.WorkflowFailedError, match="out of stock") as raised:
        env.run(fails)
    assert raised.value.is_instance(ValueError)


def test_start_is_idempotent_on_the_run_id(env: WorkflowEnvironment) -> None:
    first = env.start(approval.options(id="same"), None)
    again = env.start(approval.options(id="same"), None)
    assert again.id == first.id == "same"
    assert len(env.engine.list_runs()) == 1


def test_history_and_calls_tell_what_happened(env: WorkflowEnvironment) -> None:
    env.stub(charge, returns=Receipt("r-2", 100))
    handle = env.start(checkout, "o-2", 100)
    env.signal(handle, "approved", True)
    handle.result()
    assert [e.kind for e in env.history(handle)] == [
        "workflow_started",
        "step_completed",
        "timer_started",
        "timer_fired",
        "signal_received",  # sent before the wait: no wait was recorded
        "step_completed",
        "step_completed",
        "workflow_completed",
    ]
    (call,) = env.calls(charge)
    assert call == StepCall(
        handle.id, charge, ("o-2", 100), {}, stubbed=True, result=Receipt("r-2", 100)
    )
    assert call.name == charge.name
    assert [c.stubbed for c in env.calls(run=handle)] == [False, True, False]
    assert env.calls("ship") == env.calls(ship)
    assert env.calls(run="another-run") == []
    with pytest.raises(
        fluxo.DefinitionError, match=r"no step or workflow named 'shpi'.*Did you mean 'ship'"
    ):
        env.calls("shpi")  # a typo must not make an assertion about no calls pass
    assert env.calls(checkout) == []  # started by the test, not as a child
    with pytest.raises(
        fluxo.DefinitionError, match=r"a @fluxo\.step or @fluxo\.workflow function, or its name"
    ):
        env.calls(42)  # type: ignore[call-overload]


# -- stubs ------------------------------------------------------------------------------


def test_stub_returns(env: WorkflowEnvironment) -> None:
    stub = env.stub(charge, returns=Receipt("r-3", 300))
    assert env.run(pay, "o-3", 300) == "r-3"
    assert [c.args for c in stub.calls] == [("o-3", 300)]


def test_stub_raises_an_instance_or_a_class(env: WorkflowEnvironment) -> None:
    env.stub(charge, raises=CardDeclined("insufficient funds"))
    with pytest.raises(fluxo.WorkflowFailedError, match="insufficient funds"):
        env.run(pay, "o-4", 400)
    assert len(env.calls(charge)) == 3  # the step's retry policy applies
    assert all(isinstance(c.error, CardDeclined) for c in env.calls(charge))
    env.stub(charge, raises=CardDeclined)
    with pytest.raises(fluxo.WorkflowFailedError, match="CardDeclined"):
        env.run(pay, "o-5", 500)


def test_stub_with_a_replacement_function(env: WorkflowEnvironment) -> None:
    def fake_charge(order_id: str, cents: int) -> Receipt:
        return Receipt(f"fake-{order_id}", cents * 2)

    env.stub(charge, fake_charge)
    assert env.run(pay, "o-6", 1) == "fake-o-6"
    assert env.calls(charge)[0].result == Receipt("fake-o-6", 2)


def test_stub_by_full_name_or_short_name(env: WorkflowEnvironment) -> None:
    env.stub(charge.name, returns=Receipt("by-full-name", 1))
    assert env.run(pay, "a", 1) == "by-full-name"
    with env.stub("charge", returns=Receipt("by-short-name", 1)):
        assert env.run(pay, "b", 1) == "by-short-name"


def test_a_stub_by_name_may_come_before_its_workflow_is_known(env: WorkflowEnvironment) -> None:
    stub = env.stub("charge", returns=Receipt("early", 1))
    assert env.run(pay, "c", 1) == "early"
    assert len(stub.calls) == 1


def test_a_stub_naming_no_known_step_is_an_error_before_anything_runs(
    env: WorkflowEnvironment,
) -> None:
    env.stub("chrage", returns=Receipt("typo", 1))
    with pytest.raises(fluxo.DefinitionError) as raised:
        env.start(pay, "o-10", 1)
    message = str(raised.value)
    assert "no step or workflow named 'chrage'" in message
    assert "Did you mean 'charge'?" in message
    assert "Pass the step or workflow object" in message
    assert env.engine.list_runs() == []  # nothing started, the real card was never charged


@pytest.mark.parametrize("wake", ["signal", "cancel"])
def test_a_misnamed_stub_made_while_a_run_waits_stops_the_call_that_would_wake_it(
    env: WorkflowEnvironment, wake: str
) -> None:
    handle = env.start(checkout, "o-11", 1)
    env.advance(timedelta(days=3))  # now it waits for the approval, then charges
    env.stub("chrage", returns=Receipt("typo", 1))
    wake_it = {
        "signal": lambda: env.signal(handle, "approved", True),
        "cancel": lambda: env.cancel(handle),
    }
    with pytest.raises(fluxo.DefinitionError, match="no step or workflow named 'chrage'"):
        wake_it[wake]()
    assert env.engine.store.load(handle.id).signals == ()
    assert handle.status() is Status.WAITING
    assert not env.engine.get_run(handle.id).cancel_requested
    assert env.steps_run(handle) == [reserve]


def test_a_stub_by_name_is_checked_again_before_each_run() -> None:
    with WorkflowEnvironment(workflows=[pay]) as env:
        stub = env.stub("shop.charge", returns=Receipt("x", 1))
        with pytest.raises(fluxo.DefinitionError, match=r"Known steps: \[.*charge"):
            env.advance(0)
        stub.remove()
        env.advance(0)


def test_removing_a_stub_brings_back_the_one_before(env: WorkflowEnvironment) -> None:
    outer = env.stub(charge, returns=Receipt("outer", 1))
    with env.stub(charge, returns=Receipt("inner", 1)) as inner:
        assert env.run(pay, "d", 1) == "inner"
        assert env.stubs == [outer, inner]
    assert not inner.active
    assert env.run(pay, "e", 1) == "outer"
    outer.remove()
    outer.remove()  # harmless
    assert env.stubs == []
    with pytest.raises(fluxo.WorkflowFailedError, match="tests must stub charge"):
        env.run(pay, "f", 1)  # the real step runs again


def test_a_stub_result_is_recorded_like_a_real_one(env: WorkflowEnvironment) -> None:
    env.stub(charge, returns={"id": "as-dict", "cents": 5})  # decoded by the annotation
    assert env.run(pay, "g", 5) == "as-dict"
    env.stub(charge, returns=object())
    with pytest.raises(fluxo.WorkflowFailedError, match="cannot encode"):
        env.run(pay, "h", 5)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((charge,), {}, "exactly one of .* it got nothing"),
        ((charge, lambda o, c: None), {"returns": 1}, "a replacement function and returns="),
        ((charge,), {"returns": 1, "raises": ValueError}, "returns= and raises="),
        ((charge, "not callable"), {}, "must be a function"),
        ((charge,), {"raises": KeyboardInterrupt}, "derived from Exception"),
        ((charge,), {"raises": 42}, "derived from Exception"),
        ((charge.bind("o", 1),), {"returns": 1}, "a @fluxo.step or @fluxo.workflow function"),
        ((lambda: None,), {"returns": 1}, "decorate it with @fluxo.step or @fluxo.workflow"),
        (("",), {"returns": 1}, "a @fluxo.step or @fluxo.workflow function, or its name"),
        (
            (charge, lambda order_id: None),
            {},
            r"the step is charge\(order_id.*, the replacement <lambda>\(order_id\)",
        ),
        ((charge, lambda a, b: None), {}, "Give it the same parameters"),
    ],
)
def test_stub_rejects_bad_input_with_the_fix(
    env: WorkflowEnvironment, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(fluxo.DefinitionError, match=message):
        env.stub(*args, **kwargs)
    assert env.stubs == []


def test_a_replacement_for_a_step_named_by_name_is_checked_too(env: WorkflowEnvironment) -> None:
    env.run(nap, 1.0)  # registers a workflow whose module holds charge
    with pytest.raises(fluxo.DefinitionError, match="Give it the same parameters"):
        env.stub("charge", lambda order: None)
    assert env.stubs == []


def test_stub_accepts_a_catch_all_replacement(env: WorkflowEnvironment) -> None:
    env.stub(charge, lambda *args, **kwargs: Receipt("any", 0))
    assert env.run(pay, "i", 1) == "any"


def test_an_ambiguous_short_name_asks_for_the_full_name(env: WorkflowEnvironment) -> None:
    @fluxo.step(name="other.charge")
    def charge(order_id: str, cents: int) -> Receipt:
        return Receipt("other", cents)

    @fluxo.workflow(name="other.pay")
    def other_pay(order_id: str, cents: int) -> str:
        return charge(order_id, cents).id

    assert env.run(other_pay, "j", 1) == "other"  # now the environment knows other.charge
    env.stub("charge", returns=Receipt("?", 1))
    with pytest.raises(fluxo.DefinitionError, match="several steps are called 'charge'"):
        env.run(pay, "j", 1)
    env.stub("other.charge", returns=Receipt("full name", 1))
    env.stubs[0].remove()
    assert env.run(other_pay, "k", 1) == "full name"


# -- retries ----------------------------------------------------------------------------


@pytest.mark.parametrize("always_replay", [False, True])
def test_a_stub_that_fails_twice_is_retried(always_replay: bool) -> None:
    attempts: list[str] = []

    def flaky_charge(order_id: str, cents: int) -> Receipt:
        attempts.append(order_id)
        if len(attempts) < 3:
            raise ConnectionError("card network down")
        return Receipt("third-time", cents)

    with WorkflowEnvironment(start_time=T0, always_replay=always_replay) as env:
        env.stub(charge, flaky_charge)
        assert env.run(pay, "k", 1) == "third-time"
        calls = env.calls(charge)
        assert [type(c.error) for c in calls] == [ConnectionError, ConnectionError, type(None)]
        kinds = [e.kind for e in env.history(calls[0].run_id)]
        assert kinds.count("step_attempt_failed") == 2
        assert env.now() == T0 + timedelta(seconds=3)  # back-offs of 1s and 2s, virtual


def test_a_durable_retry_back_off_skips_too(env: WorkflowEnvironment) -> None:
    attempts: list[float] = []

    def flaky_charge(order_id: str, cents: int) -> Receipt:
        attempts.append(env.now().timestamp())
        if len(attempts) < 3:
            raise ConnectionError("card network down")
        return Receipt("patient", cents)

    env.stub(charge_patiently, flaky_charge)
    started = time.perf_counter()
    assert env.run(pay_patiently, "l", 1) == "patient"
    assert time.perf_counter() - started < 1.0
    assert [t - T0.timestamp() for t in attempts] == [0.0, 600.0, 1800.0]


# -- always replay ------------------------------------------------------------------------


def test_always_replay_is_on_by_default() -> None:
    with WorkflowEnvironment() as env:
        assert env.always_replay is True


def test_always_replay_catches_a_workflow_that_does_not_replay_the_way_it_ran(
    env: WorkflowEnvironment,
) -> None:
    with pytest.raises(fluxo.NondeterminismError) as raised:
        env.run(counts_its_executions)
    assert raised.value.expected == f"step {reserve.name}"
    assert [c.args for c in env.calls(note)] == [("first",)]


def test_without_always_replay_the_same_workflow_passes() -> None:
    with WorkflowEnvironment(always_replay=False) as env:
        assert env.run(counts_its_executions) == "done"
    assert EXECUTIONS["count"] == 1  # it never resumed, so its flaw went unseen


def test_always_replay_runs_each_step_once(env: WorkflowEnvironment) -> None:
    env.stub(charge, returns=Receipt("r", 1))
    handle = env.start(checkout, "m", 1)
    env.signal(handle, "approved", True)
    handle.result()
    assert env.steps_run(handle) == [reserve, charge, ship]


# -- several runs -----------------------------------------------------------------------


ENVIRONMENT: list[WorkflowEnvironment] = []
"""The environment of the running test, for steps that start runs through it."""


@fluxo.step
def start_child(parent_id: str, value: int) -> str:
    return ENVIRONMENT[0].start(child.options(id=f"{parent_id}-child"), parent_id, value).id


@fluxo.workflow
def child(parent_id: str, value: int) -> int:
    fluxo.sleep(timedelta(hours=1))
    fluxo.signal(parent_id, "child-done", value * 2)
    return value


@fluxo.workflow
def parent(my_id: str, value: int) -> int:
    start_child(my_id, value)
    doubled: int = fluxo.wait_for_signal("child-done", type=int, timeout=timedelta(days=1))
    return doubled + 1


def test_a_child_run_signals_its_parent(env: WorkflowEnvironment) -> None:
    ENVIRONMENT[:] = [env]
    assert env.run(parent.options(id="p"), "p", 20) == 41
    assert env.now() == T0 + timedelta(hours=1)
    assert env.engine.get_run("p-child").status is Status.COMPLETED
    assert env.steps_run("p") == [start_child]
    assert any(e.name == "p/child-done" for e in env.history("p-child"))


def test_env_run_cannot_wait_from_inside_a_step(env: WorkflowEnvironment) -> None:
    env.stub(note, lambda text: env.run(nap, 1.0))
    with pytest.raises(fluxo.WorkflowFailedError, match="from inside a step or workflow"):
        env.run(fails)


# -- stores and lifecycle -----------------------------------------------------------------


def test_a_store_url_or_object_can_be_given(tmp_path: Path) -> None:
    if importlib.util.find_spec("fluxo.stores.sql") is None:
        pytest.skip("fluxo.stores.sql is not available")
    with WorkflowEnvironment(store=f"sqlite:///{tmp_path}/env.db", start_time=T0) as env:
        assert env.run(approval, 3600.0) == "timed out"
        assert env.now() == T0 + timedelta(hours=1)
    store = fluxo.open_store("memory://")
    with WorkflowEnvironment(store=store) as env:
        assert env.store is store
        env.run(nap, 10.0)
    assert store.list_runs()  # the store object is the caller's: still open


def test_a_closed_environment_says_so(env: WorkflowEnvironment) -> None:
    env.close()
    env.close()  # harmless
    for call in (
        lambda: env.start(nap, 1.0),
        lambda: env.advance(1),
        lambda: env.signal("x", "y"),
        lambda: env.stub(charge, returns=None),
    ):
        with pytest.raises(fluxo.RunStateError, match="WorkflowEnvironment is closed"):
            call()


def test_workflows_register_lazily_and_conflicts_are_reported(env: WorkflowEnvironment) -> None:
    env.run(nap, 1.0)
    assert nap in env.engine.workflows

    @fluxo.workflow(name=nap.name)
    def impostor(duration: float) -> list[str]:
        return []

    with pytest.raises(fluxo.DefinitionError, match="two workflows are named"):
        env.start(impostor, 1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda env: env.start(note, "x"), "decorate it with @fluxo.workflow"),
        (lambda env: env.start(nap, "x", "y"), "do not fit its signature"),
        (lambda env: env.signal(42, "x"), "a run id or the handle"),
        (lambda env: env.history(None), "a run id or the handle"),
        (lambda env: env.signal("x", ""), "non-empty string"),
    ],
)
def test_bad_input_is_reported_with_what_is_wrong(call: Any, message: str) -> None:
    with WorkflowEnvironment() as env, pytest.raises(fluxo.DefinitionError, match=message):
        call(env)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"always_replay": "yes"}, "always_replay= takes True or False"),
        ({"start_time": datetime(2030, 1, 1)}, "timezone-aware datetime"),
        ({"start_time": 1_700_000_000}, "timezone-aware datetime"),
        ({"store": 42}, "store URL"),
        ({"workflows": [note]}, "is not a workflow"),
    ],
)
def test_bad_options_are_reported_with_the_fix(options: dict[str, Any], message: str) -> None:
    with pytest.raises(fluxo.DefinitionError, match=message):
        WorkflowEnvironment(**options)


def test_stub_objects_describe_themselves(env: WorkflowEnvironment) -> None:
    assert repr(env.stub(charge, returns=None)) == f"<fluxo stub of {charge.name}>"
    assert repr(env.stub("charge", returns=None)) == "<fluxo stub of charge>"
    assert isinstance(env.stubs[0], Stub)
    assert "2030-01-01" in repr(env)


# -- the pytest plugin --------------------------------------------------------------------


def test_the_plugin_is_registered_as_a_pytest_entry_point() -> None:
    entry_points = importlib.metadata.entry_points(group="pytest11")
    assert [e.value for e in entry_points if e.name == "fluxo"] == ["fluxo.testing._plugin"]


def test_the_fluxo_env_fixture_is_available_here(fluxo_env: WorkflowEnvironment) -> None:
    assert isinstance(fluxo_env, WorkflowEnvironment)
    assert fluxo_env.run(approval, 60.0) == "timed out"


@pytest.mark.fluxo_env(always_replay=False, start_time=T0)
def test_the_fluxo_env_mark_passes_options(fluxo_env: WorkflowEnvironment) -> None:
    assert fluxo_env.always_replay is False
    assert fluxo_env.now() == T0


def test_the_fixture_in_a_users_test_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user=textwrap.dedent(
            """
            from datetime import timedelta

            import pytest

            import fluxo

            @fluxo.step
            def greet(name: str) -> str:
                return f"hello {name}"

            @fluxo.workflow(name="user.slow_greeting")
            def slow_greeting(name: str) -> str:
                fluxo.sleep(timedelta(days=30))
                return greet(name)

            pytestmark = pytest.mark.fluxo_env(always_replay=False)
            SEEN = []

            def test_runs_a_month_long_workflow(fluxo_env):
                SEEN.append(fluxo_env)
                fluxo_env.stub(greet, returns="hi")
                assert fluxo_env.run(slow_greeting, "ada") == "hi"
                assert fluxo_env.steps_run() == [greet]
                assert fluxo_env.always_replay is False

            @pytest.mark.fluxo_env(always_replay=True)
            def test_the_closest_mark_wins_and_each_test_gets_a_fresh_env(fluxo_env):
                assert fluxo_env.always_replay is True
                assert fluxo_env is not SEEN[0]
                assert fluxo_env.steps_run() == []
                with pytest.raises(fluxo.RunStateError, match="closed"):
                    SEEN[0].advance(1)

            @pytest.mark.fluxo_env(always_reply=True)
            def test_a_misspelt_option(fluxo_env):
                pass

            @pytest.mark.fluxo_env(True)
            def test_a_positional_option(fluxo_env):
                pass
            """
        )
    )
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=2)
    output = result.stdout.str()
    assert "unknown option(s) ['always_reply']; it takes workflows, store, always_replay" in output
    assert "@pytest.mark.fluxo_env takes keyword options only" in output

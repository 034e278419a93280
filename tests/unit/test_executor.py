"""The replay executor, attacked through its invariants (design §4).

Most tests drive one execution at a time with ``helpers.execute`` (claim, then
``engine.execute_claimed`` in this thread), so every interleaving is chosen by
the test. A crash is ``SimulatedCrash``, a ``BaseException`` nothing in Fluxo
catches: the run keeps what it recorded and its lease, as after ``kill -9``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pytest

import fluxo
import fluxo.testing
from fluxo import _errors, _executor, history
from fluxo.testing import ReplayMismatchError

from .conftest import MakeEngine
from .helpers import (
    WAIT,
    Box,
    FakeClock,
    SimulatedCrash,
    SpyStore,
    claim,
    execute,
    kinds,
    named,
    no_sleep,
)

Outcome = _executor.Outcome
Status = fluxo.RunStatus


@dataclasses.dataclass
class Receipt:
    id: str
    cents: int


class Calls(collections.Counter[str]):
    """How often each step body ran."""

    def crash_once(self, key: str) -> None:
        """Count ``key``; the first time, crash the process."""
        self[key] += 1
        if self[key] == 1:
            raise SimulatedCrash(key)


@pytest.fixture
def calls() -> Calls:
    return Calls()


def resume(engine: fluxo.Engine, clock: FakeClock, run_id: str, **kwargs: Any) -> Outcome:
    """Let the crashed execution's lease expire, and execute the run again."""
    clock.advance(3600)
    return execute(engine, run_id, f"resumer-{clock()}", **kwargs)


# -- steps run once; the live run sees the record ---------------------------------------


def test_each_step_runs_once_per_run(make_engine: MakeEngine, calls: Calls) -> None:
    @fluxo.step(name="ex.add")
    def add(a: int, b: int) -> int:
        calls["add"] += 1
        return a + b

    @fluxo.workflow(name="ex.sum3")
    def sum3(a: int, b: int, c: int) -> int:
        return add(add(a, b), c)

    engine = make_engine(sum3)
    handle = engine.start(sum3, 1, 2, 3)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == 6
    assert calls["add"] == 2
    assert named(engine.history(handle.id)) == [
        ("workflow_started", "ex.sum3"),
        ("step_completed", "ex.add"),
        ("step_completed", "ex.add"),
        ("workflow_completed", ""),
    ]
    assert engine.get_run(handle.id).status is fluxo.RunStatus.COMPLETED


def test_the_live_call_returns_the_decoded_record(make_engine: MakeEngine) -> None:
    returned: dict[str, Any] = {}
    seen: dict[str, Any] = {}

    @fluxo.step(name="ex.receipt_as_dict")
    def receipt_as_dict() -> Receipt:
        return {"id": "r-1", "cents": 5}  # type: ignore[return-value]

    @fluxo.step(name="ex.receipt")
    def receipt() -> Receipt:
        value = returned["receipt"] = Receipt("r-2", 6)
        return value

    @fluxo.step(name="ex.untyped")
    def untyped():  # type: ignore[no-untyped-def]
        returned["untyped"] = (1, {"k": (2,)})
        return returned["untyped"]

    @fluxo.workflow(name="ex.decoded")
    def decoded() -> None:
        seen["dict"] = receipt_as_dict()
        seen["receipt"] = receipt()
        seen["untyped"] = untyped()

    engine = make_engine(decoded)
    handle = engine.start(decoded)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert seen["dict"] == Receipt("r-1", 5)
    assert type(seen["dict"]) is Receipt
    assert seen["receipt"] == returned["receipt"]
    assert seen["receipt"] is not returned["receipt"]  # a decoded copy, as replay gives
    assert seen["untyped"] == [1, {"k": [2]}]  # JSON's view of the tuple, as replay gives


def test_a_dataclass_result_is_a_dataclass_live_and_on_replay(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    seen: list[Any] = []

    @fluxo.step(name="ex.charge")
    def charge(cents: int) -> Receipt:
        calls["charge"] += 1
        return Receipt("r", cents)

    @fluxo.step(name="ex.charge_dict")
    def charge_dict(cents: int) -> Receipt:
        calls["charge_dict"] += 1
        return {"id": "d", "cents": cents}  # type: ignore[return-value]

    @fluxo.step(name="ex.crash")
    def crash() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="ex.charging")
    def charging() -> int:
        a, b = charge(3), charge_dict(4)
        seen.extend((a, b))
        crash()
        return a.cents + b.cents

    engine = make_engine(charging)
    handle = engine.start(charging)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == 7
    # live, then replayed
    assert seen == [Receipt("r", 3), Receipt("d", 4), Receipt("r", 3), Receipt("d", 4)]
    assert all(type(value) is Receipt for value in seen)
    assert calls == {"charge": 1, "charge_dict": 1, "crash": 2}


def test_replay_returns_records_without_running_steps_again(
    store_url: str, make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    @fluxo.step(name="ex.side_effect")
    def side_effect(label: str) -> str:
        calls[label] += 1
        return f"{label}#{calls[label]}"

    @fluxo.step(name="ex.fragile")
    def fragile() -> None:
        calls.crash_once("fragile")

    @fluxo.workflow(name="ex.resumable")
    def resumable() -> list[str]:
        done = [side_effect("a"), side_effect("b")]
        fragile()
        done.append(side_effect("c"))
        return done

    engine = make_engine(resumable, store=store_url)
    handle = engine.start(resumable)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    before = engine.history(handle.id)
    assert kinds(before) == ["workflow_started", "step_completed", "step_completed"]
    assert engine.get_run(handle.id).status is fluxo.RunStatus.RUNNING  # still leased

    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == ["a#1", "b#1", "c#1"]
    assert calls == {"a": 1, "b": 1, "c": 1, "fragile": 2}  # at-least-once for the crasher
    after = engine.history(handle.id)
    assert after[: len(before)] == before  # byte-equal: data is compared too
    assert kinds(after[len(before) :]) == ["step_completed", "step_completed", "workflow_completed"]


def test_a_run_whose_lease_is_held_is_not_resumed_early(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    @fluxo.step(name="ex.crashing")
    def crashing() -> None:
        calls.crash_once("c")

    @fluxo.workflow(name="ex.leased")
    def leased() -> None:
        crashing()

    engine = make_engine(leased)
    handle = engine.start(leased)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id, lease=30)
    clock.advance(29)
    worker = engine.worker()
    assert worker.process_one() == 0
    clock.advance(2)
    assert worker.process_one() == 1
    assert engine.get_run(handle.id).status is fluxo.RunStatus.COMPLETED


def test_a_run_finished_by_the_worker_whose_lease_expired_is_left_alone(
    make_engine: MakeEngine, clock: FakeClock, store_url: str
) -> None:
    """A slow worker finishes the run after a second worker claimed it, before it loaded.

    The second worker then loads a finished history. It must not replay it and record
    a failure over the result (found by the scale-out benchmark under heavy load).
    The slow worker had loaded the run while its lease was live (a worker does not
    begin a run whose lease passed to another).
    """

    @fluxo.step(name="ex.slow")
    def slow(x: int) -> int:
        return x + 1

    @fluxo.workflow(name="ex.overtaken")
    def overtaken(x: int) -> int:
        return slow(slow(x))

    engine = make_engine(overtaken, store=store_url)
    handle = engine.start(overtaken, 1)
    claim(engine, handle.id, "w1", lease=10)

    def lose_the_lease(context: _executor.RunContext) -> None:
        clock.advance(11)
        claim(engine, handle.id, "w2", lease=10)  # w1's lease expired after its load

    assert execute(engine, handle.id, "w1", claimed=True, hook=lose_the_lease) is Outcome.COMPLETED
    before = engine.history(handle.id)
    assert execute(engine, handle.id, "w2", claimed=True) is Outcome.LOST
    assert engine.history(handle.id) == before
    assert engine.get_run(handle.id).status is fluxo.RunStatus.COMPLETED
    assert handle.result(timeout=1) == 3


# -- changed code is detected (invariant 7) ---------------------------------------------


ND_CALLS: Calls = Calls()


@fluxo.step(name="nd.reserve")
def nd_reserve(item: str) -> str:
    ND_CALLS["reserve"] += 1
    return f"reserved {item}"


@fluxo.step(name="nd.charge")
def nd_charge(item: str) -> int:
    ND_CALLS["charge"] += 1
    return 100


@fluxo.step(name="nd.gift_wrap")
def nd_gift_wrap(item: str) -> int:
    ND_CALLS["gift_wrap"] += 1
    return 0


@fluxo.step(name="nd.checkpoint")
def nd_checkpoint() -> None:
    ND_CALLS.crash_once("checkpoint")


@fluxo.workflow(name="nd.order")
def order_v1(item: str) -> str:
    reserved = nd_reserve(item)
    cents = nd_charge(item)
    nd_checkpoint()
    return f"{reserved} for {cents}"


@fluxo.workflow(name="nd.order")
def order_v2_swapped(item: str) -> str:
    reserved = nd_reserve(item)
    cents = nd_gift_wrap(item)  # was nd_charge
    nd_checkpoint()
    return f"{reserved} for {cents}"


@fluxo.workflow(name="nd.order")
def order_v2_swallowing(item: str) -> str:
    reserved = nd_reserve(item)
    try:
        cents = nd_gift_wrap(item)
    except Exception:  # a user's broad handler must not hide the mismatch
        cents = -1
    with contextlib.suppress(Exception):
        nd_checkpoint()
    return f"{reserved} for {cents}"


@fluxo.workflow(name="nd.order")
def order_v2_early_return(item: str) -> str:
    return nd_reserve(item)


@fluxo.workflow(name="nd.order")
def order_v2_now_first(item: str) -> str:
    fluxo.now()
    return nd_reserve(item)


@fluxo.workflow(name="nd.order")
def order_v2_raises(item: str) -> str:
    nd_reserve(item)
    raise RuntimeError("refactored away")


@pytest.fixture
def nd_run(shared_store: fluxo.Store, make_engine: MakeEngine, clock: FakeClock) -> str:
    """A run of ``order_v1`` that crashed after recording reserve and charge."""
    ND_CALLS.clear()
    engine = make_engine(order_v1, store=shared_store)
    handle = engine.start(order_v1.options(id="order-1"), "book")
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id, "v1")
    assert named(engine.history(handle.id))[1:] == [
        ("step_completed", "nd.reserve"),
        ("step_completed", "nd.charge"),
    ]
    clock.advance(3600)
    return handle.id


def test_a_swapped_step_fails_the_run_and_keeps_its_history(
    nd_run: str, shared_store: fluxo.Store, make_engine: MakeEngine
) -> None:
    before = shared_store.load(nd_run).events
    v2 = make_engine(order_v2_swapped, store=shared_store)
    assert execute(v2, nd_run, "v2") is Outcome.FAILED

    assert v2.get_run(nd_run).status is fluxo.RunStatus.FAILED
    with pytest.raises(fluxo.NondeterminismError) as info:
        v2.handle(nd_run).result(timeout=1)
    error = info.value
    assert error.run_id == nd_run
    assert error.seq == 2
    assert "nd.gift_wrap" in error.expected
    assert "nd.charge" in error.recorded
    assert "position 2" in str(error)
    assert "engine.retry()" in str(error)

    after = shared_store.load(nd_run).events
    assert after[: len(before)] == before
    assert kinds(after[len(before) :]) == ["workflow_failed"]
    assert ND_CALLS == {"reserve": 1, "charge": 1, "checkpoint": 1}  # nothing ran again

    # Restore the code and retry: the run resumes from its history.
    v1 = make_engine(order_v1, store=shared_store)
    v1.retry(nd_run)
    with v1.worker(idle_timeout=0.05):
        assert v1.handle(nd_run).result(timeout=WAIT) == "reserved book for 100"
    assert ND_CALLS == {"reserve": 1, "charge": 1, "checkpoint": 2}
    final = shared_store.load(nd_run).events
    assert final[: len(before)] == before
    assert kinds(final[len(before) :]) == [
        "workflow_failed",
        "run_retried",
        "step_completed",
        "workflow_completed",
    ]


def test_except_exception_cannot_swallow_a_mismatch(
    nd_run: str, shared_store: fluxo.Store, make_engine: MakeEngine
) -> None:
    v2 = make_engine(order_v2_swallowing, store=shared_store)
    assert execute(v2, nd_run, "v2") is Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError) as info:
        v2.handle(nd_run).result(timeout=1)
    assert info.value.seq == 2
    assert ND_CALLS["gift_wrap"] == 0
    assert ND_CALLS["checkpoint"] == 1  # the later step was not run live either


@pytest.mark.parametrize(
    ("version", "seq", "expected", "recorded"),
    [
        (order_v2_early_return, 2, "the workflow returned", "nd.charge"),
        (order_v2_now_first, 1, "value_recorded now", "nd.reserve"),
        (order_v2_raises, 2, "RuntimeError: refactored away", "nd.charge"),
    ],
    ids=["returns-early", "other-kind", "raises-early"],
)
def test_other_mismatches_are_detected(
    nd_run: str,
    shared_store: fluxo.Store,
    make_engine: MakeEngine,
    version: fluxo.Workflow[..., str],
    seq: int,
    expected: str,
    recorded: str,
) -> None:
    before = shared_store.load(nd_run).events
    engine = make_engine(version, store=shared_store)
    assert execute(engine, nd_run, "v2") is Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError) as info:
        engine.handle(nd_run).result(timeout=1)
    assert info.value.seq == seq
    assert expected in info.value.expected
    assert recorded in info.value.recorded
    assert shared_store.load(nd_run).events[: len(before)] == before


def test_more_calls_than_recorded_is_not_a_mismatch(
    nd_run: str, shared_store: fluxo.Store, make_engine: MakeEngine
) -> None:
    # Adding work *after* the recorded part is how workflows legitimately continue.
    engine = make_engine(order_v1, store=shared_store)
    assert execute(engine, nd_run, "again") is Outcome.COMPLETED


def test_a_renamed_step_replays_under_its_alias(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    store = fluxo.open_store("memory://")

    @fluxo.step(name="old.name")
    def old() -> int:
        calls["old"] += 1
        return 1

    @fluxo.step(name="new.name", aliases=["old.name"])
    def new() -> int:
        calls["new"] += 1
        return 2

    @fluxo.step(name="alias.crash")
    def crash() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="alias.flow")
    def before_rename() -> int:
        value = old()
        crash()
        return value

    @fluxo.workflow(name="alias.flow")
    def after_rename() -> int:
        value = new()
        crash()
        return value

    first = make_engine(before_rename, store=store)
    handle = first.start(before_rename)
    with pytest.raises(SimulatedCrash):
        execute(first, handle.id)
    second = make_engine(after_rename, store=store)
    assert resume(second, clock, handle.id) is Outcome.COMPLETED
    assert second.handle(handle.id).result(timeout=1) == 1  # the recorded value
    assert calls == {"old": 1, "crash": 2}


# -- step failures (invariant 2) --------------------------------------------------------


class PaymentDeclinedError(ValueError):
    pass


def test_a_final_step_failure_is_recorded_and_raised_alike_live_and_on_replay(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    caught: list[fluxo.StepError] = []

    @fluxo.step(name="ex.pay", retry=fluxo.Retry(max_attempts=3, initial=0))
    def pay() -> None:
        calls["pay"] += 1
        raise PaymentDeclinedError(f"declined #{calls['pay']}")

    @fluxo.step(name="ex.after")
    def after() -> None:
        calls.crash_once("after")

    @fluxo.workflow(name="ex.paying")
    def paying() -> str:
        try:
            pay()
        except fluxo.StepError as exc:
            caught.append(exc)
        after()
        return "handled"

    engine = make_engine(paying)
    handle = engine.start(paying)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert named(engine.history(handle.id))[1:] == [
        ("step_attempt_failed", "ex.pay"),
        ("step_attempt_failed", "ex.pay"),
        ("step_failed", "ex.pay"),
    ]
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "handled"
    assert calls["pay"] == 3

    live, replayed = caught
    for error in (live, replayed):
        assert error.step == "ex.pay"
        assert error.attempts == 3
        assert error.type_name == f"{__name__}.PaymentDeclinedError"
        assert error.error_message == "declined #3"
        assert error.is_instance(PaymentDeclinedError)
        assert error.is_instance(ValueError)
        assert error.is_instance(Exception)
        assert not error.is_instance(KeyError)
        assert "declined #3" in error.traceback
        assert "ex.pay" in str(error)
    assert str(live) == str(replayed)
    assert live.type_names == replayed.type_names
    assert live.traceback == replayed.traceback


def test_an_unhandled_step_failure_fails_the_run(make_engine: MakeEngine) -> None:
    @fluxo.step(name="ex.explode")
    def explode() -> None:
        raise KeyError("missing")

    @fluxo.workflow(name="ex.unhandled")
    def unhandled() -> None:
        explode()

    engine = make_engine(unhandled)
    handle = engine.start(unhandled)
    assert execute(engine, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        handle.result(timeout=1)
    error = info.value
    assert error.run_id == handle.id
    assert error.is_instance(fluxo.StepError)
    assert error.is_instance(fluxo.FluxoError)
    assert "'ex.explode'" in error.error_message
    assert "builtins.KeyError: 'missing'" in error.error_message
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_failed",
        "workflow_failed",
    ]


def test_the_retry_shorthand_waits_with_the_default_backoff(make_engine: MakeEngine) -> None:
    attempts: list[int] = []
    sleeps: list[float] = []

    @fluxo.step(name="ex.flaky", retry=3)
    def flaky() -> int:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return len(attempts)

    @fluxo.workflow(name="ex.flaky_flow")
    def flaky_flow() -> int:
        return flaky()

    engine = make_engine(flaky_flow)
    handle = engine.start(flaky_flow)
    assert execute(engine, handle.id, hook=no_sleep(sleeps)) is Outcome.COMPLETED
    assert handle.result(timeout=1) == 3
    assert sleeps == [1.0, 2.0]
    assert kinds(engine.history(handle.id))[1:] == [
        "step_attempt_failed",
        "step_attempt_failed",
        "step_completed",
        "workflow_completed",
    ]
    recorded = engine.codec.decode(engine.history(handle.id)[1].data or b"", _executor.ErrorInfo)
    assert recorded.type == "builtins.ConnectionError"
    assert recorded.attempt == 1


@pytest.mark.parametrize(
    ("policy", "error", "expected_attempts"),
    [
        (fluxo.Retry(max_attempts=5, initial=0, non_retryable=(KeyError,)), KeyError, 1),
        (fluxo.Retry(max_attempts=5, initial=0, retry_on=(ConnectionError,)), ValueError, 1),
        (fluxo.Retry(max_attempts=5, initial=0, retry_on=(ConnectionError,)), OSError, 1),
        (fluxo.Retry(max_attempts=4, initial=0, retry_on=(OSError,)), ConnectionError, 4),
        (fluxo.Retry(max_attempts=2, initial=0), RuntimeError, 2),
    ],
    ids=["non-retryable", "not-in-retry-on", "base-class-not-in-retry-on", "subclass", "any"],
)
def test_which_errors_are_retried(
    make_engine: MakeEngine,
    policy: fluxo.Retry,
    error: type[Exception],
    expected_attempts: int,
) -> None:
    attempts: list[int] = []

    @fluxo.step(name="ex.failing", retry=policy)
    def failing() -> None:
        attempts.append(1)
        raise error("nope")

    @fluxo.workflow(name="ex.failing_flow")
    def failing_flow() -> None:
        failing()

    engine = make_engine(failing_flow)
    handle = engine.start(failing_flow)
    assert execute(engine, handle.id) is Outcome.FAILED
    assert len(attempts) == expected_attempts
    assert kinds(engine.history(handle.id))[1:] == [
        *["step_attempt_failed"] * (expected_attempts - 1),
        "step_failed",
        "workflow_failed",
    ]


def test_retrying_a_failed_run_gives_the_failed_step_a_fresh_budget(
    store_url: str, make_engine: MakeEngine, calls: Calls
) -> None:
    failures = {"left": 3}

    @fluxo.step(name="ex.prepare")
    def prepare() -> str:
        calls["prepare"] += 1
        return "ready"

    @fluxo.step(name="ex.ship", retry=fluxo.Retry(max_attempts=2, initial=0))
    def ship() -> str:
        calls["ship"] += 1
        if failures["left"] > 0:
            failures["left"] -= 1
            raise TimeoutError("carrier down")
        return "shipped"

    @fluxo.workflow(name="ex.shipping")
    def shipping() -> str:
        return f"{prepare()} {ship()}"

    engine = make_engine(shipping, store=store_url)
    handle = engine.start(shipping)
    assert execute(engine, handle.id) is Outcome.FAILED
    assert calls == {"prepare": 1, "ship": 2}

    engine.retry(handle.id)  # attempts 3 (fails) and 4 (succeeds): a fresh budget of 2
    assert engine.get_run(handle.id).status is fluxo.RunStatus.PENDING
    assert execute(engine, handle.id, "retrier") is Outcome.COMPLETED
    assert handle.result(timeout=1) == "ready shipped"
    assert calls == {"prepare": 1, "ship": 4}
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_completed",
        "step_attempt_failed",
        "step_failed",
        "workflow_failed",
        "run_retried",
        "step_attempt_failed",
        "step_completed",
        "workflow_completed",
    ]


def test_a_run_can_be_retried_again_after_failing_again(make_engine: MakeEngine) -> None:
    outcomes = ["fail", "fail", "ok"]

    @fluxo.step(name="ex.stubborn")
    def stubborn() -> str:
        if outcomes.pop(0) == "fail":
            raise RuntimeError("still broken")
        return "fixed"

    @fluxo.workflow(name="ex.stubborn_flow")
    def stubborn_flow() -> str:
        return stubborn()

    engine = make_engine(stubborn_flow)
    handle = engine.start(stubborn_flow)
    assert execute(engine, handle.id, "a") is Outcome.FAILED
    engine.retry(handle.id)
    assert execute(engine, handle.id, "b") is Outcome.FAILED
    engine.retry(handle.id)
    assert execute(engine, handle.id, "c") is Outcome.COMPLETED
    assert handle.result(timeout=1) == "fixed"
    assert outcomes == []


def test_retrying_after_a_mismatch_does_not_rerun_a_settled_step_failure(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    """A final step failure the workflow handled stays settled when a mismatch is retried."""
    store = fluxo.open_store("memory://")

    @fluxo.step(name="settled.pay")
    def pay() -> str:
        calls["pay"] += 1
        raise PaymentDeclinedError("declined")

    @fluxo.step(name="settled.other")
    def other() -> str:
        calls["other"] += 1
        return "other"

    @fluxo.step(name="settled.crash")
    def crash() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="settled.flow")
    def flow_v1() -> str:
        try:
            return pay()
        except fluxo.StepError:
            crash()
            return "declined, handled"

    @fluxo.workflow(name="settled.flow")
    def flow_v2() -> str:
        return other()  # the history has pay's failure here

    v1 = make_engine(flow_v1, store=store)
    handle = v1.start(flow_v1)
    with pytest.raises(SimulatedCrash):
        execute(v1, handle.id)
    v2 = make_engine(flow_v2, store=store)
    assert resume(v2, clock, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError):
        v2.handle(handle.id).result(timeout=1)

    v1.retry(handle.id)
    assert execute(v1, handle.id, "after-fix") is Outcome.COMPLETED
    assert handle.result(timeout=1) == "declined, handled"
    assert calls == {"pay": 1, "crash": 2}  # pay's recorded failure was replayed


def test_retry_refuses_runs_that_have_not_failed(make_engine: MakeEngine) -> None:
    @fluxo.workflow(name="ex.fine")
    def fine() -> int:
        return 1

    engine = make_engine(fine)
    handle = engine.start(fine)
    with pytest.raises(fluxo.RunStateError, match="not failed"):
        engine.retry(handle.id)
    execute(engine, handle.id)
    with pytest.raises(fluxo.RunStateError, match="completed"):
        engine.retry(handle.id)
    with pytest.raises(fluxo.RunNotFoundError):
        engine.retry("nope")


# -- bad values fail loudly and lose nothing (invariant 6) ------------------------------


class Unencodable:
    pass


@pytest.mark.parametrize(
    ("value", "type_name", "error_type"),
    [
        (Unencodable(), f"{__name__}.Unencodable", "fluxo.EncodeError"),
        ({"key": object()}, "builtins.dict", "fluxo.EncodeError"),
        ("lone \udc80 surrogate", "builtins.str", "fluxo.EncodeError"),
    ],
    ids=["custom-class", "nested-object", "lone-surrogate"],
)
def test_an_unencodable_step_result_fails_that_step(
    make_engine: MakeEngine, value: Any, type_name: str, error_type: str
) -> None:
    seen: list[fluxo.StepError] = []

    @fluxo.step(name="ex.good")
    def good() -> int:
        return 1

    @fluxo.step(name="ex.bad", retry=fluxo.Retry(max_attempts=3, initial=0))
    def bad():  # type: ignore[no-untyped-def]
        return value

    @fluxo.workflow(name="ex.bad_value")
    def bad_value() -> None:
        good()
        try:
            bad()
        except fluxo.StepError as exc:
            seen.append(exc)
            raise

    engine = make_engine(bad_value)
    handle = engine.start(bad_value)
    assert execute(engine, handle.id) is Outcome.FAILED
    (error,) = seen
    assert error.step == "ex.bad"
    assert error.type_name == error_type
    assert "'ex.bad'" in error.error_message
    assert type_name in error.error_message
    assert error.attempts == 1  # a value that cannot be recorded is not retried

    events = engine.history(handle.id)
    assert named(events) == [
        ("workflow_started", "ex.bad_value"),
        ("step_completed", "ex.good"),
        ("step_failed", "ex.bad"),
        ("workflow_failed", ""),
    ]
    assert events[1].data == b"1"
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        handle.result(timeout=1)
    assert info.value.is_instance(fluxo.StepError)


def test_a_step_result_violating_its_annotation_fails_the_step(make_engine: MakeEngine) -> None:
    @fluxo.step(name="ex.liar")
    def liar() -> int:
        return "not an int"  # type: ignore[return-value]

    @fluxo.workflow(name="ex.lied_to")
    def lied_to() -> str:
        try:
            liar()
        except fluxo.StepError as exc:
            return f"{exc.is_instance(fluxo.DecodeError)} {exc.error_message}"
        return "unreachable"

    engine = make_engine(lied_to)
    handle = engine.start(lied_to)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    message = handle.result(timeout=1)
    assert message.startswith("True ")  # the StepError describes a DecodeError
    assert "'ex.liar'" in message
    assert "return annotation" in message
    assert kinds(engine.history(handle.id))[1] == "step_failed"


def test_a_step_error_text_json_cannot_hold_is_still_recorded(make_engine: MakeEngine) -> None:
    @fluxo.step(name="ex.weird_error")
    def weird_error() -> None:
        raise OSError("cannot open " + b"caf\xe9".decode("utf-8", "surrogateescape"))

    @fluxo.workflow(name="ex.weird_flow")
    def weird_flow() -> None:
        weird_error()

    engine = make_engine(weird_flow)
    handle = engine.start(weird_flow)
    assert execute(engine, handle.id) is Outcome.FAILED
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_failed",
        "workflow_failed",
    ]
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        handle.result(timeout=1)
    assert info.value.is_instance(fluxo.StepError)
    assert "cannot open caf" in info.value.error_message


def test_a_workflow_result_violating_its_annotation_fails_the_run(
    make_engine: MakeEngine,
) -> None:
    @fluxo.workflow(name="ex.bad_result")
    def bad_result() -> int:
        return "seven"  # type: ignore[return-value]

    @fluxo.workflow(name="ex.opaque_result")
    def opaque_result() -> Any:
        return Unencodable()

    engine = make_engine(bad_result, opaque_result)
    for wf in (bad_result, opaque_result):
        handle = engine.start(wf)
        assert execute(engine, handle.id) is Outcome.FAILED
        with pytest.raises(fluxo.WorkflowFailedError) as info:
            handle.result(timeout=1)
        assert info.value.is_instance(fluxo.EncodeError)
        assert wf.name in info.value.error_message


def test_a_workflow_exception_fails_the_run_with_its_description(make_engine: MakeEngine) -> None:
    @fluxo.workflow(name="ex.raising")
    def raising() -> None:
        raise PaymentDeclinedError("no funds")

    engine = make_engine(raising)
    handle = engine.start(raising)
    assert execute(engine, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        handle.result(timeout=1)
    assert info.value.type_name == f"{__name__}.PaymentDeclinedError"
    assert info.value.is_instance(ValueError)
    assert info.value.error_message == "no funds"
    assert "no funds" in info.value.traceback
    assert engine.get_run(handle.id).status is fluxo.RunStatus.FAILED


# -- deterministic helpers, logging, context --------------------------------------------


def test_now_uuid4_and_random_are_recorded_and_replayed(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    seen: list[tuple[datetime, uuid.UUID, float]] = []

    @fluxo.step(name="ex.crash_after_values")
    def crash_after_values() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="ex.values")
    def values() -> str:
        seen.append((fluxo.now(), fluxo.uuid4(), fluxo.random()))
        crash_after_values()
        return str(seen[-1][1])

    engine = make_engine(values)
    handle = engine.start(values)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    live = seen[0]
    assert live[0] == datetime.fromtimestamp(clock(), timezone.utc)  # the engine's clock
    assert live[0].tzinfo is not None
    assert 0.0 <= live[2] < 1.0

    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert seen[1] == live  # although the clock moved an hour on
    assert type(seen[1][1]) is uuid.UUID
    assert handle.result(timeout=1) == str(live[1])
    assert named(engine.history(handle.id))[1:4] == [
        ("value_recorded", "now"),
        ("value_recorded", "uuid4"),
        ("value_recorded", "random"),
    ]


def test_deterministic_helpers_work_outside_a_workflow() -> None:
    assert fluxo.now().tzinfo is not None
    assert isinstance(fluxo.uuid4(), uuid.UUID)
    assert fluxo.uuid4() != fluxo.uuid4()
    assert 0.0 <= fluxo.random() < 1.0


def test_the_workflow_logger_is_quiet_during_replay(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxo.workflow")

    @fluxo.step(name="ex.log_step")
    def log_step() -> None:
        calls["step"] += 1

    @fluxo.step(name="ex.log_crash")
    def log_crash() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="ex.logging")
    def logging_flow() -> None:
        fluxo.logger.info("starting %s", "order")
        log_step()
        fluxo.logger.warning("step done")
        log_step()
        log_crash()
        fluxo.logger.info("finished")

    engine = make_engine(logging_flow)
    handle = engine.start(logging_flow)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    messages = [r.getMessage() for r in caplog.records if r.name == "fluxo.workflow"]
    assert messages == ["starting order", "step done", "finished"]
    record = next(r for r in caplog.records if r.name == "fluxo.workflow")
    assert record.fluxo_run_id == handle.id  # type: ignore[attr-defined]
    assert record.fluxo_workflow == "ex.logging"  # type: ignore[attr-defined]


def test_in_workflow_and_is_replaying(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    seen: list[tuple[str, bool, bool]] = []

    @fluxo.step(name="ex.probe")
    def probe() -> None:
        seen.append(("step", fluxo.in_workflow(), fluxo.is_replaying()))

    @fluxo.step(name="ex.probe_crash")
    def probe_crash() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="ex.probing")
    def probing() -> None:
        seen.append(("start", fluxo.in_workflow(), fluxo.is_replaying()))
        probe()
        probe_crash()
        seen.append(("end", fluxo.in_workflow(), fluxo.is_replaying()))

    assert not fluxo.in_workflow()
    assert not fluxo.is_replaying()
    engine = make_engine(probing)
    handle = engine.start(probing)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert not fluxo.in_workflow()  # the context is reset even when the run crashes
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert seen == [
        ("start", True, False),
        ("step", False, False),  # a step body is ordinary code
        ("start", True, True),
        ("end", True, False),
    ]


def test_a_step_called_from_a_step_is_a_plain_call(make_engine: MakeEngine, calls: Calls) -> None:
    @fluxo.step(name="ex.inner")
    def inner(x: int) -> int:
        calls["inner"] += 1
        return x * 2

    @fluxo.step(name="ex.outer")
    def outer(x: int) -> int:
        calls["outer"] += 1
        return inner(x) + inner(x + 1)

    @fluxo.workflow(name="ex.nesting")
    def nesting() -> int:
        return outer(1)

    engine = make_engine(nesting)
    handle = engine.start(nesting)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == 6
    assert calls == {"outer": 1, "inner": 2}
    assert named(engine.history(handle.id))[1:] == [
        ("step_completed", "ex.outer"),
        ("workflow_completed", ""),
    ]


# -- corrupted histories fail cleanly ---------------------------------------------------


def _corrupt(store: fluxo.Store, run_id: str, seq: int, event: history.Event) -> None:
    """Replace one event of a memory store's history, as a damaged database would."""
    store._events[run_id][seq] = event  # type: ignore[attr-defined]


def _crashed_run(engine: fluxo.Engine, wf: fluxo.Workflow[[], Any]) -> str:
    handle = engine.start(wf)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    return handle.id


@pytest.mark.parametrize(
    "damage",
    [
        history.StepCompleted("ex.value", b"\xff\xfe not json"),
        history.StepCompleted("ex.value", b'"a string, not an int"'),
        history.StepFailed("ex.value", b"{garbage"),
        history.StepCompleted("ex.value", None),
    ],
    ids=["garbage-result", "wrong-type-result", "garbage-error", "missing-result"],
)
@pytest.mark.parametrize("position", ["last", "middle"])
def test_garbage_in_a_recorded_payload_fails_the_run_cleanly(
    make_engine: MakeEngine,
    clock: FakeClock,
    calls: Calls,
    damage: history.Event,
    position: str,
) -> None:
    @fluxo.step(name="ex.value")
    def value() -> int:
        calls["value"] += 1
        return 1

    @fluxo.step(name="ex.crash_later")
    def crash_later() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="ex.damaged")
    def damaged() -> int:
        result = value()
        if position == "middle":
            value()
        crash_later()
        return result

    engine = make_engine(damaged)
    run_id = _crashed_run(engine, damaged)
    _corrupt(engine.store, run_id, 1, damage)
    before = engine.history(run_id)
    assert resume(engine, clock, run_id) is Outcome.FAILED
    assert engine.get_run(run_id).status is fluxo.RunStatus.FAILED
    with pytest.raises(fluxo.NondeterminismError) as info:
        engine.handle(run_id).result(timeout=1)
    assert info.value.seq == 1
    assert "ex.value" in info.value.recorded
    assert "does not decode" in str(info.value)
    assert calls["value"] == (2 if position == "middle" else 1)  # nothing re-ran
    assert engine.history(run_id)[: len(before)] == before


def test_except_exception_cannot_swallow_a_record_that_does_not_decode(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    """Live the step returned a value; replay must not take an ``except`` branch instead."""

    @fluxo.step(name="ex.amount")
    def amount() -> int:
        calls["amount"] += 1
        return 5

    @fluxo.step(name="ex.crash_amount")
    def crash_amount() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="ex.forgiving")
    def forgiving() -> int:
        try:
            value = amount()
        except Exception:
            value = -1
        crash_amount()
        return value

    engine = make_engine(forgiving)
    run_id = _crashed_run(engine, forgiving)
    _corrupt(engine.store, run_id, 1, history.StepCompleted("ex.amount", b"{oops"))
    assert resume(engine, clock, run_id) is Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError):
        engine.handle(run_id).result(timeout=1)
    assert calls == {"amount": 1, "crash": 1}  # crash_amount did not run live again


def test_a_changed_return_annotation_is_a_mismatch(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    store = fluxo.open_store("memory://")

    @fluxo.step(name="ann.total")
    def total_int() -> int:
        return 5

    @fluxo.step(name="ann.total")
    def total_receipt() -> Receipt:
        return Receipt("r", 5)

    @fluxo.step(name="ann.crash")
    def crash() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="ann.flow")
    def flow_v1() -> int:
        total_int()
        crash()
        return 1

    @fluxo.workflow(name="ann.flow")
    def flow_v2() -> int:
        total_receipt()
        crash()
        return 2

    v1 = make_engine(flow_v1, store=store)
    run_id = _crashed_run(v1, flow_v1)
    v2 = make_engine(flow_v2, store=store)
    assert resume(v2, clock, run_id) is Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError) as info:
        v2.handle(run_id).result(timeout=1)
    assert info.value.seq == 1
    assert "Receipt" in str(info.value)


@dataclasses.dataclass(frozen=True, slots=True)
class AlienEvent(history.Event):
    """A kind of event this version of Fluxo does not know."""

    kind = "alien_event"


def test_an_unknown_event_kind_fails_the_run_cleanly(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    @fluxo.step(name="ex.known")
    def known() -> int:
        calls["known"] += 1
        return 1

    @fluxo.step(name="ex.crash_here")
    def crash_here() -> None:
        calls.crash_once("crash")

    @fluxo.workflow(name="ex.alien")
    def alien() -> int:
        known()
        crash_here()
        return 0

    engine = make_engine(alien)
    run_id = _crashed_run(engine, alien)
    _corrupt(engine.store, run_id, 1, AlienEvent("x", b"{}"))
    assert resume(engine, clock, run_id) is Outcome.FAILED
    with pytest.raises(fluxo.HistoryCorruptError) as info:
        engine.handle(run_id).result(timeout=1)
    assert info.value.seq == 1
    assert "alien_event" in info.value.problem
    assert calls["known"] == 1


def test_garbage_input_fails_the_run_without_running_it(
    make_engine: MakeEngine, calls: Calls
) -> None:
    @fluxo.workflow(name="ex.input")
    def takes_input(n: int) -> int:
        calls["ran"] += 1
        return n

    engine = make_engine(takes_input)
    handle = engine.start(takes_input, 1)
    _corrupt(engine.store, handle.id, 0, history.WorkflowStarted("ex.input", b'{"n": "one"}'))
    assert execute(engine, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        handle.result(timeout=1)
    assert info.value.is_instance(fluxo.DecodeError)
    assert calls["ran"] == 0


# -- control flow cannot be swallowed (invariant 8) -------------------------------------


def test_cancelled_is_not_an_exception_and_cannot_be_constructed() -> None:
    assert issubclass(fluxo.Cancelled, BaseException)
    assert not issubclass(fluxo.Cancelled, Exception)
    with pytest.raises(TypeError, match="cannot be constructed"):
        fluxo.Cancelled()


def test_except_exception_cannot_swallow_a_cancellation(
    make_engine: MakeEngine, calls: Calls
) -> None:
    @fluxo.step(name="ex.work")
    def work(n: int) -> int:
        calls[f"work{n}"] += 1
        return n

    @fluxo.workflow(name="ex.stubborn_cancel")
    def stubborn_cancel() -> str:
        work(1)
        for n in (2, 3):
            try:
                work(n)
            except Exception:
                calls["swallowed"] += 1
        return "finished anyway"

    engine = make_engine(stubborn_cancel)
    handle = engine.start(stubborn_cancel)

    def cancel_after_first_step(context: _executor.RunContext) -> None:
        real_record = context._record_many

        def record(events: Sequence[history.Event], *args: Any, **kwargs: Any) -> None:
            real_record(events, *args, **kwargs)
            if any(isinstance(event, history.StepCompleted) for event in events):
                engine.cancel(handle.id)
                context.cancel_requested.set()  # as the heartbeat would deliver it

        context._record_many = record  # type: ignore[method-assign]

    assert execute(engine, handle.id, hook=cancel_after_first_step) is Outcome.CANCELLED
    assert calls == {"work1": 1}
    with pytest.raises(fluxo.WorkflowCancelledError) as info:
        handle.result(timeout=1)
    assert info.value.run_id == handle.id
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_completed",
        "cancel_requested",
        "workflow_cancelled",
    ]


def test_a_cancellation_during_a_retry_backoff_replays(
    make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    """Cancelled between two attempts, then crashed in cleanup: replay must agree."""

    # A back-off short enough to wait in the thread (longer ones are durable timers).
    @fluxo.step(name="ex.retried", retry=fluxo.Retry(max_attempts=3, initial=1))
    def retried() -> None:
        calls["retried"] += 1
        raise ConnectionError("down")

    @fluxo.step(name="ex.cleanup")
    def cleanup() -> None:
        calls.crash_once("cleanup")

    @fluxo.workflow(name="ex.cancel_in_backoff")
    def cancel_in_backoff() -> None:
        try:
            retried()
        finally:
            cleanup()

    engine = make_engine(cancel_in_backoff)
    handle = engine.start(cancel_in_backoff)

    def cancel_while_sleeping(context: _executor.RunContext) -> None:
        def sleep(seconds: float) -> None:
            engine.cancel(handle.id)
            context.cancel_requested.set()

        context.pause = sleep

    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id, hook=cancel_while_sleeping)
    assert kinds(engine.history(handle.id))[1:] == ["step_attempt_failed", "cancel_requested"]

    assert resume(engine, clock, handle.id) is Outcome.CANCELLED
    assert calls == {"retried": 1, "cleanup": 2}
    assert kinds(engine.history(handle.id))[1:] == [
        "step_attempt_failed",
        "cancel_requested",
        "step_completed",
        "workflow_cancelled",
    ]


# -- two executions of one run (invariant 1) --------------------------------------------


def test_a_stale_execution_loses_the_race_for_a_position(
    store_url: str, make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    """Worker A's lease expires mid-step; B takes over; A's late record is refused."""
    a_in_step = threading.Event()
    release_a = threading.Event()

    @fluxo.step(name="race.first")
    def first() -> str:
        who = threading.current_thread().name
        calls[f"first-{who}"] += 1
        if who == "A":
            a_in_step.set()
            assert release_a.wait(WAIT)
        return who

    @fluxo.step(name="race.second")
    def second(prev: str) -> str:
        who = threading.current_thread().name
        calls[f"second-{who}"] += 1
        return f"{prev}+{who}"

    @fluxo.workflow(name="race.flow")
    def flow() -> str:
        return second(first())

    engine = make_engine(flow, store=store_url)
    handle = engine.start(flow)
    claim(engine, handle.id, "worker-a", lease=10)
    outcome_a = Box()
    outcome_a.run(lambda: execute(engine, handle.id, "worker-a", claimed=True), "A")
    assert a_in_step.wait(WAIT)

    clock.advance(11)  # A's lease has expired; A does not know yet
    claim(engine, handle.id, "worker-b", lease=10)
    outcome_b = Box()
    outcome_b.run(lambda: execute(engine, handle.id, "worker-b", claimed=True), "B")
    assert outcome_b.get() is Outcome.COMPLETED
    release_a.set()
    assert outcome_a.get() is Outcome.LOST

    assert handle.result(timeout=1) == "B+B"
    events = engine.history(handle.id)
    assert named(events) == [
        ("workflow_started", "race.flow"),
        ("step_completed", "race.first"),
        ("step_completed", "race.second"),
        ("workflow_completed", ""),
    ]
    assert events[1].data == b'"B"'
    assert calls == {"first-A": 1, "first-B": 1, "second-B": 1}  # A stopped at its record
    assert engine.get_run(handle.id).status is fluxo.RunStatus.COMPLETED


def test_two_executions_interleaved_step_by_step_never_share_a_position(
    store_url: str, make_engine: MakeEngine, clock: FakeClock, calls: Calls
) -> None:
    """A records step 1, stalls in step 2; B replays step 1 and finishes; A is fenced off."""
    a_in_second = threading.Event()
    release_a = threading.Event()

    @fluxo.step(name="race2.first")
    def first() -> str:
        calls[f"first-{threading.current_thread().name}"] += 1
        return threading.current_thread().name

    @fluxo.step(name="race2.second")
    def second() -> str:
        who = threading.current_thread().name
        calls[f"second-{who}"] += 1
        if who == "A":
            a_in_second.set()
            assert release_a.wait(WAIT)
        return who

    @fluxo.step(name="race2.third")
    def third() -> str:
        who = threading.current_thread().name
        calls[f"third-{who}"] += 1
        return who

    @fluxo.workflow(name="race2.flow")
    def flow() -> list[str]:
        return [first(), second(), third()]

    engine = make_engine(flow, store=store_url)
    handle = engine.start(flow)
    claim(engine, handle.id, "worker-a", lease=10)
    outcome_a = Box()
    outcome_a.run(lambda: execute(engine, handle.id, "worker-a", claimed=True), "A")
    assert a_in_second.wait(WAIT)

    clock.advance(11)
    claim(engine, handle.id, "worker-b", lease=10)
    outcome_b = Box()
    outcome_b.run(lambda: execute(engine, handle.id, "worker-b", claimed=True), "B")
    assert outcome_b.get() is Outcome.COMPLETED
    release_a.set()
    assert outcome_a.get() is Outcome.LOST

    assert handle.result(timeout=1) == ["A", "B", "B"]
    assert named(engine.history(handle.id)) == [
        ("workflow_started", "race2.flow"),
        ("step_completed", "race2.first"),
        ("step_completed", "race2.second"),
        ("step_completed", "race2.third"),
        ("workflow_completed", ""),
    ]
    assert calls == {"first-A": 1, "second-A": 1, "second-B": 1, "third-B": 1}
    assert engine.get_run(handle.id).status is fluxo.RunStatus.COMPLETED


def test_a_lost_execution_hands_nothing_back_to_the_winner(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    """The loser gives its lease back on the way out; that must not free the winner's."""
    a_in_slow = threading.Event()
    release_a = threading.Event()
    b_in_more = threading.Event()
    release_b = threading.Event()

    @fluxo.step(name="race3.slow")
    def slow() -> str:
        who = threading.current_thread().name
        if who == "A":
            a_in_slow.set()
            assert release_a.wait(WAIT)
        return who

    @fluxo.step(name="race3.more")
    def more() -> None:
        if threading.current_thread().name == "B":
            b_in_more.set()
            assert release_b.wait(WAIT)

    @fluxo.workflow(name="race3.flow")
    def flow() -> str:
        value = slow()
        more()
        return value

    engine = make_engine(flow)
    handle = engine.start(flow)
    claim(engine, handle.id, "worker-a", lease=10)
    outcome_a = Box()
    outcome_a.run(lambda: execute(engine, handle.id, "worker-a", claimed=True), "A")
    assert a_in_slow.wait(WAIT)
    clock.advance(11)
    claim(engine, handle.id, "worker-b", lease=10)
    outcome_b = Box()
    outcome_b.run(lambda: execute(engine, handle.id, "worker-b", claimed=True), "B")
    assert b_in_more.wait(WAIT)  # B recorded slow() and is inside more()

    release_a.set()
    assert outcome_a.get() is Outcome.LOST
    run = engine.get_run(handle.id)
    assert run.status is fluxo.RunStatus.RUNNING
    assert run.lease_owner == "worker-b"
    assert (
        engine.store.claim(
            "worker-c", ["race3.flow"], now=clock(), lease_until=clock() + 10, limit=1
        )
        == []
    )

    release_b.set()
    assert outcome_b.get() is Outcome.COMPLETED
    assert handle.result(timeout=1) == "B"
    assert kinds(engine.history(handle.id)).count("step_completed") == 2


# -- the store failing mid-run ----------------------------------------------------------


class FlakyStore(SpyStore):
    """A store whose appends fail while ``down`` is set, as a database blip would."""

    def __init__(self, inner: fluxo.Store) -> None:
        super().__init__(inner)
        self.down_for: set[int] = set()
        self.appends = 0

    def append(self, *args: Any, **kwargs: Any) -> None:
        self.appends += 1
        if self.appends in self.down_for:
            raise fluxo.StoreUnavailableError("the database went away")
        self.inner.append(*args, **kwargs)


class CountingStore(SpyStore):
    """A store that keeps the events of each append, in order."""

    def __init__(self, inner: fluxo.Store) -> None:
        super().__init__(inner)
        self.appended: list[list[history.Event]] = []

    def append(self, run_id: str, seq: int, events: Any, *args: Any, **kwargs: Any) -> None:
        self.inner.append(run_id, seq, events, *args, **kwargs)
        self.appended.append(list(events))


@pytest.mark.parametrize("swallow", [False, True], ids=["propagating", "swallowed"])
def test_a_failed_record_stops_the_execution_instead_of_failing_the_run(
    make_engine: MakeEngine, calls: Calls, swallow: bool, clock: FakeClock
) -> None:
    store = FlakyStore(fluxo.open_store("memory://"))

    @fluxo.step(name="flaky.count")
    def count(n: int) -> int:
        calls[f"count{n}"] += 1
        return n

    @fluxo.workflow(name="flaky.flow")
    def flow() -> list[int]:
        seen = []
        try:
            seen.append(count(1))
        except Exception:
            if not swallow:
                raise
            seen.append(-1)  # must never be what the run records
        seen.append(count(2))
        return seen

    engine = make_engine(flow, store=store)
    handle = engine.start(flow)
    store.down_for = {1}  # recording count(1) fails
    assert execute(engine, handle.id, "a") is Outcome.BROKEN
    assert calls == {"count1": 1}  # count(2) was not run live on top of the gap
    run = engine.get_run(handle.id)
    assert run.status is Status.RUNNING  # not failed; the lease is kept, not handed back,
    assert run.lease_owner == "a"  # so a broken store is not retried in a hot loop
    assert kinds(engine.history(handle.id)) == ["workflow_started"]

    clock.advance(31)  # the lease expires unrenewed
    assert execute(engine, handle.id, "b") is Outcome.COMPLETED
    assert handle.result(timeout=1) == [1, 2]
    assert named(engine.history(handle.id))[1:3] == [
        ("step_completed", "flaky.count"),
        ("step_completed", "flaky.count"),
    ]


def test_a_failed_final_record_leaves_the_run_to_resume(
    make_engine: MakeEngine, calls: Calls, clock: FakeClock
) -> None:
    store = FlakyStore(fluxo.open_store("memory://"))

    @fluxo.step(name="flaky.once")
    def once() -> str:
        calls["once"] += 1
        return "done"

    @fluxo.step(name="flaky.first")
    def first() -> str:
        calls["first"] += 1
        return "first"

    @fluxo.workflow(name="flaky.finish")
    def finish() -> str:
        return first() + once()

    engine = make_engine(finish, store=store)
    handle = engine.start(finish)
    # Write 1 is first()'s record, made as once() begins; write 2 is once()'s record
    # and the completion together, and it fails.
    store.down_for = {2}
    assert execute(engine, handle.id, "a") is Outcome.BROKEN
    assert engine.get_run(handle.id).status is Status.RUNNING  # leased until it expires
    assert kinds(engine.history(handle.id)) == ["workflow_started", "step_completed"]
    clock.advance(31)
    assert execute(engine, handle.id, "b") is Outcome.COMPLETED
    assert handle.result(timeout=1) == "firstdone"
    # The recorded step never runs again; the last one, whose record was lost with
    # the completion, runs again (steps are at-least-once).
    assert calls == {"first": 1, "once": 2}
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "step_completed",
        "step_completed",
        "workflow_completed",
    ]


def test_the_last_step_and_the_end_are_one_write(make_engine: MakeEngine) -> None:
    store = CountingStore(fluxo.open_store("memory://"))

    @fluxo.step(name="oneway.add")
    def add(x: int) -> int:
        return x + 1

    @fluxo.workflow(name="oneway.five")
    def five(x: int) -> int:
        for _ in range(5):
            x = add(x)
        return x

    engine = make_engine(five, store=store)
    handle = engine.start(five, 0)
    assert execute(engine, handle.id, "a") is Outcome.COMPLETED
    assert handle.result(timeout=1) == 5
    # four step records, then the fifth with the completion: five writes, not six
    assert [len(events) for events in store.appended] == [1, 1, 1, 1, 2]
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        *["step_completed"] * 5,
        "workflow_completed",
    ]


def test_a_finally_that_raises_during_a_store_failure_does_not_fail_the_run(
    make_engine: MakeEngine, calls: Calls, clock: FakeClock
) -> None:
    store = FlakyStore(fluxo.open_store("memory://"))

    @fluxo.step(name="unwind.work")
    def work() -> str:
        calls["work"] += 1
        return "ok"

    @fluxo.workflow(name="unwind.flow")
    def flow() -> str:
        try:
            return work()
        finally:
            raise ValueError("cleanup broke while unwinding")

    engine = make_engine(flow, store=store)
    handle = engine.start(flow)
    store.down_for = {1}
    assert execute(engine, handle.id, "a") is Outcome.BROKEN
    assert engine.get_run(handle.id).status is Status.RUNNING  # not failed
    assert kinds(engine.history(handle.id)) == ["workflow_started"]


def test_an_unresolvable_step_annotation_fails_the_step_before_its_side_effect(
    make_engine: MakeEngine, calls: Calls
) -> None:
    @fluxo.step(name="annot.charge")
    def charge() -> NoSuchType:  # type: ignore[name-defined]  # noqa: F821
        calls["charged"] += 1
        return None

    @fluxo.workflow(name="annot.flow")
    def flow() -> str:
        try:
            charge()
        except fluxo.StepError:
            return "fallback"
        return "charged"

    engine = make_engine(flow)
    handle = engine.start(flow)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "fallback"
    assert calls == {}  # the card was never charged
    failed = [e for e in engine.history(handle.id) if isinstance(e, history.StepFailed)]
    assert len(failed) == 1  # recorded, so replay and retry agree


def test_a_step_failure_has_no_hidden_context_live_or_on_replay(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    seen: list[object] = []

    @fluxo.step(name="ctx.boom")
    def boom() -> None:
        raise KeyError("missing")

    @fluxo.step(name="ctx.pause")
    def pause() -> None:
        raise SimulatedCrash

    @fluxo.workflow(name="ctx.flow")
    def flow() -> str:
        try:
            boom()
        except fluxo.StepError as exc:
            seen.append(exc.__context__)
        pause()
        return "done"

    engine = make_engine(flow)
    handle = engine.start(flow)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    engine.store.release("tester", handle.id, now=clock())
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert seen == [None, None]


# -- the names histories record for exception classes -----------------------------------


def test_fluxos_errors_are_recorded_by_their_public_names() -> None:
    info = _executor.error_info(fluxo.StepError("s", type_name="builtins.ValueError"))
    assert info.type == "fluxo.StepError"
    assert info.types == ["fluxo.StepError", "fluxo.FluxoError", "builtins.Exception"]
    mismatch = _executor.error_info(ReplayMismatchError("r", 1, "a", "b"))
    assert mismatch.types == [
        "fluxo.testing.ReplayMismatchError",
        "fluxo.NondeterminismError",
        "fluxo.FluxoError",
        "builtins.Exception",
    ]
    assert _executor.error_info(PaymentDeclinedError("no")).type == (
        f"{__name__}.PaymentDeclinedError"
    )


@pytest.mark.parametrize("module", [fluxo, fluxo.testing], ids=["fluxo", "fluxo.testing"])
def test_every_exported_error_is_recorded_by_the_name_it_is_imported_by(module: Any) -> None:
    exported = {
        name: obj
        for name in module.__all__
        if isinstance(obj := getattr(module, name), type) and issubclass(obj, BaseException)
    }
    assert exported
    for name, cls in exported.items():
        owner = "fluxo" if getattr(fluxo, name, None) is cls else module.__name__
        assert _errors.type_name(cls) == f"{owner}.{name}"


def test_every_legacy_name_reads_as_a_class_fluxo_exports() -> None:
    for old, new in _errors.LEGACY_TYPE_NAMES.items():
        module, _, name = new.rpartition(".")
        cls = getattr(fluxo if module == "fluxo" else fluxo.testing, name)
        assert _errors.type_name(cls) == new
        assert _errors.read_type_name(old) == new
        assert old.startswith(("fluxo._errors.", "fluxo._executor."))
    assert _errors.read_type_name("builtins.ValueError") == "builtins.ValueError"


LEGACY_STEP_ERROR = (
    b'{"type":"fluxo._errors.StepError","message":"step failed","types":['
    b'"fluxo._errors.StepError","fluxo._errors._RemoteError","fluxo._errors.FluxoError",'
    b'"builtins.Exception"]}'
)
"""A step error as Fluxo 0.1 recorded it, by its private module path."""


def test_errors_recorded_under_private_paths_read_as_public_names() -> None:
    info = fluxo.JSONCodec().decode(LEGACY_STEP_ERROR, _executor.ErrorInfo)
    assert info.type == "fluxo.StepError"
    assert info.types[0] == "fluxo.StepError"
    assert "fluxo.FluxoError" in info.types
    failed = _executor.workflow_error("r", info)
    assert failed.type_name == "fluxo.StepError"
    assert failed.is_instance(fluxo.StepError)
    assert failed.is_instance(fluxo.FluxoError)
    made = fluxo.StepError("s", type_name="fluxo._errors.StepTimeout")
    assert made.is_instance(fluxo.StepTimeout)


def test_a_run_failed_by_a_mismatch_recorded_under_the_private_path_is_still_one(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    @fluxo.workflow(name="legacy.flow")
    def flow() -> str:
        return "fixed"

    engine = make_engine(flow)
    engine.store.create_run("old", flow.name, b"{}", now=clock())
    recorded = (
        b'{"type":"fluxo._errors.NondeterminismError","message":"m","types":'
        b'["fluxo._errors.NondeterminismError"],"details":{"run_id":"old","seq":1,'
        b'"expected":"step a","recorded":"step b","hint":""}}'
    )
    engine.store.append(
        "old",
        1,
        [history.WorkflowFailed(data=recorded)],
        now=clock(),
        status=fluxo.RunStatus.FAILED,
    )
    with pytest.raises(fluxo.NondeterminismError) as info:
        engine.handle("old").result(timeout=0)
    assert (info.value.seq, info.value.expected, info.value.recorded) == (1, "step a", "step b")

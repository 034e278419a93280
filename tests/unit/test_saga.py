"""fluxo.saga: compensations run newest first, once each, across crashes and cancellation."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history
from fluxo.testing import WorkflowEnvironment, replay

from .conftest import MakeEngine
from .helpers import WAIT, FakeClock, SimulatedCrash, execute, named

Outcome = _executor.Outcome
Status = fluxo.RunStatus

LEDGER: list[str] = []
"""What each step body did, in order, across executions."""

CRASH_ONCE: set[str] = set()
"""Step bodies that crash the process the next time they run."""

FAIL: set[str] = set()
"""Step bodies that raise every time they run."""


class CardDeclined(Exception):
    pass


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    LEDGER.clear()
    CRASH_ONCE.clear()
    FAIL.clear()
    yield
    LEDGER.clear()
    CRASH_ONCE.clear()
    FAIL.clear()


def _body(entry: str) -> None:
    LEDGER.append(entry)
    name = entry.split(maxsplit=1)[0]
    if name in CRASH_ONCE:
        CRASH_ONCE.discard(name)
        raise SimulatedCrash(entry)
    if name in FAIL:
        raise CardDeclined(entry)


@fluxo.step(name="saga.book")
def book(what: str) -> str:
    _body(f"book {what}")
    return f"{what}-1"


@fluxo.step(name="saga.pay")
def pay(cents: int) -> str:
    _body(f"pay {cents}")
    return f"paid {cents}"


@fluxo.step(name="saga.cancel_flight")
def cancel_flight(booking: str) -> None:
    _body(f"cancel_flight {booking}")


@fluxo.step(name="saga.cancel_hotel")
def cancel_hotel(booking: str, *, reason: str = "") -> None:
    _body(f"cancel_hotel {booking} {reason}".rstrip())


@fluxo.step(name="saga.cancel_car")
def cancel_car(booking: str) -> None:
    _body(f"cancel_car {booking}")


def book_trip(cents: int, nap: float = 0.0) -> str:
    """The trip workflow's body, so that other workflows can run it too."""
    with fluxo.saga() as saga:
        flight = book("flight")
        saga.compensate_with(cancel_flight, flight)
        hotel = book("hotel")
        saga.compensate_with(cancel_hotel, hotel, reason="trip failed")
        car = book("car")
        saga.compensate_with(cancel_car, car)
        if nap:
            fluxo.sleep(nap)
        return pay(cents)  # step 4


@fluxo.workflow(name="saga.trip")
def trip(cents: int, nap: float = 0.0) -> str:
    return book_trip(cents, nap)


COMPENSATED = [
    ("step_completed", "saga.cancel_car"),
    ("step_completed", "saga.cancel_hotel"),
    ("step_completed", "saga.cancel_flight"),
]
BOOKED = [
    ("workflow_started", "saga.trip"),
    ("step_completed", "saga.book"),
    ("step_completed", "saga.book"),
    ("step_completed", "saga.book"),
]


def resume(engine: fluxo.Engine, clock: FakeClock, run_id: str, **kwargs: Any) -> Outcome:
    """Let a crashed execution's lease expire, and execute the run again."""
    clock.advance(3600)
    return execute(engine, run_id, f"resumer-{clock()}", **kwargs)


def compensations(engine: fluxo.Engine, run_id: str) -> list[str]:
    return [
        e.name.removeprefix("saga.")
        for e in engine.history(run_id)
        if isinstance(e, history.StepCompleted) and e.name.startswith("saga.cancel_")
    ]


# -- compensating a failure ----------------------------------------------------------------


def test_a_failure_at_step_four_undoes_the_three_steps_newest_first(
    make_engine: MakeEngine,
) -> None:
    FAIL.add("pay")
    engine = make_engine(trip)
    handle = engine.start(trip, 500)
    assert execute(engine, handle.id) is Outcome.FAILED

    with pytest.raises(fluxo.WorkflowFailedError) as info:
        handle.result(timeout=WAIT)
    assert info.value.is_instance(fluxo.StepError)  # the original failure, re-raised
    assert "CardDeclined" in str(info.value)
    assert named(engine.history(handle.id)) == [
        *BOOKED,
        ("step_failed", "saga.pay"),
        *COMPENSATED,
        ("workflow_failed", ""),
    ]
    assert LEDGER == [
        "book flight",
        "book hotel",
        "book car",
        "pay 500",
        "cancel_car car-1",
        "cancel_hotel hotel-1 trip failed",
        "cancel_flight flight-1",
    ]


def test_a_saga_that_finishes_undoes_nothing(make_engine: MakeEngine) -> None:
    engine = make_engine(trip)
    assert engine.run(trip, 50) == "paid 50"
    assert not any(entry.startswith("cancel") for entry in LEDGER)


def test_a_failure_before_any_registration_undoes_nothing(make_engine: MakeEngine) -> None:
    FAIL.add("book")
    engine = make_engine(trip)
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.run(trip, 50)
    assert LEDGER == ["book flight"]


@fluxo.workflow(name="saga.after_the_block")
def after_the_block() -> None:
    with fluxo.saga() as saga:
        saga.compensate_with(cancel_flight, book("flight"))
    pay(500)  # fails outside the block: its saga is over


def test_a_failure_after_the_block_undoes_nothing(make_engine: MakeEngine) -> None:
    FAIL.add("pay")
    engine = make_engine(after_the_block)
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.run(after_the_block)
    assert LEDGER == ["book flight", "pay 500"]


# -- crashes while compensating ------------------------------------------------------------


def test_a_crash_inside_a_compensation_resumes_the_rest_once_each(
    make_engine: MakeEngine, clock: FakeClock, store_url: str
) -> None:
    FAIL.add("pay")
    CRASH_ONCE.add("cancel_hotel")
    engine = make_engine(trip, store=store_url)
    handle = engine.start(trip, 500)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert compensations(engine, handle.id) == ["cancel_car"]

    assert resume(engine, clock, handle.id) is Outcome.FAILED
    assert compensations(engine, handle.id) == ["cancel_car", "cancel_hotel", "cancel_flight"]
    ran = [entry.split()[0] for entry in LEDGER]
    assert ran.count("book") == 3
    assert ran.count("pay") == 1  # its failure is recorded: replayed, not run again
    assert ran.count("cancel_car") == 1  # recorded before the crash: never again
    assert ran.count("cancel_hotel") == 2  # it was running: steps are at-least-once
    assert ran.count("cancel_flight") == 1
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        handle.result(timeout=WAIT)
    assert info.value.is_instance(fluxo.StepError)


class CrashAfterRecording:
    """A store that dies right after it records the completion of the step ``name``."""

    def __init__(self, inner: fluxo.Store, name: str) -> None:
        self.inner = inner
        self.name = name
        self.crashed = False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def append(self, run_id: str, seq: int, events: Sequence[history.Event], **kw: Any) -> Any:
        result = self.inner.append(run_id, seq, events, **kw)
        done = [e for e in events if isinstance(e, history.StepCompleted) and e.name == self.name]
        if done and not self.crashed:
            self.crashed = True
            raise SimulatedCrash(f"after recording {self.name}")
        return result


def test_a_crash_between_compensations_runs_each_exactly_once(
    make_engine: MakeEngine, clock: FakeClock, store_url: str
) -> None:
    FAIL.add("pay")
    store = CrashAfterRecording(fluxo.open_store(store_url), "saga.cancel_hotel")
    engine = make_engine(trip, store=store)  # type: ignore[arg-type]
    handle = engine.start(trip, 500)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert compensations(engine, handle.id) == ["cancel_car", "cancel_hotel"]

    assert resume(engine, clock, handle.id) is Outcome.FAILED
    assert compensations(engine, handle.id) == ["cancel_car", "cancel_hotel", "cancel_flight"]
    assert [entry for entry in LEDGER if entry.startswith("cancel")] == [
        "cancel_car car-1",
        "cancel_hotel hotel-1 trip failed",
        "cancel_flight flight-1",
    ]


def test_a_crash_in_the_block_undoes_nothing(make_engine: MakeEngine, clock: FakeClock) -> None:
    CRASH_ONCE.add("pay")
    engine = make_engine(trip)
    handle = engine.start(trip, 50)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert compensations(engine, handle.id) == []  # the run is not over: it resumes
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=WAIT) == "paid 50"
    assert not any(entry.startswith("cancel") for entry in LEDGER)


def test_a_wait_in_the_block_undoes_nothing(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(trip)
    handle = engine.start(trip, 50, 60.0)
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    clock.advance(60)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=WAIT) == "paid 50"
    assert not any(entry.startswith("cancel") for entry in LEDGER)


# -- failing compensations -----------------------------------------------------------------


def test_a_failing_compensation_does_not_stop_the_others(make_engine: MakeEngine) -> None:
    FAIL.update(("pay", "cancel_hotel"))
    engine = make_engine(trip)
    handle = engine.start(trip, 500)
    assert execute(engine, handle.id) is Outcome.FAILED

    assert named(engine.history(handle.id))[-4:] == [
        ("step_completed", "saga.cancel_car"),
        ("step_failed", "saga.cancel_hotel"),
        ("step_completed", "saga.cancel_flight"),
        ("workflow_failed", ""),
    ]
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        handle.result(timeout=WAIT)
    assert info.value.is_instance(fluxo.CompensationError)
    message = info.value.error_message
    assert message.startswith("1 compensation failed after StepError: step 'saga.pay'")
    assert "step 'saga.cancel_hotel' failed" in message
    assert "The above exception was the direct cause" in info.value.traceback


@fluxo.workflow(name="saga.reporting")
def reporting(cents: int) -> list[Any]:
    try:
        book_trip(cents)
    except fluxo.CompensationError as exc:
        return [
            type(exc.error).__name__,
            [f.step for f in exc.failures if isinstance(f, fluxo.StepError)],
            exc.__cause__ is exc.error,
        ]
    return []


def test_a_compensation_error_carries_the_failure_and_each_compensation_failure(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    FAIL.update(("pay", "cancel_hotel", "cancel_flight"))
    CRASH_ONCE.add("cancel_flight")
    engine = make_engine(reporting)
    handle = engine.start(reporting, 500)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED  # the same, replayed
    assert handle.result(timeout=WAIT) == [
        "StepError",
        ["saga.cancel_hotel", "saga.cancel_flight"],
        True,
    ]


# -- cancellation --------------------------------------------------------------------------


def test_cancelling_a_saga_compensates_and_the_run_ends_cancelled(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(trip)
    handle = engine.start(trip, 50, 3600.0)
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    engine.cancel(handle.id)
    assert execute(engine, handle.id) is Outcome.CANCELLED

    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=WAIT)
    assert named(engine.history(handle.id)) == [
        *BOOKED,
        ("timer_started", "sleep"),
        ("cancel_requested", "cancelled"),
        *COMPENSATED,
        ("workflow_cancelled", "cancelled"),
    ]
    assert "pay 50" not in LEDGER


@fluxo.step(name="saga.cancel_car_and_the_run")
def cancel_car_and_the_run(booking: str) -> None:
    _body(f"cancel_car {booking}")
    CONTEXTS[-1].cancel_requested.set()  # as the heartbeat does when engine.cancel() lands


CONTEXTS: list[_executor.RunContext] = []


@fluxo.workflow(name="saga.cancelled_while_compensating")
def cancelled_while_compensating() -> str:
    with fluxo.saga() as saga:
        saga.compensate_with(cancel_flight, book("flight"))
        saga.compensate_with(cancel_hotel, book("hotel"))
        saga.compensate_with(cancel_car_and_the_run, book("car"))
        return pay(500)


def test_a_cancellation_arriving_while_compensating_waits_for_every_compensation(
    make_engine: MakeEngine,
) -> None:
    FAIL.add("pay")
    engine = make_engine(cancelled_while_compensating)
    handle = engine.start(cancelled_while_compensating)
    CONTEXTS.clear()
    assert execute(engine, handle.id, hook=CONTEXTS.append) is Outcome.CANCELLED

    events = engine.history(handle.id)
    assert named(events)[4:] == [
        ("step_failed", "saga.pay"),
        ("step_completed", "saga.cancel_car_and_the_run"),
        ("cancel_requested", "cancelled"),
        ("step_completed", "saga.cancel_hotel"),
        ("step_completed", "saga.cancel_flight"),
        ("workflow_cancelled", "cancelled"),
    ]
    # It replays the same way: the recorded cancellation lands where it landed live.
    replay(engine.export_history(handle.id), workflows=[cancelled_while_compensating])


def test_a_compensation_failing_during_a_cancellation_is_logged_and_the_run_ends_cancelled(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    FAIL.add("cancel_hotel")
    engine = make_engine(trip)
    handle = engine.start(trip, 50, 3600.0)
    assert execute(engine, handle.id) is Outcome.SUSPENDED
    engine.cancel(handle.id)
    with caplog.at_level(logging.INFO, logger="fluxo.workflow"):
        assert execute(engine, handle.id) is Outcome.CANCELLED

    assert ("step_failed", "saga.cancel_hotel") in named(engine.history(handle.id))
    assert engine.get_run(handle.id).status is Status.CANCELLED
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "cancelled" in errors[0].getMessage()
    assert "saga.cancel_hotel" in errors[0].getMessage()
    assert LEDGER[-1] == "cancel_flight flight-1"  # the rest still ran


# -- nesting -------------------------------------------------------------------------------


@fluxo.workflow(name="saga.nested")
def nested(fail_inside: bool) -> list[str]:
    outcome: list[str] = []
    with fluxo.saga() as outer:
        outer.compensate_with(cancel_flight, book("flight"))
        try:
            with fluxo.saga() as inner:
                inner.compensate_with(cancel_hotel, book("hotel"))
                if fail_inside:
                    pay(500)
        except fluxo.StepError:
            outcome.append("no hotel")  # handled: the outer saga goes on
        outer.compensate_with(cancel_car, book("car"))
        pay(600)
    return outcome


def test_a_finished_inner_saga_is_undone_when_the_outer_one_fails(
    make_engine: MakeEngine,
) -> None:
    FAIL.add("pay")
    engine = make_engine(nested)
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.run(nested, False)
    assert [entry for entry in LEDGER if entry.startswith("cancel")] == [
        "cancel_car car-1",
        "cancel_hotel hotel-1",
        "cancel_flight flight-1",
    ]


def test_a_failed_inner_saga_undoes_its_own_steps_once(make_engine: MakeEngine) -> None:
    FAIL.add("pay")
    engine = make_engine(nested)
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.run(nested, True)
    assert [entry for entry in LEDGER if entry.startswith("cancel")] == [
        "cancel_hotel hotel-1",  # by the inner saga, when pay(500) failed
        "cancel_car car-1",  # by the outer one, when pay(600) failed
        "cancel_flight flight-1",
    ]


# -- changed code ----------------------------------------------------------------------------


@fluxo.workflow(name="saga.trip")
def trip_changed(cents: int, nap: float = 0.0) -> str:
    with fluxo.saga() as saga:
        saga.compensate_with(cancel_flight, book("flight"))
        saga.compensate_with(cancel_car, pay(cents))  # was book("hotel")
        return pay(cents)


def test_a_mismatch_with_the_history_undoes_nothing(
    make_engine: MakeEngine, shared_store: fluxo.Store, clock: FakeClock
) -> None:
    old = make_engine(trip, store=shared_store)
    handle = old.start(trip, 50, 60.0)
    assert execute(old, handle.id) is Outcome.SUSPENDED
    LEDGER.clear()
    clock.advance(60)

    new = make_engine(trip_changed, store=shared_store)
    assert execute(new, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError):
        new.handle(handle.id).result(timeout=WAIT)
    assert LEDGER == []  # a code problem, not a failed trip: fix the code and retry
    assert compensations(new, handle.id) == []


# -- replay --------------------------------------------------------------------------------


def test_a_compensated_history_replays_against_the_code(make_engine: MakeEngine) -> None:
    FAIL.update(("pay", "cancel_hotel"))
    engine = make_engine(trip)
    handle = engine.start(trip, 500)
    assert execute(engine, handle.id) is Outcome.FAILED
    ran = len(LEDGER)
    replay(engine.export_history(handle.id), workflows=[trip])
    assert len(LEDGER) == ran  # no step ran again


def test_the_testing_environment_compensates_and_replays_after_every_call() -> None:
    with WorkflowEnvironment() as env:  # always_replay: each call is replayed once at least
        env.stub(pay, raises=CardDeclined("declined"))
        handle = env.start(trip, 500, timedelta(days=2).total_seconds())
        assert env.steps_run(handle) == [book, book, book]
        with pytest.raises(fluxo.WorkflowFailedError) as info:
            handle.result()  # two virtual days pass
        assert info.value.is_instance(fluxo.StepError)
        assert env.steps_run(handle)[3:] == [pay, cancel_car, cancel_hotel, cancel_flight]
        assert env.calls(cancel_hotel)[0].kwargs == {"reason": "trip failed"}

        cancelled = env.start(trip, 50, 3600.0)
        env.cancel(cancelled)
        with pytest.raises(fluxo.WorkflowCancelledError):
            cancelled.result()
        assert env.steps_run(cancelled)[3:] == [cancel_car, cancel_hotel, cancel_flight]


# -- the API -------------------------------------------------------------------------------


def not_a_step(booking: str) -> None:
    pass


@fluxo.workflow(name="saga.misused")
def misused(how: str) -> str:
    with fluxo.saga() as saga:
        if how == "function":
            saga.compensate_with(not_a_step, "x")  # type: ignore[arg-type]
        elif how == "workflow":
            saga.compensate_with(trip, 1)  # type: ignore[arg-type]
        elif how == "arguments":
            saga.compensate_with(cancel_flight, "x", "y")  # type: ignore[call-arg]
        elif how == "keyword":
            saga.compensate_with(cancel_flight, bookin="x")  # type: ignore[call-arg]
    return "fine"


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("function", "takes a @fluxo.step, not <function not_a_step"),
        ("workflow", "takes a @fluxo.step, not a workflow"),
        ("arguments", "'saga.cancel_flight' registered with arguments that do not fit"),
        ("keyword", "cancel_flight(booking: str) -> None"),
    ],
)
def test_compensations_must_be_steps_called_with_fitting_arguments(
    make_engine: MakeEngine, how: str, message: str
) -> None:
    engine = make_engine(misused)
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        engine.run(misused, how)
    assert info.value.is_instance(fluxo.DefinitionError)
    assert message in info.value.error_message


def test_a_saga_registers_only_inside_its_block_and_runs_one_block() -> None:
    saga = fluxo.saga()
    with pytest.raises(fluxo.DefinitionError, match="before its with block began"):
        saga.compensate_with(cancel_flight, "x")
    with saga as entered:
        assert entered is saga
        assert saga.compensate_with(cancel_flight, "x") is None
        assert repr(saga) == "<fluxo.Saga open, 1 compensation>"
    assert repr(saga) == "<fluxo.Saga closed, 0 compensations>"
    with pytest.raises(fluxo.DefinitionError, match="after it ended"):
        saga.compensate_with(cancel_flight, "x")
    with pytest.raises(fluxo.DefinitionError, match="one with block"), saga:
        pass


def test_outside_a_workflow_compensations_are_plain_calls() -> None:
    FAIL.add("pay")
    with pytest.raises(CardDeclined):  # the step's own exception: a plain call
        trip(500)
    assert LEDGER[-3:] == [
        "cancel_car car-1",
        "cancel_hotel hotel-1 trip failed",
        "cancel_flight flight-1",
    ]


def test_outside_a_workflow_failing_compensations_are_reported_together() -> None:
    FAIL.update(("pay", "cancel_car", "cancel_flight"))
    with pytest.raises(fluxo.CompensationError) as info:
        trip(500)
    assert isinstance(info.value.error, CardDeclined)
    assert [str(f) for f in info.value.failures] == [
        "cancel_car car-1",
        "cancel_flight flight-1",
    ]
    assert str(info.value).splitlines() == [
        "2 compensations failed after CardDeclined: pay 500",
        "  CardDeclined: cancel_car car-1",
        "  CardDeclined: cancel_flight flight-1",
    ]

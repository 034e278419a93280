"""A signal whose payload does not fit its wait is skipped, never fatal (issue 11, defect 4).

``wait_for_signal(name, type=T)`` consumes a signal whose payload does not decode
as ``T``, records it as ``signal_rejected``, logs one warning naming the run, the
signal and the problem, and goes on waiting. Replay skips it the same way, and
also skips a ``signal_received`` that older Fluxo recorded before failing the run
on it, so ``engine.retry`` brings such a run back to its wait.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

import fluxo
from fluxo import _executor, history
from fluxo._executor import Outcome
from fluxo.testing import replay

from .conftest import MakeEngine
from .helpers import FakeClock, execute, kinds

Status = fluxo.RunStatus


@fluxo.step(name="sp.shout")
def shout(text: str) -> str:
    return text.upper()


@fluxo.workflow(name="sp.greet")
def greet() -> str:
    return shout(fluxo.wait_for_signal("go", type=str))


@fluxo.workflow(name="sp.greet_or_give_up")
def greet_or_give_up() -> str:
    try:
        return fluxo.wait_for_signal("go", timeout=60, type=str)
    except fluxo.SignalTimeout:
        return "gave up"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_mistyped_signal_is_skipped_and_the_wait_goes_on(
    make_engine: MakeEngine, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(greet, store=store_url)
    engine.start(greet.options(id="r1"))
    assert execute(engine, "r1") is Outcome.SUSPENDED

    engine.signal("r1", "go", 123)
    with caplog.at_level(logging.WARNING):
        assert execute(engine, "r1") is Outcome.SUSPENDED  # skipped: still waiting

    (warning,) = _warnings(caplog)
    assert "r1" in warning
    assert "'go'" in warning
    assert "Expected `str`, got `int`" in warning
    assert kinds(engine.history("r1"))[-1] == "signal_rejected"
    engine.signal("r1", "go", "hello")
    assert execute(engine, "r1") is Outcome.COMPLETED
    assert engine.handle("r1").result(timeout=0) == "HELLO"
    assert kinds(engine.history("r1")) == [
        "workflow_started",
        "signal_wait_started",
        "signal_rejected",
        "signal_received",
        "step_completed",
        "workflow_completed",
    ]
    rejected = engine.history("r1")[2]
    recorded = msgspec.json.decode(rejected.data or b"", type=_executor.Rejection)
    assert recorded.payload == b"123"
    assert "Expected `str`, got `int`" in recorded.error
    assert replay(engine.export_history("r1"), workflows=[greet]).ok


def test_bad_signals_sent_before_the_wait_are_skipped_in_order(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    engine.start(greet.options(id="r1"))
    for payload in (1, [2], None, "third time lucky", "unread"):
        engine.signal("r1", "go", payload)

    assert execute(engine, "r1") is Outcome.COMPLETED

    assert engine.handle("r1").result(timeout=0) == "THIRD TIME LUCKY"
    assert kinds(engine.history("r1"))[1:5] == ["signal_rejected"] * 3 + ["signal_received"]
    assert replay(engine.export_history("r1"), workflows=[greet]).ok


def test_a_wait_that_only_met_bad_signals_still_times_out(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(greet_or_give_up)
    engine.start(greet_or_give_up.options(id="r1"))
    engine.signal("r1", "go", 42)
    assert execute(engine, "r1") is Outcome.SUSPENDED

    clock.advance(61)
    assert execute(engine, "r1") is Outcome.COMPLETED

    assert engine.handle("r1").result(timeout=0) == "gave up"
    assert kinds(engine.history("r1"))[1:] == [
        "signal_rejected",
        "signal_wait_started",
        "signal_timed_out",
        "workflow_completed",
    ]


@fluxo.workflow(name="sp.unknowable")
def unknowable() -> Any:
    # The JSON codec refuses this annotation itself: no payload could ever fit it.
    return fluxo.wait_for_signal("go", type=list[int] | tuple[str, ...])


def test_an_annotation_the_codec_cannot_decode_fails_the_run_not_the_signal(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(unknowable)
    engine.start(unknowable.options(id="r1"))
    engine.signal("r1", "go", 1)

    assert execute(engine, "r1") is Outcome.FAILED

    with pytest.raises(fluxo.WorkflowFailedError) as caught:
        engine.handle("r1").result(timeout=0)
    assert caught.value.is_instance(fluxo.DefinitionError)
    assert "signal_rejected" not in kinds(engine.history("r1"))


def _failed_the_old_way(store: fluxo.Store) -> None:
    """Record run r1 as Fluxo before this change did: the bad payload received, then failed."""
    store.create_run("r1", greet.name, b"{}", now=0.0)
    store.append("r1", 1, [history.SignalWaitStarted("go", b"null")], now=0.0)
    store.send_signal("r1", "go", b"123", now=0.0)
    error = _executor.ErrorInfo(
        type="fluxo._errors.DecodeError",
        message="wait_for_signal go: the signal's payload does not fit: Expected `str`",
    )
    store.append(
        "r1",
        2,
        [
            history.SignalReceived("go", b"123"),
            history.WorkflowFailed(data=msgspec.json.encode(error)),
        ],
        now=0.0,
        status=Status.FAILED,
    )


def test_a_run_failed_by_a_bad_signal_under_older_fluxo_resumes_its_wait_on_retry(
    make_engine: MakeEngine, store_url: str
) -> None:
    engine = make_engine(greet, store=store_url)
    _failed_the_old_way(engine.store)

    engine.retry("r1")
    assert execute(engine, "r1") is Outcome.SUSPENDED  # the bad payload is skipped now
    engine.signal("r1", "go", "at last")
    assert execute(engine, "r1") is Outcome.COMPLETED

    assert engine.handle("r1").result(timeout=0) == "AT LAST"
    assert kinds(engine.history("r1"))[2:] == [
        "signal_received",
        "workflow_failed",
        "run_retried",
        "signal_received",
        "step_completed",
        "workflow_completed",
    ]
    assert replay(engine.export_history("r1"), workflows=[greet]).ok


@fluxo.workflow(name="sp.greet")
def greet_then_count() -> Any:
    """``sp.greet`` after its signal's annotation changed, from str to int."""
    return fluxo.wait_for_signal("go", type=int) + shout("x").count("X")


def test_a_received_signal_that_no_longer_decodes_mid_history_is_a_mismatch(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    old = make_engine(greet)
    old.start(greet.options(id="r1"))
    old.signal("r1", "go", "hello")
    assert execute(old, "r1") is Outcome.COMPLETED
    document = old.export_history("r1")

    with pytest.raises(fluxo.NondeterminismError) as caught:
        replay(document, workflows=[greet_then_count])
    assert "was skipped" in str(caught.value)
    assert caught.value.seq == 2


def test_a_large_rejected_payload_is_not_copied_into_the_history(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    engine.start(greet.options(id="r1"))
    engine.signal("r1", "go", list(range(_executor.REJECTED_PAYLOAD_LIMIT)))
    engine.signal("r1", "go", "small")

    assert execute(engine, "r1") is Outcome.COMPLETED

    rejected = engine.history("r1")[1]
    recorded = msgspec.json.decode(rejected.data or b"", type=_executor.Rejection)
    assert recorded.payload is None
    assert "Expected `str`, got `array`" in recorded.error

"""Kill -9 a real worker process while a saga compensates; another worker finishes the rest."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import fluxo
from fluxo import history
from tests.acceptance import _crash, _ledger, sagaapp

APP = "tests.acceptance.sagaapp:make_engine"


def _compensations(engine: fluxo.Engine, run_id: str) -> list[str]:
    return [
        e.name.rsplit(".", 1)[-1]
        for e in engine.history(run_id)
        if isinstance(e, history.StepCompleted) and ".cancel_" in e.name
    ]


def test_sigkill_while_compensating_resumes_the_remaining_compensations_once(
    sql_store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(sql_store_url, workflows=[sagaapp.trip])
    run_id = f"saga-{os.getpid()}-{time.monotonic_ns()}"
    handle = engine.start(sagaapp.trip.options(id=run_id), 4200)

    first = _crash.worker(sql_store_url, tmp_path, APP)
    try:
        _crash.wait(lambda: _compensations(engine, run_id) == ["cancel_car"], 30, "cancel_car")
        _crash.wait(
            lambda: (tmp_path / "ledger.txt").read_text().count("cancel-hotel") == 1,
            30,
            "cancel_hotel to begin",
        )
    finally:
        _crash.kill(first)
    assert first.returncode == -signal.SIGKILL
    assert engine.get_run(run_id).status is fluxo.RunStatus.RUNNING

    (tmp_path / "release-cancel-hotel").touch()
    second = _crash.worker(sql_store_url, tmp_path, APP)
    try:
        with pytest.raises(fluxo.WorkflowFailedError) as info:
            handle.result(timeout=60)
    finally:
        _crash.stop(second)
    assert info.value.is_instance(fluxo.StepError)  # the payment's failure, re-raised
    assert "PaymentDeclined" in info.value.error_message

    ledger = _ledger.read(tmp_path)
    assert ledger.count("book-flight") == ledger.count("book-hotel") == 1
    assert ledger.count("book-car") == ledger.count("pay") == 1
    # Recorded before the kill: never again.
    assert ledger.count("cancel-car-1") == 1
    # Running when the worker died: steps are at-least-once, so it ran again.
    assert ledger.count("cancel-hotel-1") == 2
    assert ledger.count("cancel-flight-1") == 1
    events = engine.history(run_id)
    assert [e.kind for e in events] == [
        "workflow_started",
        *["step_completed"] * 3,
        "step_failed",
        *["step_completed"] * 3,
        "workflow_failed",
    ]
    assert _compensations(engine, run_id) == ["cancel_car", "cancel_hotel", "cancel_flight"]
    engine.close()

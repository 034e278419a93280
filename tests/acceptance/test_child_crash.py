"""Child workflows across worker processes: a killed child resumes elsewhere; cancels cascade."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import fluxo
from fluxo import history
from tests.acceptance import _crash, _ledger, childapp

APP = "tests.acceptance.childapp:make_engine"


def _waits_for_signal(engine: fluxo.Engine, run_id: str) -> bool:
    try:
        events = engine.history(run_id)
    except fluxo.RunNotFoundError:
        return False  # not started yet
    return isinstance(events[-1], history.SignalWaitStarted)


def test_a_child_whose_worker_is_killed_resumes_on_another_and_its_parent_gets_the_result(
    sql_store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(sql_store_url, workflows=[childapp.order, childapp.shipment])
    run_id = f"order-{os.getpid()}-{time.monotonic_ns()}"
    child_id = f"{run_id}~child-2"
    handle = engine.start(childapp.order.options(id=run_id), "mug")

    parents = _crash.worker(sql_store_url, tmp_path, APP, "--workflow", childapp.order.name)
    doomed = _crash.worker(sql_store_url, tmp_path, APP, "--workflow", childapp.shipment.name)
    try:
        _crash.wait(lambda: "pack" in _ledger.read(tmp_path), 30, "the child to start packing")
        running = engine.get_run(child_id)
        assert running.parent == run_id
        assert running.status is fluxo.RunStatus.RUNNING
        _crash.kill(doomed)
        assert doomed.returncode == -signal.SIGKILL
        assert not engine.get_run(run_id).status.is_terminal

        (tmp_path / "release").touch()
        rescuer = _crash.worker(sql_store_url, tmp_path, APP, "--workflow", childapp.shipment.name)
        try:
            assert handle.result(timeout=60) == "shipped box(MUG)+label"
        finally:
            _crash.stop(rescuer)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.communicate(timeout=10)
        _crash.stop(parents)

    ledger = _ledger.read(tmp_path)
    assert ledger.count("prepare") == 1  # the parent's step never ran again
    assert ledger.count("pack") == 2  # running when its worker died: at least once
    assert ledger.count("label") == 1
    child = engine.get_run(child_id)
    assert child.status is fluxo.RunStatus.COMPLETED
    assert [e.kind for e in engine.history(child_id)] == [
        "workflow_started",
        "step_completed",
        "step_completed",
        "workflow_completed",
    ]
    assert [(e.kind, e.name) for e in engine.history(run_id)[2:]] == [
        ("child_started", child_id),
        ("child_completed", child_id),
        ("workflow_completed", ""),
    ]
    engine.close()


def test_cancelling_a_parent_cancels_its_running_child(sql_store_url: str, tmp_path: Path) -> None:
    engine = fluxo.Engine(sql_store_url, workflows=[childapp.supervisor, childapp.delivery])
    run_id = f"supervisor-{os.getpid()}-{time.monotonic_ns()}"
    child_id = f"{run_id}~child-1"
    handle = engine.start(childapp.supervisor.options(id=run_id), "parcel")

    worker = _crash.worker(sql_store_url, tmp_path, APP)
    try:
        _crash.wait(
            lambda: _waits_for_signal(engine, child_id), 30, "the child to wait for its signal"
        )
        engine.cancel(run_id)
        with pytest.raises(fluxo.WorkflowCancelledError):
            handle.result(timeout=60)
        _crash.wait(lambda: engine.get_run(child_id).status.is_terminal, 30, "the child to end")
    finally:
        _crash.stop(worker)

    assert engine.get_run(child_id).status is fluxo.RunStatus.CANCELLED
    assert _ledger.read(tmp_path) == ["cleanup-parcel"]  # the child's finally: ran, once
    child_events = engine.history(child_id)
    assert [e.kind for e in child_events[-3:]] == [
        "cancel_requested",
        "step_completed",
        "workflow_cancelled",
    ]
    parent_events = engine.history(run_id)
    assert isinstance(parent_events[-1], history.WorkflowCancelled)
    engine.close()

"""Kill -9 a real worker mid-fan-out; another finishes it, rerunning only unsettled branches."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import fluxo
from fluxo import history
from tests.acceptance import _crash, _ledger, parallelapp

APP = "tests.acceptance.parallelapp:make_engine"


def _settled(engine: fluxo.Engine, run_id: str) -> list[str]:
    return sorted(
        e.name.rsplit(".", 1)[-1]
        for e in engine.history(run_id)
        if isinstance(e, history.BranchCompleted)
    )


def test_sigkill_mid_fan_out_reruns_only_the_unsettled_branches(
    sql_store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(sql_store_url, workflows=[parallelapp.fan_out])
    run_id = f"fan-{os.getpid()}-{time.monotonic_ns()}"
    handle = engine.start(parallelapp.fan_out.options(id=run_id), 5)

    first = _crash.worker(sql_store_url, tmp_path, APP)
    try:
        _crash.wait(
            lambda: _settled(engine, run_id) == ["branch#0", "branch#1", "branch#3"],
            30,
            "branches 0, 1 and 3 to be recorded",
        )
        _crash.wait(
            lambda: {"branch2", "branch4"} <= set(_ledger.read(tmp_path)),
            30,
            "branches 2 and 4 to be running",
        )
    finally:
        _crash.kill(first)
    assert first.returncode == -signal.SIGKILL
    assert engine.get_run(run_id).status is fluxo.RunStatus.RUNNING

    (tmp_path / "release").touch()
    second = _crash.worker(sql_store_url, tmp_path, APP)
    try:
        assert handle.result(timeout=60) == "sum:30"  # 0 + 1 + 4 + 9 + 16
    finally:
        _crash.stop(second)

    ledger = _ledger.read(tmp_path)
    # Branches recorded before the kill never run again.
    assert [ledger.count(f"branch{i}") for i in (0, 1, 3)] == [1, 1, 1]
    # Branches running when the worker died are at-least-once: they ran once more.
    assert [ledger.count(f"branch{i}") for i in (2, 4)] == [2, 2]
    assert ledger.count("total") == 1
    events = engine.history(run_id)
    assert [e.kind for e in events[:2]] == ["workflow_started", "parallel_started"]
    assert sorted(e.name.rsplit(".", 1)[-1] for e in events[2:7]) == [
        f"branch#{i}" for i in range(5)
    ]
    assert [e.kind for e in events[2:7]] == ["branch_completed"] * 5
    assert [e.kind for e in events[7:]] == ["step_completed", "workflow_completed"]
    engine.close()

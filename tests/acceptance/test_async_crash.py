"""Kill -9 a real worker process in the middle of an ``async def`` workflow, on every store.

The same scenarios as ``test_crash.py``, with async workflows and steps: a worker
killed inside step 3 (after steps 1 and 2 committed), and one killed during a
durable sleep. Another worker finishes each run; no committed step runs again.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import fluxo
from tests.acceptance import asynccrashapp
from tests.acceptance.test_crash import _completed_steps, _fire_time, _wait, _worker

APP = "tests.acceptance.asynccrashapp:make_engine"


def test_sigkill_inside_an_async_step_resumes_without_repeating(
    store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(store_url, workflows=[asynccrashapp.five_steps])
    run_id = f"async-crash-{os.getpid()}-{time.monotonic_ns()}"
    handle = engine.start(asynccrashapp.five_steps.options(id=run_id), 4)

    first = _worker(store_url, tmp_path, APP)
    try:
        _wait(lambda: _completed_steps(engine, run_id) == ["step1", "step2"], 30, "step 2")
        _wait(lambda: (tmp_path / "ledger.txt").read_text().count("step3") == 1, 30, "step 3")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL
    assert engine.get_run(run_id).status is fluxo.RunStatus.RUNNING

    (tmp_path / "release-step3").touch()
    second = _worker(store_url, tmp_path, APP)
    try:
        assert handle.result(timeout=60) == "done:130"  # ((4+1)*2+3)*10
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 0, out.decode()

    ledger = (tmp_path / "ledger.txt").read_text().split()
    assert ledger.count("step1") == 1  # committed before the kill: never again
    assert ledger.count("step2") == 1
    assert ledger.count("step3") == 2  # running when the worker died: at least once
    assert ledger.count("step4") == 1
    assert ledger.count("step5") == 1
    assert [e.kind for e in engine.history(run_id)] == [
        "workflow_started",
        *["step_completed"] * 5,
        "workflow_completed",
    ]
    engine.close()


def test_sigkill_during_an_async_sleep_resumes_on_a_later_worker(
    store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(store_url, workflows=[asynccrashapp.nap])
    handle = engine.start(asynccrashapp.nap)
    first = _worker(store_url, tmp_path, APP)
    try:
        _wait(
            lambda: any(e.kind == "timer_started" for e in engine.history(handle.id)),
            30,
            "the timer",
        )
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=10)
    second = _worker(store_url, tmp_path, APP)
    try:
        after = handle.result(timeout=60)
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 0, out.decode()
    assert after >= _fire_time(engine, handle.id)  # never early
    ledger = (tmp_path / "ledger.txt").read_text().splitlines()
    assert [line.split()[0] for line in ledger] == ["before", "after"]  # no step ran twice
    engine.close()

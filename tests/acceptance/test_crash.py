"""Kill -9 a real worker process mid-run; another worker finishes without repeating steps."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import fluxo
from fluxo import history
from tests.acceptance import _crash, _ledger, crashapp


def test_sigkill_after_step_two_resumes_without_repeating(store_url: str, tmp_path: Path) -> None:
    engine = fluxo.Engine(store_url, workflows=[crashapp.five_steps])
    run_id = f"crash-{os.getpid()}-{time.monotonic_ns()}"
    handle = engine.start(crashapp.five_steps.options(id=run_id), 4)

    first = _crash.worker(store_url, tmp_path)
    try:
        _crash.wait(
            lambda: _crash.completed_steps(engine, run_id) == ["step1", "step2"], 30, "step 2"
        )
        _crash.wait(lambda: _ledger.read(tmp_path).count("step3") == 1, 30, "step 3")
    finally:
        _crash.kill(first)
    assert first.returncode == -signal.SIGKILL
    assert engine.get_run(run_id).status is fluxo.RunStatus.RUNNING

    (tmp_path / "release-step3").touch()
    second = _crash.worker(store_url, tmp_path)
    try:
        assert handle.result(timeout=60) == "done:130"  # ((4+1)*2+3)*10
    finally:
        _crash.stop(second)

    ledger = _ledger.read(tmp_path)
    # Steps 1 and 2 committed before the kill: they never run again.
    assert ledger.count("step1") == 1
    assert ledger.count("step2") == 1
    # Step 3 was running when the worker died: it is at-least-once, so it ran again.
    assert ledger.count("step3") == 2
    assert ledger.count("step4") == 1
    assert ledger.count("step5") == 1
    events = engine.history(run_id)
    assert [e.kind for e in events] == [
        "workflow_started",
        *["step_completed"] * 5,
        "workflow_completed",
    ]
    engine.close()


TIMER_APP = "tests.acceptance.crashapp:make_timer_engine"


def _stamps(workdir: Path) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for line in (workdir / "ledger.txt").read_text().splitlines():
        label, _, value = line.partition(" ")
        found.setdefault(label, []).append(float(value))
    return found


def test_sigkill_during_a_sleep_resumes_on_a_later_worker(store_url: str, tmp_path: Path) -> None:
    engine = fluxo.Engine(store_url, workflows=[crashapp.nap])
    handle = engine.start(crashapp.nap)

    first = _crash.worker(store_url, tmp_path, TIMER_APP)
    try:
        _crash.wait(
            lambda: any(isinstance(e, history.TimerStarted) for e in engine.history(handle.id)),
            30,
            "the sleep to be recorded",
        )
    finally:
        _crash.kill(first)
    assert "after" not in _stamps(tmp_path)  # killed before the timer fired
    fire_at = _crash.fire_time(engine, handle.id)

    time.sleep(max(fire_at - time.time(), 0.0) + 0.25)  # no worker is up at the fire time
    restarted = time.time()
    second = _crash.worker(store_url, tmp_path, TIMER_APP)
    try:
        after = handle.result(timeout=60)
    finally:
        _crash.stop(second)
    stamps = _stamps(tmp_path)
    assert len(stamps["before"]) == 1  # recorded before the kill: never run again
    assert stamps["after"] == [after]
    assert after >= fire_at  # never early
    # "at once": the second worker found the run overdue and resumed it straight away
    # (the generous bound only guards against waiting for a lease or a poll).
    assert after - restarted < 5
    engine.close()


def test_a_worker_up_throughout_resumes_a_sleep_at_its_fire_time(
    store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(store_url, workflows=[crashapp.nap])
    worker = _crash.worker(store_url, tmp_path, TIMER_APP)
    try:
        handle = engine.start(crashapp.nap)
        after = handle.result(timeout=60)
    finally:
        _crash.stop(worker)
    assert after >= _crash.fire_time(engine, handle.id)  # never early; lateness: see benchmarks
    engine.close()

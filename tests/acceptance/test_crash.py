"""Kill -9 a real worker process mid-run; another worker finishes without repeating steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fluxo
from fluxo import history
from tests.acceptance import crashapp

LEASE = 2.0


def _worker(
    url: str,
    workdir: Path,
    app: str = "tests.acceptance.crashapp:make_engine",
    *options: str,
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, FLUXO_CRASH_URL=url, FLUXO_CRASH_DIR=str(workdir))
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("fluxo")),  # the installed console script
            "worker",
            app,
            "--lease",
            str(LEASE),
            "--concurrency",
            "2",
            *options,
        ],
        env=env,
        cwd=Path(__file__).parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _completed_steps(engine: fluxo.Engine, run_id: str) -> list[str]:
    return [
        e.name.rsplit(".", 1)[-1]
        for e in engine.history(run_id)
        if isinstance(e, history.StepCompleted)
    ]


def test_sigkill_after_step_two_resumes_without_repeating(store_url: str, tmp_path: Path) -> None:
    engine = fluxo.Engine(store_url, workflows=[crashapp.five_steps])
    run_id = f"crash-{os.getpid()}-{time.monotonic_ns()}"
    handle = engine.start(crashapp.five_steps.options(id=run_id), 4)

    first = _worker(store_url, tmp_path)
    try:
        _wait(lambda: _completed_steps(engine, run_id) == ["step1", "step2"], 30, "step 2")
        _wait(lambda: (tmp_path / "ledger.txt").read_text().count("step3") == 1, 30, "step 3")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL
    assert engine.get_run(run_id).status is fluxo.RunStatus.RUNNING

    (tmp_path / "release-step3").touch()
    second = _worker(store_url, tmp_path)
    try:
        assert handle.result(timeout=60) == "done:130"  # ((4+1)*2+3)*10
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 0, out.decode()

    ledger = (tmp_path / "ledger.txt").read_text().split()
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


def _fire_time(engine: fluxo.Engine, run_id: str) -> float:
    started = next(e for e in engine.history(run_id) if isinstance(e, history.TimerStarted))
    fire_at: float = engine.codec.decode(started.data or b"", float)
    return fire_at


def test_sigkill_during_a_sleep_resumes_on_a_later_worker(store_url: str, tmp_path: Path) -> None:
    engine = fluxo.Engine(store_url, workflows=[crashapp.nap])
    handle = engine.start(crashapp.nap)

    first = _worker(store_url, tmp_path, TIMER_APP)
    try:
        _wait(
            lambda: any(isinstance(e, history.TimerStarted) for e in engine.history(handle.id)),
            30,
            "the sleep to be recorded",
        )
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=10)
    assert "after" not in _stamps(tmp_path)  # killed before the timer fired
    fire_at = _fire_time(engine, handle.id)

    time.sleep(max(fire_at - time.time(), 0.0) + 0.25)  # no worker is up at the fire time
    restarted = time.time()
    second = _worker(store_url, tmp_path, TIMER_APP)
    try:
        after = handle.result(timeout=60)
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 0, out.decode()
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
    worker = _worker(store_url, tmp_path, TIMER_APP)
    try:
        handle = engine.start(crashapp.nap)
        after = handle.result(timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, out.decode()
    assert after >= _fire_time(engine, handle.id)  # never early; lateness: see benchmarks
    engine.close()

"""Kill -9 a real worker process mid-run; another worker finishes without repeating steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fluxo
from fluxo import history
from tests.acceptance import crashapp

LEASE = 2.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/crash.db"
    else:
        yield request.getfixturevalue("postgres_url")


def _worker(url: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, FLUXO_CRASH_URL=url, FLUXO_CRASH_DIR=str(workdir))
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("fluxo")),  # the installed console script
            "worker",
            "tests.acceptance.crashapp:make_engine",
            "--lease",
            str(LEASE),
            "--concurrency",
            "2",
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

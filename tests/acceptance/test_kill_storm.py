"""A short kill storm: two real ``fluxo worker`` processes, one SIGKILLed every second.

100 runs of five steps on SQLite. Whatever the kills interrupt, every run ends
``completed`` once with the right result, no position is recorded twice, no lease
is left behind, and every recorded step was executed. The long form (500 runs,
PostgreSQL and Redis, a database restart mid-run) is ``benchmarks/chaos.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fluxo
from tests.acceptance import stormapp

RUNS = 100
LEASE = 1.5
KILL_EVERY = 1.0
STEP_SECONDS = 0.05
"""Long enough that the storm lasts several kills, and that kills land inside steps."""


def _worker(url: str, workdir: Path, log: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        FLUXO_STORM_URL=url,
        FLUXO_STORM_DIR=str(workdir),
        FLUXO_STORM_STEP_SECONDS=str(STEP_SECONDS),
    )
    with (workdir / log).open("ab") as out:  # the child keeps its own copy of the file
        return subprocess.Popen(
            [
                str(Path(sys.executable).with_name("fluxo")),
                "worker",
                "tests.acceptance.stormapp:make_engine",
                "--lease",
                str(LEASE),
                "--concurrency",
                "4",
                "--log-level",
                "WARNING",
            ],
            env=env,
            cwd=Path(__file__).parents[2],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


@pytest.mark.slow
def test_a_kill_storm_loses_no_run_and_records_no_position_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/storm.db"
    engine = fluxo.Engine(url, workflows=[stormapp.five])
    inputs = {engine.start(stormapp.five, x).id: x for x in range(RUNS)}

    steady = _worker(url, tmp_path, "steady.log")
    victim = _worker(url, tmp_path, "victim.log")
    kills = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            left = engine.list_runs(
                status=["pending", "running", "waiting"], workflow=stormapp.five, limit=1
            )
            if not left:
                break
            time.sleep(KILL_EVERY)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            kills += 1
            victim = _worker(url, tmp_path, "victim.log")
        else:
            raise AssertionError("the runs did not all finish within 240 s of kills")
    finally:
        victim.kill()
        victim.wait(10)
        steady.send_signal(signal.SIGTERM)
        steady.wait(60)
    assert steady.returncode == 0, (tmp_path / "steady.log").read_text()

    audit = stormapp.Audit(engine, inputs, tmp_path)
    engine.close()
    print(f"{kills} kills; {audit.summary()}")  # shown with -s, or on failure
    assert kills >= 3, f"only {kills} kill(s): the storm was too short to prove anything"
    assert audit.clean, audit.summary()
    # Steps are at-least-once: only a step a kill cut short runs again, at most once a kill
    # per slot of the killed worker.
    assert audit.reexecutions <= kills * 4, audit.summary()

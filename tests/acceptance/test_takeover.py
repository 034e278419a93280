"""Kill -9 a worker whose lease is long: its run is taken over once it stops beating.

The workers here lease runs for ten minutes, so a run that finishes within the
test's bound was freed by the liveness beats (``--dead-after``, 2 s by default),
not by its lease running out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import fluxo
from tests.acceptance import _crash, _ledger, crashapp

LONG_LEASE = ("--lease", "600")
APP = "tests.acceptance.crashapp:make_engine"


def _start_and_reach_step_three(
    engine: fluxo.Engine, store_url: str, tmp_path: Path, *options: str
) -> tuple[fluxo.RunHandle[str], subprocess.Popen[bytes]]:
    run_id = f"takeover-{os.getpid()}-{time.monotonic_ns()}"
    handle = engine.start(crashapp.five_steps.options(id=run_id), 4)
    first = _crash.worker(store_url, tmp_path, APP, *options)
    try:
        _crash.wait(lambda: _ledger.read(tmp_path).count("step3") == 1, 30, "step 3")
    except BaseException:
        _crash.kill(first)
        raise
    return handle, first


def test_a_standing_worker_takes_over_a_killed_workers_run(store_url: str, tmp_path: Path) -> None:
    engine = fluxo.Engine(store_url, workflows=[crashapp.five_steps])
    handle, first = _start_and_reach_step_three(engine, store_url, tmp_path, *LONG_LEASE)
    second = _crash.worker(store_url, tmp_path, APP, *LONG_LEASE)
    try:
        _crash.kill(first)
        assert first.returncode == -signal.SIGKILL
        lease_until = engine.get_run(handle.id).lease_until
        assert lease_until is not None
        assert lease_until > time.time() + 500  # its lease has ten minutes to run
        (tmp_path / "release-step3").touch()
        assert handle.result(timeout=90) == "done:130"
    finally:
        _crash.stop(second)

    assert _ledger.read(tmp_path).count("step3") == 2  # at-least-once: it ran again
    assert _ledger.read(tmp_path).count("step4") == 1
    engine.close()


def test_a_worker_restarted_under_its_id_takes_its_run_back(store_url: str, tmp_path: Path) -> None:
    engine = fluxo.Engine(store_url, workflows=[crashapp.five_steps])
    named = (*LONG_LEASE, "--worker-id", f"restarting-{os.getpid()}")
    handle, first = _start_and_reach_step_three(engine, store_url, tmp_path, *named)
    _crash.kill(first)
    (tmp_path / "release-step3").touch()

    again = _crash.worker(store_url, tmp_path, APP, *named)
    try:
        assert handle.result(timeout=90) == "done:130"
    finally:
        _crash.stop(again)

    assert engine.get_run(handle.id).lease_owner in (None, named[-1])
    engine.close()

"""A run that SIGKILLs its worker at the same step every time ends ``dead``; the others finish.

Real ``fluxo worker`` processes (two at a time, each started again by the test
when the poison run kills it) share the store with ordinary runs. The poison
run is taken over ``max_recoveries`` times, then ends ``dead`` without running
again, and every ordinary run completes, some of them after being taken over
from a worker the poison run killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import fluxo
from tests.acceptance import _crash, _ledger, deadapp

APP = "tests.acceptance.deadapp:make_engine"
WORKERS = 2
ORDINARY = 6


def test_a_run_that_kills_its_worker_each_time_ends_dead(
    sql_store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(sql_store_url, workflows=[deadapp.poison, deadapp.ordinary])
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    bad = engine.start(deadapp.poison.options(id=f"poison-{tag}"), 1)
    good = [
        engine.start(deadapp.ordinary.options(id=f"ordinary-{tag}-{n}"), n * 10)
        for n in range(ORDINARY)
    ]
    workers = [_crash.worker(sql_store_url, tmp_path, APP) for _ in range(WORKERS)]
    killed: list[subprocess.Popen[bytes]] = []

    def settled() -> bool:
        for number, process in enumerate(workers):  # a supervisor: start the dead again
            if process.poll() is not None:
                out, _ = process.communicate(timeout=10)  # reaped, its pipe closed
                assert process.returncode == -signal.SIGKILL, out.decode()
                killed.append(process)
                workers[number] = _crash.worker(sql_store_url, tmp_path, APP)
        runs = [engine.get_run(handle.id) for handle in (bad, *good)]
        return all(run.status.is_terminal for run in runs)

    try:
        _crash.wait(
            settled,
            120,
            "the poison run to end dead and the ordinary runs to complete",
            every=0.1,
            details=lambda: str([engine.get_run(h.id) for h in (bad, *good)]),
        )
    finally:
        for process in workers:
            if process.poll() is None:
                _crash.stop(process)

    run = engine.get_run(bad.id)
    assert run.status is fluxo.RunStatus.DEAD
    assert run.recoveries == deadapp.MAX_RECOVERIES + 1
    ledger = _ledger.read(tmp_path)
    assert ledger.count("prepare") == 1  # recorded once, replayed by each takeover
    assert ledger.count("explode") == deadapp.MAX_RECOVERIES + 1  # then it ran no more
    assert len(killed) == deadapp.MAX_RECOVERIES + 1
    with pytest.raises(fluxo.RunDiedError, match=r"died 3 times \(max_recoveries=2\)"):
        bad.result(timeout=1)
    assert [handle.result(timeout=1) for handle in good] == [
        n * 10 * 10 + (n * 10 + 1) * 10 for n in range(ORDINARY)
    ]
    dead = engine.list_runs(status="dead", workflow=deadapp.poison)
    assert [run.id for run in dead] == [bad.id]
    engine.close()

"""What the crash tests share: real ``fluxo worker`` processes, and waiting on what they do.

Each test starts a worker on one of the crash apps (``crashapp``, ``asynccrashapp``,
``childapp``, ...) with :func:`worker`, waits (:func:`wait`) until the run is where
it wants it, SIGKILLs the worker (:func:`kill`) and starts another, which it stops
gracefully at the end (:func:`stop`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fluxo
from fluxo import history

ROOT = Path(__file__).parents[2]
LEASE = 2.0
"""The workers' lease (seconds): the runs of a killed worker resume this soon."""


def worker(
    url: str,
    workdir: Path,
    app: str = "tests.acceptance.crashapp:make_engine",
    *options: str,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A ``fluxo worker`` on ``app``, its store at ``url``, its ledger in ``workdir``."""
    environ = dict(os.environ, FLUXO_CRASH_URL=url, FLUXO_CRASH_DIR=str(workdir), **(env or {}))
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
        env=environ,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process``, whatever it is doing, and reap it."""
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=10)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` gracefully (SIGTERM); it must exit with 0."""
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, (process.returncode, out.decode())


def wait(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    every: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
    details: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` every ``every`` seconds until it is true, ``timeout`` at the most.

    An exception in ``ignoring`` counts as not yet; ``details`` adds to the failure's message.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(*ignoring):
            if predicate():
                return
        time.sleep(every)
    message = f"timed out waiting for {what}"
    raise AssertionError(f"{message}\n{details()}" if details else message)


def completed_steps(engine: fluxo.Engine, run_id: str) -> list[str]:
    """The short names of the steps ``run_id`` recorded as completed, in order."""
    return [
        e.name.rsplit(".", 1)[-1]
        for e in engine.history(run_id)
        if isinstance(e, history.StepCompleted)
    ]


def fire_time(engine: fluxo.Engine, run_id: str) -> float:
    """When the durable sleep ``run_id`` recorded is due."""
    started = next(e for e in engine.history(run_id) if isinstance(e, history.TimerStarted))
    fire_at: float = engine.codec.decode(started.data or b"", float)
    return fire_at

"""A real ``fluxo worker`` process for the benchmarks that need one."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fluxo


@contextlib.contextmanager
def worker_process(
    url: str, app: str, ready: fluxo.Workflow[[], Any], *options: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``fluxo worker APP OPTIONS`` on ``url`` (``FLUXO_BENCH_URL``), serving once this yields.

    It serves once it has completed a run of ``ready``, a workflow of ``app``
    that takes no argument. Stopped with SIGTERM at the end.
    """
    root = Path(__file__).parents[1]
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(root)) if p)
    env = dict(os.environ, FLUXO_BENCH_URL=url, PYTHONPATH=pythonpath)
    command = [str(Path(sys.executable).with_name("fluxo")), "worker", app, *options]
    proc = subprocess.Popen(command, env=env, cwd=root)
    try:
        with fluxo.Engine(url, workflows=[ready]) as engine:
            engine.start(ready).result(timeout=120)
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)

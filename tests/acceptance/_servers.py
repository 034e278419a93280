"""What the example shops' tests share: web servers and workers in processes, over real HTTP.

A test starts each command (gunicorn or uvicorn, a Fluxo worker) with
:func:`running`, each process logging to a file in the test's directory; it
waits for the server to answer (:func:`wait_for`), and may SIGKILL a worker and
start another in its place (:meth:`Processes.kill_and_replace`). At the end every
process is stopped (:func:`stop_all`); a failure shows the tail of every log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.acceptance import _crash

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(drop: tuple[str, ...], **values: str) -> dict[str, str]:
    """This environment without the variables named ``drop*``; with ``values`` and examples/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), str(ROOT)])
    env.update(values)
    return env


def stop_all(processes: Iterable[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every process still running; kill one still there ``timeout`` seconds on."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Processes:
    """One command's processes: the one running now, and those it replaced (then stopped)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.args, self.env, self.log, self.cwd = args, env, log, cwd
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        out = self.log.with_suffix(f".{len(self.started)}.log").open("wb")
        self.logs.append(out)
        self.started.append(
            subprocess.Popen(
                self.args, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        )
        return self.started[-1]

    @property
    def current(self) -> subprocess.Popen[bytes]:
        return self.started[-1]

    def kill_and_replace(self) -> None:
        """SIGKILL the running process, whatever it is doing, and start another in its place."""
        self.current.send_signal(signal.SIGKILL)
        assert self.current.wait(timeout=10) == -signal.SIGKILL
        self.start()

    def stop(self) -> None:
        stop_all(self.started, timeout=15)
        for out in self.logs:
            out.close()


@contextlib.contextmanager
def running(
    args: list[str], env: dict[str, str], log: Path, cwd: Path = EXAMPLES
) -> Iterator[Processes]:
    """Start ``args``; stop it, and every process started again in its place, at the end."""
    processes = Processes(args, env, log, cwd)
    processes.start()
    try:
        yield processes
    finally:
        processes.stop()


def rows(database: str, query: str) -> list[Any]:
    """What ``query`` finds in ``database``, read on a connection of its own."""
    engine = sa.create_engine(database, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query)))
    finally:
        engine.dispose()


def logs(workdir: Path) -> str:
    """The end of every log file in ``workdir``, for a failure's message."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
        for p in sorted(workdir.glob("*.log"))
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, workdir: Path) -> None:
    """Wait until ``predicate`` holds; a server not answering yet is a "not yet"."""
    _crash.wait(
        predicate,
        timeout,
        what,
        every=0.1,
        ignoring=(httpx.TransportError,),
        details=lambda: logs(workdir),
    )

"""Chaos: worker processes SIGKILLed over and over, and the database restarted mid-run.

For each store it starts a database server of its own (so restarting it disturbs
nothing else on the machine), starts ``--runs`` five-step workflows
(``tests/acceptance/stormapp.py``), and serves them with ``--workers`` real
``fluxo worker`` processes. Every ``--kill-every`` seconds one worker, picked at
random, is SIGKILLed and a new one started in its place. When about a third of
the runs have completed, the database itself is killed (PostgreSQL: ``pg_ctl stop
-m immediate``, a crash; Redis: SIGKILL, with ``appendfsync always``) and started
again ``--down`` seconds later. At the end it reads the store and the ledger of
step executions and prints, per store:

* kills and database restarts;
* runs lost (not ``completed`` with the right result);
* positions recorded twice (a history other than start, five steps, end);
* step re-executions (steps are at-least-once: a kill mid-step runs it again);
* leases left behind.

    python -m benchmarks.chaos [--stores postgres,redis,sqlite] [--runs 500]
        [--workers 3] [--kill-every 1.0] [--down 2.0] [--lease 2.0]

PostgreSQL needs its server binaries (``initdb``, ``pg_ctl``) and, as root, a
``postgres`` system user to own the data directory; Redis needs ``redis-server``.
SQLite has no server to restart: only workers are killed.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import fluxo
from fluxo import _errors
from tests.acceptance import stormapp

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise SystemExit(f"chaos: timed out waiting for {what}")


class Server(abc.ABC):
    """A database server of the benchmark's own, which it can crash and start again."""

    url = ""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def crash(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...


class NoServer(Server):
    """SQLite: a file, nothing to restart."""

    def __init__(self, tmp: Path) -> None:
        self.url = f"sqlite:///{tmp}/chaos.db"

    def start(self) -> None:
        pass

    def crash(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Postgres(Server):
    def __init__(self, tmp: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        bindir = Path(found[-1]).parent if found else Path(shutil.which("initdb") or "").parent
        if not (bindir / "pg_ctl").exists():
            raise SystemExit("chaos: PostgreSQL's initdb and pg_ctl are not installed")
        self.bindir = bindir
        self.data = tmp / "pgdata"
        self.sockets = tmp / "pgsock"
        self.port = free_port()
        self.as_user: list[str] = []
        self.data.mkdir()
        self.sockets.mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(tmp, "postgres")
            for path in (self.data, self.sockets):
                shutil.chown(path, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.log = tmp / "postgres.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def crash(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


class Redis(Server):
    def __init__(self, tmp: Path) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("chaos: redis-server is not installed")
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 30, "redis-server")

    def crash(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


SERVERS = {"sqlite": NoServer, "postgres": Postgres, "redis": Redis}


class Workers:
    """The ``fluxo worker`` processes, each replaced by a fresh one when killed."""

    def __init__(self, url: str, workdir: Path, count: int, lease: float) -> None:
        self.url = url
        self.workdir = workdir
        self.lease = lease
        self.kills = 0
        self.procs = [self._spawn(i) for i in range(count)]

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        env = dict(
            os.environ,
            FLUXO_STORM_URL=self.url,
            FLUXO_STORM_DIR=str(self.workdir),
            PYTHONPATH=str(ROOT),
        )
        with (self.workdir / f"worker-{index}.log").open("ab") as log:
            return subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("fluxo")),
                    "worker",
                    "tests.acceptance.stormapp:make_engine",
                    "--lease",
                    str(self.lease),
                    "--concurrency",
                    "4",
                    "--log-level",
                    "WARNING",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def kill_one(self) -> None:
        index = random.randrange(len(self.procs))
        self.procs[index].kill()
        self.procs[index].wait(30)
        self.kills += 1
        self.procs[index] = self._spawn(index)

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


@contextlib.contextmanager
def serving(kind: str, tmp: Path) -> Iterator[Server]:
    server = SERVERS[kind](tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def unfinished(engine: fluxo.Engine) -> int | None:
    """Runs not yet finished, or None while the store is down."""
    try:
        active = ["pending", "running", "waiting"]
        return len(engine.list_runs(status=active, workflow=stormapp.five, limit=100_000))
    except _errors.StoreError:
        return None


def storm(kind: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix=f"fluxo-chaos-{kind}-") as name:
        tmp = Path(name)
        with serving(kind, tmp) as server:
            engine = fluxo.Engine(server.url, workflows=[stormapp.five])
            inputs = {engine.start(stormapp.five, x).id: x for x in range(args.runs)}
            started = time.monotonic()
            workers = Workers(server.url, tmp, args.workers, args.lease)
            restarts = 0
            next_kill = time.monotonic() + args.kill_every
            deadline = time.monotonic() + args.timeout
            try:
                while time.monotonic() < deadline:
                    left = unfinished(engine)
                    if left == 0:
                        break
                    if (
                        kind != "sqlite"
                        and not restarts
                        and left is not None
                        and left <= args.runs * 2 // 3
                    ):
                        server.crash()
                        time.sleep(args.down)
                        server.start()
                        restarts += 1
                    if time.monotonic() >= next_kill:
                        workers.kill_one()
                        next_kill = time.monotonic() + args.kill_every
                    time.sleep(0.1)
                else:
                    print(f"  {kind}: runs still unfinished after {args.timeout:.0f} s")
                elapsed = time.monotonic() - started
            finally:
                workers.stop()
            wait_until(lambda: unfinished(engine) is not None, 30, "the store")
            audit = stormapp.Audit(engine, inputs, tmp)
            engine.close()
        print(
            f"{kind:9s} {workers.kills:5d} kills {restarts:2d} restarts  "
            f"lost {len(audit.not_completed):3d}  positions twice {len(audit.bad_histories):3d}  "
            f"re-executions {audit.reexecutions:4d}  leases left {len(audit.leases_left):3d}  "
            f"never-run records {audit.missing_steps}  ({elapsed:.0f} s)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="postgres,redis")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=1.0)
    parser.add_argument("--down", type=float, default=2.0, help="seconds the database stays down")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    os.environ.setdefault("FLUXO_STORM_STEP_SECONDS", "0.02")
    for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
        if kind not in SERVERS:
            raise SystemExit(f"chaos: unknown store {kind!r}; choose from {sorted(SERVERS)}")
        storm(kind, args)


if __name__ == "__main__":
    main()

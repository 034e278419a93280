"""The Flask shop (examples/flask_shop) under gunicorn, with a `flask fluxo worker`, over real HTTP.

Two gunicorn worker processes serve the app; one ``flask fluxo worker`` process
runs the workflows. Fifty orders are placed (``POST /orders``: the order row and
its run in one transaction) and paid (``POST /orders/<id>/paid``, the payment
webhook, which signals the run). Mid-way the Fluxo worker is SIGKILLed and
another started. Every order must end paid, exactly once: ``times_paid`` is 1,
and every run completed. On SQLite and PostgreSQL, a fresh database each.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

pytest.importorskip("httpx")
pytest.importorskip("gunicorn")
pytest.importorskip("flask_sqlalchemy")

import httpx

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
APP = "flask_shop.app"
ORDERS = 50
LEASE = "2"
"""The Fluxo workers' lease (seconds): the runs of the killed one resume this soon."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


def environment(database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUXO_", "FLASK_"))}
    env["FLASK_SQLALCHEMY_DATABASE_URI"] = database  # read by the app's from_prefixed_env()
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), str(ROOT)])
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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

    def stop(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
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


def flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", APP, *args]


def logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(tmp_path.glob("*.log"))
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if predicate():
                return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{logs(tmp_path)}")


def run_statuses(database: str) -> dict[str, int]:
    """How many of the shop's runs have each status, read from the store's table."""
    engine = sa.create_engine(database, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT status, COUNT(*) FROM fluxo_runs GROUP BY status"))
            return {status: count for status, count in found}
    finally:
        engine.dispose()


def test_fifty_orders_are_paid_exactly_once_through_a_worker_crash(
    database: str, tmp_path: Path
) -> None:
    env = environment(database)
    for command in (flask("init-db"), flask("fluxo", "db", "upgrade")):
        done = subprocess.run(
            command, cwd=EXAMPLES, env=env, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr

    port = free_port()
    server = [sys.executable, "-m", "gunicorn", "-w", "2", "--bind", f"127.0.0.1:{port}"]
    worker = flask("fluxo", "worker", "--concurrency", "8", "--lease", LEASE)
    with (
        running([*server, f"{APP}:create_app()"], env, tmp_path / "gunicorn"),
        running(worker, env, tmp_path / "worker") as fluxo_worker,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        wait_for(lambda: client.get("/orders/0").status_code == 404, 30, "gunicorn", tmp_path)
        ids = []
        for n in range(ORDERS):
            placed = client.post("/orders", json={"cents": 100 + n})
            assert placed.status_code == 201, placed.text
            ids.append(placed.json()["id"])
            paid = client.post(f"/orders/{ids[-1]}/paid")
            assert paid.status_code == 200, paid.text
            if n == ORDERS // 2:
                wait_for(
                    lambda: client.get(f"/orders/{ids[0]}").json()["status"] == "paid",
                    30,
                    "the first order to be paid",
                    tmp_path,
                )
                fluxo_worker.current.send_signal(signal.SIGKILL)
                assert fluxo_worker.current.wait(timeout=10) == -signal.SIGKILL
                fluxo_worker.start()

        def all_paid() -> bool:
            return all(client.get(f"/orders/{i}").json()["status"] == "paid" for i in ids)

        wait_for(all_paid, 45, "every order to be paid", tmp_path)
        # mark_paid commits before its run records it and ends: wait for the runs too
        wait_for(lambda: run_statuses(database) == {"completed": ORDERS}, 30, "the runs", tmp_path)

    assert len(set(ids)) == ORDERS
    engine = sa.create_engine(database, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            orders = conn.execute(sa.text("SELECT status, times_paid FROM orders")).all()
    finally:
        engine.dispose()
    assert sorted(orders) == [("paid", 1)] * ORDERS


def test_with_preload_each_server_process_builds_its_own_engine(
    database: str, tmp_path: Path
) -> None:
    """The master builds an engine in the app factory; each forked worker builds another."""
    env = environment(database)
    env["FLASKAPP_DATABASE"] = database
    port = free_port()
    server = [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "--threads", "4"]
    app = "tests.acceptance.flask_preloaded:create_app()"
    with (
        running([*server, "--bind", f"127.0.0.1:{port}", app], env, tmp_path / "gunicorn", ROOT),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        wait_for(lambda: client.get("/nowhere").status_code == 404, 30, "gunicorn", tmp_path)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.get("/engine").json(), range(24)))
    for answer in answers:
        assert answer["engine"] != answer["parent"]
        assert f":{answer['pid']}:" in answer["engine"]  # built in the process that answered
    assert len({answer["engine"] for answer in answers}) == len({a["pid"] for a in answers})
    assert run_statuses(database) == {"pending": 24}

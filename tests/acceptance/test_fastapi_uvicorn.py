"""The FastAPI shop (examples/fastapi_shop) under uvicorn, with a ``fluxo worker``, over real HTTP.

uvicorn serves the app with two processes, each with the ``fluxo.AsyncEngine``
its lifespan made; one ``fluxo worker fastapi_shop.app:make_engine`` process
beside them runs the workflows. Twenty orders are placed in one burst (with a
duplicate among them), one is cancelled, one has a bad payload and one reuses an
order id with another amount; most are paid through the webhook, awaited
(``GET /orders/<id>/result``: the servers wait on the store, no thread each), and
mid-way the Fluxo worker is SIGKILLed and another started. Every order ends as
it should: the paid ones paid, with one record of each step; the cancelled one
cancelled; the unpaid ones still pending; no run lost and none made for the bad
request. On SQLite and PostgreSQL, a fresh database each.
"""

from __future__ import annotations

import asyncio
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
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
FLUXO = str(Path(sys.executable).with_name("fluxo"))  # the installed console script
ORDERS = 20
PAID = range(17)  # orders 0..16 are paid; 17 and 18 never are; 19 is cancelled
UNPAID = (17, 18)
CANCELLED = 19
LEASE = "2"
"""The Fluxo workers' lease (seconds): the runs of the killed one resume this soon."""

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """One command's processes: the one running now, and those it replaced (then stopped)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        out = self.log.with_suffix(f".{len(self.started)}.log").open("wb")
        self.logs.append(out)
        self.started.append(
            subprocess.Popen(
                self.args, cwd=EXAMPLES, env=self.env, stdout=out, stderr=subprocess.STDOUT
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
def running(args: list[str], env: dict[str, str], log: Path) -> Iterator[Processes]:
    """Start ``args`` in examples/; stop it, and every process started in its place, at the end."""
    processes = Processes(args, env, log)
    processes.start()
    try:
        yield processes
    finally:
        processes.stop()


def logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
        for p in sorted(tmp_path.glob("*.log"))
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if predicate():
                return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{logs(tmp_path)}")


def runs(database: str) -> dict[str, str]:
    """Every run in the store, by id: its status, read from the store's table."""
    engine = sa.create_engine(database, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT id, status FROM fluxo_runs"))
            return {run_id: status for run_id, status in found}
    finally:
        engine.dispose()


async def drive(base_url: str, restart_worker: Callable[[], None]) -> None:
    """The shop's customers and its payment provider, over HTTP."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def post(path: str, body: Any = None) -> httpx.Response:
            return await client.post(path, json=body)

        # A burst: every order at once, and order 0 twice (a client retrying).
        orders = [{"id": f"o-{n}", "cents": 100 + n} for n in range(ORDERS)]
        placed = await asyncio.gather(*(post("/orders", o) for o in [*orders, orders[0]]))
        for answer in placed:
            assert answer.status_code == 201, answer.text
            assert answer.json()["status"] == "pending"
        assert [a.json()["id"] for a in placed] == [o["id"] for o in [*orders, orders[0]]]

        taken = await post("/orders", {"id": "o-1", "cents": 1})
        assert taken.status_code == 409, taken.text
        bad = await post("/orders", {"id": "o-bad", "cents": "lots"})
        assert bad.status_code == 422, bad.text
        assert bad.json()["detail"][0]["loc"] == ["body", "cents"]

        cancelled = await post(f"/orders/o-{CANCELLED}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["status"] in ("cancelled", "cancelling")

        half = len(PAID) // 2
        paid = await asyncio.gather(*(post(f"/orders/o-{n}/paid") for n in PAID[:half]))
        assert [answer.status_code for answer in paid] == [202] * half
        first = await client.get("/orders/o-0/result", params={"timeout": 30})
        assert first.json() == {"id": "o-0", "status": "paid"}, first.text
        restart_worker()  # SIGKILL, and another worker in its place
        paid = await asyncio.gather(*(post(f"/orders/o-{n}/paid") for n in PAID[half:]))
        assert [answer.status_code for answer in paid] == [202] * (len(PAID) - half)

        awaited = await asyncio.gather(
            *(client.get(f"/orders/o-{n}/result", params={"timeout": 45}) for n in PAID)
        )
        assert [a.json() for a in awaited] == [{"id": f"o-{n}", "status": "paid"} for n in PAID]

        for n in UNPAID:
            waited = await client.get(f"/orders/o-{n}/result", params={"timeout": 0.5})
            assert waited.status_code == 504, waited.text
            assert (await client.get(f"/orders/o-{n}")).json()["status"] == "pending"
        ended = await client.get(f"/orders/o-{CANCELLED}/result", params={"timeout": 30})
        assert ended.json() == {"id": f"o-{CANCELLED}", "status": "cancelled"}
        assert (await post(f"/orders/o-{CANCELLED}/paid")).status_code == 409
        assert (await post("/orders/o-0/cancel")).status_code == 409
        assert (await post("/orders/o-0/paid")).status_code == 202  # the webhook again: harmless
        assert (await client.get("/orders/o-bad")).status_code == 404

        for n in PAID:  # one record of each step and signal, whatever ran twice in the crash
            history = (await client.get(f"/orders/o-{n}/history")).json()["events"]
            kinds = [e["kind"] for e in history if e["kind"] != "signal_wait_started"]
            assert kinds == [
                "workflow_started",
                "step_completed",
                "signal_received",
                "workflow_completed",
            ], history


def test_a_burst_of_orders_is_placed_paid_cancelled_and_awaited_through_a_worker_crash(
    database: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXO_")}
    env["FLUXO_STORE_URL"] = database  # read by the app, the worker and `fluxo db`
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), str(ROOT)])
    upgrade = [FLUXO, "db", "upgrade"]
    done = subprocess.run(
        upgrade, cwd=EXAMPLES, env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

    port = free_port()
    server = [sys.executable, "-m", "uvicorn", "fastapi_shop.app:app", "--workers", "2"]
    server += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]
    worker = [FLUXO, "worker", "fastapi_shop.app:make_engine", "--concurrency", "8"]
    worker += ["--lease", LEASE]
    with (
        running(server, env, tmp_path / "uvicorn"),
        running(worker, env, tmp_path / "worker") as fluxo_worker,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        wait_for(lambda: client.get("/orders/none").status_code == 404, 30, "uvicorn", tmp_path)

        def restart_worker() -> None:
            fluxo_worker.current.send_signal(signal.SIGKILL)
            assert fluxo_worker.current.wait(timeout=10) == -signal.SIGKILL
            fluxo_worker.start()

        try:
            asyncio.run(drive(f"http://127.0.0.1:{port}", restart_worker))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs(tmp_path)}") from exc

    expected = {f"order-o-{n}": "completed" for n in PAID}
    expected |= {f"order-o-{n}": "waiting" for n in UNPAID}
    expected[f"order-o-{CANCELLED}"] = "cancelled"
    # None lost, none made for the bad or the conflicting order. (An unpaid order's run was
    # perhaps leased by the killed worker, and waits again once another one took it over.)
    wait_for(lambda: runs(database) == expected, 30, f"the runs to be {expected}", tmp_path)

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
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx

from tests.acceptance import _servers

FLUXO = str(Path(sys.executable).with_name("fluxo"))  # the installed console script
ORDERS = 20
PAID = range(17)  # orders 0..16 are paid; 17 and 18 never are; 19 is cancelled
UNPAID = (17, 18)
CANCELLED = 19
LEASE = "2"
"""The Fluxo workers' lease (seconds): the runs of the killed one resume this soon."""

pytestmark = pytest.mark.slow


def runs(database: str) -> dict[str, str]:
    """Every run in the store, by id: its status, read from the store's table."""
    return dict(_servers.rows(database, "SELECT id, status FROM fluxo_runs"))


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
    shop_database: str, tmp_path: Path
) -> None:
    # FLUXO_STORE_URL is read by the app, the worker and `fluxo db`
    env = _servers.environment(("FLUXO_",), FLUXO_STORE_URL=shop_database)
    upgrade = [FLUXO, "db", "upgrade"]
    done = subprocess.run(
        upgrade, cwd=_servers.EXAMPLES, env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

    port = _servers.free_port()
    server = [sys.executable, "-m", "uvicorn", "fastapi_shop.app:app", "--workers", "2"]
    server += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]
    worker = [FLUXO, "worker", "fastapi_shop.app:make_engine", "--concurrency", "8"]
    worker += ["--lease", LEASE]
    with (
        _servers.running(server, env, tmp_path / "uvicorn"),
        _servers.running(worker, env, tmp_path / "worker") as fluxo_worker,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        _servers.wait_for(
            lambda: client.get("/orders/none").status_code == 404, 30, "uvicorn", tmp_path
        )
        try:
            asyncio.run(drive(f"http://127.0.0.1:{port}", fluxo_worker.kill_and_replace))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_servers.logs(tmp_path)}") from exc

    expected = {f"order-o-{n}": "completed" for n in PAID}
    expected |= {f"order-o-{n}": "waiting" for n in UNPAID}
    expected[f"order-o-{CANCELLED}"] = "cancelled"
    # None lost, none made for the bad or the conflicting order. (An unpaid order's run was
    # perhaps leased by the killed worker, and waits again once another one took it over.)
    _servers.wait_for(
        lambda: runs(shop_database) == expected, 30, f"the runs to be {expected}", tmp_path
    )

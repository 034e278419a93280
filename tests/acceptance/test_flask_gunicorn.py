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
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("httpx")
pytest.importorskip("gunicorn")
pytest.importorskip("flask_sqlalchemy")

import httpx

from tests.acceptance import _servers

APP = "flask_shop.app"
ORDERS = 50
LEASE = "2"
"""The Fluxo workers' lease (seconds): the runs of the killed one resume this soon."""


def environment(database: str) -> dict[str, str]:
    # FLASK_SQLALCHEMY_DATABASE_URI is read by the app's from_prefixed_env()
    return _servers.environment(("FLUXO_", "FLASK_"), FLASK_SQLALCHEMY_DATABASE_URI=database)


def flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", APP, *args]


def run_statuses(database: str) -> dict[str, int]:
    """How many of the shop's runs have each status, read from the store's table."""
    return dict(_servers.rows(database, "SELECT status, COUNT(*) FROM fluxo_runs GROUP BY status"))


def test_fifty_orders_are_paid_exactly_once_through_a_worker_crash(
    shop_database: str, tmp_path: Path
) -> None:
    env = environment(shop_database)
    for command in (flask("init-db"), flask("fluxo", "db", "upgrade")):
        done = subprocess.run(
            command, cwd=_servers.EXAMPLES, env=env, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr

    port = _servers.free_port()
    server = [sys.executable, "-m", "gunicorn", "-w", "2", "--bind", f"127.0.0.1:{port}"]
    worker = flask("fluxo", "worker", "--concurrency", "8", "--lease", LEASE)
    with (
        _servers.running([*server, f"{APP}:create_app()"], env, tmp_path / "gunicorn"),
        _servers.running(worker, env, tmp_path / "worker") as fluxo_worker,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        _servers.wait_for(
            lambda: client.get("/orders/0").status_code == 404, 30, "gunicorn", tmp_path
        )
        ids = []
        for n in range(ORDERS):
            placed = client.post("/orders", json={"cents": 100 + n})
            assert placed.status_code == 201, placed.text
            ids.append(placed.json()["id"])
            paid = client.post(f"/orders/{ids[-1]}/paid")
            assert paid.status_code == 200, paid.text
            if n == ORDERS // 2:
                _servers.wait_for(
                    lambda: client.get(f"/orders/{ids[0]}").json()["status"] == "paid",
                    30,
                    "the first order to be paid",
                    tmp_path,
                )
                fluxo_worker.kill_and_replace()

        def all_paid() -> bool:
            return all(client.get(f"/orders/{i}").json()["status"] == "paid" for i in ids)

        _servers.wait_for(all_paid, 45, "every order to be paid", tmp_path)
        # mark_paid commits before its run records it and ends: wait for the runs too
        _servers.wait_for(
            lambda: run_statuses(shop_database) == {"completed": ORDERS}, 30, "the runs", tmp_path
        )

    assert len(set(ids)) == ORDERS
    orders = _servers.rows(shop_database, "SELECT status, times_paid FROM orders")
    assert sorted(orders) == [("paid", 1)] * ORDERS


def test_with_preload_each_server_process_builds_its_own_engine(
    shop_database: str, tmp_path: Path
) -> None:
    """The master builds an engine in the app factory; each forked worker builds another."""
    env = environment(shop_database)
    env["FLASKAPP_DATABASE"] = shop_database
    port = _servers.free_port()
    server = [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "--threads", "4"]
    app = "tests.acceptance.flask_preloaded:create_app()"
    with (
        _servers.running(
            [*server, "--bind", f"127.0.0.1:{port}", app], env, tmp_path / "gunicorn", _servers.ROOT
        ),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        _servers.wait_for(
            lambda: client.get("/nowhere").status_code == 404, 30, "gunicorn", tmp_path
        )
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.get("/engine").json(), range(24)))
    for answer in answers:
        assert answer["engine"] != answer["parent"]
        assert f":{answer['pid']}:" in answer["engine"]  # built in the process that answered
    assert len({answer["engine"] for answer in answers}) == len({a["pid"] for a in answers})
    assert run_statuses(shop_database) == {"pending": 24}

"""The Django example under real servers: gunicorn, ``manage.py fluxo worker``, real HTTP.

``examples/django_shop`` runs under gunicorn with two worker processes, beside a
``manage.py fluxo worker`` process. Fifty orders go through it over HTTP (httpx):
each is created (the order row and its run in one transaction), then paid through
the payment webhook. Half way, the Fluxo worker is killed with SIGKILL and
another one started. Every order must end paid exactly once: its ``times_paid``
counter is 1, and its run completed with one record of each step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import fluxo
from fluxo import history
from tests.acceptance import _crash, _servers
from tests.integration._django import django_databases

SHOP = Path(__file__).parents[2] / "examples" / "django_shop"
ORDERS = 50
LEASE = "2"
"""Seconds a killed worker's runs stay leased before the other worker takes them over."""

pytestmark = pytest.mark.slow


class Shop:
    """The example project on one database: its processes, and how to start them."""

    def __init__(self, workdir: Path, database: dict[str, Any]) -> None:
        settings = workdir / "acceptance_settings.py"
        settings.write_text(
            "from shop.settings import *  # noqa: F403\n\n"
            "DEBUG = False\n"
            f"DATABASES = {{'default': {json.dumps(database)}}}\n"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUXO_", "DJANGO_"))}
        self.env["DJANGO_SETTINGS_MODULE"] = "acceptance_settings"
        self.env["PYTHONPATH"] = os.pathsep.join([str(workdir), str(SHOP.parents[1])])
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def manage(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=SHOP,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def spawn(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, *command], cwd=SHOP, env=self.env, stdout=log, stderr=log
            )
        self.processes.append(process)
        return process

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, "manage.py", "fluxo", "worker", "--lease", LEASE)


@pytest.fixture
def shop(shop_database: str, tmp_path: Path) -> Iterator[tuple[Shop, str]]:
    """The shop, migrated, on a new database; and that database's Fluxo store URL."""
    if shop_database.startswith("sqlite:///"):
        database = django_databases(sqlite=Path(shop_database.removeprefix("sqlite:///")))
    else:
        database = django_databases(shop_database)
    project = Shop(tmp_path, database)
    project.manage("migrate", "--verbosity", "0")
    try:
        yield project, shop_database
    finally:
        _servers.stop_all(project.processes, timeout=30)


def test_fifty_orders_are_each_paid_once_through_a_worker_crash(
    shop: tuple[Shop, str],
) -> None:
    project, url = shop
    port = _servers.free_port()
    project.spawn(
        "gunicorn", "-m", "gunicorn", "-w", "2", "--bind", f"127.0.0.1:{port}", "shop.wsgi"
    )
    first = project.worker("worker-1")
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as http:

        def up() -> bool:
            try:
                return http.get("/orders/0").status_code == 404
            except httpx.TransportError:
                return False

        try:
            _crash.wait(up, 60, "gunicorn to serve", every=0.1)
            order_ids = []
            for n in range(ORDERS):
                created = http.post("/orders", json={"cents": 100 + n})
                assert created.status_code == 201, created.text
                order_ids.append(created.json()["id"])
                assert http.post(f"/orders/{order_ids[-1]}/paid").status_code == 202
                if n == ORDERS // 2:
                    first.send_signal(signal.SIGKILL)  # mid-run, whatever it was doing
                    first.wait()
                    project.worker("worker-2")

            def all_paid() -> bool:
                return all(http.get(f"/orders/{i}").json()["status"] == "paid" for i in order_ids)

            _crash.wait(all_paid, 60, "every order to be paid", every=0.1)
            statuses = [http.get(f"/orders/{i}").json() for i in order_ids]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_servers.logs(project.workdir)}") from None

    assert first.returncode == -signal.SIGKILL
    assert [(s["status"], s["times_paid"]) for s in statuses] == [("paid", 1)] * ORDERS
    with fluxo.Engine(url, workflows=[]) as engine:
        for order_id in order_ids:
            run_id = f"order-{order_id}"
            assert engine.get_run(run_id).status is fluxo.RunStatus.COMPLETED
            steps = [
                event.name.rsplit(".", 1)[-1]
                for event in engine.history(run_id)
                if isinstance(event, history.StepCompleted)
            ]
            assert steps == ["charge", "mark_paid"], run_id

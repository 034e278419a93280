"""The shop's tests, with httpx's ASGI transport: ``pytest examples/fastapi_shop``.

Each test is a plain function that runs its scenario with ``asyncio.run``: no
pytest plugin is needed. ``serve(app)`` enters the app's lifespan, as uvicorn
does (httpx's transport does not), so the app has its engine. One test runs a
worker in the app, as ``uvicorn fastapi_shop.app:demo`` does; one runs none,
to see what a client sees before a worker came by; the last shares a
``fluxo.testing`` environment with the app, where a day passes in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the shop needs: pip install fastapi uvicorn")

import httpx
from fastapi import FastAPI

from fastapi_shop.app import WORKFLOWS, create_app
from fluxo.testing import WorkflowEnvironment


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app``, its lifespan entered for as long as the client is used."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop") as client,
    ):
        yield client


def test_an_order_is_paid_once_the_payment_webhook_arrives(tmp_path: Path) -> None:
    async def scenario() -> None:
        app = create_app(f"sqlite:///{tmp_path / 'shop.db'}", worker=True)
        async with serve(app) as client:
            placed = await client.post("/orders", json={"id": "A-1", "cents": 4200})
            assert placed.status_code == 201
            assert placed.json() == {"id": "A-1", "status": "pending"}

            assert (await client.post("/orders/A-1/paid")).status_code == 202
            done = await client.get("/orders/A-1/result", params={"timeout": 30})
            assert done.json() == {"id": "A-1", "status": "paid"}

            again = await client.post("/orders", json={"id": "A-1", "cents": 4200})
            assert again.json() == {"id": "A-1", "status": "paid"}  # the same order, not a new one
            assert (
                await client.post("/orders/A-1/paid")
            ).status_code == 202  # sent twice: harmless
            refused = await client.post("/orders/A-1/cancel")
            assert refused.status_code == 409
            assert refused.json() == {
                "detail": "order 'A-1' is paid; it can no longer be cancelled"
            }

            history = (await client.get("/orders/A-1/history")).json()
            events = [(e["kind"], e["name"]) for e in history["events"]]
            assert [e for e in events if e[0] != "signal_wait_started"] == [  # (no wait if the
                ("workflow_started", "shop.checkout"),  # signal came before the run waited)
                ("step_completed", "shop.charge"),
                ("signal_received", "paid"),
                ("workflow_completed", ""),
            ]
            assert history["events"][0]["value"] == {"order_id": "A-1", "cents": 4200}
            assert history["events"][1]["value"] == "pay-A-1"

    asyncio.run(scenario())


def test_what_a_client_sees_before_a_worker_runs_the_order() -> None:
    async def scenario() -> None:
        async with serve(create_app("memory://")) as client:  # no worker
            await client.post("/orders", json={"id": "B-1", "cents": 990})

            waited = await client.get("/orders/B-1/result", params={"timeout": 0.1})
            assert waited.status_code == 504
            assert waited.json() == {"detail": "order 'B-1' is still pending after 0.1s; ask again"}
            assert (await client.get("/orders/B-1")).json() == {"id": "B-1", "status": "pending"}

            taken = await client.post("/orders", json={"id": "B-1", "cents": 1})
            assert taken.status_code == 409
            assert "placed with another amount" in taken.json()["detail"]

            cancelled = await client.post("/orders/B-1/cancel")  # not begun: cancelled at once
            assert cancelled.json() == {"id": "B-1", "status": "cancelled"}
            assert (await client.post("/orders/B-1/cancel")).status_code == 202  # again: harmless
            late = await client.post("/orders/B-1/paid")
            assert late.status_code == 409
            assert late.json() == {"detail": "order 'B-1' is cancelled; it takes no payment"}
            ended = await client.get("/orders/B-1/result", params={"timeout": 0})
            assert ended.json() == {"id": "B-1", "status": "cancelled"}

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/orders", {"id": "C-1"}),  # no amount
        ("POST", "/orders", {"id": "C-1", "cents": -5}),
        ("POST", "/orders", {"id": "C-1", "cents": "lots"}),
        ("POST", "/orders", {"id": "C 1!", "cents": 100}),  # not an order id
        ("GET", "/orders/C-1/result?timeout=600", None),  # longer than a request should wait
        ("GET", "/orders/C 1!", None),
    ],
)
def test_a_bad_request_is_refused_with_422(method: str, path: str, body: object) -> None:
    async def scenario() -> None:
        async with serve(create_app("memory://")) as client:
            answer = await client.request(method, path, json=body)
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"][0]["type"]  # pydantic says what is wrong, and where

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/orders/nope"),
        ("GET", "/orders/nope/result"),
        ("GET", "/orders/nope/history"),
        ("POST", "/orders/nope/paid"),
        ("POST", "/orders/nope/cancel"),
    ],
)
def test_an_unknown_order_is_404(method: str, path: str) -> None:
    async def scenario() -> None:
        async with serve(create_app("memory://")) as client:
            answer = await client.request(method, path)
            assert answer.status_code == 404
            assert answer.json() == {"detail": "no run with id 'order-nope'"}

    asyncio.run(scenario())


def test_an_order_not_paid_within_a_day_expires() -> None:
    async def scenario(env: WorkflowEnvironment) -> None:
        # The app shares the environment's engine: its store and virtual clock. The
        # environment executes what the endpoints start when the test says so.
        async with serve(create_app(env.engine)) as client:
            await client.post("/orders", json={"id": "D-1", "cents": 990})  # never paid
            await client.post("/orders", json={"id": "D-2", "cents": 4200})
            env.advance(0)  # runs what the endpoints started, until each run waits
            await client.post("/orders/D-2/paid")
            env.advance(timedelta(days=1))  # runs the signalled run; then a day passes

            assert (await client.get("/orders/D-1")).json()["status"] == "expired"
            assert (await client.get("/orders/D-2")).json()["status"] == "paid"

    with WorkflowEnvironment(workflows=WORKFLOWS) as env:
        asyncio.run(scenario(env))

"""The shop's FastAPI app: place, pay, cancel and follow orders, each one a Fluxo run.

uvicorn fastapi_shop.app:app                   # the web app (FLUXO_STORE_URL, else sqlite:///shop.db)
fluxo worker fastapi_shop.app:make_engine      # and a worker beside it, which runs the workflows
uvicorn fastapi_shop.app:demo                  # or the quick demo: one process, its worker inside
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

import fluxo
from fastapi_shop.workflows import checkout

log = logging.getLogger(__name__)

WORKFLOWS = [checkout]
STORE_URL = "sqlite:///shop.db"
"""The store unless ``FLUXO_STORE_URL`` names another (the `fluxo runs` commands read it too)."""


def store_url() -> str:
    return os.environ.get("FLUXO_STORE_URL", STORE_URL)


def make_engine() -> fluxo.Engine:
    """What ``fluxo worker fastapi_shop.app:make_engine`` runs: the app's store and workflows."""
    return fluxo.Engine(store_url(), workflows=WORKFLOWS)


# --8<-- [start:lifespan]
def create_app(store: str | fluxo.Engine | None = None, *, worker: bool = False) -> FastAPI:
    """The shop: its store (a URL, or an Engine to share), and a worker inside it or not."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(store, fluxo.Engine):  # shared (a test's environment): its owner closes it
            engine = fluxo.AsyncEngine(store)
        else:
            engine = fluxo.AsyncEngine(store or store_url(), workflows=WORKFLOWS)
        async with engine:  # closed when the server shuts down
            app.state.fluxo = engine
            if not worker:
                yield
                return
            in_process = engine.engine.worker()  # executes the runs, in threads of its own
            in_process.start()
            try:
                yield
            finally:
                await asyncio.to_thread(in_process.stop)  # lets its runs finish or hand them back

    app = FastAPI(title="Fluxo shop", lifespan=lifespan)
    app.include_router(router)
    add_error_handlers(app)
    return app


# --8<-- [end:lifespan]


def get_engine(request: Request) -> fluxo.AsyncEngine:
    engine: fluxo.AsyncEngine = request.app.state.fluxo
    return engine


EngineDep = Annotated[fluxo.AsyncEngine, Depends(get_engine)]

ORDER_ID = r"^[A-Za-z0-9_-]{1,64}$"
OrderId = Annotated[str, Path(pattern=ORDER_ID)]


class NewOrder(BaseModel):
    """An order to place: its id is the shop's, so placing it again is harmless."""

    id: str = Field(pattern=ORDER_ID)
    cents: int = Field(gt=0, strict=True)


class Order(BaseModel):
    """An order as its run tells it."""

    id: str
    status: Literal["pending", "cancelling", "paid", "expired", "cancelled", "failed"]


class Event(BaseModel):
    """One event of an order's history: what happened, and the value recorded with it."""

    kind: str
    name: str
    value: Any


class History(BaseModel):
    """An order's history, oldest event first."""

    id: str
    events: list[Event]


def run_id(order_id: str) -> str:
    return f"order-{order_id}"


async def outcome(engine: fluxo.AsyncEngine, order_id: str, timeout: float) -> Order:
    """How the order ended, awaited for up to ``timeout`` seconds (else RunNotFinishedError)."""
    try:
        status = await engine.handle(run_id(order_id), str).result(timeout=timeout)
    except fluxo.WorkflowCancelledError:
        status = "cancelled"
    except (fluxo.WorkflowFailedError, fluxo.NondeterminismError):
        status = "failed"  # the run's error is in its history; `fluxo runs show` prints it
    return Order(id=order_id, status=status)


async def read_order(engine: fluxo.AsyncEngine, order_id: str) -> Order:
    """The order now: pending while its run goes on, then how it ended."""
    run = await engine.get_run(run_id(order_id))
    if not run.status.is_terminal:
        return Order(id=order_id, status="cancelling" if run.cancel_requested else "pending")
    return await outcome(engine, order_id, timeout=0)


router = APIRouter()


# --8<-- [start:place]
@router.post("/orders", status_code=201)
async def place_order(order: NewOrder, engine: EngineDep) -> Order:
    try:  # the run's id comes from the order's: placing it again starts nothing new
        await engine.start(checkout.options(id=run_id(order.id)), order.id, order.cents)
    except fluxo.RunIdConflictError:
        raise HTTPException(
            409, f"order {order.id!r} was placed with another amount; place this one as a new order"
        ) from None
    return await read_order(engine, order.id)


# --8<-- [end:place]


@router.post("/orders/{order_id}/paid", status_code=202)
async def payment_webhook(order_id: OrderId, engine: EngineDep) -> Order:
    """The payment provider says the order is paid: signal its run."""
    try:
        await engine.signal(run_id(order_id), "paid")
    except fluxo.RunStateError:  # the run has ended
        order = await read_order(engine, order_id)
        if order.status != "paid":
            raise HTTPException(
                409, f"order {order_id!r} is {order.status}; it takes no payment"
            ) from None
        return order  # the webhook sent again: harmless
    return await read_order(engine, order_id)


@router.post("/orders/{order_id}/cancel", status_code=202)
async def cancel_order(order_id: OrderId, engine: EngineDep) -> Order:
    """Cancel the order: at once if its run has not begun, else at its next step or wait."""
    try:
        await engine.cancel(run_id(order_id))
    except fluxo.RunStateError:  # it completed or failed already
        order = await read_order(engine, order_id)
        raise HTTPException(
            409, f"order {order_id!r} is {order.status}; it can no longer be cancelled"
        ) from None
    return await read_order(engine, order_id)


@router.get("/orders/{order_id}")
async def show_order(order_id: OrderId, engine: EngineDep) -> Order:
    return await read_order(engine, order_id)


# --8<-- [start:result]
@router.get("/orders/{order_id}/result")
async def await_order(
    order_id: OrderId, engine: EngineDep, timeout: Annotated[float, Query(ge=0, le=60)] = 10
) -> Order:
    """The order once it has ended, waiting up to ``timeout`` seconds: no thread waits meanwhile."""
    try:
        return await outcome(engine, order_id, timeout)
    except fluxo.RunNotFinishedError:
        raise HTTPException(
            504, f"order {order_id!r} is still pending after {timeout:g}s; ask again"
        ) from None


# --8<-- [end:result]


@router.get("/orders/{order_id}/history")
async def order_history(order_id: OrderId, engine: EngineDep) -> History:
    events = await engine.history(run_id(order_id))
    codec = engine.engine.codec  # the values as the workflow saw them
    return History(
        id=order_id,
        events=[
            Event(kind=e.kind, name=e.name, value=None if e.data is None else codec.decode(e.data))
            for e in events
        ],
    )


# --8<-- [start:errors]
def add_error_handlers(app: FastAPI) -> None:
    """Answer Fluxo's errors with HTTP statuses: 404, 409, 503."""

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def conflict(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("the workflow store is unavailable: %s", exc)  # names the database: not sent
        detail = "the workflow store is unavailable; try again later"
        return JSONResponse({"detail": detail}, status_code=503)

    app.add_exception_handler(fluxo.RunNotFoundError, not_found)
    app.add_exception_handler(fluxo.RunIdConflictError, conflict)
    app.add_exception_handler(fluxo.RunStateError, conflict)
    app.add_exception_handler(fluxo.StoreUnavailableError, unavailable)


# --8<-- [end:errors]

app = create_app()  # the web processes, with `fluxo worker` beside them
demo = create_app(worker=True)  # the quick demo: a worker in the app's own process

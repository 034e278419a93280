"""An ``async def`` workflow: async steps at once, a sync step on a thread, a timer, a signal.

Run it with ``python examples/async_workflows.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

import fluxo


@fluxo.step(name="trips.quote")
async def quote(city: str) -> int:
    await asyncio.sleep(0.01)  # an HTTP call to a pricing service, say
    return {"Lisbon": 120, "Oslo": 240, "Rome": 150}[city]


@fluxo.step(name="trips.book")
def book(cities: list[str], total: int) -> str:  # a sync client library
    return f"booked {'+'.join(cities)} for {total}"


@fluxo.workflow(name="trips.plan")
async def plan(cities: list[str]) -> str:
    prices = await fluxo.map_async(quote, cities)  # the quotes run at once
    await fluxo.sleep_async(timedelta(seconds=1))  # durable: a worker may resume it
    approved: bool = await fluxo.wait_for_signal_async("approved", type=bool)
    if not approved:
        return "not approved"
    return await book.call_async(cities, sum(prices))


url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'fluxo.db'}"
with fluxo.Engine(url, workflows=[plan]) as engine, engine.worker():
    handle = engine.start(plan.options(id="trip-1"), ["Lisbon", "Rome"])
    while not any(e.kind == "signal_wait_started" for e in engine.history(handle.id)):
        threading.Event().wait(0.05)
    engine.signal(handle.id, "approved", True)
    print(handle.result(timeout=30))  # prints: booked Lisbon+Rome for 270
    kinds = [e.kind for e in engine.history(handle.id)]
    quotes, bookings = kinds.count("branch_completed"), kinds.count("step_completed")
    print(f"{quotes} quotes, {bookings} booking recorded")  # prints: 2 quotes, 1 booking recorded

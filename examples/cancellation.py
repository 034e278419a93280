"""Cancelling a run, and a deadline on a whole run: cleanup still runs.

Run it with ``python examples/cancellation.py``.
"""

from __future__ import annotations

import time
from datetime import timedelta

import fluxo


@fluxo.step
def reserve(order_id: str) -> None:
    print(f"reserved {order_id}")


@fluxo.step
def release(order_id: str) -> None:
    print(f"released {order_id}")


@fluxo.workflow
def hold(order_id: str) -> str:
    reserve(order_id)
    try:
        return fluxo.wait_for_signal("paid", type=str)  # waits: the worker is free meanwhile
    finally:
        release(order_id)  # runs on cancellation too, and is recorded like any step


with fluxo.Engine("memory://", workflows=[hold]) as engine, engine.worker():
    # engine.cancel: the run stops at its next durable call (a waiting run is woken).
    handle = engine.start(hold.options(id="hold-1"), "hold-1")
    while engine.history("hold-1")[-1].kind != "signal_wait_started":
        time.sleep(0.01)  # this demo lets the run reach its wait first
    engine.cancel("hold-1")
    try:
        handle.result(timeout=30)
    except fluxo.WorkflowCancelledError:
        print("hold-1:", handle.status())  # prints: hold-1: cancelled

    # A deadline: the run is cancelled the same way when it passes.
    handle = engine.start(hold.options(id="hold-2", timeout=timedelta(seconds=1)), "hold-2")
    try:
        handle.result(timeout=30)
    except fluxo.WorkflowTimeoutError:
        print("hold-2:", handle.status())  # prints: hold-2: cancelled

"""Cancelling a run, and a deadline on a whole run: cleanup still runs.

Run it with ``python examples/cancellation.py``.
"""

from __future__ import annotations

import threading
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


packing = threading.Event()  # this demo cancels the run below while its step runs


@fluxo.step
def pack(order_id: str) -> None:
    packing.set()
    time.sleep(2)  # a slow step: a cancellation does not interrupt it


@fluxo.step
def ship(order_id: str) -> None:
    print(f"shipped {order_id}")  # never printed: the run stops before this step


@fluxo.workflow
def deliver(order_id: str) -> None:
    pack(order_id)
    ship(order_id)


with fluxo.Engine("memory://", workflows=[hold, deliver]) as engine, engine.worker():
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

    # A running run: its worker hears of the cancellation within about half a second,
    # while the step runs; the step finishes and is recorded, and the next one never runs.
    handle = engine.start(deliver.options(id="deliver-1"), "deliver-1")
    packing.wait(30)
    engine.cancel("deliver-1")
    try:
        handle.result(timeout=30)
    except fluxo.WorkflowCancelledError:
        for event in engine.history("deliver-1"):
            print(event.describe())
    # prints: workflow_started cancellation.deliver
    # prints: step_completed cancellation.pack
    # prints: cancel_requested cancelled
    # prints: workflow_cancelled cancelled

"""Durable timers and signals: a run that sleeps, then waits for an approval.

Run it with ``python examples/timers_and_signals.py``.
"""

from __future__ import annotations

from datetime import timedelta

import fluxo


@fluxo.step
def remind(order_id: str) -> None:
    print(f"reminding the approver of {order_id}")


@fluxo.step
def ship(order_id: str, approver: str) -> str:
    return f"{order_id} shipped, approved by {approver}"


@fluxo.workflow
def order(order_id: str) -> str:
    fluxo.sleep(timedelta(seconds=1))  # a durable timer: the fire time is recorded
    remind(order_id)
    try:
        approver = fluxo.wait_for_signal("approved", timeout=timedelta(hours=2), type=str)
    except fluxo.SignalTimeout:
        return f"{order_id} expired"
    return ship(order_id, approver)


with fluxo.Engine("memory://", workflows=[order]) as engine, engine.worker():
    handle = engine.start(order.options(id="order-17"), "order-17")
    engine.signal("order-17", "approved", "ana")  # kept until the workflow waits for it
    print(handle.result(timeout=30))  # prints: order-17 shipped, approved by ana
    for event in engine.history("order-17"):
        print(event.describe())
    # prints: workflow_started timers_and_signals.order
    # prints: timer_started sleep
    # prints: timer_fired sleep
    # prints: step_completed timers_and_signals.remind
    # prints: signal_received approved
    # prints: step_completed timers_and_signals.ship
    # prints: workflow_completed

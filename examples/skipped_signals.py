"""A signal whose payload does not fit its wait is skipped: recorded, logged, never fatal.

Run it with ``python examples/skipped_signals.py``.
"""

from __future__ import annotations

import fluxo


@fluxo.workflow
def approval(order_id: str) -> str:
    approver = fluxo.wait_for_signal("approved", type=str)
    return f"{order_id} approved by {approver}"


with fluxo.Engine("memory://", workflows=[approval]) as engine:
    handle = engine.start(approval.options(id="order-17"), "order-17")
    engine.signal("order-17", "approved", 42)  # not a str: skipped, and it cannot fail the run
    engine.signal("order-17", "approved", "ana")
    with engine.worker():
        # The fluxo logger warns (on stderr here, where logging is not configured):
        # run order-17: skipped signal 'approved': its payload does not fit the wait
        # (stored value does not decode as builtins.str: Expected `str`, got `int`); ...
        print(handle.result(timeout=30))  # prints: order-17 approved by ana
    for event in engine.history("order-17"):
        print(event.describe())
    # prints: workflow_started skipped_signals.approval
    # prints: signal_rejected approved
    # prints: signal_received approved
    # prints: workflow_completed

"""Stubbing a child workflow in a test, as a step is stubbed: ``python examples/child_stubs.py``.

The stub is the function of the child run the parent starts: the child is still a
run of its own, so the parent records, replays and sees exactly what a real child
ending the same way gives.
"""

from __future__ import annotations

import fluxo
from fluxo.testing import WorkflowEnvironment


@fluxo.step
def book_courier(order_id: str) -> str:
    raise RuntimeError("a test booked a real courier")


@fluxo.workflow
def ship(order_id: str) -> str:
    return book_courier(order_id)


@fluxo.workflow
def order(order_id: str) -> str:
    try:
        tracking = ship(order_id)  # a child workflow
    except fluxo.WorkflowFailedError as exc:
        return f"{order_id} not shipped: {exc.error_message}"
    return f"{order_id} shipped as {tracking}"


with WorkflowEnvironment() as env:
    env.stub(ship, returns="track-1")
    print(env.run(order.options(id="o-1"), "o-1"))  # prints: o-1 shipped as track-1
    (call,) = env.calls(ship)  # a fluxo.testing.ChildCall
    print(call.child_id, call.args, call.stubbed)  # prints: o-1~child-1 ('o-1',) True
    print([event.kind for event in env.history("o-1")])
    # prints: ['workflow_started', 'child_started', 'child_completed', 'workflow_completed']

    with env.stub("ship", raises=RuntimeError("no courier today")):  # by name, scoped
        print(env.run(order, "o-2"))  # prints: o-2 not shipped: no courier today

    env.stub(ship, lambda order_id: f"track-{order_id}")  # the newest stub answers
    print(env.run(order, "o-3"))  # prints: o-3 shipped as track-o-3

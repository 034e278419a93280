"""Child workflows: a workflow called inside a workflow is a run of its own.

Run it with ``python examples/child_workflows.py``.
"""

from __future__ import annotations

import fluxo


@fluxo.workflow
def ship(order_id: str) -> str:
    return f"shipped {order_id}"


@fluxo.workflow
def invoice(order_id: str) -> str:
    return f"invoiced {order_id}"


@fluxo.workflow
def send_survey(order_id: str) -> None: ...


@fluxo.workflow
def order(order_id: str) -> str:
    shipping = fluxo.start_child(ship, order_id)  # a fluxo.ChildHandle
    receipt = invoice(order_id)  # a child workflow, called: waits for its result
    fluxo.start_child(send_survey.options(detached=True), order_id)  # may outlive us
    return f"{receipt}, {shipping.result()}"


with fluxo.Engine("memory://", workflows=[order, ship, invoice, send_survey]) as engine:
    print(engine.run(order.options(id="o-17"), "o-17"))  # prints: invoiced o-17, shipped o-17
    child = engine.get_run("o-17~child-1")  # the parent's id and the call's position
    print(child.workflow, child.parent, child.status)  # prints: child_workflows.ship o-17 completed

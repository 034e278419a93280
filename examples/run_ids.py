"""Run ids: starting twice with one id starts one run; other arguments are refused.

Run it with ``python examples/run_ids.py``.
"""

from __future__ import annotations

import fluxo


@fluxo.workflow
def checkout(order_id: str, cents: int) -> str:
    return f"charged {cents} for {order_id}"


with fluxo.Engine("memory://", workflows=[checkout]) as engine:
    first = engine.start(checkout.options(id="order-17"), "17", 4200)
    again = engine.start(checkout.options(id="order-17"), "17", cents=4200)  # the same call
    print(again.id == first.id, len(engine.list_runs()))  # prints: True 1

    try:  # the same id with other arguments would return the result of other arguments
        engine.start(checkout.options(id="order-17"), "17", 990)
    except fluxo.RunIdConflictError as exc:
        print(exc.arguments)  # prints: ('cents',)

    # if_exists="return": the existing run, whatever its arguments
    existing = engine.start(checkout.options(id="order-17", if_exists="return"), "17", 990)
    with engine.worker():
        print(existing.result(timeout=30))  # prints: charged 4200 for 17

    try:  # names and ids are text every store can hold: no control characters
        checkout.options(id="order\x0017")
    except fluxo.DefinitionError as exc:
        print("control character U+0000" in str(exc))  # prints: True

    # list the runs whose id starts with a text: case counts, "%" and "_" are plain text
    for run_id in ("order-18", "Order-19", "order_20", "refund-17"):
        engine.start(checkout.options(id=run_id), run_id, 100)
    print(sorted(run.id for run in engine.list_runs(id_prefix="order-")))
    # prints: ['order-17', 'order-18']
    print([run.id for run in engine.list_runs(id_prefix="refund-", status="pending")])
    # prints: ['refund-17']

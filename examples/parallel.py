"""Parallel steps: fluxo.parallel for different calls, fluxo.map to fan one step out.

Run it with ``python examples/parallel.py``.
"""

from __future__ import annotations

import fluxo


@fluxo.step
def charge(order_id: str, cents: int) -> str:
    return f"r-{order_id}"


@fluxo.step
def print_label(order_id: str) -> str:
    return f"label-{order_id}"


@fluxo.step
def reserve_item(sku: str) -> int:
    return 1


@fluxo.workflow
def fulfil(order_id: str, skus: list[str]) -> str:
    receipt, label = fluxo.parallel(charge.bind(order_id, 4200), print_label.bind(order_id))
    stock = fluxo.map(reserve_item, skus, max_concurrency=8)  # 1,000 items are fine
    return f"{receipt} {label}: {sum(stock)} reserved"


with fluxo.Engine("memory://", workflows=[fulfil]) as engine:
    print(engine.run(fulfil, "o-17", ["a", "b", "c"]))  # prints: r-o-17 label-o-17: 3 reserved

"""The same workflow on any store: pass the store's URL.

Run it with ``python examples/stores.py URL``, for example::

    python examples/stores.py sqlite:///fluxo.db
    python examples/stores.py postgresql://app@127.0.0.1/app
    python examples/stores.py mysql://root@127.0.0.1/app
    python examples/stores.py redis://127.0.0.1:6379/0?prefix=demo
    python examples/stores.py mongodb://127.0.0.1:27017/app
"""

from __future__ import annotations

import sys
import uuid

import fluxo


@fluxo.step
def charge(order_id: str, cents: int) -> str:
    return f"r-{order_id}"


@fluxo.workflow
def checkout(order_id: str, cents: int) -> str:
    receipt = charge(order_id, cents)
    approved = fluxo.wait_for_signal("approved", type=bool)  # woken by the store
    return receipt if approved else "rejected"


url = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///fluxo.db"
with fluxo.Engine(url, workflows=[checkout]) as engine, engine.worker():
    run_id = f"order-{uuid.uuid4().hex[:8]}"
    handle = engine.start(checkout.options(id=run_id), run_id, 4200)
    engine.signal(run_id, "approved", True)
    print("charged:", handle.result(timeout=30) == f"r-{run_id}")  # prints: charged: True
    listed = engine.list_runs(id_prefix=run_id[:10])  # the runs whose id starts so
    print("listed:", [run.id for run in listed] == [run_id])  # prints: listed: True
    print("store:", engine.store)

"""Starting, signalling and awaiting runs from asyncio code, with fluxo.AsyncEngine.

The workflows are plain (sync) Fluxo workflows, executed by a worker; the code
that starts them and waits for their results is async, as in a FastAPI or
Starlette app, and never blocks its event loop.

Run it with ``python examples/async_client.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import fluxo


@fluxo.step(name="refunds.pay_back")
def pay_back(order_id: str, cents: int) -> str:
    return f"refund-{order_id}-{cents}"


@fluxo.workflow(name="refunds.refund")
def refund(order_id: str, cents: int) -> str:
    approved: bool = fluxo.wait_for_signal("approved", type=bool)
    if not approved:
        return f"refused {order_id}"
    return pay_back(order_id, cents)


async def main(url: str) -> None:
    async with fluxo.AsyncEngine(url, workflows=[refund]) as engine:
        with engine.engine.worker():  # a worker in this process; usually `fluxo worker`
            orders = {"o-1": 1200, "o-2": 550, "o-3": 9900}
            handles = [
                await engine.start(refund.options(id=f"refund-{order}"), order, cents)
                for order, cents in orders.items()
            ]
            for handle in handles:  # say yes to all but the largest
                await engine.signal(handle.id, "approved", handle.id != "refund-o-3")
            results = await asyncio.gather(*(h.result(timeout=30) for h in handles))
            for result in results:
                print(result)
            # prints: refund-o-1-1200
            # prints: refund-o-2-550
            # prints: refused o-3
            run = await engine.get_run("refund-o-1")
            print(run.status.value)  # prints: completed


asyncio.run(main(f"sqlite:///{Path(tempfile.mkdtemp()) / 'fluxo.db'}"))

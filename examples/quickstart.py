"""Fluxo quick start: a durable checkout on the embedded SQLite store.

Run it twice. The first run executes every step; the second finds the run
already recorded under the same id and returns its result without charging
the card again.

    python examples/quickstart.py [path/to/fluxo.db]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import fluxo


@dataclass
class Receipt:
    """What the payment provider hands back."""

    id: str
    cents: int


# --8<-- [start:workflow]
@fluxo.step(retry=3)
def charge(order_id: str, cents: int) -> Receipt:
    print(f"  charging {cents} cents for {order_id}")
    return Receipt(id=f"rcpt-{order_id}", cents=cents)


@fluxo.step
def reserve_stock(order_id: str) -> bool:
    print(f"  reserving stock for {order_id}")
    return True


@fluxo.step
def send_confirmation(order_id: str, receipt: Receipt) -> None:
    print(f"  emailing receipt {receipt.id} for {order_id}")


@fluxo.workflow
def checkout(order_id: str, cents: int) -> str:
    receipt = charge(order_id, cents)  # a Receipt, live and on replay
    reserve_stock(order_id)
    send_confirmation(order_id, receipt)
    return receipt.id


# --8<-- [end:workflow]


def main(db_path: str = "fluxo-quickstart.db") -> str:
    with fluxo.Engine(f"sqlite:///{db_path}", workflows=[checkout]) as engine:
        run_id = "order-17"
        handle = engine.start(checkout.options(id=run_id), "17", 4200)  # idempotent on the id
        known = handle.status() is fluxo.RunStatus.COMPLETED
        print("run order-17:", "already recorded, replaying" if known else "starting")
        with engine.worker(concurrency=2):
            result = handle.result(timeout=30)
        print(f"result: {result}  (status: {handle.status().value})")
        print("history:")
        for seq, event in enumerate(engine.history(run_id)):
            print(f"  {seq}: {event.kind:<20} {event.name}")
        return result


if __name__ == "__main__":
    main(*sys.argv[1:2])

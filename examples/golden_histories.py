"""Golden histories: export a finished run, check it in, replay it against changed code.

Run it with ``python examples/golden_histories.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import fluxo
from fluxo.testing import ReplayMismatchError, replay, replay_all, save_history


@fluxo.step(name="shop.charge")
def charge(order_id: str, cents: int) -> str:
    return f"r-{order_id}"


@fluxo.step(name="shop.ship")
def ship(order_id: str) -> None: ...


@fluxo.workflow(name="shop.checkout")
def checkout(order_id: str, cents: int) -> str:
    receipt = charge(order_id, cents)
    ship(order_id)
    return receipt


# Tomorrow's code ships before it charges: runs recorded today would not replay.
@fluxo.workflow(name="shop.checkout")
def checkout_reordered(order_id: str, cents: int) -> str:
    ship(order_id)
    return charge(order_id, cents)


engine = fluxo.Engine("memory://", workflows=[checkout])
with tempfile.TemporaryDirectory() as folder, engine:
    histories = Path(folder, "histories")  # tests/histories in your repository
    histories.mkdir()
    engine.run(checkout.options(id="order-17"), "17", 4200)
    path = save_history(engine.export_history("order-17"), histories / "order-17.json")

    print(replay(path, workflows=[checkout]).ok)  # prints: True
    print(replay_all(histories, workflows=[checkout]).ok)  # prints: True
    try:
        replay(path, workflows=[checkout_reordered])  # runs no step, writes nothing
    except ReplayMismatchError as exc:
        print(str(exc).splitlines()[0])  # prints: history of run 'order-17' diverged at position 1:

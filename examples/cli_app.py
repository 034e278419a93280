"""The app that ``examples/cli_tour.sh`` steers from the shell: ``FLUXO_APP=cli_app:engine``.

``python cli_app.py start ID CENTS`` starts a checkout; ``python cli_app.py wait ID``
prints its outcome. Everything else the tour does with the ``fluxo`` command.
"""

from __future__ import annotations

import os
import sys

import fluxo


@fluxo.step
def charge(order_id: str, cents: int) -> str:
    if cents <= 0:
        raise ValueError(f"cannot charge {cents} cents")
    return f"r-{order_id}"


@fluxo.workflow
def checkout(order_id: str, cents: int) -> str:
    receipt = charge(order_id, cents)
    if not fluxo.wait_for_signal("approved", type=bool):
        return "rejected"
    return receipt


engine = fluxo.Engine(os.environ.get("SHOP_STORE", "sqlite:///shop.db"), workflows=[checkout])

if __name__ == "__main__":
    command, run_id, *rest = sys.argv[1:]
    if command == "start":
        engine.start(checkout.options(id=run_id), run_id, int(rest[0]))
    else:
        try:
            print(engine.handle(run_id).result(timeout=60))
        except fluxo.WorkflowFailedError as exc:
            print(f"{run_id} failed: {exc.error_message}")
        except fluxo.WorkflowCancelledError:
            print(f"{run_id} cancelled")

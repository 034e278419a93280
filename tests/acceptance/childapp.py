"""Parents and child workflows for the crash tests, run by the real ``fluxo worker`` CLI.

Each step appends a line to a ledger file when it runs, so the test can count
executions across processes. Packing waits until the test allows it to finish,
so the worker running the child can be killed in the middle of it.
"""

from __future__ import annotations

import os

import fluxo
from tests.acceptance import _ledger


@fluxo.step
def prepare(order: str) -> str:
    _ledger.write("prepare")
    return order.upper()


@fluxo.step
def pack(item: str) -> str:
    _ledger.write("pack")
    _ledger.hold("release", "the packing step")
    return f"box({item})"


@fluxo.step
def label(box: str) -> str:
    _ledger.write("label")
    return f"{box}+label"


@fluxo.workflow
def shipment(item: str) -> str:
    """The child: packs (held by the test), then labels."""
    return label(pack(item))


@fluxo.workflow
def order(name: str) -> str:
    """The parent: prepares, then waits for its shipment child."""
    item = prepare(name)
    return f"shipped {shipment(item)}"


@fluxo.step
def clean_up(item: str) -> None:
    _ledger.write(f"cleanup-{item}")


@fluxo.workflow
def delivery(item: str) -> str:
    """A child that waits for a signal nobody sends, and cleans up when cancelled."""
    try:
        return str(fluxo.wait_for_signal("delivered", type=str))
    finally:
        clean_up(item)


@fluxo.workflow
def supervisor(item: str) -> str:
    """A parent waiting for its delivery child."""
    return delivery(item)


def make_engine() -> fluxo.Engine:
    """Build the engine from the store URL the test hands over in the environment."""
    return fluxo.Engine(
        os.environ["FLUXO_CRASH_URL"], workflows=[order, shipment, supervisor, delivery]
    )

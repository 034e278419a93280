"""The workflows the dashboard's browser scenario shows, run by a real ``fluxo worker``.

``checkout`` takes every shape the timeline draws: steps, a step that fails once and is
retried, a durable sleep, a wait for a signal, a child run, and a parallel block.
``refund`` waits for an ``approve`` signal that the test sends (or cancels) from the page,
then pays back once the test releases it, so the page shows the run before it completes.
``sync_catalog`` fails until it is "fixed": its step looks for a file named after its
input in the directory ``FLUXO_UI_FIXES`` names, at each attempt, so the running worker
sees the fix the way a restarted one would see newly deployed code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import fluxo

STORE_ENV = "FLUXO_UI_STORE"
"""The store URL the worker's engine opens."""
FIXES_ENV = "FLUXO_UI_FIXES"
"""The directory of fixes: ``sync_catalog(region)`` succeeds once a file ``region`` is in it."""
FLAKY_ENV = "FLUXO_UI_FLAKY"
"""The directory where ``charge_card`` notes its first attempt, so that the second passes."""
RELEASES_ENV = "FLUXO_UI_RELEASES"
"""The directory of releases: ``pay_back(order)`` returns once a file ``order`` is in it."""
HOLD = 60.0
"""Seconds ``pay_back`` waits for its release before it fails."""


@fluxo.step(name="shop.reserve_stock")
def reserve_stock(order: str) -> str:
    return f"reserved {order}"


@fluxo.step(name="shop.charge_card", retry=fluxo.Retry(max_attempts=3, initial=0.2))
def charge_card(order: str) -> str:
    """Fails its first attempt for each order (the gateway times out), then succeeds."""
    mark = Path(os.environ[FLAKY_ENV]) / order
    if not mark.exists():
        mark.touch()
        raise TimeoutError(f"the payment gateway did not answer for {order}")
    return f"charged {order}"


@fluxo.step(name="shop.pack_box")
def pack_box(order: str, box: int) -> str:
    return f"{order}: box {box}"


@fluxo.step(name="shop.email_customer")
def email_customer(order: str) -> str:
    return f"emailed {order}"


@fluxo.workflow(name="shop.ship")
def ship(order: str) -> str:
    """The child run: one step."""
    return f"shipped, {email_customer(order)}"


@fluxo.workflow(name="shop.checkout")
def checkout(order: str) -> dict[str, Any]:
    """Every shape of the timeline in one run; its ``go`` signal is sent when it starts."""
    reserved = reserve_stock(order)
    charged = charge_card(order)
    fluxo.sleep(0.3)
    go = fluxo.wait_for_signal("go")
    shipped = ship(order)
    boxes = fluxo.parallel(
        pack_box.bind(order, 1), pack_box.bind(order, 2), email_customer.bind(order)
    )
    return {"steps": [reserved, charged], "go": go, "child": shipped, "boxes": boxes}


@fluxo.step(name="shop.pay_back", retry=fluxo.Retry(max_attempts=1))
def pay_back(order: str) -> str:
    """Returns once the test releases ``order``."""
    release = Path(os.environ[RELEASES_ENV]) / order
    deadline = time.monotonic() + HOLD
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{order} was not released within {HOLD}s")
        time.sleep(0.05)
    return f"paid back {order}"


@fluxo.workflow(name="shop.refund")
def refund(order: str) -> dict[str, Any]:
    """Waits for ``approve``, then pays back (once released); returns both."""
    approval = fluxo.wait_for_signal("approve")
    return {"approval": approval, "payment": pay_back(order)}


@fluxo.step(name="shop.push_catalog", retry=fluxo.Retry(max_attempts=1))
def push_catalog(region: str) -> str:
    """Fails until a file ``region`` is in the fixes directory."""
    if not (Path(os.environ[FIXES_ENV]) / region).exists():
        raise KeyError(f"the {region} catalog configuration has no 'currency'")
    return f"catalog pushed to {region}"


@fluxo.workflow(name="shop.sync_catalog")
def sync_catalog(region: str) -> str:
    """Fails (its step is not retried) until it is fixed; then an operator retries it."""
    return push_catalog(region)


@fluxo.workflow(name="shop.comment")
def comment(text: str) -> str:
    """Returns its input: the page shows both."""
    return text


@fluxo.step(name="shop.bill")
def bill(invoice: int) -> int:
    return invoice


@fluxo.workflow(name="shop.invoice")
def invoice(number: int) -> int:
    """One step: many of these fill pages of the runs list."""
    return bill(number)


@fluxo.step(name="shop.import_item")
def import_item(index: int) -> int:
    return index


@fluxo.workflow(name="shop.import_catalog")
def import_catalog(items: int) -> int:
    """A long history: ``items`` steps, an event each."""
    return sum(import_item(index) for index in range(items))


WORKFLOWS = [checkout, ship, refund, sync_catalog, comment, invoice, import_catalog]


def make_engine() -> fluxo.Engine:
    """The worker's engine, on the store the test names in the environment."""
    return fluxo.Engine(os.environ[STORE_ENV], workflows=WORKFLOWS)

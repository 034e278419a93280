"""A saga for the crash tests, run by the real ``fluxo worker`` CLI.

Three bookings each register the step that cancels them, and the payment after
them fails, so the saga compensates. Each step appends a line to a ledger file
when it runs, so the test can count executions across processes. Cancelling
the hotel, the second compensation, waits until the test allows it to finish,
so a worker can be killed in the middle of compensating.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import fluxo

WORKDIR = Path(os.environ.get("FLUXO_CRASH_DIR", "."))


def _ledger(line: str) -> None:
    with (WORKDIR / "ledger.txt").open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class PaymentDeclined(Exception):
    pass


@fluxo.step
def book(what: str) -> str:
    _ledger(f"book-{what}")
    return f"{what}-1"


@fluxo.step
def pay(cents: int) -> None:
    _ledger("pay")
    raise PaymentDeclined(f"{cents} cents declined")


@fluxo.step
def cancel_flight(booking: str) -> None:
    _ledger(f"cancel-{booking}")


@fluxo.step
def cancel_hotel(booking: str) -> None:
    _ledger(f"cancel-{booking}")
    deadline = time.monotonic() + 60
    while not (WORKDIR / "release-cancel-hotel").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the hotel's cancellation")
        time.sleep(0.02)


@fluxo.step
def cancel_car(booking: str) -> None:
    _ledger(f"cancel-{booking}")


@fluxo.workflow
def trip(cents: int) -> None:
    with fluxo.saga() as saga:
        saga.compensate_with(cancel_flight, book("flight"))
        saga.compensate_with(cancel_hotel, book("hotel"))
        saga.compensate_with(cancel_car, book("car"))
        pay(cents)


def make_engine() -> fluxo.Engine:
    """Build the engine from the store URL the test hands over in the environment."""
    return fluxo.Engine(os.environ["FLUXO_CRASH_URL"], workflows=[trip])

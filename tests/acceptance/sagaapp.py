"""A saga for the crash tests, run by the real ``fluxo worker`` CLI.

Three bookings each register the step that cancels them, and the payment after
them fails, so the saga compensates. Each step appends a line to a ledger file
when it runs, so the test can count executions across processes. Cancelling
the hotel, the second compensation, waits until the test allows it to finish,
so a worker can be killed in the middle of compensating.
"""

from __future__ import annotations

import os

import fluxo
from tests.acceptance import _ledger


class PaymentDeclined(Exception):
    pass


@fluxo.step
def book(what: str) -> str:
    _ledger.write(f"book-{what}")
    return f"{what}-1"


@fluxo.step
def pay(cents: int) -> None:
    _ledger.write("pay")
    raise PaymentDeclined(f"{cents} cents declined")


@fluxo.step
def cancel_flight(booking: str) -> None:
    _ledger.write(f"cancel-{booking}")


@fluxo.step
def cancel_hotel(booking: str) -> None:
    _ledger.write(f"cancel-{booking}")
    _ledger.hold("release-cancel-hotel", "the hotel's cancellation")


@fluxo.step
def cancel_car(booking: str) -> None:
    _ledger.write(f"cancel-{booking}")


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

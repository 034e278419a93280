"""A saga: undo what a workflow did when it cannot finish.

Run it with ``python examples/saga.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import fluxo


@dataclass
class Trip:
    """Who travels where."""

    customer: str
    city: str


@dataclass
class Booking:
    """A reservation, and what it costs."""

    id: str
    cents: int


@fluxo.step
def book_flight(trip: Trip) -> Booking:
    return Booking(f"flight-{trip.city}", 30000)


@fluxo.step
def book_hotel(trip: Trip) -> Booking:
    return Booking(f"hotel-{trip.city}", 20000)


@fluxo.step
def cancel_flight(booking_id: str) -> None:
    print(f"cancelled {booking_id}")


@fluxo.step
def cancel_hotel(booking_id: str) -> None:
    print(f"cancelled {booking_id}")


@fluxo.step
def charge(customer: str, cents: int) -> None:
    raise RuntimeError("card declined")


@fluxo.workflow
def book_trip(trip: Trip) -> str:
    with fluxo.saga() as saga:
        flight = book_flight(trip)
        saga.compensate_with(cancel_flight, flight.id)  # a step, and its arguments
        hotel = book_hotel(trip)
        saga.compensate_with(cancel_hotel, hotel.id)
        charge(trip.customer, flight.cents + hotel.cents)  # fails: the hotel, then the flight
    return flight.id


with fluxo.Engine("memory://", workflows=[book_trip]) as engine:
    try:
        engine.run(book_trip, Trip("ana", "lisbon"))
    except fluxo.WorkflowFailedError as exc:
        print(exc.error_message)

# prints: cancelled hotel-lisbon
# prints: cancelled flight-lisbon
# prints: step 'saga.charge' failed after 1 attempt: builtins.RuntimeError: card declined

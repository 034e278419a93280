"""Retries and step timeouts: every attempt is recorded; a final failure is a StepError.

Run it with ``python examples/retries.py``.
"""

from __future__ import annotations

import time
from datetime import timedelta

import fluxo

attempts: dict[str, int] = {}


class CardDeclined(Exception):
    """The bank said no: retrying will not change its mind."""


@fluxo.step(retry=fluxo.Retry(max_attempts=4, initial=0.1, non_retryable=(CardDeclined,)))
def charge(order_id: str, cents: int) -> str:
    attempts[order_id] = attempts.get(order_id, 0) + 1
    if cents > 100_000:
        raise CardDeclined(f"{cents} cents is over the limit")
    if attempts[order_id] < 3:
        raise ConnectionError("the payment provider timed out")  # retried
    return f"r-{order_id}"


@fluxo.step(timeout=timedelta(seconds=0.2), retry=2)
def slow_quote(order_id: str) -> int:
    time.sleep(0.5)  # past the timeout: the attempt fails with fluxo.StepTimeout
    return 100


@fluxo.workflow
def checkout(order_id: str, cents: int) -> str:
    try:
        return charge(order_id, cents)
    except fluxo.StepError as exc:
        if exc.is_instance(CardDeclined):
            return f"declined: {exc.error_message}"
        raise


@fluxo.workflow
def quote(order_id: str) -> str:
    try:
        return f"{slow_quote(order_id)} cents"
    except fluxo.StepError as exc:  # the last attempt's error, as recorded
        return f"{exc.type_name} after {exc.attempts} attempts"


with fluxo.Engine("memory://", workflows=[checkout, quote]) as engine:
    print(engine.run(checkout.options(id="o-1"), "o-1", 4200))  # prints: r-o-1
    kinds = [event.kind for event in engine.history("o-1")]
    print(kinds.count("step_attempt_failed"), "failed attempts recorded")
    # prints: 2 failed attempts recorded
    print(engine.run(checkout, "o-2", 500_000))  # prints: declined: 500000 cents is over the limit
    print(engine.run(quote, "o-3"))  # prints: fluxo.StepTimeout after 2 attempts

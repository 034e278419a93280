"""Testing a workflow that takes days, in milliseconds: ``pytest examples/test_order_workflow.py``.

``WorkflowEnvironment`` runs the workflow in process on a virtual clock, so the
three-day sleep and the week-long approval window pass at once; the payment step
is stubbed, so no card is charged.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from order import (
    COOLING_OFF,
    Receipt,
    charge_card,
    fulfil_order,
    release_stock,
    reserve_stock,
    ship,
)

from fluxo.testing import WorkflowEnvironment


def test_an_approved_order_is_charged_after_the_cooling_off_period() -> None:
    with WorkflowEnvironment() as env:
        env.stub(charge_card, returns=Receipt(id="rcpt-1", cents=4200))
        started = env.now()

        handle = env.start(fulfil_order, "o-1", 4200)  # runs until it sleeps
        assert env.steps_run(handle) == [reserve_stock]

        env.advance(COOLING_OFF)  # now it waits for the approval
        assert env.steps_run(handle) == [reserve_stock]

        env.signal(handle, "approved", True)
        assert handle.result() == "track-o-1-rcpt-1"
        assert env.steps_run(handle) == [reserve_stock, charge_card, ship]
        assert env.calls(charge_card)[0].args == ("o-1", 4200)
        assert env.now() - started == COOLING_OFF


def test_an_order_nobody_approves_is_released_after_a_week(
    fluxo_env: WorkflowEnvironment,
) -> None:
    """The same, with the ``fluxo_env`` pytest fixture Fluxo installs."""
    fluxo_env.stub(charge_card, raises=AssertionError("an unapproved order was charged"))
    started = fluxo_env.now()

    assert fluxo_env.run(fulfil_order, "o-2", 990) == "cancelled"
    assert fluxo_env.steps_run() == [reserve_stock, release_stock]
    assert fluxo_env.now() - started == COOLING_OFF + timedelta(days=7)


def test_a_flaky_payment_provider_is_retried(fluxo_env: WorkflowEnvironment) -> None:
    outcomes = [ConnectionError("timeout"), ConnectionError("timeout"), Receipt("rcpt-3", 100)]

    def flaky_charge(order_id: str, cents: int) -> Receipt:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    fluxo_env.stub(charge_card, flaky_charge)
    handle = fluxo_env.start(fulfil_order, "o-3", 100)
    fluxo_env.signal(handle, "approved", True)  # kept until the workflow asks for it
    assert handle.result() == "track-o-3-rcpt-3"
    assert [call.error is None for call in fluxo_env.calls(charge_card)] == [False, False, True]


def test_the_card_is_never_charged_for_real() -> None:
    with pytest.raises(ConnectionError):
        charge_card("o-4", 1)  # outside a workflow a step is a plain call

"""Retry policies: validation, back-off arithmetic, which errors are retried, shorthands."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

import fluxo
from fluxo import _retry


def test_defaults() -> None:
    policy = fluxo.Retry()
    assert policy.max_attempts == 3
    assert policy.delay(1) == 1.0
    assert policy.retry_on == (Exception,)
    assert policy.non_retryable == ()


def test_delay_grows_by_backoff_and_is_capped() -> None:
    policy = fluxo.Retry(
        max_attempts=10, initial=timedelta(seconds=2), backoff=3.0, max_interval=timedelta(30)
    )
    assert [policy.delay(n) for n in range(1, 5)] == [2.0, 6.0, 18.0, 54.0]
    capped = fluxo.Retry(initial=2, backoff=3, max_interval=10)
    assert [capped.delay(n) for n in range(1, 5)] == [2.0, 6.0, 10.0, 10.0]


def test_times_may_be_numbers_or_timedeltas() -> None:
    assert fluxo.Retry(initial=0.25).delay(1) == 0.25
    assert fluxo.Retry(initial=timedelta(milliseconds=250)).delay(1) == 0.25
    assert fluxo.Retry(initial=0).delay(5) == 0.0
    assert fluxo.Retry(initial=1, backoff=1).delay(9) == 1.0


def test_the_last_attempt_is_never_retried() -> None:
    policy = fluxo.Retry(max_attempts=3)
    error = ValueError("x")
    assert policy.should_retry(error, 1)
    assert policy.should_retry(error, 2)
    assert not policy.should_retry(error, 3)
    assert not policy.should_retry(error, 4)
    assert not fluxo.Retry(max_attempts=1).should_retry(error, 1)


def test_retry_on_limits_what_is_retried() -> None:
    policy = fluxo.Retry(max_attempts=5, retry_on=(ConnectionError, TimeoutError))
    assert policy.should_retry(ConnectionResetError(), 1)  # a subclass counts
    assert policy.should_retry(TimeoutError(), 1)
    assert not policy.should_retry(ValueError(), 1)


def test_non_retryable_wins_over_retry_on() -> None:
    policy = fluxo.Retry(max_attempts=5, retry_on=(OSError,), non_retryable=(PermissionError,))
    assert policy.should_retry(OSError(), 1)
    assert not policy.should_retry(PermissionError(), 1)
    assert not fluxo.Retry(non_retryable=(KeyError,)).should_retry(KeyError("k"), 1)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -2}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"backoff": 0.5}, "backoff"),
        ({"backoff": "2"}, "backoff"),
        ({"retry_on": ValueError}, "retry_on"),
        ({"retry_on": [ValueError]}, "retry_on"),
        ({"retry_on": (int,)}, "retry_on"),
        ({"non_retryable": ("KeyError",)}, "non_retryable"),
        ({"initial": -1}, "initial"),
        ({"initial": "1s"}, "initial"),
        ({"initial": True}, "initial"),
        ({"max_interval": timedelta(seconds=-1)}, "max_interval"),
    ],
)
def test_invalid_policies_are_rejected(options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(fluxo.DefinitionError, match=complaint):
        fluxo.Retry(**options)


def test_every_field_problem_is_reported_at_once() -> None:
    with pytest.raises(fluxo.DefinitionError) as info:
        fluxo.Retry(max_attempts=0, backoff=0, retry_on=[ValueError])  # type: ignore[arg-type]
    message = str(info.value)
    assert "max_attempts" in message
    assert "backoff" in message
    assert "retry_on" in message


def test_a_policy_is_frozen_and_comparable() -> None:
    policy = fluxo.Retry(max_attempts=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 5  # type: ignore[misc]
    assert policy == fluxo.Retry(max_attempts=2)
    assert hash(policy) == hash(fluxo.Retry(max_attempts=2))


def test_shorthands_are_coerced() -> None:
    assert _retry.coerce_retry(None) == fluxo.Retry(max_attempts=1)
    assert _retry.coerce_retry(None) is _retry.NO_RETRY
    assert _retry.coerce_retry(4) == fluxo.Retry(max_attempts=4)
    policy = fluxo.Retry(max_attempts=9)
    assert _retry.coerce_retry(policy) is policy


@pytest.mark.parametrize("value", [True, False, 2.5, "3", [3], timedelta(1)])
def test_bad_shorthands_are_rejected(value: Any) -> None:
    with pytest.raises(fluxo.DefinitionError, match="retry= takes"):
        _retry.coerce_retry(value)


def test_an_int_shorthand_below_one_is_rejected_by_the_policy() -> None:
    with pytest.raises(fluxo.DefinitionError, match="max_attempts"):
        _retry.coerce_retry(0)

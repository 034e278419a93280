"""The one parser of durations: timedeltas and seconds from the API, ages from the CLI."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

import fluxo
from fluxo import _durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(timedelta(minutes=2), 120.0), (3, 3.0), (2.5, 2.5), (-1, -1.0), (timedelta(0), 0.0)],
)
def test_a_timedelta_or_a_number_is_read_as_seconds(value: object, seconds: float) -> None:
    assert _durations.to_seconds(value) == seconds
    assert isinstance(_durations.to_seconds(value), float)


@pytest.mark.parametrize("value", [True, False, "1h", None, [1], object()])
def test_anything_else_is_not_a_duration(value: object) -> None:
    assert _durations.to_seconds(value) is None
    with pytest.raises(fluxo.DefinitionError, match=r"sleep\(\) takes a timedelta or a number"):
        _durations.seconds(value, "sleep()")


def test_not_negative_refuses_a_negative_duration_naming_it() -> None:
    assert _durations.not_negative(0, "Retry initial") == 0.0
    with pytest.raises(fluxo.DefinitionError, match="Retry initial must not be negative, got -2"):
        _durations.not_negative(-2, "Retry initial")


@pytest.mark.parametrize("value", [0, -1, timedelta(0), "5", True])
def test_positive_refuses_zero_negatives_and_non_durations(value: object) -> None:
    with pytest.raises(fluxo.DefinitionError, match="timeout= takes a positive timedelta"):
        _durations.positive(value, "timeout=", example="; for example timeout=30")


def test_positive_refuses_infinity_only_when_asked() -> None:
    assert _durations.positive(math.inf, "timeout=") == math.inf
    with pytest.raises(fluxo.DefinitionError, match=r"; for example 30$"):
        _durations.positive(math.inf, "timeout=", finite=True, example="; for example 30")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1.5h", 5400), (" 7d ", 604800), ("2W", 1209600)],
)
def test_an_age_in_text_is_read_as_seconds(text: str, seconds: float) -> None:
    assert _durations.parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "10", "2026-01-01", "1y", "-5m"])
def test_text_that_is_not_an_age_is_none(text: str) -> None:
    assert _durations.parse_age(text) is None


def test_every_part_of_fluxo_reads_durations_the_same_way() -> None:
    with pytest.raises(fluxo.DefinitionError, match="takes a timedelta or a number of seconds"):
        fluxo.Retry(initial="1s")  # type: ignore[arg-type]
    with pytest.raises(fluxo.DefinitionError, match="positive timedelta or number of seconds"):
        fluxo.step(timeout=True)  # type: ignore[call-overload]

    @fluxo.workflow(name="durations.w")
    def w() -> None: ...

    with pytest.raises(fluxo.DefinitionError, match="positive timedelta or number of seconds"):
        w.options(timeout=timedelta(0))
    assert w.options(timeout=timedelta(minutes=1)).start_timeout == 60.0

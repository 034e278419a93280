"""Durations: the one parser of the timedeltas, seconds and ages Fluxo is given.

The API takes a duration as a ``timedelta`` or a number of seconds (an ``int`` or
a ``float``, never a ``bool``): :func:`to_seconds` reads one, and the helpers
below check it the ways the API needs, each error naming the argument and what
it takes. The command line takes ages as text (``90s``, ``30m``, ``2h``, ``7d``,
``2w``): :func:`parse_age` reads those.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from fluxo import _errors


def to_seconds(value: object) -> float | None:
    """The seconds in ``value``, a ``timedelta`` or a number; None when it is neither."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def seconds(value: object, what: str) -> float:
    """The seconds in ``value``, of any sign.

    Raises:
        DefinitionError: ``value`` is not a ``timedelta`` or a number.
    """
    found = to_seconds(value)
    if found is None:
        raise _errors.DefinitionError(
            f"{what} takes a timedelta or a number of seconds, not {value!r}"
        )
    return found


def not_negative(value: object, what: str) -> float:
    """The seconds in ``value``, zero or more.

    Raises:
        DefinitionError: ``value`` is not a duration, or is negative.
    """
    found = seconds(value, what)
    if found < 0:
        raise _errors.DefinitionError(f"{what} must not be negative, got {value!r}")
    return found


def positive(value: object, what: str, *, finite: bool = False, example: str = "") -> float:
    """The seconds in ``value``, more than zero (and finite, with ``finite``).

    Raises:
        DefinitionError: ``value`` is not such a duration; ``example`` ends the message.
    """
    found = to_seconds(value)
    if found is None or found <= 0 or (finite and not math.isfinite(found)):
        raise _errors.DefinitionError(
            f"{what} takes a positive timedelta or number of seconds, not {value!r}{example}"
        )
    return found


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float | None:
    """The seconds in an age written as text (``90s``, ``30m``, ``1.5h``, ``7d``, ``2w``).

    None when ``text`` is not one (the command line then reads it as a time).
    """
    age = _AGE.fullmatch(text.strip())
    if age is None:
        return None
    return float(age[1]) * _UNIT_SECONDS[age[2].lower()]

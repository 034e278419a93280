"""Schedules: what a schedule is, and the ticks it has.

``@fluxo.schedule`` (:mod:`fluxo._schedule_loop`) gives a workflow a
:class:`Schedule`. This module holds what needs no run: the specification, its
checks, the ids of the runs it starts, and the arithmetic of ticks (cron text
through ``croniter``, imported only when a cron schedule is made or computed;
intervals need no library).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from fluxo import _errors, _names

CatchUp = Literal["latest", "all", "skip"]
"""What a schedule does with the ticks it missed while no worker ran (docs/schedules.md)."""

ON_TIME = 60.0
"""Seconds after its time within which a tick still counts as on time (``catch_up="skip"``)."""

MAX_CATCH_UP = 1000
"""The most missed ticks one catch-up starts (``catch_up="all"``): the most recent ones."""

DEFAULT_WINDOW = 86400.0
"""How far back ``catch_up="all"`` goes by default: one day, in seconds."""

SCHEDULER_PREFIX = _names.SCHEDULE_WORKFLOW_PREFIX
"""Starts the name of a schedule's loop workflow, and the id of its run."""

LONGEST_INTERVAL = 100 * 365.25 * 86400
"""The longest ``every=``: 100 years, in seconds."""

LONGEST_NAME = _names.MAX_ID_LENGTH - len("@trigger-2000-01-01T00:00:00.000000Z~99999")
"""The longest name a scheduled workflow may have: its runs' ids hold it and a time."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a scheduled workflow runs: ``workflow.schedule``, made by ``@fluxo.schedule``.

    Attributes:
        cron: the cron expression (``croniter``'s syntax), or ``None`` for an interval.
        every: the interval in whole seconds, or ``None`` for a cron expression.
            Interval ticks fall on whole multiples of it since the Unix epoch (UTC).
        tz: the IANA time zone the cron expression reads in, and the tick's zone.
        catch_up: ``"latest"``, ``"all"`` or ``"skip"`` (docs/schedules.md).
        catch_up_window: with ``catch_up="all"``, how far back missed ticks are
            started, in seconds.
    """

    cron: str | None = None
    every: int | None = None
    tz: str = "UTC"
    catch_up: str = "latest"
    catch_up_window: float = DEFAULT_WINDOW

    def describe(self) -> str:
        """The spec in one line: ``cron '0 2 * * *' (Europe/Helsinki)`` or ``every 5s``."""
        if self.cron is not None:
            return f"cron {self.cron!r} ({self.tz})"
        return f"every {_duration_text(self.every or 0)}"

    def zone(self) -> Any:
        """The time zone, a ``zoneinfo.ZoneInfo``."""
        return _zone(self.tz)

    def next_after(self, when: float) -> float:
        """The first tick strictly after ``when`` (seconds since the epoch)."""
        if self.every is not None:
            return float((math.floor(when / self.every) + 1) * self.every)
        cron = self._croniter(when)
        while True:
            tick = float(cron.get_next(float))
            if not self._repeated(tick):
                return tick

    def ticks_back(self, after: float, until: float, limit: int) -> list[float]:
        """The ticks in ``(after, until]``, newest first, at most ``limit`` of them."""
        found: list[float] = []
        if self.every is not None:
            k = math.floor(until / self.every)
            while len(found) < limit and k * self.every > after:
                found.append(float(k * self.every))
                k -= 1
            return found
        cron = self._croniter(math.floor(until) + 1)  # get_prev excludes its start
        while len(found) < limit:
            tick = float(cron.get_prev(float))
            if tick <= after:
                break
            if not self._repeated(tick):
                found.append(tick)
        return found

    def tick_time(self, when: float) -> datetime:
        """The tick as the workflow is given it: an aware datetime in the schedule's zone."""
        return datetime.fromtimestamp(when, self.zone())

    def _croniter(self, start: float) -> Any:
        croniter = _croniter_class()
        return croniter(self.cron, datetime.fromtimestamp(start, self.zone()))

    def _repeated(self, tick: float) -> bool:
        """A fixed-hour cron tick at the second pass of a wall time the clocks went back over.

        Such a job runs once, at the first pass, as cron does; an expression whose
        hour field is ``*`` runs in both hours, which are two real hours.
        """
        local = datetime.fromtimestamp(tick, self.zone())
        if local.fold == 0 or local.replace(fold=0).utcoffset() == local.utcoffset():
            return False
        fields = (self.cron or "").split()
        hour = fields[1] if len(fields) >= 2 else "*"
        return hour != "*"


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _croniter_class() -> Any:
    try:
        from croniter import croniter
    except ImportError:
        raise _errors.DefinitionError(
            "a cron schedule needs the croniter package; install it with "
            "pip install 'fluxo[schedules]' (an interval, every=..., needs nothing)"
        ) from None
    return croniter


def _zone(name: str) -> Any:
    import zoneinfo

    return zoneinfo.ZoneInfo(name)


LATEST_TIME = 253402300799.0
"""9999-12-31T23:59:59Z: the latest time a run id (and a ``datetime``) can hold."""


def is_time(value: object) -> bool:
    """Tell whether ``value`` is a time a tick or a trigger can have (seconds since the epoch)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= LATEST_TIME
    )


def tick_id(workflow: str, when: float) -> str:
    """The id of the run a tick starts: ``report@2030-01-01T02:00:00Z`` (its time in UTC)."""
    moment = datetime.fromtimestamp(when, timezone.utc)
    return f"{workflow}@{moment.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def trigger_id(workflow: str, when: float) -> str:
    """The id of the run a trigger starts: ``report@trigger-2030-01-01T12:00:01.123456Z``."""
    moment = datetime.fromtimestamp(when, timezone.utc)
    return f"{workflow}@trigger-{moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def scheduler_id(workflow: str) -> str:
    """The id of the schedule's own run (the first of its chain), and its workflow's name."""
    return f"{SCHEDULER_PREFIX}{workflow}"


def to_seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def check_spec(
    cron: object, every: object, tz: object, catch_up: object, window: object
) -> tuple[int | None, list[str]]:
    """The interval in whole seconds (``None`` for cron), and what is wrong with the arguments."""
    problems: list[str] = []
    seconds: int | None = None
    if (cron is None) == (every is None):
        problems.append(
            "give a cron expression or every=, not both"
            if cron is not None
            else "give a cron expression, such as @fluxo.schedule('0 2 * * *'), or an "
            "interval, such as @fluxo.schedule(every=timedelta(minutes=5))"
        )
    if cron is not None and (not isinstance(cron, str) or not cron.strip()):
        problems.append(f"the cron expression is text such as '0 2 * * *', not {cron!r}")
    elif isinstance(cron, str) and every is None:
        try:
            valid = _croniter_class().is_valid(cron)
        except _errors.DefinitionError as exc:
            problems.append(str(exc))
        else:
            if not valid:
                problems.append(
                    f"the cron expression {cron!r} does not parse; it has five fields, "
                    "'minute hour day-of-month month day-of-week', such as '0 2 * * *'"
                )
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, (int, float, timedelta)):
            problems.append(f"every= takes a timedelta or seconds, not {every!r}")
        else:
            value = to_seconds(every)
            if not math.isfinite(value) or value < 1 or value != int(value):
                problems.append(
                    f"every= is a whole number of seconds, at least 1, not {every!r}; "
                    "for example every=timedelta(minutes=5)"
                )
            elif value > LONGEST_INTERVAL:
                problems.append(
                    f"every= is at most 100 years ({LONGEST_INTERVAL:.0f} seconds), not "
                    f"{every!r}: its ticks must be times a datetime (and a run id) can hold"
                )
            else:
                seconds = int(value)
    if not isinstance(tz, str) or not tz:
        problems.append(f"tz= takes a time zone name such as 'Europe/Helsinki', not {tz!r}")
    else:
        try:
            _zone(tz)
        except (ValueError, LookupError):
            problems.append(
                f"tz={tz!r} is not a time zone this system knows; use an IANA name such "
                "as 'Europe/Helsinki' or 'UTC' (pip install tzdata where the system has none)"
            )
    if catch_up not in typing.get_args(CatchUp):
        problems.append(
            f"catch_up= takes 'latest' (start the most recent missed tick), 'all' (start "
            f"every missed tick) or 'skip' (start none), not {catch_up!r}"
        )
    if window is not None:
        if catch_up != "all":
            problems.append("catch_up_window= is for catch_up='all'")
        elif isinstance(window, bool) or not isinstance(window, (int, float, timedelta)):
            problems.append(f"catch_up_window= takes a timedelta or seconds, not {window!r}")
        elif not (0 < to_seconds(window) < math.inf):
            problems.append(f"catch_up_window= must be a positive duration, not {window!r}")
    return seconds, problems


def check_fires(spec: Schedule, problems: list[str]) -> None:
    """A cron expression that parses but never fires (``0 0 31 2 *``) is refused too."""
    if spec.cron is None:
        return
    try:
        spec.next_after(datetime.now(timezone.utc).timestamp())
    except Exception as exc:  # croniter's "failed to find next date"
        problems.append(f"the cron expression {spec.cron!r} never fires ({exc})")

"""Retry policies for steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fluxo import _durations, _errors


def _seconds(value: timedelta | float, what: str) -> float:
    return _durations.not_negative(value, f"Retry {what}")


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a failing step is attempted again.

    Every failed attempt is recorded in the run's history. The wait before
    attempt ``n + 1`` is ``initial * backoff ** (n - 1)``, capped at ``max_interval``.

    Args:
        max_attempts: attempts in all, the first included (``1`` means no retry).
        initial: the wait before the first retry.
        backoff: the factor by which each further wait grows.
        max_interval: the longest wait between two attempts.
        retry_on: only exceptions of these types are retried.
        non_retryable: exceptions of these types are never retried, even if they
            match ``retry_on``.

    Example:
        >>> @fluxo.step(retry=fluxo.Retry(max_attempts=5, initial=timedelta(seconds=1)))
        ... def charge(order_id: str) -> str: ...
    """

    max_attempts: int = 3
    initial: timedelta | float = timedelta(seconds=1)
    backoff: float = 2.0
    max_interval: timedelta | float = timedelta(minutes=1)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            problems.append(f"max_attempts must be a whole number >= 1, got {self.max_attempts!r}")
        if not isinstance(self.backoff, (int, float)) or self.backoff < 1:
            problems.append(f"backoff must be a number >= 1, got {self.backoff!r}")
        for field in ("retry_on", "non_retryable"):
            types = getattr(self, field)
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                problems.append(f"{field} must be a tuple of exception classes, got {types!r}")
        if problems:
            raise _errors.DefinitionError("invalid Retry: " + "; ".join(problems))
        _seconds(self.initial, "initial")
        _seconds(self.max_interval, "max_interval")

    def delay(self, attempt: int) -> float:
        """Return the seconds to wait after failed attempt number ``attempt`` (1-based)."""
        wait = _seconds(self.initial, "initial") * self.backoff ** max(attempt - 1, 0)
        return min(wait, _seconds(self.max_interval, "max_interval"))

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Tell whether failed attempt number ``attempt`` is followed by another."""
        if attempt >= self.max_attempts:
            return False
        if isinstance(error, self.non_retryable):
            return False
        return isinstance(error, self.retry_on)


NO_RETRY = Retry(max_attempts=1)


def coerce_retry(value: Retry | int | None) -> Retry:
    """Turn the ``retry=`` shorthands into a :class:`Retry`.

    ``None`` means a single attempt; an int is ``Retry(max_attempts=n)``.
    """
    if value is None:
        return NO_RETRY
    if isinstance(value, Retry):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Retry(max_attempts=value)
    raise _errors.DefinitionError(
        f"retry= takes a fluxo.Retry, a number of attempts or None, not {value!r}"
    )

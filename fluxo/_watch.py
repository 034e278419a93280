"""Background work that goes wrong: threads that die, and operations that keep failing.

Fluxo's side threads (the heartbeat that renews leases, and a worker's claim loop
when it runs in the background) are expected to run until they are asked to
stop. One that raises instead is dead. :func:`start` runs a side thread under
watch: its death is logged at ERROR with its traceback, then handed to its
owner's ``on_death``, which stops what needed the thread. A heartbeat that died
stops every execution whose lease it renewed, since nobody renews those leases
any more, and its worker stops: ``worker.run()`` raises, so that a supervisor
restarts the process, instead of running on without leases.

A background operation that fails (a claim, a renewal, while the store is down)
is a :class:`Trouble`: it backs off, and it is logged once, then reminded once a
minute, never line after line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fluxo import _errors

log = logging.getLogger(__name__)

OnDeath = Callable[[str, BaseException], None]
"""Told ``(thread name, exception)`` when a watched thread dies."""


def start(name: str, target: Callable[[], object], on_death: OnDeath) -> threading.Thread:
    """Run ``target`` in a daemon thread named ``name``; if it raises, report its death.

    Returns the thread, started.
    """
    thread = threading.Thread(
        target=_watched, args=(name, target, on_death), name=name, daemon=True
    )
    thread.start()
    return thread


def _watched(name: str, target: Callable[[], object], on_death: OnDeath) -> None:
    try:
        target()
    except BaseException as exc:  # any end by an exception is a death, SystemExit too
        died(name, exc, on_death)


def died(name: str, exc: BaseException, on_death: OnDeath) -> None:
    """Log the death of thread ``name`` at ERROR, with its traceback, and tell ``on_death``."""
    log.error(
        "thread %s died: %s: %s",
        name,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    try:
        on_death(name, exc)
    except Exception:
        log.exception("thread %s died, and stopping what needed it failed too", name)


def death_error(owner: str, name: str, exc: BaseException) -> _errors.FluxoError:
    """The error an owner raises once it stopped because its thread ``name`` died."""
    return _errors.FluxoError(
        f"{owner} stopped because its thread {name} died ({type(exc).__name__}: {exc}); "
        "the runs it executed stopped at their next durable call, and their leases were "
        "given back (or expire); see the log for the traceback, and restart it"
    )


BACKOFF_CAP = 10.0
"""The longest wait, in seconds, between two attempts of a background operation that fails."""

REMIND_EVERY = 60.0
"""Seconds between two log lines saying that a background operation still fails."""


def _first_line(exc: BaseException) -> str:
    """The first line of an error's text (a driver's may add ``LINE 3: ...`` and a caret)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class Trouble:
    """One background operation that may fail again and again (a worker's claims, renewals).

    Invariant 10 of the design: a transient store error backs off, and nothing
    logs the same line forever. The first failure is logged in one line at
    ``level``; while failures go on, at most one reminder every
    :data:`REMIND_EVERY` seconds says how many attempts failed; the first
    success after them is logged once at INFO. :meth:`failed` returns how long
    to wait before the next attempt: ``first``, doubled at each failure in a
    row, at most :data:`BACKOFF_CAP`.

    Args:
        what: the operation, as log lines name it (``"worker w1: claiming runs"``).
        level: the level of the failure lines.
        first: the wait after the first failure, in seconds.
        clock: a monotonic clock (replaceable in tests).
        logger: where its lines go (a worker's go to the worker's logger).
    """

    def __init__(
        self,
        what: str,
        *,
        level: int = logging.ERROR,
        first: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.what = what
        self.log = logger if logger is not None else log
        self.level = level
        self.first = first
        self.clock = clock
        self.failures = 0
        """Failures in a row (0: the last attempt succeeded)."""
        self._logged_at = 0.0

    def failed(self, exc: BaseException) -> float:
        """Count a failure, log it if it is due, and return the wait before the next attempt."""
        self.failures += 1
        now = self.clock()
        if self.failures == 1:
            self.log.log(
                self.level, "%s failed (%s); retrying with backoff", self.what, _first_line(exc)
            )
            self._logged_at = now
        elif now - self._logged_at >= REMIND_EVERY:
            self.log.log(
                self.level,
                "%s still failing after %d attempts (%s)",
                self.what,
                self.failures,
                _first_line(exc),
            )
            self._logged_at = now
        return float(min(self.first * 2.0 ** min(self.failures - 1, 32), BACKOFF_CAP))

    def succeeded(self) -> None:
        """Count a success: after failures, say once that the operation works again."""
        if self.failures:
            self.log.info("%s works again after %d failed attempts", self.what, self.failures)
            self.failures = 0

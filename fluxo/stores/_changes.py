"""The in-process half of change notification, shared by every store.

``Store.change_token`` and ``Store.wait_for_change`` let the engine, its workers
and ``handle.result()`` sleep until a run may have changed. Every store does it
the same way inside the process: a :class:`ChangeFeed` counts the changes it
learns of, and waiters block on it until the count moves past the one they
started from, the feed closes, or their timeout passes. A :class:`Token` is that
count taken *before* the caller reads what it may wait on, so a change that
lands in between still wakes the wait at once (the "since" semantics).

What differs between the stores is only where they learn of changes made by
other processes, the *wake source*: a PostgreSQL ``LISTEN``, Redis pub/sub or a
MongoDB change stream calls :meth:`ChangeFeed.changed` from a thread of its own,
and a store that can only poll (SQLite's ``data_version``, a MongoDB without
change streams) passes its check to :meth:`ChangeFeed.wait_polling`, with the
backend's own mark of "now" in the token. Writes made through the store itself
call :meth:`ChangeFeed.changed` directly and wake waiters at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container
from typing import Final, NamedTuple

RECENT_RUNS: Final = 4096
"""How many runs' last changes a feed remembers, for waits on one run (see ``ChangeFeed``)."""


class Token(NamedTuple):
    """What ``change_token`` returns: the feed's count, and the backend's mark, if it polls."""

    version: int
    mark: object = None


class ChangeFeed:
    """A count of the changes this process knows of, and the condition waiters block on.

    Thread-safe. :meth:`close` wakes every waiter for good: a closed feed makes
    every wait return ``True`` at once.

    A change may name its run. A wait on one run (a held wait, ``handle.result()``)
    then ends only for a change of that run, or for a change that names none (the
    wake source does not know which run changed, or reconnected and may have
    missed some): so a thousand changes of other runs cost it no read of the
    store. The feed remembers the last change of the :data:`RECENT_RUNS` runs
    changed last; a wait that began before the oldest change it forgot ends, as a
    change of unknown run would end it.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._version = 0
        self._closed = False
        self._unnamed = 0
        """The count at the last change that named no run (or at the last forgotten one)."""
        self._recent: dict[str, int] = {}
        """Run id -> the count at its last change, least recently changed first."""

    @property
    def version(self) -> int:
        """The count of changes so far."""
        with self._condition:
            return self._version

    @property
    def closed(self) -> bool:
        """Tell whether :meth:`close` was called."""
        return self._closed

    def token(self) -> Token:
        """A mark of "now" (a store that polls adds its own: ``Token(version, mark)``)."""
        return Token(self.version)

    def since(self, token: object) -> int:
        """The count a wait compares with: the token's, or the current one without a token."""
        return token.version if isinstance(token, Token) else self.version

    def changed(self, run_id: str | None = None) -> None:
        """Count a change (of ``run_id``, or of runs unknown) and wake the waiters it concerns."""
        with self._condition:
            self._version += 1
            if run_id is None:
                self._unnamed = self._version
            else:
                recent = self._recent
                recent.pop(run_id, None)
                recent[run_id] = self._version
                if len(recent) > RECENT_RUNS:
                    self._unnamed = recent.pop(next(iter(recent)))
            self._condition.notify_all()

    def close(self) -> None:
        """Wake every waiter, now and later (closing counts as a change). Idempotent."""
        with self._condition:
            self._closed = True
            self._version += 1
            self._condition.notify_all()

    def _moved(self, version: int, run_id: str | None, ignoring: Container[str]) -> bool:
        """Whether a change after ``version`` concerns a wait on ``run_id`` (None: any run).

        A wait on any run is not concerned by the changes of runs in ``ignoring``.
        """
        if self._closed or self._unnamed > version:
            return True
        if run_id is not None:
            return self._recent.get(run_id, version) > version
        if self._version == version:
            return False
        if not ignoring:
            return True
        # Every change after ``version`` is the last change of a recent run (or moved
        # ``_unnamed``): newest first, until the changes the wait has seen.
        for changed, at in reversed(self._recent.items()):
            if at <= version:
                return False
            if changed not in ignoring:
                return True
        return False

    def wait(
        self,
        version: int,
        timeout: float,
        run_id: str | None = None,
        *,
        ignoring: Container[str] = (),
    ) -> bool:
        """Block until a change after ``version`` (of ``run_id``, if given), the close, or timeout.

        A wait on any run (``run_id`` None) is not ended by the changes of runs in
        ``ignoring``. Returns ``True`` when woken by a change (or the close),
        ``False`` on timeout.
        """
        with self._condition:
            return self._condition.wait_for(
                lambda: self._moved(version, run_id, ignoring), max(timeout, 0.0)
            )

    def wait_polling(
        self,
        version: int,
        deadline: float,
        poll: Callable[[], bool],
        interval: float,
        run_id: str | None = None,
        *,
        ignoring: Container[str] = (),
    ) -> bool:
        """:meth:`wait` until ``deadline`` (``time.monotonic``), calling ``poll`` between waits.

        For changes this process cannot hear of: every ``interval`` seconds, until
        less than that is left, ``poll()`` looks at the database and returns
        ``True`` when it found a change.
        """
        while True:
            remaining = deadline - time.monotonic()
            if self.wait(version, min(max(remaining, 0.0), interval), run_id, ignoring=ignoring):
                return True
            if remaining <= interval:
                return False
            if poll():
                return True

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the feed closes meanwhile (for a wake source's retries)."""
        with self._condition:
            self._condition.wait_for(lambda: self._closed, seconds)

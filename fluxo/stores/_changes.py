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
from collections.abc import Callable
from typing import NamedTuple


class Token(NamedTuple):
    """What ``change_token`` returns: the feed's count, and the backend's mark, if it polls."""

    version: int
    mark: object = None


class ChangeFeed:
    """A count of the changes this process knows of, and the condition waiters block on.

    Thread-safe. :meth:`close` wakes every waiter for good: a closed feed makes
    every wait return ``True`` at once.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._version = 0
        self._closed = False

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

    def changed(self) -> None:
        """Count a change and wake every waiter."""
        with self._condition:
            self._version += 1
            self._condition.notify_all()

    def close(self) -> None:
        """Wake every waiter, now and later (closing counts as a change). Idempotent."""
        with self._condition:
            self._closed = True
            self._version += 1
            self._condition.notify_all()

    def wait(self, version: int, timeout: float) -> bool:
        """Block until the count moves past ``version``, the feed closes, or ``timeout`` s pass.

        Returns ``True`` when woken by a change (or the close), ``False`` on timeout.
        """
        with self._condition:
            return self._condition.wait_for(
                lambda: self._version != version or self._closed, max(timeout, 0.0)
            )

    def wait_polling(
        self, version: int, deadline: float, poll: Callable[[], bool], interval: float
    ) -> bool:
        """:meth:`wait` until ``deadline`` (``time.monotonic``), calling ``poll`` between waits.

        For changes this process cannot hear of: every ``interval`` seconds, until
        less than that is left, ``poll()`` looks at the database and returns
        ``True`` when it found a change.
        """
        while True:
            remaining = deadline - time.monotonic()
            if self.wait(version, min(max(remaining, 0.0), interval)):
                return True
            if remaining <= interval:
                return False
            if poll():
                return True

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the feed closes meanwhile (for a wake source's retries)."""
        with self._condition:
            self._condition.wait_for(lambda: self._closed, seconds)

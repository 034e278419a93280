"""Group commit: the writes of concurrent executions that wait for one another, written at once.

A worker executes several runs at once, and most of what they write is a step's
record. Written one by one, each pays a commit (SQL) or a round trip (Redis) of
its own. :class:`GroupCommit` coalesces them: a write that finds no write in
flight goes at once, alone (so a lone execution pays nothing extra), and the
writes that arrive while one is in flight wait for it to end and are then
written together by the first of them, as the store's ``write`` function does it
(one statement and one commit, one pipeline).

Nothing about a write changes but its company:

* each is acknowledged only once what holds it is durable;
* each is still fenced alone (by its run's position): ``write`` reports each
  item's own outcome, and never puts two items with one ``key`` in a group;
* a group whose ``write`` raises tells each of its items so (``None``), and each
  is then written alone, in its own thread, so each caller gets its own error, or
  its own success. A write alone that raises raises in its caller's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Final, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MOST: Final = 64
"""The most writes in one group."""


class _Pending(Generic[T, R]):
    __slots__ = ("done", "item", "lead", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: R | None = None
        self.lead = False
        self.done = threading.Event()


class GroupCommit(Generic[T, R]):
    """Writes the items of concurrent callers in groups (see the module).

    Args:
        write: writes a group, returns each item's outcome in order; raises when
            the group's write failed as a whole.
        key: items with one key (one run's position) never share a group.
        most: the most items in one group.
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Sequence[R]],
        key: Callable[[T], Hashable],
        most: int = MOST,
    ) -> None:
        self._write = write
        self._key = key
        self._most = most
        self._lock = threading.Lock()
        self._waiting: list[_Pending[T, R]] = []
        self._writing = False
        self.groups = 0
        """How many groups of more than one item were written (for tests and benchmarks)."""

    def submit(self, item: T) -> R | None:
        """Write ``item`` with whichever items come with it; return its outcome.

        ``None``: it was in a group whose write failed as a whole; the caller writes
        it alone. Raises what ``write`` raised when the item was written alone.
        """
        mine: _Pending[T, R] | None = None
        with self._lock:
            if self._writing:
                mine = _Pending(item)
                self._waiting.append(mine)
            else:
                self._writing = True
        if mine is None:  # nothing in flight: written at once, alone
            try:
                return self._write([item])[0]
            finally:
                self._hand_over()
        try:
            mine.done.wait()
        except BaseException:  # KeyboardInterrupt, say: give up the place, or the lead
            self._leave(mine)
            raise
        if mine.lead:
            self._lead(mine)
        return mine.result

    def _leave(self, mine: _Pending[T, R]) -> None:
        """A waiting caller gives up: out of the line, or, if it has the lead, hand it on.

        Left in a group another caller writes, its item may still be written.
        """
        with self._lock:
            if mine in self._waiting:
                self._waiting.remove(mine)
                return
            lead = mine.lead  # set under the lock, when the lead was handed to it
        if lead:
            self._hand_over()

    def _hand_over(self) -> None:
        """The write in flight ended: the first one waiting writes the next group."""
        with self._lock:
            following = self._waiting.pop(0) if self._waiting else None
            if following is None:
                self._writing = False
            else:
                following.lead = True  # it writes the next group, itself first
        if following is not None:
            following.done.set()

    def _lead(self, mine: _Pending[T, R]) -> None:
        """Write ``mine`` with what waits behind it, then hand the lead over."""
        with self._lock:
            group, later, taken = [mine], [], {self._key(mine.item)}
            for other in self._waiting:
                key = self._key(other.item)
                if len(group) < self._most and key not in taken:
                    group.append(other)
                    taken.add(key)
                else:
                    later.append(other)
            self._waiting = later
        try:
            if len(group) == 1:
                mine.result = self._write([mine.item])[0]  # alone: its error is its own
            else:
                self.groups += 1
                try:
                    results = self._write([p.item for p in group])
                except Exception:  # each is written alone, by its own thread
                    pass
                else:
                    for pending, result in zip(group, results, strict=True):
                        pending.result = result
        finally:
            self._hand_over()
            for other in group:
                if other is not mine:
                    other.done.set()

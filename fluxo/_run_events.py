"""Events a workflow sets for the outside world, and what a workflow knows of its own run.

Inside a workflow, ``fluxo.set_event(key, value)`` records a value under a key
in the run's history (an ``EventSet`` event: durable, replayed like any call), and
``fluxo.info()`` tells the run's id, workflow, attempt, parent and start time.
Outside, ``Engine.get_event`` reads the latest value of a key, waiting for the
first one, and ``Engine.watch_event`` yields every value of a key in the order
the workflow set them. Both read the history itself, so no value is ever lost
between two reads: a progress page, a poll from another process, a test.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from fluxo import _errors, _names, _runtime, codec, history, stores

MAX_KEY_LENGTH = 255
"""The longest event key (the same bound as a signal's name)."""

_LONGEST_WAIT = 30.0
"""The longest single wait for a change; a wait for longer waits again."""


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """What a workflow knows of the run executing it: ``fluxo.info()``.

    Every field is the same on each replay at the same point of the code, so a
    workflow may branch on it.

    Attributes:
        run_id: the run's id.
        workflow: the workflow's name.
        attempt: 1, plus the times an operator retried the run (``engine.retry``)
            before this point of the history.
        parent: the id of the run that started this one as its child, or ``None``.
        started_at: when the run was created, as an aware UTC datetime.
        deadline: when the run is cancelled if it has not finished, or ``None``.
        headers: what was recorded with the run when it started (such as the W3C
            ``traceparent`` of the request that started it).
    """

    run_id: str
    workflow: str
    attempt: int
    parent: str | None
    started_at: datetime
    deadline: datetime | None = None
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)


def info() -> WorkflowInfo:
    """The run executing the calling workflow: its id, workflow, attempt, parent, start.

    Example:
        >>> @fluxo.workflow
        ... def report(day: str) -> str:
        ...     run = fluxo.info()
        ...     return f"{run.workflow} {run.run_id}, attempt {run.attempt}"

    Raises:
        DefinitionError: called outside a workflow (in a step, or in plain code).
    """
    runtime = _runtime.current()
    if runtime is None:
        raise _errors.DefinitionError(
            "fluxo.info() tells the workflow run that calls it; call it in a workflow "
            "function (not in a step, which gets what it needs as arguments)"
        )
    found: WorkflowInfo = runtime.info()
    return found


def set_event(key: str, value: Any) -> None:
    """Record ``value`` under ``key`` for the outside world to read: progress, a status.

    A durable call: the value is recorded in the run's history (and written at
    once), and replaying the workflow records nothing again. Every value set is
    kept, in order: ``engine.get_event(run_id, key)`` returns the latest one (and
    waits for the first), ``engine.watch_event(run_id, key)`` yields each one.
    The value goes through the engine's codec, like a step's result.

    Example:
        >>> for done, item in enumerate(items, 1):
        ...     process(item)
        ...     fluxo.set_event("progress", {"done": done, "of": len(items)})

    Raises:
        DefinitionError: called outside a workflow (in a step, or in plain code),
            or with a key that is not text of 1 to 255 characters.
        EncodeError: the value cannot be encoded.
    """
    check_key(key, "fluxo.set_event()")
    runtime = _runtime.current()
    if runtime is None:
        raise _errors.DefinitionError(
            "fluxo.set_event() records a value in the history of the workflow run that "
            "calls it; call it in the workflow function, not in a step or outside a run"
        )
    runtime.set_event(key, value)


def check_key(key: object, what: str) -> str:
    """``key``, or ``DefinitionError`` naming what is wrong with it."""
    if not isinstance(key, str):
        raise _errors.DefinitionError(f"{what} takes the event's key as text, not {key!r}")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise _errors.DefinitionError(
            f"{what}: an event key has 1 to {MAX_KEY_LENGTH} characters, not {len(key)}"
        )
    return _names.check_name("event key", key)


def seconds(timeout: timedelta | float | None, what: str) -> float | None:
    """A timeout in seconds (``None``: wait as long as it takes), checked."""
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise _errors.DefinitionError(
            f"{what}: timeout is a number of seconds >= 0, a timedelta or None, not {timeout!r}"
        )
    return float(timeout)


class EventReader:
    """Reads the values a run's workflow sets, waiting on the store for new ones.

    A run that went on with ``fluxo.continue_as_new`` is followed: its chain's
    runs are read in order, so a key set before and after continuing is one
    sequence of values. Each read loads the histories (one read per run of the
    chain), so its cost grows with their length.
    """

    def __init__(
        self, store: stores.Store, codec: codec.Codec, run_id: str, key: str, type: Any
    ) -> None:
        self._store = store
        self._codec = codec
        self._run_id = run_id
        self._key = key
        self._type = type
        self._last = run_id
        """The last run of the chain known: the one whose changes a wait listens to."""

    def _read(self) -> tuple[list[bytes], history.RunStatus, str]:
        """Every value set so far, oldest first; the status and id of the chain's last run."""
        values: list[bytes] = []
        run_id = self._run_id
        while True:
            state = self._store.load(run_id)
            key = self._key
            values += [
                e.data or b"" for e in state.events if type(e) is history.EventSet and e.name == key
            ]
            if not isinstance(state.events[-1], history.ContinuedAsNew):
                return values, state.run.status, run_id
            following = history.chain_next(run_id)
            try:
                self._store.get_run(following)
            except _errors.RunNotFoundError:  # purged: the chain ends here for good
                return values, state.run.status, run_id
            run_id = following

    def poll(self) -> tuple[object, list[bytes], history.RunStatus]:
        """One look, without waiting: a change token, the values so far, the chain's status.

        The token is taken before the read, for ``wait_for_change`` on :attr:`last`:
        no change slips by between the read and a wait.
        """
        while True:
            token = self._store.change_token(self._last)
            values, status, last = self._read()
            if last == self._last:
                return token, values, status
            self._last = last  # it continued as new: listen to the new run

    @property
    def last(self) -> str:
        """The last run of the chain known: the one whose changes a wait listens to."""
        return self._last

    def timeout(self, status: history.RunStatus) -> _errors.EventTimeout:
        """The error of a wait that ran out of time while the run was in ``status``."""
        return _errors.EventTimeout(self._run_id, self._key, status.value)

    def never_set(self) -> _errors.RunStateError:
        """The error of a run that ended without setting the key."""
        return _never_set(self._run_id, self._key)

    def decode(self, data: bytes) -> Any:
        """One value, decoded as the reader's type."""
        return self._codec.decode(data, self._type)

    def _wait(self, seen: int, deadline: float | None) -> tuple[list[bytes], bool]:
        """The values once there are more than ``seen`` or the run has ended; and "ended"."""
        while True:
            token, values, status = self.poll()
            if len(values) > seen or status.is_terminal:
                return values, status.is_terminal
            remaining = _LONGEST_WAIT if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise self.timeout(status)
            self._store.wait_for_change(self._last, min(remaining, _LONGEST_WAIT), since=token)

    def latest(self, timeout: float | None) -> Any:
        """The latest value; waits for the first one for up to ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values, _ = self._wait(0, deadline)
        if not values:
            raise self.never_set()
        return self.decode(values[-1])

    def each(self, timeout: float | None) -> Iterator[Any]:
        """Every value, oldest first, as the workflow sets them; ends with the run.

        ``timeout`` bounds each wait for a next value, not the whole iteration.
        """
        seen = 0
        while True:
            deadline = None if timeout is None else time.monotonic() + timeout
            values, ended = self._wait(seen, deadline)
            for data in values[seen:]:
                yield self.decode(data)
            seen = len(values)
            if ended:
                return


ASYNC_SLICE = 1.0
"""The longest wait an :class:`AsyncEventReader` holds a thread for: a cancelled wait
gives its thread back within it."""


class AsyncEventReader:
    """An :class:`EventReader` for asyncio: its reads and waits in an engine's threads.

    ``call`` runs a function in one of the threads (``AsyncEngine._call``). A wait
    holds a thread for :data:`ASYNC_SLICE` at most, then waits again with the same
    token, so a task cancelled while it waits (a progress page whose client left)
    gives the thread back within a slice instead of holding it until a value comes.
    The history is read again only once the store says the run may have changed.
    """

    def __init__(
        self, reader: EventReader, store: stores.Store, call: Callable[..., Awaitable[Any]]
    ) -> None:
        self._reader = reader
        self._store = store
        self._call = call

    async def _wait(self, seen: int, deadline: float | None) -> tuple[list[bytes], bool]:
        reader = self._reader
        while True:
            token, values, status = await self._call(reader.poll)
            if len(values) > seen or status.is_terminal:
                return values, status.is_terminal
            changed = False
            while not changed:
                remaining = ASYNC_SLICE if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise reader.timeout(status)
                wait = min(remaining, ASYNC_SLICE)
                changed = await self._call(
                    self._store.wait_for_change, reader.last, wait, since=token
                )

    async def latest(self, timeout: float | None) -> Any:
        """See :meth:`EventReader.latest`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values, _ = await self._wait(0, deadline)
        if not values:
            raise self._reader.never_set()
        return await self._call(self._reader.decode, values[-1])

    async def each(self, timeout: float | None) -> AsyncIterator[Any]:
        """See :meth:`EventReader.each`."""
        seen = 0
        while True:
            deadline = None if timeout is None else time.monotonic() + timeout
            values, ended = await self._wait(seen, deadline)
            for data in values[seen:]:
                yield await self._call(self._reader.decode, data)
            seen = len(values)
            if ended:
                return


def _never_set(run_id: str, key: str) -> _errors.RunStateError:
    return _errors.RunStateError(
        f"run {run_id!r} ended without setting event {key!r}, so it never will; check the "
        "key's spelling against the workflow's fluxo.set_event() calls"
    )


def workflow_info(
    *,
    run_id: str,
    workflow: str,
    retried_before: int,
    parent: str | None,
    created_at: float,
    deadline: float | None,
    headers: Mapping[str, str],
) -> WorkflowInfo:
    """Build the :class:`WorkflowInfo` the executor gives ``fluxo.info()``."""
    return WorkflowInfo(
        run_id=run_id,
        workflow=workflow,
        attempt=1 + retried_before,
        parent=parent,
        started_at=_utc(created_at),
        deadline=None if deadline is None else _utc(deadline),
        headers=dict(headers),
    )


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)

"""The queue operations of a store that keeps runs of the default queue only.

The Redis and MongoDB stores answer the queue part of the contract this way
until they keep named queues. Every run they hold is in the default queue, so no
run awaits admission, a claim for other queues finds nothing, and a named queue,
a priority, a partition, a delayed start or a queue record is refused with
``StoreRejectedError`` before anything is written.
"""

from __future__ import annotations

from collections.abc import Collection

from fluxo import _errors, history


def _refusal(what: str) -> _errors.StoreRejectedError:
    return _errors.StoreRejectedError(
        f"{what}: this store keeps runs of the default queue only so far; use the "
        "memory store for queues, or start the run without queue, priority, partition "
        "and start_at"
    )


def refuse(queue: str, priority: int, partition: str | None, start_at: float | None) -> None:
    """Refuse a run creation that asks for any queue option.

    Raises:
        StoreRejectedError: a named queue, a priority, a partition or a start time.
    """
    if queue != history.DEFAULT_QUEUE:
        raise _refusal(f"a run cannot be created in queue {queue!r}")
    if priority or partition is not None or start_at is not None:
        raise _refusal("a run cannot be given a priority, a partition or a start time")


def serves_default(queues: Collection[str] | None) -> bool:
    """Tell whether a ``queues`` filter takes the default queue (``None``: every queue)."""
    return queues is None or history.DEFAULT_QUEUE in queues


class DefaultQueueOnly:
    """The four queue methods of :class:`fluxo.stores.Store` for such a store."""

    def queued_runs(
        self, queue: str, *, now: float, limit: int
    ) -> tuple[list[history.RunInfo], float | None]:
        """No run awaits admission: ``([], None)``."""
        return [], None

    def admit(self, run_ids: Collection[str], *, now: float) -> list[str]:
        """No run awaits admission: nothing is admitted."""
        return []

    def read_queue(self, queue: str) -> tuple[int, bytes]:
        """No queue record was ever written: ``(0, b"")``."""
        return 0, b""

    def write_queue(self, queue: str, version: int, state: bytes) -> bool:
        """Refuse: this store keeps no queue record.

        Raises:
            StoreRejectedError: always, writing nothing.
        """
        raise _refusal(f"the record of queue {queue!r} cannot be written")

"""What every store does the same way for queues: its checks and the admission order.

The contract is in :class:`fluxo.stores.Store` (``create_run``, ``queued_runs``,
``admit``, ``read_queue``, ``write_queue``); these helpers keep the stores' answers
identical where no database is involved.
"""

from __future__ import annotations

from collections.abc import Collection

from fluxo import _errors, history

MAX_QUEUE_STATE = 1024 * 1024
"""The most bytes of state ``Store.write_queue`` keeps for one queue (1 MiB)."""


def check_create(run_id: str, owner: str | None, queue: str, start_at: float | None) -> None:
    """Refuse a run executed in place (``owner``) that is queued or starts later.

    Raises:
        ValueError: ``owner`` with a named ``queue`` or a ``start_at``.
    """
    if owner is not None and (queue != history.DEFAULT_QUEUE or start_at is not None):
        where = f"in queue {queue!r}" if queue != history.DEFAULT_QUEUE else "with a start_at"
        raise ValueError(
            f"run {run_id!r} cannot be created leased to {owner!r} {where}: a run executed "
            "in place starts now in the default queue; create it without owner, and a "
            "worker serving its queue runs it once admitted"
        )


def check_state(queue: str, state: bytes) -> None:
    """Refuse a queue state larger than :data:`MAX_QUEUE_STATE`.

    Raises:
        StoreRejectedError: ``state`` is too large.
    """
    if len(state) > MAX_QUEUE_STATE:
        raise _errors.StoreRejectedError(
            f"the state of queue {queue!r} is {len(state)} bytes, more than the "
            f"{MAX_QUEUE_STATE} bytes a store keeps for one queue; nothing was written"
        )


def in_queues(queue: str, queues: Collection[str] | None) -> bool:
    """Tell whether a run of ``queue`` passes a ``queues`` filter (``None``: any queue)."""
    return queues is None or queue in queues


def admission_order(run: history.RunInfo) -> tuple[int, float, float, str]:
    """The sort key of :meth:`fluxo.stores.Store.queued_runs`: ``priority`` first, highest first."""
    start_at = run.start_at if run.start_at is not None else run.created_at
    return (-run.priority, start_at, run.created_at, run.id)

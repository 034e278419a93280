"""Named queues in MongoDB: the runs awaiting admission, admitting them, the queue records.

A run's document holds ``queue`` (``""``: the default queue), ``priority``,
``partition`` and ``start_at``. ``start_at`` is a number exactly while the run awaits
admission to its named queue (its ``ready_at`` is then null, so no claim matches
it) and null otherwise; a document written before queues existed has none of the
four fields and reads as a run of the default queue.

Two partial indexes hold the runs awaiting admission and nothing else (their
filter, :data:`AWAITING`, matches a numeric ``start_at``), so they are as small as
the queues' backlogs and never hold a finished run:

* ``(queue, priority desc, start_at, created_at, _id)``: the admission order, so
  the runs of a queue due now come off the index sorted and a read stops at its
  limit;
* ``(queue, start_at)``: the next start after now, and the due runs on a server
  whose planner does not walk the first.

The queries name the filter's clause (``start_at >= -inf``), so that a planner
sees that a partial index applies to them.

The ``queues`` collection holds one document per queue that was written,
``{_id: name, version, state}``. Writing is a compare-and-set in one
single-document write: version 0 inserts (a duplicate ``_id``: another writer was
first), a later version is an ``update_one`` filtered on that version.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Final

from fluxo import history
from fluxo.stores import _queue_rules
from fluxo.stores.mongo import _documents, _driver

Doc = _documents.Doc

AWAITING: Final[Doc] = {"start_at": {"$gte": float("-inf")}}
"""Matches the runs awaiting admission: those whose ``start_at`` is a number."""

ADMISSION_ORDER: Final = [("priority", -1), ("start_at", 1), ("created_at", 1), ("_id", 1)]


def ensure_indexes(runs: _driver.Collection[Doc]) -> None:
    """Create the partial indexes of the runs awaiting admission (if not there yet)."""
    runs.create_index(
        [("queue", 1), *ADMISSION_ORDER],
        name="queue_admission",
        partialFilterExpression=AWAITING,
    )
    runs.create_index(
        [("queue", 1), ("start_at", 1)], name="queue_start", partialFilterExpression=AWAITING
    )


def only(queues: Collection[str]) -> Doc:
    """The filter that keeps the runs of ``queues`` (a run older than queues is in ``""``)."""
    names: list[str | None] = list(dict.fromkeys(queues))
    if history.DEFAULT_QUEUE in names:
        names.append(None)  # matches a document without the field, too
    return {"queue": {"$in": names}}


def new_run(
    queue: str, priority: int, partition: str | None, start_at: float | None, now: float
) -> Doc:
    """The queue fields and ``ready_at`` of a new run (see ``Store.create_run``)."""
    start = now if start_at is None else float(start_at)
    queued = queue != history.DEFAULT_QUEUE  # awaits admission
    return {
        "ready_at": None if queued else start,
        "queue": queue,
        "priority": priority,
        "partition": partition,
        "start_at": start if queued else None,
    }


def reopened(now: float) -> list[tuple[Doc, Doc]]:
    """How ``reopen`` sets a run ready again: ``(filter, fields)`` for each kind of queue.

    A run of the default queue is ready at ``now``; a run of a named queue awaits
    admission again from ``now``.
    """
    default = [history.DEFAULT_QUEUE, None]
    return [
        ({"queue": {"$in": default}}, {"ready_at": now, "start_at": None}),
        ({"queue": {"$nin": default}}, {"ready_at": None, "start_at": now}),
    ]


class Queues:
    """The queue operations of the contract on one database.

    Args:
        runs: the ``runs`` collection.
        records: the ``queues`` collection.
        notify: wakes this process's waiters on a run (other processes see the
            run's update in its change stream, or poll for it).
    """

    def __init__(
        self,
        runs: _driver.Collection[Doc],
        records: _driver.Collection[Doc],
        notify: Callable[[str], None],
    ) -> None:
        self._runs = runs
        self._records = records
        self._notify = notify

    def queued_runs(
        self, queue: str, *, now: float, limit: int
    ) -> tuple[list[history.RunInfo], float | None]:
        """See :meth:`fluxo.stores.Store.queued_runs`: two reads of the partial indexes."""
        start_at = AWAITING["start_at"]
        due: list[Doc] = []
        if limit > 0:  # a limit of 0 would mean no limit to the driver
            due = list(
                self._runs.find(
                    {"queue": queue, "start_at": {**start_at, "$lte": now}},
                    _documents.INFO_PROJECTION,
                    sort=ADMISSION_ORDER,
                    limit=limit,
                )
            )
        later = self._runs.find_one(
            {"queue": queue, "start_at": {"$gt": now}},
            {"start_at": 1},
            sort=[("start_at", 1)],
        )
        next_start = None if later is None else float(later["start_at"])
        return [_documents.info(doc) for doc in due], next_start

    def admit(self, run_ids: Collection[str], *, now: float) -> list[str]:
        """See :meth:`fluxo.stores.Store.admit`.

        One conditional update per run, matching it only while it awaits admission:
        of concurrent admissions of a run exactly one matches, and that is the one
        that returns its id.
        """
        ready = {
            "status": history.RunStatus.PENDING.value,
            "ready_at": now,
            "start_at": None,
            "updated_at": now,
        }
        admitted: list[str] = []
        for run_id in dict.fromkeys(run_ids):
            done = self._runs.update_one(
                {"_id": run_id, **AWAITING, "status": {"$in": _documents.ACTIVE}},
                {"$set": ready},
            )
            if done.matched_count:
                admitted.append(run_id)
                self._notify(run_id)
        return admitted

    def read_queue(self, queue: str) -> tuple[int, bytes]:
        """See :meth:`fluxo.stores.Store.read_queue`."""
        doc = self._records.find_one({"_id": queue})
        if doc is None:
            return 0, b""
        return int(doc["version"]), bytes(doc["state"])

    def write_queue(self, queue: str, version: int, state: bytes) -> bool:
        """See :meth:`fluxo.stores.Store.write_queue`: one insert or one conditional update."""
        _queue_rules.check_state(queue, state)
        stored = _driver.Binary(bytes(state))
        if version == 0:
            try:
                self._records.insert_one({"_id": queue, "version": 1, "state": stored})
            except _driver.DuplicateKeyError:
                return False  # written before: its version is not 0 any more
            return True
        done = self._records.update_one(
            {"_id": queue, "version": version},
            {"$set": {"version": version + 1, "state": stored}},
        )
        return done.matched_count == 1

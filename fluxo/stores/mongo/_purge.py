"""Purging runs from MongoDB without transactions.

A run goes in three steps: one update marks the runs chosen ``purging``
(checking again that they finished as wanted), which makes them gone for every
reader and for ``reopen``; then their events and signals are deleted, then the
marked documents. A purge that stops half way leaves marked documents, which the
next purge (or a ``create_run`` of the same id) finishes first.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Final

from fluxo import history
from fluxo.stores.mongo import _documents, _driver

RunStatus = history.RunStatus
Doc = _documents.Doc

PAGE: Final = 500
"""How many finished runs a purge reads at a time."""


class Purge:
    """Chooses and deletes the runs of one database that a purge may delete.

    Args:
        runs: the ``runs`` collection.
        events: the ``events`` collection.
        signals: the ``signals`` collection.
    """

    def __init__(
        self,
        runs: _driver.Collection[Doc],
        events: _driver.Collection[Doc],
        signals: _driver.Collection[Doc],
    ) -> None:
        self._runs = runs
        self._events = events
        self._signals = signals

    def purge(
        self,
        *,
        finished_before: float,
        wanted: list[str],
        workflows: Collection[str] | None,
        limit: int,
        dry_run: bool,
    ) -> int:
        """Delete up to ``limit`` runs finished with one of ``wanted`` (status words).

        See :meth:`fluxo.stores.Store.purge`; the caller checked the arguments.
        """
        finished: Doc = {
            "status": {"$in": wanted},
            "created_at": {"$lt": finished_before},
            "updated_at": {"$lt": finished_before},
            **_documents.LIVE,
        }
        if workflows is not None:
            finished["workflow"] = {"$in": list(workflows)}
        if not dry_run:
            left = [
                doc["_id"] for doc in self._runs.find({"purging": {"$exists": True}}, {"_id": 1})
            ]
            if left:
                self.erase(left)
        chosen: list[str] = []
        cursor = self._runs.find(finished, {"_id": 1, "parent": 1, "status": 1}, batch_size=PAGE)
        try:
            page: list[Doc] = []
            for doc in cursor:
                page.append(doc)
                if len(page) == PAGE:
                    chosen += self._deletable(page)[: limit - len(chosen)]
                    page = []
                    if len(chosen) >= limit:
                        break
            chosen += self._deletable(page)[: limit - len(chosen)]
        finally:
            cursor.close()
        if dry_run or not chosen:
            return len(chosen)
        token = uuid.uuid4().hex
        self._runs.update_many({**finished, "_id": {"$in": chosen}}, {"$set": {"purging": token}})
        marked = [doc["_id"] for doc in self._runs.find({"_id": {"$in": chosen}, "purging": token})]
        if marked:
            self.erase(marked)
        return len(marked)

    def _deletable(self, docs: Sequence[Doc]) -> list[str]:
        """The ids of the runs a purge may delete, of these finished ones (in order)."""
        parents = sorted({doc["parent"] for doc in docs if doc.get("parent") is not None})
        keeping = [status.value for status in history.KEEPING_PARENTS]
        holding = {
            doc["_id"]
            for doc in self._runs.find(
                {"_id": {"$in": parents}, "status": {"$in": keeping}}, {"_id": 1}
            )
        }
        successors = {
            history.chain_next(doc["_id"]): doc["_id"]
            for doc in docs
            if doc["status"] == RunStatus.COMPLETED.value
        }
        going_on = {
            successors[doc["_id"]]
            for doc in self._runs.find({"_id": {"$in": list(successors)}}, {"_id": 1})
        }
        return [
            doc["_id"]
            for doc in docs
            if doc["_id"] not in going_on and doc.get("parent") not in holding
        ]

    def erase(self, run_ids: list[str]) -> None:
        """Delete the events, signals and documents of runs marked ``purging``."""
        self._events.delete_many({"run_id": {"$in": run_ids}})
        self._signals.delete_many({"run_id": {"$in": run_ids}})
        self._runs.delete_many({"_id": {"$in": run_ids}, "purging": {"$exists": True}})

"""Worker liveness in MongoDB: the ``workers`` collection, and freeing dead workers' runs.

A worker's document is ``{_id: worker id, alive_until: time}``; the collection
holds one per running worker, so it stays tiny and needs no index but ``_id``.

A beat upserts the worker's own document and, when it reaps, reads the documents
whose ``alive_until`` has passed: with nobody dead that is the whole cost, two
round trips. Only when someone died (or the worker restarted) are the runs read:
the running runs leased to the dead, through the runs' status index. Every other
status change clears a run's lease, so only a ``running`` run can hold one, and
the scan covers the running runs alone, never the waiting ones. No index on the
lease's owner: it would cost every claim.

Without transactions each step is fenced so that a race loses nothing:

* a run's lease ends with an update that matches only the owner and the
  ``lease_until`` just read, so a claim (or a renewal) made in between stands;
* a dead worker's document is deleted only while its ``alive_until`` is still
  past, so a worker that beat again in between stays known;
* the runs are freed before the documents go, so a beat that stops half way is
  finished by the next one.

A freed run's ``updated_at`` moves on to the beat's ``now`` (never back), as after
a release: waiters of other processes hear of the free through the ``runs``
change stream, and on a server without change streams through the newest
``updated_at`` they poll for.
"""

from __future__ import annotations

from collections.abc import Callable

from fluxo import history
from fluxo.stores.mongo import _documents, _driver

Doc = _documents.Doc


class Workers:
    """Records the beats of one database's workers and frees the runs of dead ones.

    Args:
        workers: the ``workers`` collection.
        runs: the ``runs`` collection.
        notify: wakes this process's waiters on a run (see ``_watch.Watcher.changed``);
            other processes see the run's update in its change stream.
    """

    def __init__(
        self,
        workers: _driver.Collection[Doc],
        runs: _driver.Collection[Doc],
        notify: Callable[[str], None],
    ) -> None:
        self._workers = workers
        self._runs = runs
        self._notify = notify

    def beat(
        self, worker_id: str, *, now: float, alive_until: float, reap: bool, restarted: bool
    ) -> list[str]:
        """See :meth:`fluxo.stores.Store.beat_worker`."""
        self._workers.update_one(
            {"_id": worker_id}, {"$set": {"alive_until": alive_until}}, upsert=True
        )
        dead: list[str] = []
        if reap:
            found = self._workers.find(
                {"_id": {"$ne": worker_id}, "alive_until": {"$lt": now}}, {"_id": 1}
            )
            dead = [doc["_id"] for doc in found]
        owners = [*dead, worker_id] if restarted else dead
        if not owners:
            return []
        freed = self._free(owners, now)
        if dead:
            self._workers.delete_many({"_id": {"$in": dead}, "alive_until": {"$lt": now}})
        return freed

    def _free(self, owners: list[str], now: float) -> list[str]:
        """End at ``now`` the live leases ``owners`` hold; the ids of the runs freed."""
        running = history.RunStatus.RUNNING.value
        leased = self._runs.find(
            {"status": running, "lease_owner": {"$in": owners}, "lease_until": {"$gt": now}},
            {"lease_owner": 1, "lease_until": 1},
        )
        freed: list[str] = []
        for doc in list(leased):
            done = self._runs.update_one(
                {
                    "_id": doc["_id"],
                    "status": running,
                    "lease_owner": doc["lease_owner"],
                    "lease_until": doc["lease_until"],
                },
                {"$set": {"lease_until": now}, "$max": {"updated_at": now}},
            )
            if done.matched_count:
                freed.append(doc["_id"])
                self._notify(doc["_id"])
        return freed

    def forget(self, worker_id: str) -> None:
        """See :meth:`fluxo.stores.Store.forget_worker`."""
        self._workers.delete_one({"_id": worker_id})

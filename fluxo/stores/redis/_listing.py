"""Reading runs (``list_runs``, ``count_runs``), and choosing and deleting runs to purge.

Every run is in its bucket's ``P:{P#n}:created`` sorted set, scored by
``created_at``; a listing reads a creation-time range of every bucket, a page at
a time, newest first, and merges them (an id prefix filters the ids read, since
no index keeps runs by id). Counting reads every bucket whole, in
batches. The records are the truth: an index score a crash left behind may
differ, and an entry may name a run that was never created, so each run is
checked against its record.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from typing import Any, Final, TypeVar

from fluxo import history
from fluxo.stores.redis import _codec, _connection, _index, _layout, _queues

RunStatus = history.RunStatus
U = TypeVar("U")

_FINISHED: Final = {status.value for status in RunStatus if status.is_terminal}
_COUNT_PAGE: Final = 1000
"""How many members of a ``created`` index ``count_runs`` asks ``ZSCAN`` for at a time."""


def _take(items: Iterator[U], count: int) -> list[U]:
    return list(itertools.islice(items, count))


class Listing:
    """Lists and purges the runs of one store.

    Args:
        conn: the store's connection.
        keys: the store's key layout.
        index: the store's claim index (a purged run leaves it too).
        queues: the store's queues (and their indexes, which a purged run leaves).
    """

    def __init__(
        self,
        conn: _connection.Connection,
        keys: _layout.Keys,
        index: _index.Index,
        queues: _queues.Queues,
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._index = index
        self._queues = queues

    def records(self, run_ids: Sequence[str]) -> list[Any]:
        """The records of these runs (an empty dict for a missing one), in one pipeline."""
        return self._conn.commands(
            lambda pipe: [pipe.hgetall(self._keys.of_run(run_id, "run")) for run_id in run_ids]
        )

    def _created_desc(
        self, bucket: int, first: list[Any], page: int, high: str, low: str
    ) -> Iterator[tuple[float, str]]:
        """The runs of one bucket created in ``[low, high]``, newest first, a page at a time.

        ``high`` and ``low`` are score bounds as ``ZREVRANGEBYSCORE`` takes them. Each
        page starts at the last score seen, skipping the members of that score already
        given, so runs created meanwhile do not shift the pages.
        """
        key = self._keys.bucket(bucket)["created"]
        rows, skip = first, 0
        while rows:
            for member, score in rows:
                yield -float(score), _codec.text(member)
            if len(rows) < page:
                return
            last = float(rows[-1][1])
            same = sum(1 for _, score in rows if float(score) == last)
            skip = skip + same if high == _codec.num(last) else same
            high = _codec.num(last)
            with self._conn.guard():
                rows = self._conn.connected().zrevrangebyscore(
                    key, high, low, start=skip, num=page, withscores=True
                )

    def list_runs(
        self,
        *,
        statuses: Collection[history.RunStatus] | None = None,
        workflows: Collection[str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        id_prefix: str | None = None,
        queues: Collection[str] | None = None,
    ) -> list[history.RunInfo]:
        """See :meth:`fluxo.stores.Store.list_runs`.

        No index keeps runs by id, so ``id_prefix`` filters the ids the ``created``
        indexes give, before their records are read: only the records of matching
        runs are fetched, but the ids of the time range are read, newest first,
        until ``limit`` runs match (all of them when fewer do).
        """
        wanted_status = None if statuses is None else {RunStatus(s).value for s in statuses}
        wanted_wf = None if workflows is None else set(workflows)
        wanted_queues = None if queues is None else set(queues)
        if limit <= 0 or wanted_status == set() or wanted_wf == set() or wanted_queues == set():
            return []
        low = "-inf" if created_after is None else _codec.num(created_after)
        high = "+inf" if created_before is None else "(" + _codec.num(created_before)
        page = max(limit, 100)
        firsts = self._conn.commands(
            lambda pipe: [
                pipe.zrevrangebyscore(
                    self._keys.bucket(b)["created"], high, low, start=0, num=page, withscores=True
                )
                for b in range(_layout.BUCKETS)
            ]
        )
        newest_first = heapq.merge(
            *(self._created_desc(b, firsts[b], page, high, low) for b in range(_layout.BUCKETS))
        )
        found: list[history.RunInfo] = []
        seen: set[str] = set()
        while len(found) < limit:
            batch = _take(newest_first, page)
            if not batch:
                break
            ids = list(
                dict.fromkeys(
                    run_id
                    for _, run_id in batch
                    if run_id not in seen and (not id_prefix or run_id.startswith(id_prefix))
                )
            )
            seen.update(ids)
            rows = self.records(ids)
            for run_id, fields in zip(ids, rows, strict=True):
                if not fields:
                    continue  # a create that never happened
                run = _codec.run_info(run_id, fields)
                # The record is the truth: an index score a crash left behind may differ.
                if (
                    # by the stored word: a damaged status matches no filter, as elsewhere
                    (wanted_status is None or _codec.text(fields.get(b"status")) in wanted_status)
                    and (wanted_wf is None or run.workflow in wanted_wf)
                    and (wanted_queues is None or run.queue in wanted_queues)
                    and (created_after is None or run.created_at >= created_after)
                    and (created_before is None or run.created_at < created_before)
                ):
                    found.append(run)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[:limit]

    def count_runs(self) -> dict[tuple[str, history.RunStatus], int]:
        """See :meth:`fluxo.stores.Store.count_runs` (and ``RedisStore.count_runs`` for how)."""
        counts: dict[tuple[str, history.RunStatus], int] = {}
        for bucket in range(_layout.BUCKETS):
            key = self._keys.bucket(bucket)["created"]
            seen: set[bytes] = set()  # ZSCAN may return a member twice
            cursor = 0
            while True:
                with self._conn.guard():
                    cursor, page = self._conn.connected().zscan(key, cursor, count=_COUNT_PAGE)
                fresh = [member for member, _ in page if member not in seen]
                seen.update(fresh)
                for workflow, status in self._workflows_and_statuses(fresh):
                    if workflow is None and status is None:
                        continue  # a create that never happened, or a run purged meanwhile
                    # as RunInfo reads them: a damaged status is FAILED
                    pair = (
                        workflow.decode("utf-8", "replace") if workflow else "",
                        history.parse_status(status)[0],
                    )
                    counts[pair] = counts.get(pair, 0) + 1
                if cursor == 0:
                    break
        return counts

    def _workflows_and_statuses(self, members: Sequence[bytes]) -> list[Any]:
        """The ``wf`` and ``status`` fields of these runs' records, in one pipeline."""
        if not members:
            return []
        return self._conn.commands(
            lambda pipe: [
                pipe.hmget(self._keys.of_run(_codec.text(member), "run"), "wf", "status")
                for member in members
            ]
        )

    def purge(
        self,
        *,
        finished_before: float,
        statuses: Collection[history.RunStatus],
        workflows: Collection[str] | None = None,
        limit: int,
        dry_run: bool = False,
    ) -> int:
        """See :meth:`fluxo.stores.Store.purge` (and ``RedisStore.purge`` for how)."""
        wanted = sorted({RunStatus(s).value for s in statuses} & _FINISHED)
        names = None if workflows is None else set(workflows)
        if limit <= 0 or not wanted or names == set():
            return 0
        page = min(max(limit, 100), 1000)
        oldest_first = heapq.merge(
            *(self._created_before(b, finished_before, page) for b in range(_layout.BUCKETS))
        )
        chosen: dict[str, history.RunInfo] = {}
        while len(chosen) < limit:
            batch = _take(oldest_first, page)
            if not batch:
                break
            ids = [run_id for _, run_id in batch if run_id not in chosen]
            found = []
            for run_id, fields in zip(ids, self.records(ids), strict=True):
                if not fields:
                    continue
                run = _codec.run_info(run_id, fields)
                if (
                    run.status.value in wanted
                    and max(run.created_at, run.updated_at) < finished_before
                    and (names is None or run.workflow in names)
                ):
                    found.append(run)
            kept = self._kept(found)
            for run in found:
                if run.id not in kept and len(chosen) < limit:
                    chosen[run.id] = run
        if dry_run or not chosen:
            return len(chosen)
        return self._delete(list(chosen.values()), finished_before, wanted)

    def _created_before(self, bucket: int, before: float, page: int) -> Iterator[tuple[float, str]]:
        """The runs of one bucket created before ``before``, oldest first, a page at a time."""
        key = self._keys.bucket(bucket)["created"]
        low, high, skip = "-inf", "(" + _codec.num(before), 0
        while True:
            with self._conn.guard():
                rows = self._conn.connected().zrangebyscore(
                    key, low, high, start=skip, num=page, withscores=True
                )
            for member, score in rows:
                yield float(score), _codec.text(member)
            if len(rows) < page:
                return
            last = float(rows[-1][1])
            same = sum(1 for _, score in rows if float(score) == last)
            skip = skip + same if low == _codec.num(last) else same
            low = _codec.num(last)

    def _kept(self, runs: Sequence[history.RunInfo]) -> set[str]:
        """The ids of the runs a purge must keep: for their parent, or their chain."""
        parents = sorted({run.parent for run in runs if run.parent is not None})
        successors = {
            run.id: history.chain_next(run.id) for run in runs if run.status is RunStatus.COMPLETED
        }
        nexts = list(successors.values())
        replies = self._conn.commands(
            lambda pipe: [
                *(pipe.hget(self._keys.of_run(parent, "run"), "status") for parent in parents),
                *(pipe.exists(self._keys.of_run(run_id, "run")) for run_id in nexts),
            ]
        )
        keeping = {s.value for s in history.KEEPING_PARENTS}
        holding = {
            parent
            for parent, status in zip(parents, replies[: len(parents)], strict=True)
            if status is not None and _codec.text(status) in keeping
        }
        going_on = {
            run_id
            for (run_id, _), exists in zip(successors.items(), replies[len(parents) :], strict=True)
            if exists
        }
        return going_on | {run.id for run in runs if run.parent in holding}

    def _delete(self, runs: Sequence[history.RunInfo], before: float, wanted: list[str]) -> int:
        """Delete the runs whose record still says they may go; return how many went."""
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for run in runs:
            by_bucket[_layout.bucket_of(run.id)].append(run.id)
        order = sorted(by_bucket)
        marks = []
        for bucket in order:
            keys = self._keys.bucket(bucket)
            marks.append(
                (
                    "mark",
                    [keys["hints"], keys["gen"], keys["seq"], keys["created"]],
                    ["", *by_bucket[bucket]],
                )
            )
        gens: dict[str, str] = {}
        for bucket, (_clock, values) in zip(order, self._conn.call_many(marks), strict=True):
            gens.update(zip(by_bucket[bucket], (_codec.text(v) for v in values), strict=True))
        calls = [
            (
                "purge_run",
                self._keys.run(run.id),
                [self._keys.channel, gens[run.id], _codec.num(before), run.id, *wanted],
            )
            for run in runs
        ]
        deleted = 0
        settles = []
        entries: dict[str, list[bytes]] = defaultdict(list)
        for run, reply in zip(runs, self._conn.call_many(calls), strict=True):
            need = _index.need(reply[1])
            if reply[0] == 1:
                deleted += 1
                if reply[2]:  # an entry in its queue's index (a crash left it named)
                    entries[_codec.text(reply[3])].append(reply[2])
                need = need._replace(workflow=run.workflow)
                settles.append(_index.Settle(run.id, gens[run.id], need, missing=True))
            else:
                settles.append(_index.Settle(run.id, gens[run.id], need, missing=not need.workflow))
        self._index.settle(settles)
        self._queues.forget(entries)
        return deleted

"""The Redis store's class: every operation of the contract, as Lua scripts on Redis.

A status change is three steps (mark, change, settle: see ``_index``), the hot
path, appending events without a status change, one script call.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Container, Mapping, Sequence
from typing import Any, Final

from fluxo import _errors, history
from fluxo.stores import _changes, _group, _headers, _queue_rules
from fluxo.stores.redis import (
    _codec,
    _connection,
    _index,
    _layout,
    _listener,
    _listing,
    _liveness,
    _queues,
)

RunStatus = history.RunStatus

_ACTIVE: Final = {status.value for status in history.ACTIVE_STATUSES}
_FINAL: Final = {RunStatus.COMPLETED.value, RunStatus.CANCELLED.value}


class RedisStore:
    """The Redis :class:`~fluxo.stores.Store`. Thread-safe; share one per process.

    Args:
        url: ``redis://`` or ``rediss://`` URL of a server or of any node of a cluster.
        prefix: the key prefix (default: the URL's ``prefix`` parameter, else ``fluxo``).
        cluster: ``True`` or ``False`` to choose the mode; ``None`` (the default) takes
            the URL's ``cluster`` parameter, else asks the server.
    """

    def __init__(self, url: str, *, prefix: str | None = None, cluster: bool | None = None) -> None:
        plain, chosen = _layout.split_url(url, prefix)
        mode = cluster if cluster is not None else _layout.cluster_option(url)
        self._conn = _connection.Connection(url, plain, mode)
        self._keys = _layout.Keys(chosen)
        self._index = _index.Index(self._conn, self._keys)
        self._queues = _queues.Queues(self._conn, self._keys, self._index)
        self._listing = _listing.Listing(self._conn, self._keys, self._index, self._queues)
        self._feed = _changes.ChangeFeed()
        self._liveness = _liveness.Liveness(self._conn, self._keys, self._index, self._feed)
        self._listener = _listener.Listener(
            self._conn, self._keys.channel, self._feed, f"fluxo-redis-listener-{chosen}"
        )
        self._lock = threading.Lock()
        self._closed = False
        # Steps' records of concurrent executions go in one pipeline (one server).
        self._group: _group.GroupCommit[tuple[str, int, _connection.Call], Any]
        self._group = _group.GroupCommit(self._write_group, key=lambda item: (item[0], item[1]))

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._keys.prefix!r})"

    def _write_group(self, items: Sequence[tuple[str, int, _connection.Call]]) -> list[Any]:
        """Append a group's records in one pipeline; None for each whose script failed.

        The others ran, so only the failed ones are written again, alone (by their
        callers): a record written twice would be refused as another writer's.
        """
        results = self._conn.call_many([call for _, _, call in items], keep_errors=True)
        return [None if isinstance(result, Exception) else result for result in results]

    @property
    def cluster(self) -> bool:
        """Tell whether the store talks to a Redis Cluster (asks the server on first use)."""
        with self._conn.guard():
            self._conn.connected()
        return self._conn.cluster

    # -- runs and histories

    def create_run(
        self,
        run_id: str,
        workflow: str,
        input: bytes,
        *,
        now: float,
        owner: str | None = None,
        lease_until: float | None = None,
        deadline: float | None = None,
        parent: str | None = None,
        headers: Mapping[str, str] | None = None,
        queue: str = history.DEFAULT_QUEUE,
        priority: int = 0,
        partition: str | None = None,
        start_at: float | None = None,
    ) -> tuple[history.RunInfo, bool]:
        _queue_rules.check_create(run_id, owner, queue, start_at)
        stored_priority = _queues.check_priority(priority)
        keys = self._keys.run(run_id)
        first = _codec.stamp(now) + _codec.encode_event(history.WorkflowStarted(workflow, input))
        lease = _codec.opt(lease_until) if owner else ""
        stored_headers = _headers.encode(headers)
        headers_arg = b"" if stored_headers is None else _codec.utf8(stored_headers)
        named = queue != history.DEFAULT_QUEUE
        ready = "" if named else _codec.num(now if start_at is None else start_at)
        waits_from = (now if start_at is None else start_at) if named else None
        bucket = _layout.bucket_of(run_id)
        common = self._keys.bucket(bucket)
        mark_keys = [common[k] for k in ("gen", "seq", "created", "lready")]
        mark_keys += self._keys.workflow(bucket, workflow)
        kind = "" if named else "l" if lease else "r"
        mark_args = [run_id, _codec.num(now), kind, ready, lease]
        queue_args = [
            ready,
            queue,
            stored_priority,
            "0" if partition is None else "1",
            partition or "",
            _codec.opt(waits_from),
        ]
        for _ in range(_index.MAX_TRIES):
            mark: _connection.Call = ("mark_create", mark_keys, mark_args)
            entry, number = "", ""
            if waits_from is None:
                clock, gen, fresh = self._conn.call(*mark)
            else:  # the entry in the queue's index first, in the mark's pipeline
                head = _queues.entry_head(run_id, priority, waits_from, now)
                queue_clock, entry, (clock, gen, fresh) = self._queues.enqueue(
                    queue, head, after=mark
                )
                clock = min(int(clock), queue_clock)
                number = entry.rsplit("\x00", 1)[1]
            gen, clock = _codec.text(gen), _codec.text(clock)
            args = [self._keys.channel, gen, clock, workflow, first, _codec.num(now), owner or ""]
            args += [lease, _codec.opt(deadline), run_id, headers_arg, *queue_args, entry, number]
            if parent is not None:
                args.append(parent)
            reply = self._conn.call("create_run", keys, args)
            outcome = _codec.text(reply[0])
            if entry and outcome != "created":
                self._queues.forget({queue: [entry]})  # never named by a record
            if outcome == "retry":
                continue  # a settle may be about to remove the entry just made
            if outcome != "created" or fresh != 1:
                # The index may hold what this mark guessed (or an older created_at).
                record = None if outcome == "conflict" else _codec.fields(reply[1])
                created = "" if record is None else _codec.text(record[b"created"])
                self._index.settle(
                    [_index.Settle(run_id, gen, _index.need(reply[2]), created=created)]
                )
            if outcome == "conflict":
                raise _errors.RunIdConflictError(run_id, _codec.text(reply[1]), workflow)
            return _codec.run_info(run_id, _codec.fields(reply[1])), outcome == "created"
        raise _errors.StoreUnavailableError(
            f"run {run_id!r} changed under Fluxo {_index.MAX_TRIES} times in a row; try again"
        )

    def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[history.Event],
        *,
        now: float,
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
        unless_cancel_requested: bool = False,
    ) -> None:
        keys = self._keys.run(run_id)
        stamp = _codec.stamp(now)
        encoded = [stamp + _codec.encode_event(event) for event in events]
        unless = "1" if unless_cancel_requested else "0"
        if status is None:  # the hot path: one script call
            args = [self._keys.channel, int(expected_seq), _codec.num(now), "", "", "", "0"]
            call: _connection.Call = ("append", keys, [*args, run_id, unless, *encoded])
            result = None
            if not self._conn.cluster:  # a cluster's pipeline is one call after another
                result = self._group.submit((run_id, expected_seq, call))
            if result is None:  # alone, or its group's pipeline failed
                result = self._conn.call(*call)
            self._append_result(run_id, expected_seq, result)
            return
        value = RunStatus(status).value
        lowest = ""
        if value == RunStatus.WAITING.value:
            # a wake-up that arrived meanwhile makes it ready now instead
            lowest = _codec.num(now if ready_at is None else min(ready_at, now))
        elif value in _ACTIVE and ready_at is not None:
            lowest = _codec.num(ready_at)

        def change(gen: str, checked: bool) -> tuple[Any, _index.Need] | None:
            args = [self._keys.channel, int(expected_seq), _codec.num(now), value]
            args += [_codec.opt(ready_at), gen, "1" if checked else "0"]
            reply = self._conn.call("append", keys, [*args, run_id, unless, *encoded])
            if reply[0] == 3:
                return None
            return reply, _index.need(reply[1])

        if lowest:
            result = self._index.marked(run_id, lowest, lambda gen, _clock: change(gen, True))
        elif value in _FINAL:
            # Completed and cancelled runs never change again: once the run script
            # succeeded, whatever index entries the run has can go, generation or not.
            outcome = change("", False)
            assert outcome is not None
            result, need = outcome
            if result[0] == 0:
                self._index.settle([_index.Settle(run_id, "*", need)])
        else:  # failed, or without a ready_at: claimable no sooner than before
            gen = self._index.generations([run_id])[run_id]
            outcome = change(gen, False)
            assert outcome is not None
            result, need = outcome
            if gen:
                self._index.settle([_index.Settle(run_id, gen, need, missing=not need.workflow)])
        self._append_result(run_id, expected_seq, result)
        if len(result) > 3 and result[2]:  # it awaited admission: its queue entry goes
            self._queues.forget({_codec.text(result[3]): [result[2]]})

    @staticmethod
    def _append_result(run_id: str, expected_seq: int, result: Sequence[Any]) -> None:
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        if result[0] == 2:
            raise _errors.SequenceConflictError(run_id, min(expected_seq, int(result[-1])))
        if result[0] == 4:
            raise _errors.CancelPendingError(run_id)

    def load(self, run_id: str) -> history.RunState:
        fields, events, signals = self._conn.call("load", self._keys.run(run_id)[:3], [])
        if not fields:
            raise _errors.RunNotFoundError(run_id)
        run = _codec.run_info(run_id, _codec.fields(fields))
        loaded, recorded_at = _codec.read_history(run_id, events)
        if run.damage is not None:
            raise _errors.HistoryCorruptError(run_id, None, run.damage, len(loaded))
        try:
            sent = tuple(_codec.decode_signal(raw) for raw in signals)
        except ValueError as exc:
            raise _errors.HistoryCorruptError(
                run_id, None, f"a stored signal does not parse ({exc})", len(loaded)
            ) from None
        return history.RunState(run, loaded, sent, tuple(recorded_at))

    def get_run(self, run_id: str) -> history.RunInfo:
        with self._conn.guard():
            fields = self._conn.connected().hgetall(self._keys.of_run(run_id, "run"))
        if not fields:
            raise _errors.RunNotFoundError(run_id)
        return _codec.run_info(run_id, fields)

    def get_runs(self, run_ids: Collection[str]) -> dict[str, history.RunInfo]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        rows = self._listing.records(ids)  # one pipeline: one round trip (per node on a cluster)
        return {
            run_id: _codec.run_info(run_id, fields)
            for run_id, fields in zip(ids, rows, strict=True)
            if fields
        }

    # -- claims and leases

    def claim(
        self,
        worker_id: str,
        workflows: Collection[str],
        *,
        now: float,
        lease_until: float,
        limit: int,
        queues: Collection[str] | None = None,
    ) -> list[history.RunInfo]:
        names = sorted(set(workflows))
        if limit <= 0 or not names or (queues is not None and not queues):
            return []
        # Without queues, every candidate of these workflows is wanted; with them, the
        # run script checks its queue, and later rounds look further into the index.
        wanted_queues = "" if queues is None else _queues.wanted_queues(queues)
        claimed: list[history.RunInfo] = []
        tried: set[str] = set()
        for round_ in range(4):
            depth = limit if queues is None else limit * 4**round_
            candidates, more = self._index.peek(names, now, depth)
            queue = [c for c in candidates if c.run_id not in tried]
            settles: list[_index.Settle] = []
            while queue and len(claimed) < limit:
                batch, queue = queue[: limit - len(claimed)], queue[limit - len(claimed) :]
                calls = []
                for c in batch:
                    tried.add(c.run_id)
                    wanted = ["1", wanted_queues] if c.workflow else ["0", wanted_queues, *names]
                    args = [
                        self._keys.channel,
                        worker_id,
                        _codec.num(now),
                        _codec.num(lease_until),
                        c.gen,
                    ]
                    calls.append(("claim_one", self._keys.run(c.run_id), args + wanted))
                for c, reply in zip(batch, self._conn.call_many(calls), strict=True):
                    outcome, need = _codec.text(reply[0]), _index.need(reply[1])
                    if not need.workflow:
                        need = need._replace(workflow=c.workflow)
                    settles.append(_index.Settle(c.run_id, c.gen, need, outcome == "missing"))
                    if outcome == "claimed":
                        claimed.append(_codec.run_info(c.run_id, _codec.fields(reply[2])))
            self._index.settle(settles)
            if len(claimed) >= limit or not more:
                break
        return claimed

    def claim_run(
        self, worker_id: str, run_id: str, *, now: float, lease_until: float
    ) -> history.RunInfo | None:
        keys = self._keys.run(run_id)

        def change(gen: str, checked: bool) -> Any:
            reply = self._conn.call(
                "claim_run",
                keys,
                [
                    self._keys.channel,
                    worker_id,
                    _codec.num(now),
                    _codec.num(lease_until),
                    gen,
                    "1" if checked else "0",
                ],
            )
            outcome = _codec.text(reply[0])
            if outcome == "retry":
                return None
            if outcome == "cover":
                return _index.Cover(_codec.text(reply[1]))
            run = _codec.run_info(run_id, _codec.fields(reply[2])) if outcome == "ok" else None
            return run, _index.need(reply[1])

        run: history.RunInfo | None = self._index.postponing(run_id, change)
        return run

    def next_wake(
        self, workflows: Collection[str], *, now: float, queues: Collection[str] | None = None
    ) -> float | None:
        if queues is None:
            return self._index.next_wake(workflows, now=now)
        return self._queues.next_wake(workflows, now=now, queues=queues)

    def renew(
        self, worker_id: str, run_ids: Collection[str], *, lease_until: float
    ) -> dict[str, bool]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        gens = self._index.generations(ids)
        lease = _codec.num(lease_until)
        calls = [
            (
                "renew",
                self._keys.run(run_id),
                [self._keys.channel, worker_id, lease, gens[run_id], "0"],
            )
            for run_id in ids
        ]
        held: dict[str, bool] = {}
        settles: list[_index.Settle] = []
        for run_id, reply in zip(ids, self._conn.call_many(calls), strict=True):
            outcome = _codec.text(reply[0])
            if outcome == "cover":  # a shorter lease than before: rare, one at a time
                if self._renew_one(run_id, worker_id, lease, _codec.text(reply[1])):
                    held[run_id] = self.get_run(run_id).cancel_requested
                continue
            if outcome == "held":
                held[run_id] = reply[2] == b"1"
            if gens[run_id]:
                settles.append(_index.Settle(run_id, gens[run_id], _index.need(reply[1])))
        self._index.settle(settles)
        return held

    def _renew_one(self, run_id: str, worker_id: str, lease: str, lowest: str) -> bool:
        keys = self._keys.run(run_id)

        def change(gen: str, _clock: str) -> tuple[bool, _index.Need] | None:
            reply = self._conn.call("renew", keys, [self._keys.channel, worker_id, lease, gen, "1"])
            if _codec.text(reply[0]) == "retry":
                return None
            return _codec.text(reply[0]) == "held", _index.need(reply[1])

        return self._index.marked(run_id, lowest, change)

    def beat_worker(
        self,
        worker_id: str,
        *,
        now: float,
        alive_until: float,
        reap: bool = True,
        restarted: bool = False,
    ) -> list[str]:
        """See :meth:`fluxo.stores.Store.beat_worker`.

        One script call while nobody is dead. Freeing the runs of dead workers reads
        every leased run's owner out of the claim index and its records, then ends
        each lease through the index's three steps, batched per bucket.
        """
        return self._liveness.beat(
            worker_id, now=now, alive_until=alive_until, reap=reap, restarted=restarted
        )

    def forget_worker(self, worker_id: str) -> None:
        self._liveness.forget(worker_id)

    def release(self, worker_id: str, run_id: str, *, now: float) -> None:
        keys = self._keys.run(run_id)

        def change(gen: str, _clock: str) -> tuple[None, _index.Need] | None:
            reply = self._conn.call(
                "release", keys, [self._keys.channel, worker_id, _codec.num(now), gen, run_id]
            )
            if _codec.text(reply[0]) == "retry":
                return None
            return None, _index.need(reply[1])

        self._index.marked(run_id, _codec.num(now), change)

    # -- signals and control

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        keys = self._keys.run(run_id)
        suffix = _codec.signal_suffix(name, payload, now)

        def change(gen: str, _clock: str) -> tuple[Any, _index.Need] | None:
            args = [
                self._keys.channel,
                suffix,
                _codec.num(now),
                key or "",
                "0" if key is None else "1",
            ]
            reply = self._conn.call("send_signal", keys, [*args, gen, run_id])
            if reply[0] == 4:
                return None
            return reply, _index.need(reply[1])

        result = self._index.marked(run_id, _codec.num(now), change)
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        if result[0] == 2:
            raise _errors.RunStateError(
                f"run {run_id!r} has finished ({_codec.text(result[2])}); a signal sent to it "
                "would never be read"
            )
        return bool(result[0] == 0)

    def request_cancel(self, run_id: str, *, now: float) -> history.RunInfo:
        keys = self._keys.run(run_id)

        def change(gen: str, _clock: str) -> tuple[Any, _index.Need] | None:
            reply = self._conn.call(
                "request_cancel", keys, [self._keys.channel, _codec.num(now), gen, run_id]
            )
            if reply[0] == 2:
                return None
            return reply, _index.need(reply[1])

        result = self._index.marked(run_id, _codec.num(now), change)
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        return _codec.run_info(run_id, _codec.fields(result[2]))

    def reopen(self, run_id: str, *, now: float) -> history.RunInfo:
        keys = self._keys.run(run_id)
        event = _codec.stamp(now) + _codec.encode_event(history.RunRetried())
        at = _codec.num(now)
        made: list[tuple[str, list[Any]]] = []  # the queue entry made, and what it was made for

        def change(gen: str, _clock: str) -> tuple[Any, _index.Need] | None:
            for _ in range(_index.MAX_TRIES):
                extra = made[0][1] if made else []
                reply = self._conn.call(
                    "reopen", keys, [self._keys.channel, at, event, gen, run_id, *extra]
                )
                if reply[0] != 5:
                    break
                # A run of a named queue awaits admission again: an entry comes first.
                self._drop_entry(made)
                queue, priority, created = (_codec.text(value) for value in reply[1:4])
                head = _queues.entry_head(run_id, int(priority), now, float(created))
                _, entry, _ = self._queues.enqueue(queue, head)
                made.append((queue, [entry, entry.rsplit("\x00", 1)[1], queue, priority, created]))
            else:
                self._drop_entry(made)
                raise _errors.StoreUnavailableError(
                    f"run {run_id!r} changed under Fluxo {_index.MAX_TRIES} times in a row; "
                    "try again"
                )
            if reply[0] == 3:
                self._drop_entry(made)  # fenced, or a settle may remove the hint: anew
                return None
            if reply[0] != 0:
                self._drop_entry(made)
            return reply, _index.need(reply[1])

        result = self._index.marked(run_id, at, change)
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        if result[0] == 2:
            raise _errors.RunStateError(_errors.not_reopenable(run_id, _codec.text(result[2])))
        return _codec.run_info(run_id, _codec.fields(result[2]))

    def _drop_entry(self, made: list[tuple[str, list[Any]]]) -> None:
        """Remove the queue entry a refused change made (no record names it)."""
        if made:
            queue, extra = made.pop()
            self._queues.forget({queue: [extra[0]]})

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
        return self._listing.list_runs(
            statuses=statuses,
            workflows=workflows,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            id_prefix=id_prefix,
            queues=queues,
        )

    def count_runs(self) -> dict[tuple[str, history.RunStatus], int]:
        """See :meth:`fluxo.stores.Store.count_runs`.

        No index keeps runs by status (the claim index holds only what may be
        claimable), so every run's record is read: each bucket's ``created`` index
        is scanned with ``ZSCAN``, a thousand ids at a time, and the workflow and
        status of each batch are read in one pipeline (per node on a cluster). It
        blocks nothing, but costs about two round trips per thousand runs, and
        tens of microseconds of the client's time per run (replies parsed by
        redis-py): seconds for a hundred thousand runs. Runs that change while it
        reads are counted as they stood when read.
        """
        return self._listing.count_runs()

    def purge(
        self,
        *,
        finished_before: float,
        statuses: Collection[history.RunStatus],
        workflows: Collection[str] | None = None,
        limit: int,
        dry_run: bool = False,
    ) -> int:
        """See :meth:`fluxo.stores.Store.purge`.

        The runs created before ``finished_before`` are read oldest first from the
        ``created`` index, a page at a time, until ``limit`` of them may go. Each
        goes in one script on its own keys (which checks again that it has finished
        as wanted); marking before and settling after take its index entries away,
        as for any change of a run.
        """
        return self._listing.purge(
            finished_before=finished_before,
            statuses=statuses,
            workflows=workflows,
            limit=limit,
            dry_run=dry_run,
        )

    # -- queues

    def queued_runs(
        self, queue: str, *, now: float, limit: int
    ) -> tuple[list[history.RunInfo], float | None]:
        """See :meth:`fluxo.stores.Store.queued_runs`.

        One script reads the queue's index (one range per priority present); the
        runs' records, read in one pipeline, are checked against it (see ``_queues``).
        """
        return self._queues.queued_runs(queue, now=now, limit=limit)

    def admit(self, run_ids: Collection[str], *, now: float) -> list[str]:
        """See :meth:`fluxo.stores.Store.admit`.

        A mark per bucket, a script per run, a settle per bucket and a removal per
        queue, each step batched in one pipeline (per node on a cluster).
        """
        return self._queues.admit(run_ids, now=now)

    def read_queue(self, queue: str) -> tuple[int, bytes]:
        return self._queues.read_queue(queue)

    def write_queue(self, queue: str, version: int, state: bytes) -> bool:
        return self._queues.write_queue(queue, version, state)

    # -- change notifications

    def change_token(self, run_id: str | None) -> object:
        self._listener.start()
        return self._feed.token()

    def wait_for_change(
        self,
        run_id: str | None,
        timeout: float,
        since: object = None,
        *,
        ignoring: Container[str] = (),
    ) -> bool:
        self._listener.start()
        return self._feed.wait(self._feed.since(since), timeout, run_id, ignoring=ignoring)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._conn.closed = True
        self._feed.close()
        self._listener.stop()
        self._conn.close()

"""The MongoDB store's class: every operation of the contract on one database.

Atomicity without multi-document transactions: every write that the contract
makes atomic is one single-document update of the run's document (see the
package's docstring); the tails of its history and signals are flushed by
``_tails``, purges done by ``_purge``, workers' beats recorded by ``_workers``,
named queues kept by ``_queues``, and waits served by ``_watch``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, urlsplit

from fluxo import _errors, _redact, history
from fluxo.stores import _headers, _queue_rules, _translate
from fluxo.stores.mongo import _documents, _driver, _purge, _queues, _tails, _watch, _workers

RunStatus = history.RunStatus
Doc = _documents.Doc
T = TypeVar("T")

DEFAULT_DATABASE: Final = "fluxo"
DEFAULT_SERVER_SELECTION_TIMEOUT_MS: Final = 5000

_REJECTED: Final = frozenset({2, 10334, 17419, 17420})
"""Server error codes that refuse the data itself (BadValue, documents over 16 MB)."""
_CAS_ATTEMPTS: Final = 1000


def _parse_url(url: str, database: str | None) -> tuple[str, bool]:
    """The database name, and whether the URL sets its own server selection timeout."""
    parts = urlsplit(url)
    name = database or parts.path.lstrip("/") or DEFAULT_DATABASE
    options = {key.lower() for key in parse_qs(parts.query)}
    return name, "serverselectiontimeoutms" in options


def _classify(exc: BaseException, action: str) -> _translate.Verdict | None:
    """Which Fluxo error a driver's ``exc`` is (see ``fluxo.stores._translate``)."""
    if isinstance(exc, _driver.ConnectionFailure):
        return _errors.StoreUnavailableError, f"MongoDB is unavailable: {exc}"
    if isinstance(exc, (_driver.BSONError, UnicodeEncodeError, OverflowError)):
        # DocumentTooLarge is a BSONError; OverflowError: an int wider than 64 bits
        return _errors.StoreRejectedError, f"MongoDB cannot store this value: {exc}"
    if isinstance(exc, _driver.OperationFailure):
        if exc.code in _REJECTED:
            return _errors.StoreRejectedError, f"MongoDB refused the write: {exc}"
        return _errors.StoreError, f"MongoDB failed: {exc}"
    return None


class MongoStore:
    """The MongoDB :class:`~fluxo.stores.Store`. Thread-safe; share one per process."""

    def __init__(self, url: str, *, database: str | None = None) -> None:
        _driver.require()
        secrets = _redact.secrets_of(url)
        try:
            name, has_timeout = _parse_url(url, database)
            options: dict[str, Any] = {"tz_aware": False}
            if not has_timeout:
                options["serverSelectionTimeoutMS"] = DEFAULT_SERVER_SELECTION_TIMEOUT_MS
            self._client: _driver.pymongo.MongoClient[Doc] = _driver.pymongo.MongoClient(
                url, **options
            )
        except _driver.ConnectionFailure as exc:  # pragma: no cover - the client connects lazily
            unreachable = _translate.wrapped(
                _errors.StoreUnavailableError, f"cannot reach MongoDB: {exc}", exc, secrets
            )
            raise unreachable from unreachable.__cause__
        except (_driver.PyMongoError, ValueError) as exc:  # ValueError: some URLs
            bad = _translate.wrapped(
                _errors.DefinitionError,
                f"bad MongoDB URL {url!r}: {exc}",
                exc,
                secrets,
                advice=_redact.escape_hint(url),
            )
            raise bad from bad.__cause__
        self._name = name
        db = self._client[name]
        self._runs: _driver.Collection[Doc] = db["runs"]
        self._events: _driver.Collection[Doc] = db["events"]
        self._signals: _driver.Collection[Doc] = db["signals"]
        self._tails = _tails.Tails(self._runs, self._events, self._signals)
        self._purge = _purge.Purge(self._runs, self._events, self._signals)
        self._workers = _workers.Workers(db["workers"], self._runs, self._notify)
        self._queues = _queues.Queues(self._runs, db["queues"], self._notify)
        self._watcher = _watch.Watcher(
            self._runs,
            _watch.feed_for((urlsplit(url).netloc, name)),
            f"fluxo-mongo-watch-{name}",
            closed=lambda: self._closed,
            op=self._op,
        )
        self._translated = _translate.Translator(_classify, secrets).guard()
        self._ready = False
        self._ready_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"MongoStore(database={self._name!r})"

    # -- plumbing -------------------------------------------------------------

    @contextmanager
    def _op(self, *, create: bool = False) -> Iterator[None]:
        """Check the store is open, translate driver errors, and with ``create`` make indexes.

        Only ``create_run`` and ``claim`` (and a flush, which needs the unique
        indexes) make the collections and their indexes: a read, or a write to a run
        that cannot exist yet, leaves a database without them as it is.
        """
        if self._closed:
            raise _errors.StoreError("this MongoStore is closed; create a new one")
        with self._translated:
            if create and not self._ready:
                self._ensure_indexes()
            yield

    def _ensure_indexes(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            self._events.create_index([("run_id", 1), ("seq", 1)], unique=True)
            self._signals.create_index([("run_id", 1), ("id", 1)], unique=True)
            self._signals.create_index(
                [("run_id", 1), ("key", 1)],
                unique=True,
                partialFilterExpression={"key": {"$exists": True}},
            )
            self._runs.create_index([("status", 1), ("ready_at", 1), ("created_at", 1)])
            self._runs.create_index([("created_at", -1)])
            self._runs.create_index([("purging", 1)], sparse=True)
            _queues.ensure_indexes(self._runs)
            self._ready = True

    def _notify(self, run_id: str | None = None) -> None:
        self._watcher.changed(run_id)

    def _missing_or(self, run_id: str, check: Callable[[Doc], T]) -> T:
        doc = self._runs.find_one({"_id": run_id, **_documents.LIVE}, _documents.INFO_PROJECTION)
        if doc is None:
            raise _errors.RunNotFoundError(run_id)
        return check(doc)

    def _flush_events(self, run_id: str) -> None:
        self._ensure_indexes()  # the unique (run_id, seq) index makes a flush safe
        self._tails.flush_events(run_id)

    def _flush_signals(self, run_id: str) -> None:
        self._ensure_indexes()
        self._tails.flush_signals(run_id)

    # -- runs -----------------------------------------------------------------

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
        started = [history.WorkflowStarted(workflow, input)]
        doc: Doc = {
            "_id": run_id,
            "workflow": workflow,
            "status": (RunStatus.PENDING if owner is None else RunStatus.RUNNING).value,
            "created_at": now,
            "updated_at": now,
            "lease_owner": owner,
            "lease_until": lease_until if owner is not None else None,
            "cancel_requested": False,
            "wake_requested": False,
            "deadline": deadline,
            "parent": parent,
            "headers": _headers.encode(headers),
            **_queues.new_run(queue, priority, partition, start_at, now),
            "next_seq": 1,
            "ev_base": 0,
            "ev_tail": [_documents.event_entry(e, now) for e in started],
            "tail_bytes": _documents.size(started),
            "sig_next": 1,
            "sig_base": 1,
            "sig_tail": [],
            "sig_keys": [],
        }
        with self._op(create=True):
            for _ in range(_CAS_ATTEMPTS):
                try:
                    self._runs.insert_one(doc)
                    break
                except _driver.DuplicateKeyError:
                    existing = self._runs.find_one({"_id": run_id}, _documents.INFO_PROJECTION)
                    if existing is None:  # purged meanwhile: the id is free again
                        continue
                    if "purging" in existing:  # a purge that stopped half way: finish it
                        self._purge.erase([run_id])
                        continue
                    if existing["workflow"] != workflow:
                        raise _errors.RunIdConflictError(
                            run_id, existing["workflow"], workflow
                        ) from None
                    return _documents.info(existing), False
            else:  # pragma: no cover - would take a thousand lost races
                raise _errors.StoreError(f"could not create run {run_id!r}: too much contention")
        self._notify(run_id)
        return _documents.info(doc), True

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
        count = len(events)
        push: Doc = {
            "$push": {"ev_tail": {"$each": [_documents.event_entry(e, now) for e in events]}},
            "$inc": {"next_seq": count, "tail_bytes": _documents.size(events)},
        }
        fence: Doc = {"_id": run_id, "next_seq": expected_seq}
        if unless_cancel_requested:
            fence["cancel_requested"] = {"$ne": True}  # checked in the same single update
        projection = {"next_seq": 1, "ev_base": 1, "tail_bytes": 1}
        with self._op():
            for _ in range(_CAS_ATTEMPTS):
                if status is None:
                    attempts: list[tuple[Doc, Doc]] = [(fence, push)]
                else:
                    attempts = self._status_updates(fence, push, now, status, ready_at)
                for where, update in attempts:
                    after = self._runs.find_one_and_update(
                        where,
                        update,
                        projection=projection,
                        return_document=_driver.ReturnDocument.AFTER,
                    )
                    if after is not None:
                        break
                else:
                    current = self._runs.find_one(
                        {"_id": run_id}, {"next_seq": 1, "cancel_requested": 1}
                    )
                    if current is None:
                        raise _errors.RunNotFoundError(run_id)
                    if current["next_seq"] != expected_seq:
                        raise _errors.SequenceConflictError(
                            run_id, min(expected_seq, current["next_seq"])
                        )
                    if unless_cancel_requested and current.get("cancel_requested"):
                        raise _errors.CancelPendingError(run_id)
                    continue  # a flag changed between the two attempts: try again
                break
            else:  # pragma: no cover - would take a thousand lost races
                raise _errors.StoreError(f"could not append to run {run_id!r}: too much contention")
            if (
                after["next_seq"] - after["ev_base"] >= _tails.TAIL_EVENTS
                or after["tail_bytes"] >= _tails.TAIL_BYTES
            ):
                self._flush_events(run_id)
        if status is not None:
            self._notify(run_id)

    @staticmethod
    def _status_updates(
        fence: Doc, push: Doc, now: float, status: RunStatus, ready_at: float | None
    ) -> list[tuple[Doc, Doc]]:
        """The conditional updates that append with a status, tried in order."""
        lease = {"lease_owner": None, "lease_until": None, "updated_at": now, "start_at": None}
        plain = {**push, "$set": {"status": status.value, "ready_at": ready_at, **lease}}
        if status is not RunStatus.WAITING:
            return [(fence, plain)]
        quiet = {**fence, "wake_requested": {"$ne": True}}
        woken = {**fence, "wake_requested": True}
        made_ready = {**push, "$set": {"status": RunStatus.PENDING.value, "ready_at": now, **lease}}
        return [(quiet, plain), (woken, made_ready)]

    def load(self, run_id: str) -> history.RunState:
        with self._op():
            doc = self._runs.find_one({"_id": run_id, **_documents.LIVE})
            if doc is None:
                raise _errors.RunNotFoundError(run_id)
            try:
                return self._tails.state(run_id, doc)
            except _errors.HistoryCorruptError:
                raise
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _errors.HistoryCorruptError(
                    run_id, None, f"its document does not parse ({exc!r})", 0
                ) from None

    def get_run(self, run_id: str) -> history.RunInfo:
        with self._op():
            doc = self._runs.find_one(
                {"_id": run_id, **_documents.LIVE}, _documents.INFO_PROJECTION
            )
        if doc is None:
            raise _errors.RunNotFoundError(run_id)
        return _documents.info(doc)

    def get_runs(self, run_ids: Collection[str]) -> dict[str, history.RunInfo]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        with self._op():
            docs = list(
                self._runs.find(
                    {"_id": {"$in": ids}, **_documents.LIVE}, _documents.INFO_PROJECTION
                )
            )
        return {doc["_id"]: _documents.info(doc) for doc in docs}

    # -- claims and leases ----------------------------------------------------

    @staticmethod
    def _no_live_lease(now: float) -> Doc:
        return {"$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}

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
        claimed: list[history.RunInfo] = []
        if limit <= 0 or not workflows or (queues is not None and not queues):
            return claimed
        runnable: Doc = {
            "status": {"$in": _documents.ACTIVE},
            "ready_at": {"$lte": now},
            **self._no_live_lease(now),
        }
        where: Doc = {**runnable, "workflow": {"$in": list(workflows)}}
        if queues is not None:
            where.update(_queues.only(queues))
        update: Doc = {"$set": self._lease_fields(worker_id, now, lease_until)}
        # A run still running is taken over from an execution that never ended: a
        # recovery, counted in the claim, which matches only the status it was read with.
        recovery: Doc = {**update, "$inc": {"recoveries": 1}}
        order = [("ready_at", 1), ("created_at", 1), ("_id", 1)]
        with self._op(create=True):
            # Read a page of candidates, then lease each with a conditional update on
            # its id that re-checks it is still runnable: of two racing claimers only
            # one update matches. A page lost to other claimers is simply read again.
            while len(claimed) < limit:
                wanted = limit - len(claimed)
                candidates = list(
                    self._runs.find(where, {"_id": 1, "status": 1}, sort=order, limit=wanted)
                )
                if not candidates:
                    break
                for candidate in candidates:
                    status = candidate.get("status")
                    doc = self._runs.find_one_and_update(
                        {**runnable, "_id": candidate["_id"], "status": status},
                        recovery if status == RunStatus.RUNNING.value else update,
                        projection=_documents.INFO_PROJECTION,
                        return_document=_driver.ReturnDocument.AFTER,
                    )
                    if doc is not None:
                        claimed.append(_documents.info(doc))
        claimed.sort(key=lambda run: (run.ready_at or 0.0, run.created_at, run.id))
        return claimed

    @staticmethod
    def _lease_fields(worker_id: str, now: float, lease_until: float) -> Doc:
        return {
            "status": RunStatus.RUNNING.value,
            "lease_owner": worker_id,
            "lease_until": lease_until,
            "updated_at": now,
            "wake_requested": False,
        }

    def claim_run(
        self, worker_id: str, run_id: str, *, now: float, lease_until: float
    ) -> history.RunInfo | None:
        where: Doc = {
            "_id": run_id,
            "status": {"$in": _documents.ACTIVE},
            "start_at": None,  # not awaiting admission
            "$or": [
                {"lease_until": None},
                {"lease_until": {"$lt": now}},
                {"lease_owner": worker_id},
            ],
        }
        lease: Doc = {"$set": self._lease_fields(worker_id, now, lease_until)}
        # Still running under another owner: taken over from an execution that never
        # ended, a recovery. Tried second: taking back one's own run is the usual case.
        taken_over: Doc = {"status": RunStatus.RUNNING.value, "lease_owner": {"$ne": worker_id}}
        with self._op():
            doc = self._runs.find_one_and_update(
                {**where, "$nor": [taken_over]},
                lease,
                projection=_documents.INFO_PROJECTION,
                return_document=_driver.ReturnDocument.AFTER,
            )
            if doc is None:
                doc = self._runs.find_one_and_update(
                    {"$and": [where, taken_over]},
                    {**lease, "$inc": {"recoveries": 1}},
                    projection=_documents.INFO_PROJECTION,
                    return_document=_driver.ReturnDocument.AFTER,
                )
        return None if doc is None else _documents.info(doc)

    def next_wake(
        self, workflows: Collection[str], *, now: float, queues: Collection[str] | None = None
    ) -> float | None:
        if not workflows or (queues is not None and not queues):
            return None
        base: Doc = {
            "status": {"$in": _documents.ACTIVE},
            "workflow": {"$in": list(workflows)},
            "ready_at": {"$ne": None},
            **({} if queues is None else _queues.only(queues)),
        }
        times: list[float] = []
        with self._op():
            free = self._runs.find_one(
                {**base, **self._no_live_lease(now)},
                {"ready_at": 1},
                sort=[("ready_at", 1)],
            )
            if free is not None:
                times.append(free["ready_at"])
            leased = self._runs.find(
                {**base, "lease_until": {"$gte": now}}, {"ready_at": 1, "lease_until": 1}
            )
            times.extend(max(doc["ready_at"], doc["lease_until"]) for doc in leased)
        return min(times, default=None)

    def renew(
        self, worker_id: str, run_ids: Collection[str], *, lease_until: float
    ) -> dict[str, bool]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        mine: Doc = {"_id": {"$in": ids}, "lease_owner": worker_id}
        with self._op():
            self._runs.update_many(mine, {"$set": {"lease_until": lease_until}})
            # A lease just extended cannot be claimed by another worker, so what is
            # still ours now is what the update extended (less any run released since).
            docs = list(self._runs.find(mine, {"cancel_requested": 1}))
        return {doc["_id"]: bool(doc.get("cancel_requested", False)) for doc in docs}

    def beat_worker(
        self,
        worker_id: str,
        *,
        now: float,
        alive_until: float,
        reap: bool = True,
        restarted: bool = False,
    ) -> list[str]:
        """See :meth:`fluxo.stores.Store.beat_worker`; the ``workers`` collection (``_workers``)."""
        with self._op():
            return self._workers.beat(
                worker_id, now=now, alive_until=alive_until, reap=reap, restarted=restarted
            )

    def forget_worker(self, worker_id: str) -> None:
        with self._op():
            self._workers.forget(worker_id)

    def release(self, worker_id: str, run_id: str, *, now: float) -> None:
        free = {"lease_owner": None, "lease_until": None, "updated_at": now}
        with self._op():
            done = self._runs.update_one(
                {"_id": run_id, "lease_owner": worker_id, "status": RunStatus.RUNNING.value},
                {"$set": {**free, "status": RunStatus.PENDING.value}},
            )
            if done.matched_count == 0:
                done = self._runs.update_one(
                    {
                        "_id": run_id,
                        "lease_owner": worker_id,
                        "status": {"$ne": RunStatus.RUNNING.value},
                    },
                    {"$set": free},
                )
        if done.matched_count:
            self._notify(run_id)

    # -- signals and control ----------------------------------------------------

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        with self._op():
            for _ in range(_CAS_ATTEMPTS):
                doc = self._runs.find_one(
                    {"_id": run_id, **_documents.LIVE},
                    {"status": 1, "sig_next": 1, "sig_base": 1, "sig_keys": 1},
                )
                if doc is None:
                    raise _errors.RunNotFoundError(run_id)
                status, _ = history.parse_status(doc.get("status"))
                if status.is_terminal:
                    raise _errors.RunStateError(
                        f"run {run_id!r} has finished ({status.value}); a signal sent to it "
                        "would never be read"
                    )
                if key is not None and key in doc["sig_keys"]:
                    return False
                signal_id: int = doc["sig_next"]
                entry: Doc = {
                    "i": signal_id,
                    "n": name,
                    "p": _driver.Binary(bytes(payload)),
                    "t": now,
                }
                fields: Doc = {"wake_requested": True, "updated_at": now}
                if status is RunStatus.WAITING:
                    fields.update(status=RunStatus.PENDING.value, ready_at=now)
                update: Doc = {
                    "$push": {"sig_tail": entry},
                    "$inc": {"sig_next": 1},
                    "$set": fields,
                }
                if key is not None:
                    entry["k"] = key
                    update["$push"]["sig_keys"] = key
                done = self._runs.update_one(
                    {"_id": run_id, "sig_next": signal_id, "status": status.value}, update
                )
                if done.matched_count:
                    break
            else:  # pragma: no cover - would take a thousand lost races
                raise _errors.StoreError(f"could not signal run {run_id!r}: too much contention")
            if signal_id - doc["sig_base"] + 1 >= _tails.TAIL_SIGNALS:
                self._flush_signals(run_id)
        self._notify(run_id)
        return True

    def request_cancel(self, run_id: str, *, now: float) -> history.RunInfo:
        flags = {"cancel_requested": True, "wake_requested": True, "updated_at": now}
        with self._op():
            for _ in range(_CAS_ATTEMPTS):
                doc = self._runs.find_one_and_update(
                    {"_id": run_id, "status": RunStatus.WAITING.value},
                    {"$set": {**flags, "status": RunStatus.PENDING.value, "ready_at": now}},
                    projection=_documents.INFO_PROJECTION,
                    return_document=_driver.ReturnDocument.AFTER,
                )
                if doc is None:
                    doc = self._runs.find_one_and_update(
                        {
                            "_id": run_id,
                            "status": {"$in": [RunStatus.PENDING.value, RunStatus.RUNNING.value]},
                        },
                        {"$set": flags},
                        projection=_documents.INFO_PROJECTION,
                        return_document=_driver.ReturnDocument.AFTER,
                    )
                if doc is not None:
                    break
                doc = self._runs.find_one(
                    {"_id": run_id, **_documents.LIVE}, _documents.INFO_PROJECTION
                )
                if doc is None:
                    raise _errors.RunNotFoundError(run_id)
                if history.parse_status(doc.get("status"))[0].is_terminal:
                    return _documents.info(doc)
            else:  # pragma: no cover - would take a thousand lost races
                raise _errors.StoreError(f"could not cancel run {run_id!r}: too much contention")
        self._notify(run_id)
        return _documents.info(doc)

    def reopen(self, run_id: str, *, now: float) -> history.RunInfo:
        retried = [history.RunRetried()]
        reset: Doc = {
            "status": RunStatus.PENDING.value,
            "updated_at": now,
            "lease_owner": None,
            "lease_until": None,
            "cancel_requested": False,
            "recoveries": 0,
        }
        doc: Doc | None = None
        with self._op():
            # One conditional update per kind of queue: the run's queue never changes,
            # so at most one of them matches (ready now, or awaiting admission again).
            for kind, fields in _queues.reopened(now):
                doc = self._runs.find_one_and_update(
                    {
                        "_id": run_id,
                        "status": {"$in": _documents.REOPENABLE},
                        **_documents.LIVE,
                        **kind,
                    },
                    {
                        "$push": {
                            "ev_tail": {"$each": [_documents.event_entry(e, now) for e in retried]}
                        },
                        "$inc": {"next_seq": 1, "tail_bytes": _documents.size(retried)},
                        "$set": {**reset, **fields},
                    },
                    projection=_documents.INFO_PROJECTION,
                    return_document=_driver.ReturnDocument.AFTER,
                )
                if doc is not None:
                    break
            if doc is None:

                def refuse(found: Doc) -> history.RunInfo:
                    raise _errors.RunStateError(_errors.not_reopenable(run_id, found["status"]))

                return self._missing_or(run_id, refuse)
            if (
                doc["next_seq"] - doc["ev_base"] >= _tails.TAIL_EVENTS
                or doc["tail_bytes"] >= _tails.TAIL_BYTES
            ):
                self._flush_events(run_id)
        self._notify(run_id)
        return _documents.info(doc)

    # -- named queues (``_queues``) ------------------------------------------------

    def queued_runs(
        self, queue: str, *, now: float, limit: int
    ) -> tuple[list[history.RunInfo], float | None]:
        with self._op():
            return self._queues.queued_runs(queue, now=now, limit=limit)

    def admit(self, run_ids: Collection[str], *, now: float) -> list[str]:
        with self._op():
            return self._queues.admit(run_ids, now=now)

    def read_queue(self, queue: str) -> tuple[int, bytes]:
        with self._op():
            return self._queues.read_queue(queue)

    def write_queue(self, queue: str, version: int, state: bytes) -> bool:
        with self._op():
            return self._queues.write_queue(queue, version, state)

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

        ``id_prefix`` is ``{"_id": {"$regex": "^" + re.escape(prefix)}}``: anchored
        and case-sensitive, so the ``_id`` index serves it as a range.
        """
        if limit <= 0 or (queues is not None and not queues):
            return []
        where: Doc = {}
        if id_prefix:
            where["_id"] = {"$regex": "^" + re.escape(id_prefix)}
        if statuses is not None:
            where["status"] = {"$in": [RunStatus(s).value for s in statuses]}
        if workflows is not None:
            where["workflow"] = {"$in": list(workflows)}
        if queues is not None:
            where.update(_queues.only(queues))
        created: Doc = {}
        if created_after is not None:
            created["$gte"] = created_after
        if created_before is not None:
            created["$lt"] = created_before
        if created:
            where["created_at"] = created
        where.update(_documents.LIVE)
        with self._op():
            docs = list(
                self._runs.find(
                    where,
                    _documents.INFO_PROJECTION,
                    sort=[("created_at", -1), ("_id", 1)],
                    limit=limit,
                )
            )
        return [_documents.info(doc) for doc in docs]

    def count_runs(self) -> dict[tuple[str, history.RunStatus], int]:
        """See :meth:`fluxo.stores.Store.count_runs`: one aggregation, grouping every run.

        A scan of the runs' documents; no index holds both their workflow and status.
        """
        pipeline: list[Doc] = [
            {"$match": _documents.LIVE},
            {"$group": {"_id": {"w": "$workflow", "s": "$status"}, "n": {"$sum": 1}}},
        ]
        with self._op():
            groups = list(self._runs.aggregate(pipeline))
        counts: dict[tuple[str, history.RunStatus], int] = {}
        for group in groups:
            # As RunInfo reads them: a damaged status is FAILED, a workflow not text its str().
            workflow, status = group["_id"].get("w"), group["_id"].get("s")
            name = (
                workflow if isinstance(workflow, str) else "" if workflow is None else str(workflow)
            )
            pair = (name, history.parse_status(status)[0])
            counts[pair] = counts.get(pair, 0) + int(group["n"])
        return counts

    # -- retention ---------------------------------------------------------------

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

        Without transactions, a run goes in three steps: one update marks the runs
        chosen ``purging`` (checking again that they finished as wanted), which
        makes them gone for every reader and for ``reopen``; then their events and
        signals are deleted, then the marked documents. A purge that stops half way
        leaves marked documents, which the next purge (or a ``create_run`` of the
        same id) finishes first.
        """
        wanted = sorted({RunStatus(s).value for s in statuses} & set(_documents.FINISHED))
        if limit <= 0 or not wanted or (workflows is not None and not workflows):
            return 0
        with self._op():
            return self._purge.purge(
                finished_before=finished_before,
                wanted=wanted,
                workflows=workflows,
                limit=limit,
                dry_run=dry_run,
            )

    # -- change notification ----------------------------------------------------

    def change_token(self, run_id: str | None) -> object:
        return self._watcher.token(run_id)

    def wait_for_change(
        self,
        run_id: str | None,
        timeout: float,
        since: object = None,
        *,
        ignoring: Container[str] = (),
    ) -> bool:
        return self._watcher.wait(run_id, timeout, since, ignoring=ignoring)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.close()
        self._notify()

"""The MongoDB store's class: every operation of the contract on one database."""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from fluxo import _errors, _redact, history, stores

if TYPE_CHECKING:
    import pymongo
    from pymongo.collection import Collection as MongoCollection

try:
    import pymongo
    from bson.binary import Binary
    from bson.errors import BSONError
    from pymongo import ReturnDocument
    from pymongo.errors import (
        BulkWriteError,
        ConnectionFailure,
        DuplicateKeyError,
        OperationFailure,
        PyMongoError,
    )
except ImportError:  # pragma: no cover - depends on the installation
    _DRIVER_MISSING = True
else:
    _DRIVER_MISSING = False

RunStatus = history.RunStatus
Doc = dict[str, Any]
T = TypeVar("T")

DEFAULT_DATABASE = "fluxo"
DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5000

TAIL_EVENTS = 64
"""Flush a run's history tail into ``events`` once it holds this many events..."""
TAIL_BYTES = 1 << 20
"""...or this many bytes of event data."""
TAIL_SIGNALS = 64
"""Flush a run's signal tail into ``signals`` once it holds this many signals."""

POLL_INTERVAL = 1.0
"""How often ``wait_for_change`` looks for changes made by other processes."""

_ACTIVE = [status.value for status in history.ACTIVE_STATUSES]
_DUPLICATE_KEY = 11000
_REJECTED = frozenset({2, 10334, 17419, 17420})
"""Server error codes that refuse the data itself (BadValue, documents over 16 MB)."""
_CAS_ATTEMPTS = 1000

# Every field but the tails: what RunInfo needs.
_INFO_PROJECTION = {"ev_tail": 0, "sig_tail": 0, "sig_keys": 0}
# A run being purged is gone for readers (see MongoStore.purge).
_LIVE: Doc = {"purging": {"$exists": False}}
_FINISHED = [status.value for status in RunStatus if status.is_terminal]
_PURGE_PAGE = 500


class _Changes:
    """A process-wide change counter for one database, shared by its store instances."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.version = 0

    def bump(self) -> None:
        with self.condition:
            self.version += 1
            self.condition.notify_all()


_changes_lock = threading.Lock()
_changes: weakref.WeakValueDictionary[tuple[str, str], _Changes] = weakref.WeakValueDictionary()


def _changes_for(key: tuple[str, str]) -> _Changes:
    with _changes_lock:
        found = _changes.get(key)
        if found is None:
            found = _changes[key] = _Changes()
        return found


def _info(doc: Mapping[str, Any]) -> history.RunInfo:
    """The run in its document; a damaged field is named in ``damage``, never raised."""
    status, damage = history.parse_status(doc.get("status"))
    problems = [] if damage is None else [damage]

    def time(key: str, required: bool = False) -> float | None:
        value = doc.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if value is not None or required:
            problems.append(f"its stored {key} {value!r} is not a time")
        return None

    def text(key: str) -> str | None:
        value = doc.get(key)
        if value is None or isinstance(value, str):
            return value
        problems.append(f"its stored {key} {value!r} is not text")
        return str(value)

    return history.RunInfo(
        id=doc["_id"],
        workflow=text("workflow") or "",
        status=status,
        created_at=time("created_at", True) or 0.0,
        updated_at=time("updated_at", True) or 0.0,
        ready_at=time("ready_at"),
        lease_owner=text("lease_owner"),
        lease_until=time("lease_until"),
        cancel_requested=bool(doc.get("cancel_requested", False)),
        wake_requested=bool(doc.get("wake_requested", False)),
        deadline=time("deadline"),
        parent=text("parent"),
        damage="; ".join(problems) or None,
    )


def _event_entry(event: history.Event, now: float) -> Doc:
    return {
        "k": event.kind,
        "n": event.name,
        "d": None if event.data is None else Binary(bytes(event.data)),
        "t": now,
    }


def _record(seq: int, entry: Mapping[str, Any]) -> tuple[int, Any, Any, Any]:
    """An event entry as ``(seq, kind, name, data)`` for ``history.read_events`` to check."""
    data = entry.get("d")
    return seq, entry.get("k"), entry.get("n"), bytes(data) if isinstance(data, bytes) else data


def _signal(entry: Mapping[str, Any]) -> history.Signal:
    return history.Signal(int(entry["i"]), entry["n"], bytes(entry["p"]), entry["t"])


def _size(events: Sequence[history.Event]) -> int:
    return sum(len(e.data or b"") + len(e.name) + 32 for e in events)


def _parse_url(url: str, database: str | None) -> tuple[str, bool]:
    """The database name, and whether the URL sets its own server selection timeout."""
    parts = urlsplit(url)
    name = database or parts.path.lstrip("/") or DEFAULT_DATABASE
    options = {key.lower() for key in parse_qs(parts.query)}
    return name, "serverselectiontimeoutms" in options


class MongoStore:
    """The MongoDB :class:`~fluxo.stores.Store`. Thread-safe; share one per process."""

    def __init__(self, url: str, *, database: str | None = None) -> None:
        if _DRIVER_MISSING:
            raise _errors.DefinitionError(
                "the MongoDB store needs the pymongo driver; install it with "
                "pip install 'fluxo[mongo]'"
            )
        self._secrets = _redact.secrets_of(url)
        try:
            name, has_timeout = _parse_url(url, database)
            options: dict[str, Any] = {"tz_aware": False}
            if not has_timeout:
                options["serverSelectionTimeoutMS"] = DEFAULT_SERVER_SELECTION_TIMEOUT_MS
            self._client: pymongo.MongoClient[Doc] = pymongo.MongoClient(url, **options)
        except ConnectionFailure as exc:  # pragma: no cover - the client connects lazily
            raise _errors.StoreUnavailableError(
                f"cannot reach MongoDB: {self._shown(str(exc))}"
            ) from _redact.cause(exc, self._secrets)
        except (PyMongoError, ValueError) as exc:  # pymongo raises ValueError for some URLs
            raise _errors.DefinitionError(
                f"bad MongoDB URL {self._shown(repr(url))}: {self._shown(str(exc))}"
            ) from _redact.cause(exc, self._secrets)
        self._url = url
        self._name = name
        db = self._client[name]
        self._runs: MongoCollection[Doc] = db["runs"]
        self._events: MongoCollection[Doc] = db["events"]
        self._signals: MongoCollection[Doc] = db["signals"]
        self._changes = _changes_for((urlsplit(url).netloc, name))
        self._ready = False
        self._ready_lock = threading.Lock()
        self._closed = False
        self._watcher: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"MongoStore(database={self._name!r})"

    def _shown(self, text: str) -> str:
        """``text`` as a message may show it: the URL's password masked."""
        return _redact.redact(text, self._secrets)

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
        try:
            if create and not self._ready:
                self._ensure_indexes()
            yield
        except ConnectionFailure as exc:
            raise _errors.StoreUnavailableError(
                f"MongoDB is unavailable: {self._shown(str(exc))}"
            ) from _redact.cause(exc, self._secrets)
        except (BSONError, UnicodeEncodeError) as exc:  # DocumentTooLarge is one
            raise _errors.StoreRejectedError(
                f"MongoDB cannot store this value: {self._shown(str(exc))}"
            ) from _redact.cause(exc, self._secrets)
        except OperationFailure as exc:
            error: type[_errors.StoreError] = (
                _errors.StoreRejectedError if exc.code in _REJECTED else _errors.StoreError
            )
            verb = "refused the write" if exc.code in _REJECTED else "failed"
            raise error(f"MongoDB {verb}: {self._shown(str(exc))}") from _redact.cause(
                exc, self._secrets
            )

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
            self._ready = True

    def _notify(self) -> None:
        self._changes.bump()

    def _missing_or(self, run_id: str, check: Callable[[Doc], T]) -> T:
        doc = self._runs.find_one({"_id": run_id, **_LIVE}, _INFO_PROJECTION)
        if doc is None:
            raise _errors.RunNotFoundError(run_id)
        return check(doc)

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
    ) -> tuple[history.RunInfo, bool]:
        started = [history.WorkflowStarted(workflow, input)]
        doc: Doc = {
            "_id": run_id,
            "workflow": workflow,
            "status": (RunStatus.PENDING if owner is None else RunStatus.RUNNING).value,
            "created_at": now,
            "updated_at": now,
            "ready_at": now,
            "lease_owner": owner,
            "lease_until": lease_until if owner is not None else None,
            "cancel_requested": False,
            "wake_requested": False,
            "deadline": deadline,
            "parent": parent,
            "next_seq": 1,
            "ev_base": 0,
            "ev_tail": [_event_entry(e, now) for e in started],
            "tail_bytes": _size(started),
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
                except DuplicateKeyError:
                    existing = self._runs.find_one({"_id": run_id}, _INFO_PROJECTION)
                    if existing is None:  # purged meanwhile: the id is free again
                        continue
                    if "purging" in existing:  # a purge that stopped half way: finish it
                        self._erase([run_id])
                        continue
                    if existing["workflow"] != workflow:
                        raise _errors.RunIdConflictError(
                            run_id, existing["workflow"], workflow
                        ) from None
                    return _info(existing), False
            else:  # pragma: no cover - would take a thousand lost races
                raise _errors.StoreError(f"could not create run {run_id!r}: too much contention")
        self._notify()
        return _info(doc), True

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
            "$push": {"ev_tail": {"$each": [_event_entry(e, now) for e in events]}},
            "$inc": {"next_seq": count, "tail_bytes": _size(events)},
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
                        return_document=ReturnDocument.AFTER,
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
                after["next_seq"] - after["ev_base"] >= TAIL_EVENTS
                or after["tail_bytes"] >= TAIL_BYTES
            ):
                self._flush_events(run_id)
        if status is not None:
            self._notify()

    @staticmethod
    def _status_updates(
        fence: Doc, push: Doc, now: float, status: RunStatus, ready_at: float | None
    ) -> list[tuple[Doc, Doc]]:
        """The conditional updates that append with a status, tried in order."""
        lease = {"lease_owner": None, "lease_until": None, "updated_at": now}
        plain = {**push, "$set": {"status": status.value, "ready_at": ready_at, **lease}}
        if status is not RunStatus.WAITING:
            return [(fence, plain)]
        quiet = {**fence, "wake_requested": {"$ne": True}}
        woken = {**fence, "wake_requested": True}
        made_ready = {**push, "$set": {"status": RunStatus.PENDING.value, "ready_at": now, **lease}}
        return [(quiet, plain), (woken, made_ready)]

    def _flush_events(self, run_id: str) -> None:
        """Move the run's history tail into ``events`` (see the module docstring)."""
        self._ensure_indexes()  # the unique (run_id, seq) index makes a flush safe
        doc = self._runs.find_one({"_id": run_id}, {"ev_tail": 1, "ev_base": 1, "next_seq": 1})
        if doc is None or not doc["ev_tail"]:
            return
        base: int = doc["ev_base"]
        rows = [
            {"run_id": run_id, "seq": base + i, **entry} for i, entry in enumerate(doc["ev_tail"])
        ]
        self._insert_ignoring_duplicates(self._events, rows)
        self._runs.update_one(
            {"_id": run_id, "ev_base": base, "next_seq": doc["next_seq"]},
            {"$set": {"ev_base": doc["next_seq"], "ev_tail": [], "tail_bytes": 0}},
        )

    def _flush_signals(self, run_id: str) -> None:
        """Move the run's signal tail into ``signals``."""
        self._ensure_indexes()
        doc = self._runs.find_one({"_id": run_id}, {"sig_tail": 1, "sig_base": 1, "sig_next": 1})
        if doc is None or not doc["sig_tail"]:
            return
        rows = []
        for entry in doc["sig_tail"]:
            row = {
                "run_id": run_id,
                "id": entry["i"],
                "name": entry["n"],
                "payload": entry["p"],
                "sent_at": entry["t"],
            }
            if entry.get("k") is not None:
                row["key"] = entry["k"]
            rows.append(row)
        self._insert_ignoring_duplicates(self._signals, rows)
        self._runs.update_one(
            {"_id": run_id, "sig_base": doc["sig_base"], "sig_next": doc["sig_next"]},
            {"$set": {"sig_base": doc["sig_next"], "sig_tail": []}},
        )

    @staticmethod
    def _insert_ignoring_duplicates(collection: MongoCollection[Doc], rows: list[Doc]) -> None:
        try:
            collection.insert_many(rows, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != _DUPLICATE_KEY for error in errors) or not errors:
                raise

    def load(self, run_id: str) -> history.RunState:
        with self._op():
            doc = self._runs.find_one({"_id": run_id, **_LIVE})
            if doc is None:
                raise _errors.RunNotFoundError(run_id)
            try:
                return self._state(run_id, doc)
            except _errors.HistoryCorruptError:
                raise
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _errors.HistoryCorruptError(
                    run_id, None, f"its document does not parse ({exc!r})", 0
                ) from None

    def _state(self, run_id: str, doc: Doc) -> history.RunState:
        """The run, history and signals of ``load``, from the run's document and the rest."""
        base: int = doc["ev_base"]
        flushed = list(
            self._events.find({"run_id": run_id, "seq": {"$lt": base}}, sort=[("seq", 1)])
            if base > 0
            else ()
        )
        records = [_record(row["seq"], row) for row in flushed]
        records += [_record(base + i, entry) for i, entry in enumerate(doc["ev_tail"])]
        events = history.read_events(run_id, records, next_seq=doc["next_seq"])
        run = _info(doc)
        if run.damage is not None:
            raise _errors.HistoryCorruptError(run_id, None, run.damage, len(events))
        # An event kept without its time reports the run's creation, a lower bound.
        recorded_at = [entry.get("t", run.created_at) for entry in (*flushed, *doc["ev_tail"])]
        signals: list[history.Signal] = []
        if doc["sig_base"] > 1:
            rows = self._signals.find(
                {"run_id": run_id, "id": {"$lt": doc["sig_base"]}}, sort=[("id", 1)]
            )
            signals.extend(
                history.Signal(int(r["id"]), r["name"], bytes(r["payload"]), r["sent_at"])
                for r in rows
            )
        signals.extend(_signal(entry) for entry in doc["sig_tail"])
        return history.RunState(run, events, tuple(signals), tuple(recorded_at))

    def get_run(self, run_id: str) -> history.RunInfo:
        with self._op():
            doc = self._runs.find_one({"_id": run_id, **_LIVE}, _INFO_PROJECTION)
        if doc is None:
            raise _errors.RunNotFoundError(run_id)
        return _info(doc)

    def get_runs(self, run_ids: Collection[str]) -> dict[str, history.RunInfo]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        with self._op():
            docs = list(self._runs.find({"_id": {"$in": ids}, **_LIVE}, _INFO_PROJECTION))
        return {doc["_id"]: _info(doc) for doc in docs}

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
    ) -> list[history.RunInfo]:
        claimed: list[history.RunInfo] = []
        if limit <= 0 or not workflows:
            return claimed
        runnable: Doc = {
            "status": {"$in": _ACTIVE},
            "ready_at": {"$lte": now},
            **self._no_live_lease(now),
        }
        where: Doc = {**runnable, "workflow": {"$in": list(workflows)}}
        update = {"$set": self._lease_fields(worker_id, now, lease_until)}
        order = [("ready_at", 1), ("created_at", 1), ("_id", 1)]
        with self._op(create=True):
            # Read a page of candidates, then lease each with a conditional update on
            # its id that re-checks it is still runnable: of two racing claimers only
            # one update matches. A page lost to other claimers is simply read again.
            while len(claimed) < limit:
                wanted = limit - len(claimed)
                candidates = list(self._runs.find(where, {"_id": 1}, sort=order, limit=wanted))
                if not candidates:
                    break
                for candidate in candidates:
                    doc = self._runs.find_one_and_update(
                        {"_id": candidate["_id"], **runnable},
                        update,
                        projection=_INFO_PROJECTION,
                        return_document=ReturnDocument.AFTER,
                    )
                    if doc is not None:
                        claimed.append(_info(doc))
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
            "status": {"$in": _ACTIVE},
            "$or": [
                {"lease_until": None},
                {"lease_until": {"$lt": now}},
                {"lease_owner": worker_id},
            ],
        }
        with self._op():
            doc = self._runs.find_one_and_update(
                where,
                {"$set": self._lease_fields(worker_id, now, lease_until)},
                projection=_INFO_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
        return None if doc is None else _info(doc)

    def next_wake(self, workflows: Collection[str], *, now: float) -> float | None:
        if not workflows:
            return None
        base: Doc = {
            "status": {"$in": _ACTIVE},
            "workflow": {"$in": list(workflows)},
            "ready_at": {"$ne": None},
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
            self._notify()

    # -- signals and control ----------------------------------------------------

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        with self._op():
            for _ in range(_CAS_ATTEMPTS):
                doc = self._runs.find_one(
                    {"_id": run_id, **_LIVE},
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
                entry: Doc = {"i": signal_id, "n": name, "p": Binary(bytes(payload)), "t": now}
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
            if signal_id - doc["sig_base"] + 1 >= TAIL_SIGNALS:
                self._flush_signals(run_id)
        self._notify()
        return True

    def request_cancel(self, run_id: str, *, now: float) -> history.RunInfo:
        flags = {"cancel_requested": True, "wake_requested": True, "updated_at": now}
        with self._op():
            for _ in range(_CAS_ATTEMPTS):
                doc = self._runs.find_one_and_update(
                    {"_id": run_id, "status": RunStatus.WAITING.value},
                    {"$set": {**flags, "status": RunStatus.PENDING.value, "ready_at": now}},
                    projection=_INFO_PROJECTION,
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    doc = self._runs.find_one_and_update(
                        {
                            "_id": run_id,
                            "status": {"$in": [RunStatus.PENDING.value, RunStatus.RUNNING.value]},
                        },
                        {"$set": flags},
                        projection=_INFO_PROJECTION,
                        return_document=ReturnDocument.AFTER,
                    )
                if doc is not None:
                    break
                doc = self._runs.find_one({"_id": run_id, **_LIVE}, _INFO_PROJECTION)
                if doc is None:
                    raise _errors.RunNotFoundError(run_id)
                if history.parse_status(doc.get("status"))[0].is_terminal:
                    return _info(doc)
            else:  # pragma: no cover - would take a thousand lost races
                raise _errors.StoreError(f"could not cancel run {run_id!r}: too much contention")
        self._notify()
        return _info(doc)

    def reopen(self, run_id: str, *, now: float) -> history.RunInfo:
        retried = [history.RunRetried()]
        with self._op():
            doc = self._runs.find_one_and_update(
                {"_id": run_id, "status": RunStatus.FAILED.value, **_LIVE},
                {
                    "$push": {"ev_tail": {"$each": [_event_entry(e, now) for e in retried]}},
                    "$inc": {"next_seq": 1, "tail_bytes": _size(retried)},
                    "$set": {
                        "status": RunStatus.PENDING.value,
                        "ready_at": now,
                        "updated_at": now,
                        "lease_owner": None,
                        "lease_until": None,
                        "cancel_requested": False,
                    },
                },
                projection=_INFO_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:

                def refuse(found: Doc) -> history.RunInfo:
                    raise _errors.RunStateError(
                        f"run {run_id!r} is {found['status']}, not failed; only a failed run "
                        "can be retried"
                    )

                return self._missing_or(run_id, refuse)
            if doc["next_seq"] - doc["ev_base"] >= TAIL_EVENTS or doc["tail_bytes"] >= TAIL_BYTES:
                self._flush_events(run_id)
        self._notify()
        return _info(doc)

    def list_runs(
        self,
        *,
        statuses: Collection[history.RunStatus] | None = None,
        workflows: Collection[str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
    ) -> list[history.RunInfo]:
        if limit <= 0:
            return []
        where: Doc = {}
        if statuses is not None:
            where["status"] = {"$in": [RunStatus(s).value for s in statuses]}
        if workflows is not None:
            where["workflow"] = {"$in": list(workflows)}
        created: Doc = {}
        if created_after is not None:
            created["$gte"] = created_after
        if created_before is not None:
            created["$lt"] = created_before
        if created:
            where["created_at"] = created
        where.update(_LIVE)
        with self._op():
            docs = list(
                self._runs.find(
                    where,
                    _INFO_PROJECTION,
                    sort=[("created_at", -1), ("_id", 1)],
                    limit=limit,
                )
            )
        return [_info(doc) for doc in docs]

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
        wanted = sorted({RunStatus(s).value for s in statuses} & set(_FINISHED))
        if limit <= 0 or not wanted or (workflows is not None and not workflows):
            return 0
        finished: Doc = {
            "status": {"$in": wanted},
            "created_at": {"$lt": finished_before},
            "updated_at": {"$lt": finished_before},
            **_LIVE,
        }
        if workflows is not None:
            finished["workflow"] = {"$in": list(workflows)}
        with self._op():
            if not dry_run:
                left = [
                    doc["_id"]
                    for doc in self._runs.find({"purging": {"$exists": True}}, {"_id": 1})
                ]
                if left:
                    self._erase(left)
            chosen: list[str] = []
            cursor = self._runs.find(
                finished, {"_id": 1, "parent": 1, "status": 1}, batch_size=_PURGE_PAGE
            )
            try:
                page: list[Doc] = []
                for doc in cursor:
                    page.append(doc)
                    if len(page) == _PURGE_PAGE:
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
            self._runs.update_many(
                {**finished, "_id": {"$in": chosen}}, {"$set": {"purging": token}}
            )
            marked = [
                doc["_id"] for doc in self._runs.find({"_id": {"$in": chosen}, "purging": token})
            ]
            if marked:
                self._erase(marked)
        return len(marked)

    def _deletable(self, docs: Sequence[Doc]) -> list[str]:
        """The ids of the runs a purge may delete, of these finished ones (in order)."""
        parents = sorted({doc["parent"] for doc in docs if doc.get("parent") is not None})
        keeping = [status.value for status in stores.KEEPING_PARENTS]
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

    def _erase(self, run_ids: list[str]) -> None:
        """Delete the events, signals and documents of runs marked ``purging``."""
        self._events.delete_many({"run_id": {"$in": run_ids}})
        self._signals.delete_many({"run_id": {"$in": run_ids}})
        self._runs.delete_many({"_id": {"$in": run_ids}, "purging": {"$exists": True}})

    # -- change notification ----------------------------------------------------

    def _fingerprint(self, run_id: str | None) -> object:
        """A cheap summary of the data that changes whenever a run does."""
        if run_id is not None:
            doc = self._runs.find_one({"_id": run_id}, _INFO_PROJECTION)
            return None if doc is None else tuple(sorted(doc.items()))
        latest = self._runs.find_one({}, {"updated_at": 1}, sort=[("updated_at", -1)])
        count = self._runs.estimated_document_count()
        return (count, None if latest is None else (latest["_id"], latest["updated_at"]))

    def _start_watching(self) -> None:
        """Start following the ``runs`` change stream, if not yet (see :meth:`_watch`)."""
        if self._watcher is not None or self._closed:
            return
        with self._ready_lock:
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, name=f"fluxo-mongo-watch-{self._name}", daemon=True
                )
                self._watcher.start()

    def _watch(self) -> None:
        """Turn the changes other processes make into wake-ups of this process's waiters.

        Every write to a run's document is a change the contract may wake a waiter
        for, so following the ``runs`` collection's change stream is enough. A
        server without change streams (a standalone ``mongod``) refuses the watch:
        waiters then rely on :meth:`wait_for_change`'s poll alone.
        """
        try:
            with self._runs.watch(max_await_time_ms=500) as stream:
                while not self._closed and stream.alive:
                    if stream.try_next() is not None:
                        self._notify()
        except Exception:  # closed underneath us, or no change streams: the poll remains
            return

    def change_token(self, run_id: str | None) -> object:
        self._start_watching()
        version = self._changes.version
        if self._closed:
            return (version, None)
        with self._op():
            return (version, self._fingerprint(run_id))

    def wait_for_change(self, run_id: str | None, timeout: float, since: object = None) -> bool:
        self._start_watching()
        deadline = time.monotonic() + max(timeout, 0.0)
        if isinstance(since, tuple) and len(since) == 2:
            version, fingerprint = since
            if self._closed:
                return True
            with self._op():
                if self._fingerprint(run_id) != fingerprint:
                    return True
        else:
            version = self._changes.version
            if self._closed:
                return True
            with self._op():
                fingerprint = self._fingerprint(run_id)
        condition = self._changes.condition
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with condition:
                if condition.wait_for(
                    lambda: self._changes.version != version or self._closed,
                    min(remaining, POLL_INTERVAL),
                ):
                    return True
            if time.monotonic() >= deadline:
                return False
            with self._op():
                if self._fingerprint(run_id) != fingerprint:
                    return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.close()
        self._notify()

"""A store on Redis (``redis://host:port/db?prefix=myapp``), built on Lua scripts.

Layout. Every key starts with the prefix (``fluxo`` unless the URL's ``prefix``
query parameter or the ``prefix=`` argument says otherwise). The keys of one run
share the hash tag ``{run_id}``:

* ``P:{id}:run``: a hash, the run's record (times as ``repr`` of the float, so
  they round-trip exactly);
* ``P:{id}:events``: a list, the history, one event per item;
* ``P:{id}:signals``: a list, the signals, oldest first;
* ``P:{id}:signal_keys``: a set, the idempotency keys of the signals.

Beside them, global indexes: ``P:ready:<workflow>`` (a sorted set of the active,
unleased runs with a ``ready_at``, scored by it), ``P:leased:<workflow>`` (the
leased runs, scored by ``lease_until``), ``P:created`` (every run, scored by
``created_at``, for :meth:`RedisStore.list_runs`) and ``P:signal_id`` (the
counter that numbers signals). Each operation is one Lua script (loaded once,
called by SHA), so it is atomic; the hot path, appending events without a status
change, is a single script call: one round trip.

Events are stored as ``kind NUL name-length NUL name flag data``, where the flag
is ``N`` for no data and ``D`` before the data bytes: binary-safe, byte-exact.

Redis Cluster. The per-run keys already share one slot. The scripts that change
a run's status also update the global indexes, which live in other slots, so as
written the store needs a single Redis node (or a primary with replicas). To
shard, the indexes would be split into a fixed number of buckets, each tagged
with its bucket (``P:ready:<workflow>:{b7}``) and a run's entry kept in the bucket
of a hash of its id; the status change would then move the index entry in a
second, idempotent step (or the index be rebuilt from the runs by a sweeper),
and claims would visit the buckets in turn.

Durability. Redis acknowledges a write once it is in memory; what survives a
crash of the server depends on its persistence settings:

* ``appendonly no`` (RDB snapshots only): everything since the last snapshot is
  lost, minutes of runs. Not suitable for durable workflows.
* ``appendonly yes`` + ``appendfsync everysec`` (recommended): at most about one
  second of acknowledged writes is lost if the *machine* crashes (a crash of the
  Redis process alone loses nothing). A lost append looks to Fluxo like a step
  that never recorded: it runs again, which steps allow (at-least-once).
* ``appendonly yes`` + ``appendfsync always``: every write is fsynced before it is
  acknowledged: no loss, at the price of one fsync per write.

Replication is asynchronous: a failover to a replica may lose the last writes
unless ``WAIT`` or ``min-replicas-to-write`` is used. ``maxmemory-policy`` must be
``noeviction``: an evicted key is a lost run.

Change notifications are pushed: every script that changes a run's status
publishes the run id on ``P:changes``; a background thread (started on the first
:meth:`RedisStore.wait_for_change` or :meth:`RedisStore.change_token`) listens
and wakes the waiters of this process.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fluxo import _errors, history

try:
    import redis as _redis
    from redis import exceptions as _redis_errors
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise _errors.DefinitionError(
        "the Redis store needs the redis package; pip install 'fluxo[redis]'"
    ) from exc

RunStatus = history.RunStatus

DEFAULT_PREFIX = "fluxo"

_T = TypeVar("_T")

_ACTIVE = {status.value for status in history.ACTIVE_STATUSES}

# -- Lua ----------------------------------------------------------------------

# Shared by every script: key names and the upkeep of the global indexes.
_PRELUDE = """
local P = ARGV[1]
local function runkey(id) return P .. ':{' .. id .. '}:run' end
local function active(status)
  return status == 'pending' or status == 'running' or status == 'waiting'
end
-- Put the run in the index its record calls for (ready, leased or none).
local function reindex(id)
  local key = runkey(id)
  local f = redis.call('HMGET', key, 'wf', 'status', 'ready', 'lease')
  local ready_key = P .. ':ready:' .. f[1]
  local leased_key = P .. ':leased:' .. f[1]
  redis.call('ZREM', ready_key, id)
  redis.call('ZREM', leased_key, id)
  if not active(f[2]) then return end
  if f[4] then
    redis.call('ZADD', leased_key, f[4], id)
  elseif f[3] then
    redis.call('ZADD', ready_key, f[3], id)
  end
end
local function changed(id)
  redis.call('PUBLISH', P .. ':changes', id)
end
"""

# ARGV: prefix, id, workflow, first event, now, owner, lease_until, deadline
_CREATE_RUN = (
    _PRELUDE
    + """
local id = ARGV[2]
local key = runkey(id)
local wf = redis.call('HGET', key, 'wf')
if wf then
  if wf ~= ARGV[3] then return {'conflict', wf} end
  return {'exists', redis.call('HGETALL', key)}
end
local now = ARGV[5]
local status = 'pending'
if ARGV[6] ~= '' then status = 'running' end
redis.call('HSET', key, 'wf', ARGV[3], 'status', status, 'created', now, 'updated', now,
  'ready', now, 'cancel', '0', 'wake', '0')
if ARGV[6] ~= '' then
  redis.call('HSET', key, 'owner', ARGV[6])
  if ARGV[7] ~= '' then redis.call('HSET', key, 'lease', ARGV[7]) end
end
if ARGV[8] ~= '' then redis.call('HSET', key, 'deadline', ARGV[8]) end
redis.call('RPUSH', P .. ':{' .. id .. '}:events', ARGV[4])
redis.call('ZADD', P .. ':created', now, id)
reindex(id)
changed(id)
return {'created', redis.call('HGETALL', key)}
"""
)

# ARGV: prefix, id, expected_seq, now, status or '', ready_at or '', events...
_APPEND = (
    _PRELUDE
    + """
local id = ARGV[2]
local events = P .. ':{' .. id .. '}:events'
local n = redis.call('LLEN', events)
if n == 0 then return {1} end
if tonumber(ARGV[3]) ~= n then return {2, n} end
local i = 7
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('RPUSH', events, unpack(ARGV, i, last))
  i = last + 1
end
local status = ARGV[5]
if status ~= '' then
  local key = runkey(id)
  local now = ARGV[4]
  local ready = ARGV[6]
  if status == 'waiting' then
    local f = redis.call('HMGET', key, 'wake', 'cancel')
    if f[1] == '1' or f[2] == '1' then
      status = 'pending'
      ready = now
    end
  end
  redis.call('HSET', key, 'status', status, 'updated', now)
  if ready == '' then
    redis.call('HDEL', key, 'ready')
  else
    redis.call('HSET', key, 'ready', ready)
  end
  redis.call('HDEL', key, 'owner', 'lease')
  reindex(id)
  changed(id)
end
return {0}
"""
)

# ARGV: prefix, worker, now, lease_until, limit, workflows...
_CLAIM = (
    _PRELUDE
    + """
local worker, now, lease_until = ARGV[2], ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
local t = tonumber(now)
local found = {}
for w = 6, #ARGV do
  local wf = ARGV[w]
  local ready = redis.call('ZRANGEBYSCORE', P .. ':ready:' .. wf, '-inf', now,
    'WITHSCORES', 'LIMIT', 0, limit)
  for j = 1, #ready, 2 do
    found[#found + 1] = {id = ready[j], at = tonumber(ready[j + 1])}
  end
  -- runs whose lease expired (lease_until < now)
  local expired = redis.call('ZRANGEBYSCORE', P .. ':leased:' .. wf, '-inf', '(' .. now)
  for j = 1, #expired do
    local at = redis.call('HGET', runkey(expired[j]), 'ready')
    if at and tonumber(at) <= t then
      found[#found + 1] = {id = expired[j], at = tonumber(at)}
    end
  end
end
for j = 1, #found do
  found[j].created = tonumber(redis.call('HGET', runkey(found[j].id), 'created'))
end
table.sort(found, function(a, b)
  if a.at ~= b.at then return a.at < b.at end
  if a.created ~= b.created then return a.created < b.created end
  return a.id < b.id
end)
local out = {}
for j = 1, math.min(limit, #found) do
  local id = found[j].id
  local key = runkey(id)
  redis.call('HSET', key, 'status', 'running', 'owner', worker, 'lease', lease_until,
    'updated', now, 'wake', '0')
  reindex(id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', key)
end
return out
"""
)

# ARGV: prefix, worker, id, now, lease_until
_CLAIM_RUN = (
    _PRELUDE
    + """
local worker, id, now = ARGV[2], ARGV[3], ARGV[4]
local key = runkey(id)
local f = redis.call('HMGET', key, 'status', 'owner', 'lease')
if not f[1] or not active(f[1]) then return false end
if f[3] and tonumber(f[3]) >= tonumber(now) and f[2] ~= worker then return false end
redis.call('HSET', key, 'status', 'running', 'owner', worker, 'lease', ARGV[5],
  'updated', now, 'wake', '0')
reindex(id)
return redis.call('HGETALL', key)
"""
)

# ARGV: prefix, now, workflows...
_NEXT_WAKE = (
    _PRELUDE
    + """
local t = tonumber(ARGV[2])
local best, best_s = nil, false
local function consider(v, s)
  if best == nil or v < best then best, best_s = v, s end
end
for w = 3, #ARGV do
  local wf = ARGV[w]
  local first = redis.call('ZRANGE', P .. ':ready:' .. wf, 0, 0, 'WITHSCORES')
  if #first > 0 then consider(tonumber(first[2]), first[2]) end
  local leased = redis.call('ZRANGE', P .. ':leased:' .. wf, 0, -1, 'WITHSCORES')
  for j = 1, #leased, 2 do
    local lease_s = leased[j + 1]
    local lease = tonumber(lease_s)
    if lease >= t and best ~= nil and lease >= best then break end
    local ready_s = redis.call('HGET', runkey(leased[j]), 'ready')
    if ready_s then
      local ready = tonumber(ready_s)
      if lease >= t and lease > ready then
        consider(lease, lease_s)
      else
        consider(ready, ready_s)
      end
    end
  end
end
return best_s
"""
)

# ARGV: prefix, id, name-and-payload suffix, now, key or '', has key ('1'/'0')
_SEND_SIGNAL = (
    _PRELUDE
    + """
local id = ARGV[2]
local key = runkey(id)
local status = redis.call('HGET', key, 'status')
if not status then return {1} end
if not active(status) then return {2, status} end
if ARGV[6] == '1' then
  if redis.call('SADD', P .. ':{' .. id .. '}:signal_keys', ARGV[5]) == 0 then return {3} end
end
local n = redis.call('INCR', P .. ':signal_id')
redis.call('RPUSH', P .. ':{' .. id .. '}:signals', string.format('%d', n) .. '\\0' .. ARGV[3])
local now = ARGV[4]
if status == 'waiting' then
  redis.call('HSET', key, 'status', 'pending', 'ready', now)
end
redis.call('HSET', key, 'wake', '1', 'updated', now)
reindex(id)
changed(id)
return {0}
"""
)

# ARGV: prefix, worker, lease_until, ids...
_RENEW = (
    _PRELUDE
    + """
local worker, lease_until = ARGV[2], ARGV[3]
local out = {}
for j = 4, #ARGV do
  local id = ARGV[j]
  local key = runkey(id)
  local f = redis.call('HMGET', key, 'owner', 'cancel')
  if f[1] and f[1] == worker then
    redis.call('HSET', key, 'lease', lease_until)
    reindex(id)
    out[#out + 1] = id
    out[#out + 1] = f[2]
  end
end
return out
"""
)

# ARGV: prefix, worker, id, now
_RELEASE = (
    _PRELUDE
    + """
local worker, id, now = ARGV[2], ARGV[3], ARGV[4]
local key = runkey(id)
local f = redis.call('HMGET', key, 'owner', 'status')
if not f[1] or f[1] ~= worker then return 0 end
if f[2] == 'running' then redis.call('HSET', key, 'status', 'pending') end
redis.call('HDEL', key, 'owner', 'lease')
redis.call('HSET', key, 'updated', now)
reindex(id)
changed(id)
return 1
"""
)

# ARGV: prefix, id, now
_REQUEST_CANCEL = (
    _PRELUDE
    + """
local id, now = ARGV[2], ARGV[3]
local key = runkey(id)
local status = redis.call('HGET', key, 'status')
if not status then return false end
if active(status) then
  if status == 'waiting' then
    redis.call('HSET', key, 'status', 'pending', 'ready', now)
  end
  redis.call('HSET', key, 'cancel', '1', 'wake', '1', 'updated', now)
  reindex(id)
  changed(id)
end
return redis.call('HGETALL', key)
"""
)

# ARGV: prefix, id, now, RunRetried event
_REOPEN = (
    _PRELUDE
    + """
local id, now = ARGV[2], ARGV[3]
local key = runkey(id)
local status = redis.call('HGET', key, 'status')
if not status then return {1} end
if status ~= 'failed' then return {2, status} end
redis.call('RPUSH', P .. ':{' .. id .. '}:events', ARGV[4])
redis.call('HSET', key, 'status', 'pending', 'ready', now, 'updated', now, 'cancel', '0')
redis.call('HDEL', key, 'owner', 'lease')
reindex(id)
changed(id)
return {0, redis.call('HGETALL', key)}
"""
)


# -- encoding -----------------------------------------------------------------


def _num(value: float) -> str:
    """A time as text that parses back to exactly the same float."""
    return repr(float(value))


def _opt(value: float | None) -> str:
    return "" if value is None else _num(value)


def encode_event(event: history.Event) -> bytes:
    """``kind NUL len(name) NUL name`` then ``N`` (no data) or ``D`` and the data."""
    name = event.name.encode("utf-8")
    head = b"%s\x00%d\x00%s" % (event.kind.encode("ascii"), len(name), name)
    return head + (b"N" if event.data is None else b"D" + event.data)


def decode_event(raw: bytes) -> history.Event:
    """Rebuild an event from :func:`encode_event`'s bytes."""
    kind_end = raw.index(b"\x00")
    len_end = raw.index(b"\x00", kind_end + 1)
    start = len_end + 1
    end = start + int(raw[kind_end + 1 : len_end])
    name = raw[start:end].decode("utf-8")
    data = None if raw[end : end + 1] == b"N" else raw[end + 1 :]
    return history.event_from_record(raw[:kind_end].decode("ascii"), name, data)


def _signal_suffix(name: str, payload: bytes, now: float) -> bytes:
    """What follows ``id NUL`` in a stored signal: ``sent_at NUL len NUL name payload``."""
    encoded = name.encode("utf-8")
    return b"%s\x00%d\x00%s%s" % (_num(now).encode("ascii"), len(encoded), encoded, payload)


def decode_signal(raw: bytes) -> history.Signal:
    """Rebuild a signal stored as ``id NUL sent_at NUL len NUL name payload``."""
    id_end = raw.index(b"\x00")
    at_end = raw.index(b"\x00", id_end + 1)
    len_end = raw.index(b"\x00", at_end + 1)
    start = len_end + 1
    end = start + int(raw[at_end + 1 : len_end])
    return history.Signal(
        id=int(raw[:id_end]),
        name=raw[start:end].decode("utf-8"),
        payload=raw[end:],
        sent_at=float(raw[id_end + 1 : at_end]),
    )


def _fields(flat: Any) -> dict[bytes, bytes]:
    """A hash as HGETALL returns it (a dict, or a flat list from a script)."""
    if isinstance(flat, dict):
        return flat
    items: list[bytes] = list(flat)
    return dict(zip(items[::2], items[1::2], strict=True))


def _opt_float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _run_info(run_id: str, fields: dict[bytes, bytes]) -> history.RunInfo:
    owner = fields.get(b"owner")
    return history.RunInfo(
        id=run_id,
        workflow=fields[b"wf"].decode("utf-8"),
        status=RunStatus(fields[b"status"].decode("ascii")),
        created_at=float(fields[b"created"]),
        updated_at=float(fields[b"updated"]),
        ready_at=_opt_float(fields.get(b"ready")),
        lease_owner=None if owner is None else owner.decode("utf-8"),
        lease_until=_opt_float(fields.get(b"lease")),
        cancel_requested=fields.get(b"cancel") == b"1",
        wake_requested=fields.get(b"wake") == b"1",
        deadline=_opt_float(fields.get(b"deadline")),
    )


def split_url(url: str, prefix: str | None = None) -> tuple[str, str]:
    """Return the URL without its ``prefix`` query parameter, and the key prefix to use."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    from_url = [value for key, value in query if key == "prefix"]
    rest = [(key, value) for key, value in query if key != "prefix"]
    chosen = prefix if prefix is not None else (from_url[-1] if from_url else DEFAULT_PREFIX)
    if not chosen:
        raise _errors.DefinitionError("the Redis key prefix must not be empty")
    return urlunsplit(parts._replace(query=urlencode(rest))), chosen


# -- the store ----------------------------------------------------------------


class RedisStore:
    """The Redis :class:`~fluxo.stores.Store`. Thread-safe; share one per process."""

    def __init__(self, url: str, *, prefix: str | None = None) -> None:
        self._url, self._prefix = split_url(url, prefix)
        try:
            self._client: Any = _redis.Redis.from_url(self._url)
        except ValueError as exc:
            raise _errors.DefinitionError(f"bad Redis URL {url!r}: {exc}") from exc
        register = self._client.register_script
        self._create_run = register(_CREATE_RUN)
        self._append = register(_APPEND)
        self._claim = register(_CLAIM)
        self._claim_run = register(_CLAIM_RUN)
        self._next_wake = register(_NEXT_WAKE)
        self._send_signal = register(_SEND_SIGNAL)
        self._renew = register(_RENEW)
        self._release = register(_RELEASE)
        self._request_cancel = register(_REQUEST_CANCEL)
        self._reopen = register(_REOPEN)
        self._channel = f"{self._prefix}:changes"
        self._stop_message = f"stop:{uuid.uuid4().hex}".encode()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._listener: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r})"

    # -- plumbing

    def _key(self, run_id: str, what: str) -> str:
        return f"{self._prefix}:{{{run_id}}}:{what}"

    @contextmanager
    def _guard(self) -> Iterator[None]:
        if self._closed:
            raise _errors.StoreError("this RedisStore is closed; create a new one")
        try:
            yield
        except (_redis_errors.ConnectionError, _redis_errors.TimeoutError) as exc:
            raise _errors.StoreUnavailableError(f"Redis is unavailable: {exc}") from exc

    def _call(self, script: Callable[..., _T], args: Sequence[Any]) -> _T:
        with self._guard():
            return script(keys=[], args=[self._prefix, *args])

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
    ) -> tuple[history.RunInfo, bool]:
        outcome, value = self._call(
            self._create_run,
            [
                run_id,
                workflow,
                encode_event(history.WorkflowStarted(workflow, input)),
                _num(now),
                owner or "",
                _opt(lease_until) if owner else "",
                _opt(deadline),
            ],
        )
        if outcome == b"conflict":
            raise _errors.RunIdConflictError(run_id, value.decode("utf-8"), workflow)
        return _run_info(run_id, _fields(value)), outcome == b"created"

    def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[history.Event],
        *,
        now: float,
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
    ) -> None:
        result = self._call(
            self._append,
            [
                run_id,
                int(expected_seq),
                _num(now),
                "" if status is None else RunStatus(status).value,
                _opt(ready_at),
                *(encode_event(event) for event in events),
            ],
        )
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        if result[0] == 2:
            raise _errors.SequenceConflictError(run_id, min(expected_seq, int(result[1])))

    def load(self, run_id: str) -> history.RunState:
        with self._guard():
            pipe = self._client.pipeline(transaction=True)
            pipe.hgetall(self._key(run_id, "run"))
            pipe.lrange(self._key(run_id, "events"), 0, -1)
            pipe.lrange(self._key(run_id, "signals"), 0, -1)
            fields, events, signals = pipe.execute()
        if not fields:
            raise _errors.RunNotFoundError(run_id)
        return history.RunState(
            _run_info(run_id, fields),
            tuple(decode_event(raw) for raw in events),
            tuple(decode_signal(raw) for raw in signals),
        )

    def get_run(self, run_id: str) -> history.RunInfo:
        with self._guard():
            fields = self._client.hgetall(self._key(run_id, "run"))
        if not fields:
            raise _errors.RunNotFoundError(run_id)
        return _run_info(run_id, fields)

    # -- claims and leases

    def claim(
        self,
        worker_id: str,
        workflows: Collection[str],
        *,
        now: float,
        lease_until: float,
        limit: int,
    ) -> list[history.RunInfo]:
        names = sorted(set(workflows))
        if limit <= 0 or not names:
            return []
        rows = self._call(self._claim, [worker_id, _num(now), _num(lease_until), limit, *names])
        return [
            _run_info(rows[i].decode("utf-8"), _fields(rows[i + 1])) for i in range(0, len(rows), 2)
        ]

    def claim_run(
        self, worker_id: str, run_id: str, *, now: float, lease_until: float
    ) -> history.RunInfo | None:
        row = self._call(self._claim_run, [worker_id, run_id, _num(now), _num(lease_until)])
        if not row:
            return None
        return _run_info(run_id, _fields(row))

    def next_wake(self, workflows: Collection[str], *, now: float) -> float | None:
        names = sorted(set(workflows))
        if not names:
            return None
        value = self._call(self._next_wake, [_num(now), *names])
        return None if value is None else float(value)

    def renew(
        self, worker_id: str, run_ids: Collection[str], *, lease_until: float
    ) -> dict[str, bool]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        flat = self._call(self._renew, [worker_id, _num(lease_until), *ids])
        return {flat[i].decode("utf-8"): flat[i + 1] == b"1" for i in range(0, len(flat), 2)}

    def release(self, worker_id: str, run_id: str, *, now: float) -> None:
        self._call(self._release, [worker_id, run_id, _num(now)])

    # -- signals and control

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        result = self._call(
            self._send_signal,
            [
                run_id,
                _signal_suffix(name, payload, now),
                _num(now),
                key or "",
                "0" if key is None else "1",
            ],
        )
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        if result[0] == 2:
            raise _errors.RunStateError(
                f"run {run_id!r} has finished ({result[1].decode()}); a signal sent to it "
                "would never be read"
            )
        return bool(result[0] == 0)

    def request_cancel(self, run_id: str, *, now: float) -> history.RunInfo:
        row = self._call(self._request_cancel, [run_id, _num(now)])
        if not row:
            raise _errors.RunNotFoundError(run_id)
        return _run_info(run_id, _fields(row))

    def reopen(self, run_id: str, *, now: float) -> history.RunInfo:
        result = self._call(self._reopen, [run_id, _num(now), encode_event(history.RunRetried())])
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        if result[0] == 2:
            raise _errors.RunStateError(
                f"run {run_id!r} is {result[1].decode()}, not failed; only a failed run "
                "can be retried"
            )
        return _run_info(run_id, _fields(result[1]))

    def list_runs(
        self,
        *,
        statuses: Collection[history.RunStatus] | None = None,
        workflows: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[history.RunInfo]:
        wanted_status = None if statuses is None else {RunStatus(s) for s in statuses}
        wanted_wf = None if workflows is None else set(workflows)
        if limit <= 0 or wanted_status == set() or wanted_wf == set():
            return []
        found: list[history.RunInfo] = []
        page = max(limit, 100)
        start = 0
        with self._guard():
            while len(found) < limit:
                ids = self._client.zrevrange(f"{self._prefix}:created", start, start + page - 1)
                if not ids:
                    break
                start += len(ids)
                pipe = self._client.pipeline(transaction=False)
                for raw in ids:
                    pipe.hgetall(self._key(raw.decode("utf-8"), "run"))
                for raw, fields in zip(ids, pipe.execute(), strict=True):
                    if not fields:
                        continue
                    run = _run_info(raw.decode("utf-8"), fields)
                    if (wanted_status is None or run.status in wanted_status) and (
                        wanted_wf is None or run.workflow in wanted_wf
                    ):
                        found.append(run)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[:limit]

    # -- change notifications

    def _start_listener(self) -> None:
        """Subscribe to the change channel (once) and wait until the subscription holds."""
        with self._lock:
            if self._listener is None and not self._closed:
                self._listener = threading.Thread(
                    target=self._listen, name=f"fluxo-redis-listener-{self._prefix}", daemon=True
                )
                self._listener.start()
        self._subscribed.wait(5.0)

    def _listen(self) -> None:
        outage = False
        while not self._closed:
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(self._channel)
                while not self._closed:
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        outage = False
                        # The server confirmed: from now on no change is missed. Changes
                        # made before (after a reconnection) may have been: wake everyone.
                        self._bump()
                        self._subscribed.set()
                    elif message["type"] == "message":
                        if message["data"] == self._stop_message:
                            break
                        self._bump()
            except _redis_errors.RedisError:
                # Messages may have been missed while disconnected: wake every waiter
                # once (a spurious wake-up is allowed), then retry after a pause.
                if not outage:
                    self._bump()
                outage = True
                self._subscribed.set()
                with self._changed:
                    self._changed.wait_for(lambda: self._closed, 1.0)
            finally:
                with suppress(_redis_errors.RedisError):
                    pubsub.close()

    def _bump(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def change_token(self, run_id: str | None) -> object:
        self._start_listener()
        with self._lock:
            return self._version

    def wait_for_change(self, run_id: str | None, timeout: float, since: object = None) -> bool:
        self._start_listener()
        with self._changed:
            version = since if isinstance(since, int) else self._version
            return self._changed.wait_for(
                lambda: self._version != version or self._closed, max(timeout, 0.0)
            )

    def close(self) -> None:
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            listener = self._listener
        if listener is not None:
            with suppress(_redis_errors.RedisError):
                self._client.publish(self._channel, self._stop_message)
            listener.join(3.0)
        self._client.close()
        self._client.connection_pool.disconnect()

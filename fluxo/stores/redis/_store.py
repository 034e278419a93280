"""The Redis store's class: every operation of the contract, as Lua scripts on Redis."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
import threading
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fluxo import _errors, _redact, history, stores

try:
    import redis as _redis
    import redis.cluster as _redis_cluster
    from redis import exceptions as _redis_errors
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise _errors.DefinitionError(
        "the Redis store needs the redis package; pip install 'fluxo[redis]'"
    ) from exc

RunStatus = history.RunStatus

DEFAULT_PREFIX = "fluxo"

BUCKETS = 16
"""How many buckets the indexes are split into. Part of the layout: never change it."""

_FENCE_TTL_MS = 86_400_000
_STALL_LIMIT = 3_600
_MAX_TRIES = 100

_T = TypeVar("_T")
_U = TypeVar("_U")

# -- Lua: scripts on the keys of one run ----------------------------------------

# KEYS: run, events, signals, signal_keys, fence. ARGV[1]: the change channel.
_RUN_PRELUDE = """
local RUN, EVENTS, SIGNALS, SIGNAL_KEYS, FENCE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local CHANNEL = ARGV[1]
local FENCE_TTL_MS = %(fence_ttl_ms)d
local function active(status)
  return status == 'pending' or status == 'running' or status == 'waiting'
end
local function changed(id)
  redis.call('PUBLISH', CHANNEL, id)
end
-- The index entry the run needs: {kind, ready_at, lease_until, workflow}, kind ''
-- (none: never claimable as it stands), 'r' (ready at ready_at) or 'l' (leased).
local function need()
  local f = redis.call('HMGET', RUN, 'status', 'ready', 'lease', 'wf')
  if not f[1] then return {'', '', '', ''} end
  if not active(f[1]) or not f[2] then return {'', '', '', f[4]} end
  if f[3] then return {'l', f[2], f[3], f[4]} end
  return {'r', f[2], '', f[4]}
end
-- When the run can next be claimed, as the index sees it: a number (math.huge:
-- never) and its text.
local function due(status, ready, lease)
  if not status or not active(status) or not ready then return math.huge, '' end
  if lease and tonumber(lease) > tonumber(ready) then return tonumber(lease), lease end
  return tonumber(ready), ready
end
-- The highest index generation a settle may still apply (0: none).
local function fence()
  local at = redis.call('HGET', RUN, 'fence') or redis.call('GET', FENCE) or '0'
  return tonumber(at)
end
-- A settle with generation g follows this script: no step relying on an older mark
-- may change the run after it.
local function raise_fence(g)
  if g == '' then return end
  local n = tonumber(g)
  if redis.call('HEXISTS', RUN, 'wf') == 1 then
    if n > tonumber(redis.call('HGET', RUN, 'fence') or '0') then
      redis.call('HSET', RUN, 'fence', g)
    end
  elseif n > tonumber(redis.call('GET', FENCE) or '0') then
    redis.call('SET', FENCE, g, 'PX', FENCE_TTL_MS)
  end
end
-- A change that may make the run claimable sooner needs a mark newer than every fence.
local function stale(g)
  return tonumber(g) <= fence()
end
"""

# ARGV: channel, g, mark time, workflow, first event, now, owner, lease_until, deadline,
# id, then the parent only when there is one
_CREATE_RUN = """
local g = ARGV[2]
local wf = redis.call('HGET', RUN, 'wf')
if wf then
  raise_fence(g)
  if wf ~= ARGV[4] then return {'conflict', wf, need()} end
  return {'exists', redis.call('HGETALL', RUN), need()}
end
if stale(g) then return {'retry'} end
local clock = redis.call('TIME')
if tonumber(clock[1]) - tonumber(ARGV[3]) > %(stall_limit)d then return {'retry'} end
local now = ARGV[6]
local status = 'pending'
if ARGV[7] ~= '' then status = 'running' end
redis.call('HSET', RUN, 'wf', ARGV[4], 'status', status, 'created', now, 'updated', now,
  'ready', now, 'cancel', '0', 'wake', '0', 'fence', g)
redis.call('DEL', FENCE)
if ARGV[7] ~= '' then
  redis.call('HSET', RUN, 'owner', ARGV[7])
  if ARGV[8] ~= '' then redis.call('HSET', RUN, 'lease', ARGV[8]) end
end
if ARGV[9] ~= '' then redis.call('HSET', RUN, 'deadline', ARGV[9]) end
if ARGV[11] then redis.call('HSET', RUN, 'parent', ARGV[11]) end
redis.call('RPUSH', EVENTS, ARGV[5])
changed(ARGV[10])
return {'created', redis.call('HGETALL', RUN), need()}
"""

# ARGV: channel, expected_seq, now, status or '', ready_at or '', g or '', checked,
# id, unless cancel requested ('1'/'0'), events...
_APPEND = """
local status, g = ARGV[4], ARGV[6]
local n = redis.call('LLEN', EVENTS)
if n == 0 then
  raise_fence(g)
  return {1, need()}
end
if tonumber(ARGV[2]) ~= n then
  raise_fence(g)
  return {2, need(), n}
end
if status ~= '' and ARGV[7] == '1' and stale(g) then return {3} end
if ARGV[9] == '1' and redis.call('HGET', RUN, 'cancel') == '1' then
  raise_fence(g)
  return {4, need()}
end
local i = 10
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('RPUSH', EVENTS, unpack(ARGV, i, last))
  i = last + 1
end
if status == '' then return {0} end
local now = ARGV[3]
local ready = ARGV[5]
if status == 'waiting' then
  if redis.call('HGET', RUN, 'wake') == '1' then
    status = 'pending'
    ready = now
  end
end
redis.call('HSET', RUN, 'status', status, 'updated', now)
if ready == '' then
  redis.call('HDEL', RUN, 'ready')
else
  redis.call('HSET', RUN, 'ready', ready)
end
redis.call('HDEL', RUN, 'owner', 'lease')
raise_fence(g)
changed(ARGV[8])
return {0, need()}
"""

# ARGV: channel, worker, now, lease_until, g, any workflow ('1'/'0'), workflows...
_CLAIM_ONE = """
local now = tonumber(ARGV[3])
local g = ARGV[5]
local f = redis.call('HMGET', RUN, 'wf', 'status', 'ready', 'lease')
if not f[1] then
  raise_fence(g)
  return {'missing', need()}
end
local ok = active(f[2]) and f[3] and tonumber(f[3]) <= now
  and (not f[4] or tonumber(f[4]) < now)
if ok and ARGV[6] ~= '1' then
  ok = false
  for w = 7, #ARGV do
    if ARGV[w] == f[1] then ok = true end
  end
end
raise_fence(g)
if not ok then return {'no', need()} end
redis.call('HSET', RUN, 'status', 'running', 'owner', ARGV[2], 'lease', ARGV[4],
  'updated', ARGV[3], 'wake', '0')
return {'claimed', need(), redis.call('HGETALL', RUN)}
"""

# ARGV: channel, worker, now, lease_until, g or '', checked
_CLAIM_RUN = """
local worker, now = ARGV[2], tonumber(ARGV[3])
local g = ARGV[5]
local f = redis.call('HMGET', RUN, 'status', 'owner', 'lease', 'ready')
if not f[1] or not active(f[1])
  or (f[3] and tonumber(f[3]) >= now and f[2] ~= worker) then
  raise_fence(g)
  return {'no', need()}
end
if ARGV[6] == '1' then
  if stale(g) then return {'retry'} end
else
  local after, after_s = due(f[1], f[4], ARGV[4])
  if after < due(f[1], f[4], f[3]) then return {'cover', after_s} end
end
redis.call('HSET', RUN, 'status', 'running', 'owner', worker, 'lease', ARGV[4],
  'updated', ARGV[3], 'wake', '0')
raise_fence(g)
return {'ok', need(), redis.call('HGETALL', RUN)}
"""

# ARGV: channel, worker, lease_until, g or '', checked
_RENEW = """
local g = ARGV[4]
local f = redis.call('HMGET', RUN, 'owner', 'cancel', 'status', 'ready', 'lease')
if f[1] ~= ARGV[2] then
  raise_fence(g)
  return {'no', need()}
end
if ARGV[5] == '1' then
  if stale(g) then return {'retry'} end
else
  local after, after_s = due(f[3], f[4], ARGV[3])
  if after < due(f[3], f[4], f[5]) then return {'cover', after_s} end
end
redis.call('HSET', RUN, 'lease', ARGV[3])
raise_fence(g)
return {'held', need(), f[2]}
"""

# ARGV: channel, worker, now, g, id
_RELEASE = """
local g = ARGV[4]
local f = redis.call('HMGET', RUN, 'owner', 'status')
if not f[1] or f[1] ~= ARGV[2] then
  raise_fence(g)
  return {'no', need()}
end
if stale(g) then return {'retry'} end
if f[2] == 'running' then redis.call('HSET', RUN, 'status', 'pending') end
redis.call('HDEL', RUN, 'owner', 'lease')
redis.call('HSET', RUN, 'updated', ARGV[3])
raise_fence(g)
changed(ARGV[5])
return {'ok', need()}
"""

# ARGV: channel, name-and-payload suffix, now, key or '', has key ('1'/'0'), g, id
_SEND_SIGNAL = """
local g = ARGV[6]
local status = redis.call('HGET', RUN, 'status')
if not status then
  raise_fence(g)
  return {1, need()}
end
if not active(status) then
  raise_fence(g)
  return {2, need(), status}
end
if stale(g) then return {4} end
if ARGV[5] == '1' then
  if redis.call('SADD', SIGNAL_KEYS, ARGV[4]) == 0 then
    raise_fence(g)
    return {3, need()}
  end
end
-- Signal ids: after the run's last one, and otherwise the server's clock in
-- microseconds, so that they also order the signals of different runs.
local clock = redis.call('TIME')
local id = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local last = tonumber(redis.call('HGET', RUN, 'sig') or '0')
if id <= last then id = last + 1 end
local sid = string.format('%%d', id)
redis.call('RPUSH', SIGNALS, sid .. '\\0' .. ARGV[2])
local now = ARGV[3]
if status == 'waiting' then
  redis.call('HSET', RUN, 'status', 'pending', 'ready', now)
end
redis.call('HSET', RUN, 'wake', '1', 'updated', now, 'sig', sid)
raise_fence(g)
changed(ARGV[7])
return {0, need()}
"""

# ARGV: channel, now, g, id
_REQUEST_CANCEL = """
local g, now = ARGV[3], ARGV[2]
local status = redis.call('HGET', RUN, 'status')
if not status then
  raise_fence(g)
  return {1, need()}
end
if active(status) then
  if stale(g) then return {2} end
  if status == 'waiting' then
    redis.call('HSET', RUN, 'status', 'pending', 'ready', now)
  end
  redis.call('HSET', RUN, 'cancel', '1', 'wake', '1', 'updated', now)
  changed(ARGV[4])
end
raise_fence(g)
return {0, need(), redis.call('HGETALL', RUN)}
"""

# ARGV: channel, now, RunRetried event, g, id
_REOPEN = """
local g, now = ARGV[4], ARGV[2]
local status = redis.call('HGET', RUN, 'status')
if not status then
  raise_fence(g)
  return {1, need()}
end
if status ~= 'failed' then
  raise_fence(g)
  return {2, need(), status}
end
if stale(g) then return {3} end
redis.call('RPUSH', EVENTS, ARGV[3])
redis.call('HSET', RUN, 'status', 'pending', 'ready', now, 'updated', now, 'cancel', '0')
redis.call('HDEL', RUN, 'owner', 'lease')
raise_fence(g)
changed(ARGV[5])
return {0, need(), redis.call('HGETALL', RUN)}
"""

# ARGV: channel, g, finished before, id, the statuses to delete...
_PURGE_RUN = """
local g = ARGV[2]
local f = redis.call('HMGET', RUN, 'status', 'created', 'updated')
if not f[1] then
  raise_fence(g)
  return {0, need()}
end
local wanted = false
for i = 5, #ARGV do
  if ARGV[i] == f[1] then wanted = true end
end
local before = tonumber(ARGV[3])
if not wanted or tonumber(f[2]) >= before or tonumber(f[3]) >= before then
  raise_fence(g)
  return {0, need()}
end
redis.call('DEL', RUN, EVENTS, SIGNALS, SIGNAL_KEYS)
raise_fence(g)
return {1, need()}
"""

# Read-only. KEYS: run, events, signals
_LOAD = """
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('LRANGE', KEYS[3], 0, -1)}
"""

# -- Lua: scripts on the keys of one index bucket ---------------------------------

# KEYS: hints, gen, seq, created. ARGV: lowest claim time or '', ids...
_MARK = """
local t = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local g = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[2], id, g)
  if t ~= '' then
    local hint = redis.call('ZSCORE', KEYS[1], id)
    if not hint or tonumber(t) < tonumber(hint) then redis.call('ZADD', KEYS[1], t, id) end
  end
  out[#out + 1] = tostring(g)
end
return {redis.call('TIME')[1], out}
"""

# The mark of a create, which knows the workflow: the entry the new run will need
# goes straight into the workflow's index (no lower than an entry already there), so
# a create that makes the run needs no settle.
# KEYS: gen, seq, created, lready, ready, leased. ARGV: id, created_at, kind, ready, lease
_MARK_CREATE = """
local id, kind, ready = ARGV[1], ARGV[3], ARGV[4]
local g = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], id, g)
local fresh = redis.call('ZADD', KEYS[3], 'NX', ARGV[2], id)
local function lower(key, score)
  local at = redis.call('ZSCORE', key, id)
  if not at or tonumber(score) < tonumber(at) then redis.call('ZADD', key, score, id) end
end
if kind == 'r' then
  lower(KEYS[5], ready)
else
  lower(KEYS[6], ARGV[5])
  local at = redis.call('HGET', KEYS[4], id)
  if not at or tonumber(ready) < tonumber(at) then redis.call('HSET', KEYS[4], id, ready) end
end
return {redis.call('TIME')[1], tostring(g), fresh}
"""

# KEYS: hints, gen, created, lready, then ready and leased of each workflow named.
# ARGV: groups of id, g ('*': whatever the generation), workflow number (0: none),
# kind, ready_at, lease_until, missing ('1'/'0'), created_at or ''.
_SETTLE = """
local HINTS, GEN, CREATED, LREADY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local done = 0
for i = 1, #ARGV, 8 do
  local id, g, w, kind = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if ARGV[i + 7] ~= '' then redis.call('ZADD', CREATED, ARGV[i + 7], id) end
  if g == '*' or (g ~= '' and redis.call('HGET', GEN, id) == g) then
    done = done + 1
    redis.call('ZREM', HINTS, id)
    redis.call('HDEL', LREADY, id)
    local ready, leased = nil, nil
    if w > 0 then
      ready, leased = KEYS[3 + 2 * w], KEYS[4 + 2 * w]
      redis.call('ZREM', ready, id)
      redis.call('ZREM', leased, id)
    end
    if kind == 'r' then
      redis.call('ZADD', ready, ARGV[i + 4], id)
    elseif kind == 'l' then
      redis.call('ZADD', leased, ARGV[i + 5], id)
      redis.call('HSET', LREADY, id, ARGV[i + 4])
    else
      redis.call('HDEL', GEN, id)
      if ARGV[i + 6] == '1' then redis.call('ZREM', CREATED, id) end
    end
  end
end
return done
"""

# KEYS: hints, gen, created, lready, then ready and leased of each workflow.
# ARGV: now, limit. Returns groups of workflow number (0: a hint), id, due, created, g.
_PEEK = """
local HINTS, GEN, CREATED, LREADY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_s, limit = ARGV[1], tonumber(ARGV[2])
local now = tonumber(now_s)
local out = {}
local full = 0
local function add(w, id, at)
  out[#out + 1] = w
  out[#out + 1] = id
  out[#out + 1] = at
  out[#out + 1] = redis.call('ZSCORE', CREATED, id) or ''
  out[#out + 1] = redis.call('HGET', GEN, id) or ''
end
local hints = redis.call('ZRANGEBYSCORE', HINTS, '-inf', now_s, 'WITHSCORES', 'LIMIT', 0, limit)
if #hints == 2 * limit then full = 1 end
for j = 1, #hints, 2 do add(0, hints[j], hints[j + 1]) end
for w = 1, (#KEYS - 4) / 2 do
  local ready = redis.call('ZRANGEBYSCORE', KEYS[3 + 2 * w], '-inf', now_s,
    'WITHSCORES', 'LIMIT', 0, limit)
  if #ready == 2 * limit then full = 1 end
  for j = 1, #ready, 2 do add(w, ready[j], ready[j + 1]) end
  -- runs whose lease expired (lease_until < now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4 + 2 * w], '-inf', '(' .. now_s)
  for j = 1, #expired do
    local at = redis.call('HGET', LREADY, expired[j])
    if at and tonumber(at) <= now then add(w, expired[j], at) end
  end
end
return {full, out}
"""

# KEYS: hints, lready, then ready and leased of each workflow. ARGV: now.
_NEXT_WAKE = """
local t = tonumber(ARGV[1])
local best, best_s = nil, false
local function consider(v, s)
  if best == nil or v < best then best, best_s = v, s end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first > 0 then consider(tonumber(first[2]), first[2]) end
for w = 1, (#KEYS - 2) / 2 do
  first = redis.call('ZRANGE', KEYS[1 + 2 * w], 0, 0, 'WITHSCORES')
  if #first > 0 then consider(tonumber(first[2]), first[2]) end
  local leased = redis.call('ZRANGE', KEYS[2 + 2 * w], 0, -1, 'WITHSCORES')
  for j = 1, #leased, 2 do
    local lease_s = leased[j + 1]
    local lease = tonumber(lease_s)
    if lease >= t and best ~= nil and lease >= best then break end
    local ready_s = redis.call('HGET', KEYS[2], leased[j])
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


# -- encoding -----------------------------------------------------------------


def _num(value: float) -> str:
    """A time as text that parses back to exactly the same float."""
    return repr(float(value))


def _opt(value: float | None) -> str:
    return "" if value is None else _num(value)


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; ``StoreRejectedError`` for text no store can hold (a lone surrogate)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _errors.StoreRejectedError(f"Redis cannot store this text: {exc}") from exc


def encode_event(event: history.Event) -> bytes:
    """``kind NUL len(name) NUL name`` then ``N`` (no data) or ``D`` and the data.

    A history item is these bytes after ``recorded_at NUL`` (see :func:`_split_item`).
    """
    name = _utf8(event.name)
    head = b"%s\x00%d\x00%s" % (event.kind.encode("ascii"), len(name), name)
    return head + (b"N" if event.data is None else b"D" + event.data)


def _split_event(raw: bytes, start: int) -> tuple[str, str, bytes | None]:
    """The kind, name and data in :func:`encode_event`'s bytes; ``ValueError`` if damaged."""
    try:
        kind_end = raw.index(b"\x00", start)
        len_end = raw.index(b"\x00", kind_end + 1)
        length = int(raw[kind_end + 1 : len_end])
        end = len_end + 1 + length
        flag = raw[end : end + 1]
        if length < 0 or flag not in (b"N", b"D") or (flag == b"N" and len(raw) > end + 1):
            raise ValueError
        return (
            raw[start:kind_end].decode("ascii"),
            raw[len_end + 1 : end].decode("utf-8"),
            None if flag == b"N" else raw[end + 1 :],
        )
    except ValueError:  # UnicodeDecodeError is one
        raise ValueError(f"its stored bytes do not parse as an event: {raw[:60]!r}") from None


def _stamp(now: float) -> bytes:
    """What precedes :func:`encode_event`'s bytes in a history item: ``recorded_at NUL``."""
    return _num(now).encode("ascii") + b"\x00"


def _split_item(raw: bytes) -> tuple[float, str, str, bytes | None]:
    """A history item's time, kind, name and data; ``ValueError`` if it is damaged."""
    at_end = raw.find(b"\x00")
    try:
        recorded_at = float(raw[: max(at_end, 0)])
    except ValueError:
        raise ValueError(
            "the item has no recorded time: it is damaged, or was written by an older "
            "layout of the Redis store, which this version does not read"
        ) from None
    return (recorded_at, *_split_event(raw, at_end + 1))


def _read_history(
    run_id: str, items: Sequence[bytes]
) -> tuple[tuple[history.Event, ...], list[float]]:
    """A run's history and recording times from its list's items, checked."""
    rows: list[tuple[int, str, str, bytes | None]] = []
    times: list[float] = []
    for seq, raw in enumerate(items):
        try:
            at, kind, name, data = _split_item(raw)
        except ValueError as exc:
            raise _errors.HistoryCorruptError(run_id, seq, str(exc), len(items)) from None
        rows.append((seq, kind, name, data))
        times.append(at)
    return history.read_events(run_id, rows), times


def _signal_suffix(name: str, payload: bytes, now: float) -> bytes:
    """What follows ``id NUL`` in a stored signal: ``sent_at NUL len NUL name payload``."""
    encoded = _utf8(name)
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


def _run_info(run_id: str, fields: dict[bytes, bytes]) -> history.RunInfo:
    """The run in its record; a damaged field is named in ``damage``, never raised."""
    status, damage = history.parse_status(fields.get(b"status"))
    problems = [] if damage is None else [damage]

    def time(key: bytes, required: bool = False) -> float | None:
        value = fields.get(key)
        try:
            return None if value is None and not required else float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            problems.append(f"its stored {key.decode()} {value!r} is not a time")
            return None

    def text(key: bytes) -> str | None:
        value = fields.get(key)
        return None if value is None else value.decode("utf-8", "replace")

    return history.RunInfo(
        id=run_id,
        workflow=text(b"wf") or "",
        status=status,
        created_at=time(b"created", True) or 0.0,
        updated_at=time(b"updated", True) or 0.0,
        ready_at=time(b"ready"),
        lease_owner=text(b"owner"),
        lease_until=time(b"lease"),
        cancel_requested=fields.get(b"cancel") == b"1",
        wake_requested=fields.get(b"wake") == b"1",
        deadline=time(b"deadline"),
        parent=text(b"parent"),
        damage="; ".join(problems) or None,
    )


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def split_url(url: str, prefix: str | None = None) -> tuple[str, str]:
    """Return the URL without its ``prefix`` and ``cluster`` parameters, and the key prefix."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    from_url = [value for key, value in query if key == "prefix"]
    rest = [(key, value) for key, value in query if key not in ("prefix", "cluster")]
    chosen = prefix if prefix is not None else (from_url[-1] if from_url else DEFAULT_PREFIX)
    if not chosen:
        raise _errors.DefinitionError("the Redis key prefix must not be empty")
    if "{" in chosen or "}" in chosen:
        raise _errors.DefinitionError(
            f"the Redis key prefix {chosen!r} contains a brace; braces make Redis Cluster "
            "hash tags, so pick a prefix without them"
        )
    return urlunsplit(parts._replace(query=urlencode(rest))), chosen


def cluster_option(url: str) -> bool | None:
    """The URL's ``cluster`` parameter: ``True``, ``False``, or ``None`` to ask the server."""
    values = [
        v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if k == "cluster"
    ]
    if not values:
        return None
    value = values[-1].strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise _errors.DefinitionError(
        f"the Redis URL parameter cluster={values[-1]!r} is neither true nor false"
    )


def bucket_of(run_id: str) -> int:
    """The index bucket of a run: the same on every client."""
    return zlib.crc32(_utf8(run_id)) % BUCKETS


class _Need(NamedTuple):
    """The index entry a run's record calls for, as a run script reports it."""

    kind: str  # '' (none), 'r' (ready) or 'l' (leased)
    ready: str
    lease: str
    workflow: str


def _need(raw: Sequence[Any]) -> _Need:
    kind, ready, lease, workflow = (_text(value) for value in raw)
    return _Need(kind, ready, lease, workflow)


class _Candidate(NamedTuple):
    """A run a bucket's index says may be claimable."""

    at: float
    created: float
    run_id: str
    bucket: int
    workflow: str  # '' for a hint, whose workflow only the run's record tells
    gen: str


class _Settle(NamedTuple):
    """One entry for the settle script of a bucket."""

    run_id: str
    gen: str
    need: _Need
    missing: bool = False
    created: str = ""


class _Cover(NamedTuple):
    """A run script's answer: the change would make the run claimable sooner, at ``at``."""

    at: str


# -- the store ----------------------------------------------------------------


class RedisStore:
    """The Redis :class:`~fluxo.stores.Store`. Thread-safe; share one per process.

    Args:
        url: ``redis://`` or ``rediss://`` URL of a server or of any node of a cluster.
        prefix: the key prefix (default: the URL's ``prefix`` parameter, else ``fluxo``).
        cluster: ``True`` or ``False`` to choose the mode; ``None`` (the default) takes
            the URL's ``cluster`` parameter, else asks the server.
    """

    def __init__(self, url: str, *, prefix: str | None = None, cluster: bool | None = None) -> None:
        self._secrets = _redact.secrets_of(url)
        self._url, self._prefix = split_url(url, prefix)
        self._cluster_choice = cluster if cluster is not None else cluster_option(url)
        try:
            self._single: Any = _redis.Redis.from_url(self._url)
        except ValueError as exc:
            raise _errors.DefinitionError(
                f"bad Redis URL {self._shown(repr(url))}: {self._shown(str(exc))}"
            ) from _redact.cause(exc, self._secrets)
        self._client: Any = None
        self._cluster = False
        self._scripts: dict[str, Any] = {}
        self._connect_lock = threading.Lock()
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

    def _shown(self, text: str) -> str:
        """``text`` as a message may show it: the URL's password masked."""
        return _redact.redact(text, self._secrets)

    @property
    def cluster(self) -> bool:
        """Tell whether the store talks to a Redis Cluster (asks the server on first use)."""
        with self._guard():
            self._connected()
        return self._cluster

    # -- plumbing

    def _connected(self) -> Any:
        """The client, made on first use once the mode is known."""
        client = self._client
        if client is not None:
            return client
        with self._connect_lock:
            if self._client is None:
                cluster = self._cluster_choice
                if cluster is None:
                    try:
                        info = self._single.info("cluster")
                    except _redis_errors.ResponseError:
                        info = {}  # INFO refused: no cluster can be assumed
                    cluster = bool(int(info.get("cluster_enabled", 0)))
                if cluster:
                    try:
                        client = _redis_cluster.RedisCluster.from_url(self._url)
                    except ValueError as exc:
                        raise _errors.DefinitionError(
                            f"bad Redis Cluster URL {self._shown(repr(self._url))}: "
                            f"{self._shown(str(exc))}"
                        ) from _redact.cause(exc, self._secrets)
                    except _redis_errors.RedisClusterException as exc:
                        raise _errors.StoreUnavailableError(
                            f"no Redis Cluster answers at {self._shown(repr(self._url))} "
                            f"({self._shown(str(exc))}); for a single server, drop "
                            "cluster=true from the URL"
                        ) from _redact.cause(exc, self._secrets)
                else:
                    client = self._single
                self._scripts = {name: client.register_script(code) for name, code in _SCRIPTS}
                self._cluster = cluster
                self._client = client
            return self._client

    def _run_keys(self, run_id: str) -> list[str]:
        """The keys of one run: run, events, signals, signal_keys, fence (one slot)."""
        if run_id and "}" not in run_id:
            base = f"{self._prefix}:{{{run_id}}}:"
            return [base + what for what in _RUN_PARTS]
        digest = hashlib.sha1(_utf8(run_id)).hexdigest()
        return [f"{self._prefix}:{{{digest}}}:{what}:{run_id}" for what in _RUN_PARTS]

    def _key(self, run_id: str, what: str) -> str:
        return self._run_keys(run_id)[_RUN_PARTS.index(what)]

    def _bucket_keys(self, bucket: int) -> dict[str, str]:
        """The keys of one index bucket that do not depend on a workflow (one slot)."""
        base = f"{self._prefix}:{{{self._prefix}#{bucket}}}:"
        return {what: base + what for what in ("hints", "gen", "seq", "created", "lready")}

    def _workflow_keys(self, bucket: int, workflow: str) -> list[str]:
        """The ready and leased sets of one workflow in one bucket."""
        base = f"{self._prefix}:{{{self._prefix}#{bucket}}}:"
        return [f"{base}ready:{workflow}", f"{base}leased:{workflow}"]

    @contextmanager
    def _guard(self) -> Iterator[None]:
        if self._closed:
            raise _errors.StoreError("this RedisStore is closed; create a new one")
        try:
            yield
        except _UNAVAILABLE as exc:
            raise _errors.StoreUnavailableError(
                f"Redis is unavailable: {self._shown(str(exc))}"
            ) from _redact.cause(exc, self._secrets)
        except _redis_errors.ResponseError as exc:
            shown = self._shown(str(exc))
            if str(exc).startswith(_BUSY):  # the server may recover: back off and try again
                raise _errors.StoreUnavailableError(f"Redis is unavailable: {shown}") from exc
            raise _errors.StoreRejectedError(f"Redis refused the command: {shown}") from exc
        except (UnicodeEncodeError, _redis_errors.DataError) as exc:
            raise _errors.StoreRejectedError(f"Redis cannot store this value: {exc}") from exc

    def _call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        with self._guard():
            self._connected()
            return self._scripts[name](keys=list(keys), args=list(args))

    def _call_many(self, calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run several scripts: in one pipeline on a single server, one by one on a cluster."""
        if not calls:
            return []
        with self._guard():
            client = self._connected()
            if self._cluster or len(calls) == 1:
                return [
                    self._scripts[name](keys=list(keys), args=list(args))
                    for name, keys, args in calls
                ]
            pipe = client.pipeline(transaction=False)
            for name, keys, args in calls:
                pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
            results: list[Any] = pipe.execute(raise_on_error=False)
            for i, (name, keys, args) in enumerate(calls):
                if isinstance(results[i], _redis_errors.NoScriptError):
                    # The server lost its scripts (a restart): this one never ran.
                    results[i] = self._scripts[name](keys=list(keys), args=list(args))
                elif isinstance(results[i], Exception):
                    raise results[i]
            return results

    def _commands(self, build: Callable[[Any], object]) -> list[Any]:
        """Run plain commands in one pipeline (per node on a cluster), in order."""
        with self._guard():
            pipe = self._connected().pipeline(transaction=False)
            build(pipe)
            results: list[Any] = pipe.execute()
            return results

    # -- the index: mark, read, settle

    def _mark(self, run_id: str, lowest: str) -> tuple[str, str]:
        """Step 1: bump the run's generation and hint at ``lowest``; returns it and the clock."""
        keys = self._bucket_keys(bucket_of(run_id))
        clock, gens = self._call(
            "mark", [keys["hints"], keys["gen"], keys["seq"], keys["created"]], [lowest, run_id]
        )
        return _text(gens[0]), _text(clock)

    def _generations(self, run_ids: Sequence[str]) -> dict[str, str]:
        """The runs' generations as they stand ('' for a run without index entries)."""
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for run_id in run_ids:
            by_bucket[bucket_of(run_id)].append(run_id)
        order = sorted(by_bucket)
        replies = self._commands(
            lambda pipe: [pipe.hmget(self._bucket_keys(b)["gen"], by_bucket[b]) for b in order]
        )
        gens: dict[str, str] = {}
        for bucket, values in zip(order, replies, strict=True):
            for run_id, value in zip(by_bucket[bucket], values, strict=True):
                gens[run_id] = "" if value is None else _text(value)
        return gens

    def _settle(self, entries: Sequence[_Settle]) -> None:
        """Step 3: make each run's entries what its record needs, if its generation holds."""
        by_bucket: dict[int, list[_Settle]] = defaultdict(list)
        for entry in entries:
            if entry.gen or entry.created:
                by_bucket[bucket_of(entry.run_id)].append(entry)
        calls = []
        for bucket, group in sorted(by_bucket.items()):
            common = self._bucket_keys(bucket)
            keys = [common["hints"], common["gen"], common["created"], common["lready"]]
            numbers: dict[str, int] = {}
            args: list[str] = []
            for entry in group:
                workflow = entry.need.workflow
                if workflow and workflow not in numbers:
                    numbers[workflow] = len(numbers) + 1
                    keys.extend(self._workflow_keys(bucket, workflow))
                args += [
                    entry.run_id,
                    entry.gen,
                    str(numbers.get(workflow, 0)),
                    entry.need.kind,
                    entry.need.ready,
                    entry.need.lease,
                    "1" if entry.missing else "0",
                    entry.created,
                ]
            calls.append(("settle", keys, args))
        self._call_many(calls)

    def _marked(
        self,
        run_id: str,
        lowest: str,
        change: Callable[[str, str], tuple[_T, _Need] | None],
    ) -> _T:
        """Mark, change, settle: for a change that may make the run claimable sooner.

        ``change(g, clock)`` runs the run script; it returns ``None`` when the script
        refused (a settle may be about to remove the hint), else the result and the
        entry the run now needs.
        """
        for _ in range(_MAX_TRIES):
            gen, clock = self._mark(run_id, lowest)
            outcome = change(gen, clock)
            if outcome is None:
                continue
            result, need = outcome
            self._settle([_Settle(run_id, gen, need, missing=not need.workflow)])
            return result
        raise _errors.StoreUnavailableError(
            f"run {run_id!r} changed under Fluxo {_MAX_TRIES} times in a row; try again"
        )

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
    ) -> tuple[history.RunInfo, bool]:
        keys = self._run_keys(run_id)
        first = _stamp(now) + encode_event(history.WorkflowStarted(workflow, input))
        lease = _opt(lease_until) if owner else ""
        bucket = bucket_of(run_id)
        common = self._bucket_keys(bucket)
        mark_keys = [common[k] for k in ("gen", "seq", "created", "lready")]
        mark_keys += self._workflow_keys(bucket, workflow)
        mark_args = [run_id, _num(now), "l" if lease else "r", _num(now), lease]
        for _ in range(_MAX_TRIES):
            clock, gen, fresh = self._call("mark_create", mark_keys, mark_args)
            gen, clock = _text(gen), _text(clock)
            reply = self._call(
                "create_run",
                keys,
                [
                    *(self._channel, gen, clock, workflow, first, _num(now), owner or ""),
                    *(lease, _opt(deadline), run_id),
                    *(() if parent is None else (parent,)),
                ],
            )
            outcome = _text(reply[0])
            if outcome == "retry":
                continue  # a settle may be about to remove the entry just made
            if outcome != "created" or fresh != 1:
                # The index may hold what this mark guessed (or an older created_at).
                created = "" if outcome == "conflict" else _text(_fields(reply[1])[b"created"])
                self._settle([_Settle(run_id, gen, _need(reply[2]), created=created)])
            if outcome == "conflict":
                raise _errors.RunIdConflictError(run_id, _text(reply[1]), workflow)
            return _run_info(run_id, _fields(reply[1])), outcome == "created"
        raise _errors.StoreUnavailableError(
            f"run {run_id!r} changed under Fluxo {_MAX_TRIES} times in a row; try again"
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
        keys = self._run_keys(run_id)
        stamp = _stamp(now)
        encoded = [stamp + encode_event(event) for event in events]
        unless = "1" if unless_cancel_requested else "0"
        if status is None:  # the hot path: one script call
            result = self._call(
                "append",
                keys,
                [
                    *(self._channel, int(expected_seq), _num(now), "", "", "", "0", run_id),
                    *(unless, *encoded),
                ],
            )
            self._append_result(run_id, expected_seq, result)
            return
        value = RunStatus(status).value
        lowest = ""
        if value == RunStatus.WAITING.value:
            # a wake-up that arrived meanwhile makes it ready now instead
            lowest = _num(now if ready_at is None else min(ready_at, now))
        elif value in _ACTIVE and ready_at is not None:
            lowest = _num(ready_at)

        def change(gen: str, checked: bool) -> tuple[Any, _Need] | None:
            reply = self._call(
                "append",
                keys,
                [
                    *(self._channel, int(expected_seq), _num(now), value, _opt(ready_at), gen),
                    *("1" if checked else "0", run_id, unless, *encoded),
                ],
            )
            if reply[0] == 3:
                return None
            return reply, _need(reply[1])

        if lowest:
            result = self._marked(run_id, lowest, lambda gen, _clock: change(gen, True))
        elif value in _FINAL:
            # Completed and cancelled runs never change again: once the run script
            # succeeded, whatever index entries the run has can go, generation or not.
            outcome = change("", False)
            assert outcome is not None
            result, need = outcome
            if result[0] == 0:
                self._settle([_Settle(run_id, "*", need)])
        else:  # failed, or without a ready_at: claimable no sooner than before
            gen = self._generations([run_id])[run_id]
            outcome = change(gen, False)
            assert outcome is not None
            result, need = outcome
            if gen:
                self._settle([_Settle(run_id, gen, need, missing=not need.workflow)])
        self._append_result(run_id, expected_seq, result)

    @staticmethod
    def _append_result(run_id: str, expected_seq: int, result: Sequence[Any]) -> None:
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        if result[0] == 2:
            raise _errors.SequenceConflictError(run_id, min(expected_seq, int(result[-1])))
        if result[0] == 4:
            raise _errors.CancelPendingError(run_id)

    def load(self, run_id: str) -> history.RunState:
        fields, events, signals = self._call("load", self._run_keys(run_id)[:3], [])
        if not fields:
            raise _errors.RunNotFoundError(run_id)
        run = _run_info(run_id, _fields(fields))
        loaded, recorded_at = _read_history(run_id, events)
        if run.damage is not None:
            raise _errors.HistoryCorruptError(run_id, None, run.damage, len(loaded))
        try:
            sent = tuple(decode_signal(raw) for raw in signals)
        except ValueError as exc:
            raise _errors.HistoryCorruptError(
                run_id, None, f"a stored signal does not parse ({exc})", len(loaded)
            ) from None
        return history.RunState(run, loaded, sent, tuple(recorded_at))

    def get_run(self, run_id: str) -> history.RunInfo:
        with self._guard():
            fields = self._connected().hgetall(self._key(run_id, "run"))
        if not fields:
            raise _errors.RunNotFoundError(run_id)
        return _run_info(run_id, fields)

    def get_runs(self, run_ids: Collection[str]) -> dict[str, history.RunInfo]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        rows = self._records(ids)  # one pipeline: one round trip (per node on a cluster)
        return {
            run_id: _run_info(run_id, fields)
            for run_id, fields in zip(ids, rows, strict=True)
            if fields
        }

    # -- claims and leases

    def _peek(self, names: Sequence[str], now: float, limit: int) -> tuple[list[_Candidate], bool]:
        """Every bucket's candidates, oldest first, and whether some bucket had more."""
        calls = []
        for bucket in range(BUCKETS):
            common = self._bucket_keys(bucket)
            keys = [common["hints"], common["gen"], common["created"], common["lready"]]
            for name in names:
                keys.extend(self._workflow_keys(bucket, name))
            calls.append(("peek", keys, [_num(now), limit]))
        found: dict[str, _Candidate] = {}
        more = False
        for bucket, (full, flat) in enumerate(self._call_many(calls)):
            more = more or full == 1
            for i in range(0, len(flat), 5):
                number = int(flat[i])
                at = float(flat[i + 2])
                created = float(flat[i + 3]) if flat[i + 3] else at
                run_id = _text(flat[i + 1])
                workflow = names[number - 1] if number else ""
                candidate = _Candidate(at, created, run_id, bucket, workflow, _text(flat[i + 4]))
                known = found.get(run_id)
                if known is None or (candidate.at, not workflow) < (known.at, not known.workflow):
                    found[run_id] = candidate
        return sorted(found.values()), more

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
        claimed: list[history.RunInfo] = []
        tried: set[str] = set()
        for _ in range(4):
            candidates, more = self._peek(names, now, limit)
            queue = [c for c in candidates if c.run_id not in tried]
            settles: list[_Settle] = []
            while queue and len(claimed) < limit:
                batch, queue = queue[: limit - len(claimed)], queue[limit - len(claimed) :]
                calls = []
                for c in batch:
                    tried.add(c.run_id)
                    wanted = ["1"] if c.workflow else ["0", *names]
                    args = [self._channel, worker_id, _num(now), _num(lease_until), c.gen]
                    calls.append(("claim_one", self._run_keys(c.run_id), args + wanted))
                for c, reply in zip(batch, self._call_many(calls), strict=True):
                    outcome, need = _text(reply[0]), _need(reply[1])
                    if not need.workflow:
                        need = need._replace(workflow=c.workflow)
                    settles.append(_Settle(c.run_id, c.gen, need, outcome == "missing"))
                    if outcome == "claimed":
                        claimed.append(_run_info(c.run_id, _fields(reply[2])))
            self._settle(settles)
            if len(claimed) >= limit or not more:
                break
        return claimed

    def claim_run(
        self, worker_id: str, run_id: str, *, now: float, lease_until: float
    ) -> history.RunInfo | None:
        keys = self._run_keys(run_id)

        def change(gen: str, checked: bool) -> Any:
            reply = self._call(
                "claim_run",
                keys,
                [
                    self._channel,
                    worker_id,
                    _num(now),
                    _num(lease_until),
                    gen,
                    "1" if checked else "0",
                ],
            )
            outcome = _text(reply[0])
            if outcome == "retry":
                return None
            if outcome == "cover":
                return _Cover(_text(reply[1]))
            run = _run_info(run_id, _fields(reply[2])) if outcome == "ok" else None
            return run, _need(reply[1])

        run: history.RunInfo | None = self._postponing(run_id, change)
        return run

    def _postponing(self, run_id: str, change: Callable[[str, bool], Any]) -> Any:
        """Read, change, settle: for a change that makes the run claimable no sooner.

        Should the change make it claimable sooner after all (a shorter lease), the
        run script answers :class:`_Cover` and the change takes the marked path.
        """
        gen = self._generations([run_id])[run_id]
        outcome = change(gen, False)
        if isinstance(outcome, _Cover):
            return self._marked(run_id, outcome.at, lambda g, _clock: change(g, True))
        result, need = outcome
        if gen:
            self._settle([_Settle(run_id, gen, need, missing=not need.workflow)])
        return result

    def next_wake(self, workflows: Collection[str], *, now: float) -> float | None:
        names = sorted(set(workflows))
        if not names:
            return None
        calls = []
        for bucket in range(BUCKETS):
            common = self._bucket_keys(bucket)
            keys = [common["hints"], common["lready"]]
            for name in names:
                keys.extend(self._workflow_keys(bucket, name))
            calls.append(("next_wake", keys, [_num(now)]))
        times = [float(value) for value in self._call_many(calls) if value is not None]
        return min(times, default=None)

    def renew(
        self, worker_id: str, run_ids: Collection[str], *, lease_until: float
    ) -> dict[str, bool]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        gens = self._generations(ids)
        lease = _num(lease_until)
        calls = [
            ("renew", self._run_keys(run_id), [self._channel, worker_id, lease, gens[run_id], "0"])
            for run_id in ids
        ]
        held: dict[str, bool] = {}
        settles: list[_Settle] = []
        for run_id, reply in zip(ids, self._call_many(calls), strict=True):
            outcome = _text(reply[0])
            if outcome == "cover":  # a shorter lease than before: rare, one at a time
                if self._renew_one(run_id, worker_id, lease, _text(reply[1])):
                    held[run_id] = self.get_run(run_id).cancel_requested
                continue
            if outcome == "held":
                held[run_id] = reply[2] == b"1"
            if gens[run_id]:
                settles.append(_Settle(run_id, gens[run_id], _need(reply[1])))
        self._settle(settles)
        return held

    def _renew_one(self, run_id: str, worker_id: str, lease: str, lowest: str) -> bool:
        keys = self._run_keys(run_id)

        def change(gen: str, _clock: str) -> tuple[bool, _Need] | None:
            reply = self._call("renew", keys, [self._channel, worker_id, lease, gen, "1"])
            if _text(reply[0]) == "retry":
                return None
            return _text(reply[0]) == "held", _need(reply[1])

        return self._marked(run_id, lowest, change)

    def release(self, worker_id: str, run_id: str, *, now: float) -> None:
        keys = self._run_keys(run_id)

        def change(gen: str, _clock: str) -> tuple[None, _Need] | None:
            reply = self._call("release", keys, [self._channel, worker_id, _num(now), gen, run_id])
            if _text(reply[0]) == "retry":
                return None
            return None, _need(reply[1])

        self._marked(run_id, _num(now), change)

    # -- signals and control

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        keys = self._run_keys(run_id)
        suffix = _signal_suffix(name, payload, now)

        def change(gen: str, _clock: str) -> tuple[Any, _Need] | None:
            args = [self._channel, suffix, _num(now), key or "", "0" if key is None else "1"]
            reply = self._call("send_signal", keys, [*args, gen, run_id])
            if reply[0] == 4:
                return None
            return reply, _need(reply[1])

        result = self._marked(run_id, _num(now), change)
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        if result[0] == 2:
            raise _errors.RunStateError(
                f"run {run_id!r} has finished ({_text(result[2])}); a signal sent to it "
                "would never be read"
            )
        return bool(result[0] == 0)

    def request_cancel(self, run_id: str, *, now: float) -> history.RunInfo:
        keys = self._run_keys(run_id)

        def change(gen: str, _clock: str) -> tuple[Any, _Need] | None:
            reply = self._call("request_cancel", keys, [self._channel, _num(now), gen, run_id])
            if reply[0] == 2:
                return None
            return reply, _need(reply[1])

        result = self._marked(run_id, _num(now), change)
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        return _run_info(run_id, _fields(result[2]))

    def reopen(self, run_id: str, *, now: float) -> history.RunInfo:
        keys = self._run_keys(run_id)
        event = _stamp(now) + encode_event(history.RunRetried())

        def change(gen: str, _clock: str) -> tuple[Any, _Need] | None:
            reply = self._call("reopen", keys, [self._channel, _num(now), event, gen, run_id])
            if reply[0] == 3:
                return None
            return reply, _need(reply[1])

        result = self._marked(run_id, _num(now), change)
        if result[0] == 1:
            raise _errors.RunNotFoundError(run_id)
        if result[0] == 2:
            raise _errors.RunStateError(
                f"run {run_id!r} is {_text(result[2])}, not failed; only a failed run "
                "can be retried"
            )
        return _run_info(run_id, _fields(result[2]))

    def _records(self, run_ids: Sequence[str]) -> list[Any]:
        """The records of these runs (an empty dict for a missing one), in one pipeline."""
        return self._commands(
            lambda pipe: [pipe.hgetall(self._key(run_id, "run")) for run_id in run_ids]
        )

    def _created_desc(
        self, bucket: int, first: list[Any], page: int, high: str, low: str
    ) -> Iterator[tuple[float, str]]:
        """The runs of one bucket created in ``[low, high]``, newest first, a page at a time.

        ``high`` and ``low`` are score bounds as ``ZREVRANGEBYSCORE`` takes them. Each
        page starts at the last score seen, skipping the members of that score already
        given, so runs created meanwhile do not shift the pages.
        """
        key = self._bucket_keys(bucket)["created"]
        rows, skip = first, 0
        while rows:
            for member, score in rows:
                yield -float(score), _text(member)
            if len(rows) < page:
                return
            last = float(rows[-1][1])
            same = sum(1 for _, score in rows if float(score) == last)
            skip = skip + same if high == _num(last) else same
            high = _num(last)
            with self._guard():
                rows = self._connected().zrevrangebyscore(
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
    ) -> list[history.RunInfo]:
        wanted_status = None if statuses is None else {RunStatus(s).value for s in statuses}
        wanted_wf = None if workflows is None else set(workflows)
        if limit <= 0 or wanted_status == set() or wanted_wf == set():
            return []
        low = "-inf" if created_after is None else _num(created_after)
        high = "+inf" if created_before is None else "(" + _num(created_before)
        page = max(limit, 100)
        firsts = self._commands(
            lambda pipe: [
                pipe.zrevrangebyscore(
                    self._bucket_keys(b)["created"], high, low, start=0, num=page, withscores=True
                )
                for b in range(BUCKETS)
            ]
        )
        newest_first = heapq.merge(
            *(self._created_desc(b, firsts[b], page, high, low) for b in range(BUCKETS))
        )
        found: list[history.RunInfo] = []
        seen: set[str] = set()
        while len(found) < limit:
            batch = _take(newest_first, page)
            if not batch:
                break
            ids = list(dict.fromkeys(run_id for _, run_id in batch if run_id not in seen))
            seen.update(ids)
            rows = self._records(ids)
            for run_id, fields in zip(ids, rows, strict=True):
                if not fields:
                    continue  # a create that never happened
                run = _run_info(run_id, fields)
                # The record is the truth: an index score a crash left behind may differ.
                if (
                    # by the stored word: a damaged status matches no filter, as elsewhere
                    (wanted_status is None or _text(fields.get(b"status")) in wanted_status)
                    and (wanted_wf is None or run.workflow in wanted_wf)
                    and (created_after is None or run.created_at >= created_after)
                    and (created_before is None or run.created_at < created_before)
                ):
                    found.append(run)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[:limit]

    # -- retention

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
        wanted = sorted({RunStatus(s).value for s in statuses} & _FINISHED)
        names = None if workflows is None else set(workflows)
        if limit <= 0 or not wanted or names == set():
            return 0
        page = min(max(limit, 100), 1000)
        oldest_first = heapq.merge(
            *(self._created_before(b, finished_before, page) for b in range(BUCKETS))
        )
        chosen: dict[str, history.RunInfo] = {}
        while len(chosen) < limit:
            batch = _take(oldest_first, page)
            if not batch:
                break
            ids = [run_id for _, run_id in batch if run_id not in chosen]
            found = []
            for run_id, fields in zip(ids, self._records(ids), strict=True):
                if not fields:
                    continue
                run = _run_info(run_id, fields)
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
        key = self._bucket_keys(bucket)["created"]
        low, high, skip = "-inf", "(" + _num(before), 0
        while True:
            with self._guard():
                rows = self._connected().zrangebyscore(
                    key, low, high, start=skip, num=page, withscores=True
                )
            for member, score in rows:
                yield float(score), _text(member)
            if len(rows) < page:
                return
            last = float(rows[-1][1])
            same = sum(1 for _, score in rows if float(score) == last)
            skip = skip + same if low == _num(last) else same
            low = _num(last)

    def _kept(self, runs: Sequence[history.RunInfo]) -> set[str]:
        """The ids of the runs a purge must keep: for their parent, or their chain."""
        parents = sorted({run.parent for run in runs if run.parent is not None})
        successors = {
            run.id: history.chain_next(run.id) for run in runs if run.status is RunStatus.COMPLETED
        }
        nexts = list(successors.values())
        replies = self._commands(
            lambda pipe: [
                *(pipe.hget(self._key(parent, "run"), "status") for parent in parents),
                *(pipe.exists(self._key(run_id, "run")) for run_id in nexts),
            ]
        )
        keeping = {s.value for s in stores.KEEPING_PARENTS}
        holding = {
            parent
            for parent, status in zip(parents, replies[: len(parents)], strict=True)
            if status is not None and _text(status) in keeping
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
            by_bucket[bucket_of(run.id)].append(run.id)
        order = sorted(by_bucket)
        marks = []
        for bucket in order:
            keys = self._bucket_keys(bucket)
            marks.append(
                (
                    "mark",
                    [keys["hints"], keys["gen"], keys["seq"], keys["created"]],
                    ["", *by_bucket[bucket]],
                )
            )
        gens: dict[str, str] = {}
        for bucket, (_clock, values) in zip(order, self._call_many(marks), strict=True):
            gens.update(zip(by_bucket[bucket], (_text(v) for v in values), strict=True))
        calls = [
            (
                "purge_run",
                self._run_keys(run.id),
                [self._channel, gens[run.id], _num(before), run.id, *wanted],
            )
            for run in runs
        ]
        deleted = 0
        settles = []
        for run, reply in zip(runs, self._call_many(calls), strict=True):
            need = _need(reply[1])
            if reply[0] == 1:
                deleted += 1
                need = need._replace(workflow=run.workflow)
                settles.append(_Settle(run.id, gens[run.id], need, missing=True))
            else:
                settles.append(_Settle(run.id, gens[run.id], need, missing=not need.workflow))
        self._settle(settles)
        return deleted

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
            pubsub: Any = None
            try:
                pubsub = self._pubsub(outage)
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
            except (_redis_errors.RedisError, _redis_errors.RedisClusterException):
                # Messages may have been missed while disconnected: wake every waiter
                # once (a spurious wake-up is allowed), then retry after a pause.
                if not outage:
                    self._bump()
                outage = True
                self._subscribed.set()
                with self._changed:
                    self._changed.wait_for(lambda: self._closed, 1.0)
            finally:
                if pubsub is not None:
                    with suppress(_redis_errors.RedisError):
                        pubsub.close()

    def _pubsub(self, outage: bool) -> Any:
        """A subscriber connection, to the URL's node (on a cluster a publish reaches them all).

        After a failure on a cluster, to a primary picked at random instead.
        """
        if outage and self._client is not None and self._cluster:
            node = random.choice(self._client.get_primaries())
            return self._client.get_redis_connection(node).pubsub()
        return self._single.pubsub()

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
        client = self._client
        if listener is not None:
            with suppress(_redis_errors.RedisError):
                (client or self._single).publish(self._channel, self._stop_message)
            listener.join(3.0)
        if client is not None and self._cluster:
            client.close()
        self._single.close()
        self._single.connection_pool.disconnect()


def _take(items: Iterator[_U], count: int) -> list[_U]:
    return list(itertools.islice(items, count))


_RUN_PARTS = ("run", "events", "signals", "signal_keys", "fence")

_BUSY = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
"""Error replies of a server that cannot take writes now, but may soon."""

_UNAVAILABLE = (
    _redis_errors.ConnectionError,
    _redis_errors.TimeoutError,
    _redis_errors.ClusterDownError,
    _redis_errors.TryAgainError,
    _redis_errors.SlotNotCoveredError,
)

_ACTIVE = {status.value for status in history.ACTIVE_STATUSES}
_FINISHED = {status.value for status in RunStatus if status.is_terminal}
_FINAL = {RunStatus.COMPLETED.value, RunStatus.CANCELLED.value}

_PARAMS = {"fence_ttl_ms": _FENCE_TTL_MS, "stall_limit": _STALL_LIMIT}

_SCRIPTS = (
    ("create_run", (_RUN_PRELUDE + _CREATE_RUN) % _PARAMS),
    ("append", (_RUN_PRELUDE + _APPEND) % _PARAMS),
    ("claim_one", (_RUN_PRELUDE + _CLAIM_ONE) % _PARAMS),
    ("claim_run", (_RUN_PRELUDE + _CLAIM_RUN) % _PARAMS),
    ("renew", (_RUN_PRELUDE + _RENEW) % _PARAMS),
    ("release", (_RUN_PRELUDE + _RELEASE) % _PARAMS),
    ("send_signal", (_RUN_PRELUDE + _SEND_SIGNAL) % _PARAMS),
    ("request_cancel", (_RUN_PRELUDE + _REQUEST_CANCEL) % _PARAMS),
    ("reopen", (_RUN_PRELUDE + _REOPEN) % _PARAMS),
    ("purge_run", (_RUN_PRELUDE + _PURGE_RUN) % _PARAMS),
    ("load", _LOAD),
    ("mark", _MARK),
    ("mark_create", _MARK_CREATE),
    ("settle", _SETTLE),
    ("peek", _PEEK),
    ("next_wake", _NEXT_WAKE),
)

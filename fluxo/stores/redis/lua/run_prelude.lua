-- What every script on the keys of one run starts with: its keys, and helpers.
-- KEYS: run, events, signals, signal_keys, fence, qfence. ARGV[1]: the change channel.
local RUN, EVENTS, SIGNALS, SIGNAL_KEYS, FENCE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local QFENCE = KEYS[6]
local CHANNEL = ARGV[1]
local FENCE_TTL_MS = 86400000 -- a day: how long a missing run's fence is kept
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
-- The queue fence: the highest number of a queue entry that may no longer be taken
-- up by the run (a reader found the entry unused and is removing it). In the
-- record while the run exists (for its own queue), else in a hash by queue, kept a day.
local function qfence(queue)
  if redis.call('HEXISTS', RUN, 'wf') == 1 then
    return tonumber(redis.call('HGET', RUN, 'qfence') or '0')
  end
  return tonumber(redis.call('HGET', QFENCE, queue) or '0')
end
local function raise_qfence(queue, n)
  local at = tonumber(n)
  if at <= qfence(queue) then return end
  if redis.call('HEXISTS', RUN, 'wf') == 1 then
    redis.call('HSET', RUN, 'qfence', n)
  else
    redis.call('HSET', QFENCE, queue, n)
    redis.call('PEXPIRE', QFENCE, FENCE_TTL_MS)
  end
end

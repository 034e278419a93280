-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, g, mark time, workflow, first event, now, owner, lease_until, deadline,
-- id, headers (JSON text, '' for none), ready_at ('' none), queue ('' the default one),
-- priority ('' for 0), has partition ('1'/'0'), partition, start_at ('' none),
-- queue entry ('' none), its number, then the parent only when there is one
local STALL_LIMIT = 3600 -- seconds: a mark older than this is retried
local g = ARGV[2]
local wf = redis.call('HGET', RUN, 'wf')
if wf then
  raise_fence(g)
  if wf ~= ARGV[4] then return {'conflict', wf, need()} end
  return {'exists', redis.call('HGETALL', RUN), need()}
end
if stale(g) then return {'retry'} end
local queue, entry = ARGV[13] or '', ARGV[18] or ''
-- a reader found the queue entry unused and may be removing it
if entry ~= '' and tonumber(ARGV[19]) <= qfence(queue) then return {'retry'} end
local clock = redis.call('TIME')
if tonumber(clock[1]) - tonumber(ARGV[3]) > STALL_LIMIT then return {'retry'} end
local now = ARGV[6]
local fenced = redis.call('HGET', QFENCE, queue)
local status = 'pending'
if ARGV[7] ~= '' then status = 'running' end
redis.call('HSET', RUN, 'wf', ARGV[4], 'status', status, 'created', now, 'updated', now,
  'cancel', '0', 'wake', '0', 'fence', g)
redis.call('DEL', FENCE, QFENCE)
local ready = ARGV[12] or now
if ready ~= '' then redis.call('HSET', RUN, 'ready', ready) end
if ARGV[7] ~= '' then
  redis.call('HSET', RUN, 'owner', ARGV[7])
  if ARGV[8] ~= '' then redis.call('HSET', RUN, 'lease', ARGV[8]) end
end
if ARGV[9] ~= '' then redis.call('HSET', RUN, 'deadline', ARGV[9]) end
if ARGV[11] ~= '' then redis.call('HSET', RUN, 'headers', ARGV[11]) end
if queue ~= '' then redis.call('HSET', RUN, 'queue', queue) end
if ARGV[14] and ARGV[14] ~= '' then redis.call('HSET', RUN, 'prio', ARGV[14]) end
if ARGV[15] == '1' then redis.call('HSET', RUN, 'part', ARGV[16]) end
if ARGV[17] and ARGV[17] ~= '' then redis.call('HSET', RUN, 'start', ARGV[17]) end
if entry ~= '' then redis.call('HSET', RUN, 'qkey', entry) end
if fenced then redis.call('HSET', RUN, 'qfence', fenced) end
if ARGV[20] then redis.call('HSET', RUN, 'parent', ARGV[20]) end
redis.call('RPUSH', EVENTS, ARGV[5])
changed(ARGV[10])
return {'created', redis.call('HGETALL', RUN), need()}

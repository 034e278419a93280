-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, g, mark time, workflow, first event, now, owner, lease_until, deadline,
-- id, headers (JSON text, '' for none), then the parent only when there is one
local STALL_LIMIT = 3600 -- seconds: a mark older than this is retried
local g = ARGV[2]
local wf = redis.call('HGET', RUN, 'wf')
if wf then
  raise_fence(g)
  if wf ~= ARGV[4] then return {'conflict', wf, need()} end
  return {'exists', redis.call('HGETALL', RUN), need()}
end
if stale(g) then return {'retry'} end
local clock = redis.call('TIME')
if tonumber(clock[1]) - tonumber(ARGV[3]) > STALL_LIMIT then return {'retry'} end
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
if ARGV[11] ~= '' then redis.call('HSET', RUN, 'headers', ARGV[11]) end
if ARGV[12] then redis.call('HSET', RUN, 'parent', ARGV[12]) end
redis.call('RPUSH', EVENTS, ARGV[5])
changed(ARGV[10])
return {'created', redis.call('HGETALL', RUN), need()}

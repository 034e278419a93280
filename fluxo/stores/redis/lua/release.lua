-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, worker, now, g, id
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

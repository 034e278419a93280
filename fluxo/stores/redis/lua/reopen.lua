-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, now, RunRetried event, g, id
local g, now = ARGV[4], ARGV[2]
local status = redis.call('HGET', RUN, 'status')
if not status then
  raise_fence(g)
  return {1, need()}
end
if status ~= 'failed' and status ~= 'dead' then
  raise_fence(g)
  return {2, need(), status}
end
if stale(g) then return {3} end
redis.call('RPUSH', EVENTS, ARGV[3])
redis.call('HSET', RUN, 'status', 'pending', 'ready', now, 'updated', now, 'cancel', '0')
redis.call('HDEL', RUN, 'owner', 'lease', 'rec')
raise_fence(g)
changed(ARGV[5])
return {0, need(), redis.call('HGETALL', RUN)}

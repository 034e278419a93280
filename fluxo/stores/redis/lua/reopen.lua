-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, now, RunRetried event, g, id, then for a run of a named queue: its
-- queue entry ('' none yet), the entry's number, and the queue, priority and
-- created_at the entry was made for.
local g, now = ARGV[4], ARGV[2]
local f = redis.call('HMGET', RUN, 'status', 'queue', 'prio', 'created')
local status, queue = f[1], f[2]
if not status then
  raise_fence(g)
  return {1, need()}
end
if status ~= 'failed' and status ~= 'dead' and status ~= 'cancelled' then
  raise_fence(g)
  return {2, need(), status}
end
local entry = ARGV[6] or ''
if queue then
  -- awaits admission again: the caller makes an entry in the queue's index first
  local prio = f[3] or '0'
  if entry == '' or ARGV[8] ~= queue or ARGV[9] ~= prio or ARGV[10] ~= f[4] then
    return {5, queue, prio, f[4]}
  end
  if tonumber(ARGV[7]) <= qfence(queue) then return {3} end
end
if stale(g) then return {3} end
redis.call('RPUSH', EVENTS, ARGV[3])
redis.call('HSET', RUN, 'status', 'pending', 'updated', now, 'cancel', '0')
if queue then
  redis.call('HDEL', RUN, 'ready')
  redis.call('HSET', RUN, 'start', now, 'qkey', entry)
else
  redis.call('HSET', RUN, 'ready', now)
end
redis.call('HDEL', RUN, 'owner', 'lease', 'rec')
raise_fence(g)
changed(ARGV[5])
return {0, need(), redis.call('HGETALL', RUN)}

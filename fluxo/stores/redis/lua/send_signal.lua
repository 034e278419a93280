-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, name-and-payload suffix, now, key or '', has key ('1'/'0'), g, id
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
local sid = string.format('%d', id)
redis.call('RPUSH', SIGNALS, sid .. '\0' .. ARGV[2])
local now = ARGV[3]
if status == 'waiting' then
  redis.call('HSET', RUN, 'status', 'pending', 'ready', now)
end
redis.call('HSET', RUN, 'wake', '1', 'updated', now, 'sig', sid)
raise_fence(g)
changed(ARGV[7])
return {0, need()}

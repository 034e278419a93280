-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, now, g, id
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

-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, now, g, id
-- Makes a run awaiting admission ready at now. Returns 1, the entry it needs, and its
-- queue entry and queue (for the caller to remove); 0 when it awaits no admission;
-- 2 when a settle may remove its hint (mark again).
local now, g = ARGV[2], ARGV[3]
local f = redis.call('HMGET', RUN, 'status', 'start', 'qkey', 'queue')
if not f[1] or not active(f[1]) or not f[2] then
  raise_fence(g)
  return {0, need()}
end
if stale(g) then return {2} end
redis.call('HSET', RUN, 'status', 'pending', 'ready', now, 'updated', now)
redis.call('HDEL', RUN, 'start', 'qkey')
raise_fence(g)
changed(ARGV[4])
return {1, need(), f[3] or '', f[4] or ''}

-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, now, g, owner, id
-- Ends at now the live lease of an active run still held by owner (a dead worker):
-- the owner stays until a claim replaces it, so the fence of its history holds.
local now, g = ARGV[2], ARGV[3]
local f = redis.call('HMGET', RUN, 'owner', 'status', 'lease')
if f[1] ~= ARGV[4] or not active(f[2]) or not f[3] or tonumber(f[3]) <= tonumber(now) then
  raise_fence(g)
  return {'no', need()}
end
if stale(g) then return {'retry'} end
redis.call('HSET', RUN, 'lease', now)
raise_fence(g)
changed(ARGV[5])
return {'freed', need()}

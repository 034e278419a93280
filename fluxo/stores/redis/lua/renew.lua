-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, worker, lease_until, g or '', checked
local g = ARGV[4]
local f = redis.call('HMGET', RUN, 'owner', 'cancel', 'status', 'ready', 'lease')
if f[1] ~= ARGV[2] then
  raise_fence(g)
  return {'no', need()}
end
if ARGV[5] == '1' then
  if stale(g) then return {'retry'} end
else
  local after, after_s = due(f[3], f[4], ARGV[3])
  if after < due(f[3], f[4], f[5]) then return {'cover', after_s} end
end
redis.call('HSET', RUN, 'lease', ARGV[3])
raise_fence(g)
return {'held', need(), f[2]}

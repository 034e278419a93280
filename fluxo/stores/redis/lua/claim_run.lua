-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, worker, now, lease_until, g or '', checked
local worker, now = ARGV[2], tonumber(ARGV[3])
local g = ARGV[5]
local f = redis.call('HMGET', RUN, 'status', 'owner', 'lease', 'ready', 'start')
-- a run awaiting admission (with a start) is only made ready by an admission
if not f[1] or not active(f[1]) or f[5]
  or (f[3] and tonumber(f[3]) >= now and f[2] ~= worker) then
  raise_fence(g)
  return {'no', need()}
end
if ARGV[6] == '1' then
  if stale(g) then return {'retry'} end
else
  local after, after_s = due(f[1], f[4], ARGV[4])
  if after < due(f[1], f[4], f[3]) then return {'cover', after_s} end
end
-- Still running under another owner: taken over from an execution that never ended.
if f[1] == 'running' and f[2] ~= worker then redis.call('HINCRBY', RUN, 'rec', 1) end
redis.call('HSET', RUN, 'status', 'running', 'owner', worker, 'lease', ARGV[4],
  'updated', ARGV[3], 'wake', '0')
raise_fence(g)
return {'ok', need(), redis.call('HGETALL', RUN)}

-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, worker, now, lease_until, g, any workflow ('1'/'0'), queues wanted
-- ('' or absent: any queue; else each name between NULs: NUL a NUL b NUL), workflows...
local now = tonumber(ARGV[3])
local g = ARGV[5]
local f = redis.call('HMGET', RUN, 'wf', 'status', 'ready', 'lease', 'queue')
if not f[1] then
  raise_fence(g)
  return {'missing', need()}
end
local ok = active(f[2]) and f[3] and tonumber(f[3]) <= now
  and (not f[4] or tonumber(f[4]) < now)
if ok and ARGV[6] ~= '1' then
  ok = false
  for w = 8, #ARGV do
    if ARGV[w] == f[1] then ok = true end
  end
end
if ok and ARGV[7] and ARGV[7] ~= '' then
  ok = string.find(ARGV[7], '\0' .. (f[5] or '') .. '\0', 1, true) ~= nil
end
raise_fence(g)
if not ok then return {'no', need()} end
-- Still running: taken over from an execution that never ended, a recovery.
if f[2] == 'running' then redis.call('HINCRBY', RUN, 'rec', 1) end
redis.call('HSET', RUN, 'status', 'running', 'owner', ARGV[2], 'lease', ARGV[4],
  'updated', ARGV[3], 'wake', '0')
return {'claimed', need(), redis.call('HGETALL', RUN)}

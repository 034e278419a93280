-- A script on the workers' liveness key.
-- KEYS: alive. ARGV: pairs of worker id and the alive_until its reaper saw.
-- Removes the records of dead workers whose runs were freed, unless one beat since.
local gone = 0
for j = 1, #ARGV, 2 do
  local at = redis.call('ZSCORE', KEYS[1], ARGV[j])
  if at and tonumber(at) == tonumber(ARGV[j + 1]) then
    gone = gone + redis.call('ZREM', KEYS[1], ARGV[j])
  end
end
return gone

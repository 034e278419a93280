-- A script on the workers' liveness key.
-- KEYS: alive (a sorted set: worker id scored by its alive_until).
-- ARGV: worker, now, alive_until, reap ('1'/'0').
-- Records the beat; with reap, returns the other workers whose alive_until is before
-- now, as id, alive_until pairs. They stay until their runs are freed (bury.lua).
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
if ARGV[4] ~= '1' then return {} end
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'WITHSCORES')
local dead = {}
for j = 1, #found, 2 do
  if found[j] ~= ARGV[1] then
    dead[#dead + 1] = found[j]
    dead[#dead + 1] = found[j + 1]
  end
end
return dead

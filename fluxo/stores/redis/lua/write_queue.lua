-- A script on the keys of one queue.
-- KEYS: state (a hash: v, the version, and s, the state). ARGV: version, state.
-- Writes the state as version + 1 only when the stored version is the one given.
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', v + 1, 's', ARGV[2])
return 1

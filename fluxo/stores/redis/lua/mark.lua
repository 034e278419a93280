-- A script on the keys of one index bucket.
-- KEYS: hints, gen, seq, created. ARGV: lowest claim time or '', ids...
local t = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local g = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[2], id, g)
  if t ~= '' then
    local hint = redis.call('ZSCORE', KEYS[1], id)
    if not hint or tonumber(t) < tonumber(hint) then redis.call('ZADD', KEYS[1], t, id) end
  end
  out[#out + 1] = tostring(g)
end
return {redis.call('TIME')[1], out}

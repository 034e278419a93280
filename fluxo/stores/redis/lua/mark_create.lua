-- A script on the keys of one index bucket.
-- The mark of a create, which knows the workflow: the entry the new run will need
-- goes straight into the workflow's index (no lower than an entry already there), so
-- a create that makes the run needs no settle. A run awaiting admission (kind '')
-- needs no entry: only its generation and its creation time are written.
-- KEYS: gen, seq, created, lready, ready, leased. ARGV: id, created_at, kind, ready, lease
local id, kind, ready = ARGV[1], ARGV[3], ARGV[4]
local g = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], id, g)
local fresh = redis.call('ZADD', KEYS[3], 'NX', ARGV[2], id)
local function lower(key, score)
  local at = redis.call('ZSCORE', key, id)
  if not at or tonumber(score) < tonumber(at) then redis.call('ZADD', key, score, id) end
end
if kind == 'r' then
  lower(KEYS[5], ready)
elseif kind == 'l' then
  lower(KEYS[6], ARGV[5])
  local at = redis.call('HGET', KEYS[4], id)
  if not at or tonumber(ready) < tonumber(at) then redis.call('HSET', KEYS[4], id, ready) end
end
return {redis.call('TIME')[1], tostring(g), fresh}

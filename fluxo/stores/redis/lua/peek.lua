-- A script on the keys of one index bucket.
-- KEYS: hints, gen, created, lready, then ready and leased of each workflow.
-- ARGV: now, limit. Returns groups of workflow number (0: a hint), id, due, created, g.
local HINTS, GEN, CREATED, LREADY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_s, limit = ARGV[1], tonumber(ARGV[2])
local now = tonumber(now_s)
local out = {}
local full = 0
local function add(w, id, at)
  out[#out + 1] = w
  out[#out + 1] = id
  out[#out + 1] = at
  out[#out + 1] = redis.call('ZSCORE', CREATED, id) or ''
  out[#out + 1] = redis.call('HGET', GEN, id) or ''
end
local hints = redis.call('ZRANGEBYSCORE', HINTS, '-inf', now_s, 'WITHSCORES', 'LIMIT', 0, limit)
if #hints == 2 * limit then full = 1 end
for j = 1, #hints, 2 do add(0, hints[j], hints[j + 1]) end
for w = 1, (#KEYS - 4) / 2 do
  local ready = redis.call('ZRANGEBYSCORE', KEYS[3 + 2 * w], '-inf', now_s,
    'WITHSCORES', 'LIMIT', 0, limit)
  if #ready == 2 * limit then full = 1 end
  for j = 1, #ready, 2 do add(w, ready[j], ready[j + 1]) end
  -- runs whose lease expired (lease_until < now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4 + 2 * w], '-inf', '(' .. now_s)
  for j = 1, #expired do
    local at = redis.call('HGET', LREADY, expired[j])
    if at and tonumber(at) <= now then add(w, expired[j], at) end
  end
end
return {full, out}

-- A script on the keys of one index bucket.
-- KEYS: hints, gen, created, lready, then ready and leased of each workflow named.
-- ARGV: groups of id, g ('*': whatever the generation), workflow number (0: none),
-- kind, ready_at, lease_until, missing ('1'/'0'), created_at or ''.
local HINTS, GEN, CREATED, LREADY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local done = 0
for i = 1, #ARGV, 8 do
  local id, g, w, kind = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if ARGV[i + 7] ~= '' then redis.call('ZADD', CREATED, ARGV[i + 7], id) end
  if g == '*' or (g ~= '' and redis.call('HGET', GEN, id) == g) then
    done = done + 1
    redis.call('ZREM', HINTS, id)
    redis.call('HDEL', LREADY, id)
    local ready, leased = nil, nil
    if w > 0 then
      ready, leased = KEYS[3 + 2 * w], KEYS[4 + 2 * w]
      redis.call('ZREM', ready, id)
      redis.call('ZREM', leased, id)
    end
    if kind == 'r' then
      redis.call('ZADD', ready, ARGV[i + 4], id)
    elseif kind == 'l' then
      redis.call('ZADD', leased, ARGV[i + 5], id)
      redis.call('HSET', LREADY, id, ARGV[i + 4])
    else
      redis.call('HDEL', GEN, id)
      if ARGV[i + 6] == '1' then redis.call('ZREM', CREATED, id) end
    end
  end
end
return done

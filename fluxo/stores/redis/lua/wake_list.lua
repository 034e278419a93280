-- Read-only, on the keys of one index bucket.
-- KEYS: hints, lready, then ready and leased of each workflow. ARGV: now, count.
-- Like next_wake.lua, but returns the runs: up to count of the earliest hints and
-- ready entries of each set, and every leased run, as id, time pairs; and the
-- horizon: the earliest last time read of a set that may have more ('' for none),
-- so that no run left unread is due before it.
local t, k = tonumber(ARGV[1]), tonumber(ARGV[2])
local out, horizon = {}, nil
local function take(key)
  local found = redis.call('ZRANGE', key, 0, k - 1, 'WITHSCORES')
  if #found == 2 * k then
    local last = tonumber(found[#found])
    if horizon == nil or last < tonumber(horizon) then horizon = found[#found] end
  end
  for j = 1, #found do out[#out + 1] = found[j] end
end
take(KEYS[1])
for w = 1, (#KEYS - 2) / 2 do
  take(KEYS[1 + 2 * w])
  local leased = redis.call('ZRANGE', KEYS[2 + 2 * w], 0, -1, 'WITHSCORES')
  for j = 1, #leased, 2 do
    local lease_s = leased[j + 1]
    local ready_s = redis.call('HGET', KEYS[2], leased[j])
    if ready_s then
      out[#out + 1] = leased[j]
      if tonumber(lease_s) >= t and tonumber(lease_s) > tonumber(ready_s) then
        out[#out + 1] = lease_s
      else
        out[#out + 1] = ready_s
      end
    end
  end
end
return {horizon or '', out}

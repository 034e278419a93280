-- A script on the keys of one index bucket.
-- KEYS: hints, lready, then ready and leased of each workflow. ARGV: now.
local t = tonumber(ARGV[1])
local best, best_s = nil, false
local function consider(v, s)
  if best == nil or v < best then best, best_s = v, s end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first > 0 then consider(tonumber(first[2]), first[2]) end
for w = 1, (#KEYS - 2) / 2 do
  first = redis.call('ZRANGE', KEYS[1 + 2 * w], 0, 0, 'WITHSCORES')
  if #first > 0 then consider(tonumber(first[2]), first[2]) end
  local leased = redis.call('ZRANGE', KEYS[2 + 2 * w], 0, -1, 'WITHSCORES')
  for j = 1, #leased, 2 do
    local lease_s = leased[j + 1]
    local lease = tonumber(lease_s)
    if lease >= t and best ~= nil and lease >= best then break end
    local ready_s = redis.call('HGET', KEYS[2], leased[j])
    if ready_s then
      local ready = tonumber(ready_s)
      if lease >= t and lease > ready then
        consider(lease, lease_s)
      else
        consider(ready, ready_s)
      end
    end
  end
end
return best_s

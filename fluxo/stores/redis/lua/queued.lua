-- Read-only, on the keys of one queue.
-- KEYS: queued. ARGV: now (as the 16 hex digits of an entry's start), limit.
-- An entry is priority (16 hex digits, highest first), start_at and created_at (16
-- hex digits each, in order), id, NUL, number. Returns the first limit entries with
-- start_at <= now, in order, and the first entry after now of each priority.
local Z, now, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local due, later = {}, {}
local first = redis.call('ZRANGEBYLEX', Z, '-', '+', 'LIMIT', 0, 1)
while #first > 0 do
  local p = string.sub(first[1], 1, 16)
  if #due < limit then
    local found = redis.call('ZRANGEBYLEX', Z, '[' .. p, '(' .. p .. now .. 'g',
      'LIMIT', 0, limit - #due)
    for j = 1, #found do due[#due + 1] = found[j] end
  end
  local next_one = redis.call('ZRANGEBYLEX', Z, '(' .. p .. now .. 'g', '(' .. p .. 'g',
    'LIMIT', 0, 1)
  if #next_one > 0 then later[#later + 1] = next_one[1] end
  first = redis.call('ZRANGEBYLEX', Z, '[' .. p .. 'g', '+', 'LIMIT', 0, 1)
end
return {due, later}

-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, expected_seq, now, status or '', ready_at or '', g or '', checked,
-- id, unless cancel requested ('1'/'0'), events...
local status, g = ARGV[4], ARGV[6]
local n = redis.call('LLEN', EVENTS)
if n == 0 then
  raise_fence(g)
  return {1, need()}
end
if tonumber(ARGV[2]) ~= n then
  raise_fence(g)
  return {2, need(), n}
end
if status ~= '' and ARGV[7] == '1' and stale(g) then return {3} end
if ARGV[9] == '1' and redis.call('HGET', RUN, 'cancel') == '1' then
  raise_fence(g)
  return {4, need()}
end
local i = 10
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('RPUSH', EVENTS, unpack(ARGV, i, last))
  i = last + 1
end
if status == '' then return {0} end
local now = ARGV[3]
local ready = ARGV[5]
if status == 'waiting' then
  if redis.call('HGET', RUN, 'wake') == '1' then
    status = 'pending'
    ready = now
  end
end
redis.call('HSET', RUN, 'status', status, 'updated', now)
if ready == '' then
  redis.call('HDEL', RUN, 'ready')
else
  redis.call('HSET', RUN, 'ready', ready)
end
-- A run awaiting admission that is ended this way awaits no more: its queue entry
-- (returned, with its queue) is for the caller to remove.
local q = redis.call('HMGET', RUN, 'qkey', 'queue')
redis.call('HDEL', RUN, 'owner', 'lease', 'start', 'qkey')
raise_fence(g)
changed(ARGV[8])
return {0, need(), q[1] or '', q[2] or ''}

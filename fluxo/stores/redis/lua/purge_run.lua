-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, g, finished before, id, the statuses to delete...
local g = ARGV[2]
local f = redis.call('HMGET', RUN, 'status', 'created', 'updated')
if not f[1] then
  raise_fence(g)
  return {0, need()}
end
local wanted = false
for i = 5, #ARGV do
  if ARGV[i] == f[1] then wanted = true end
end
local before = tonumber(ARGV[3])
if not wanted or tonumber(f[2]) >= before or tonumber(f[3]) >= before then
  raise_fence(g)
  return {0, need()}
end
local q = redis.call('HMGET', RUN, 'qkey', 'queue', 'qfence')
redis.call('DEL', RUN, EVENTS, SIGNALS, SIGNAL_KEYS)
raise_fence(g)
if q[3] then raise_qfence(q[2] or '', q[3]) end -- kept for a create of the same id
return {1, need(), q[1] or '', q[2] or ''}

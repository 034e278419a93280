-- A script on the keys of one run, sent after run_prelude.lua (its KEYS and helpers).
-- ARGV: channel, queue, queue entry, its number
-- A reader met the entry in the queue's index: 0 if the run's record holds it (the
-- run awaits admission with it); else 1, after raising the queue fence to its number
-- so that no change still on its way takes the entry up, and the reader removes it.
local queue, entry = ARGV[2], ARGV[3]
local f = redis.call('HMGET', RUN, 'qkey', 'queue')
if f[1] == entry then return 0 end
if redis.call('HEXISTS', RUN, 'wf') == 1 and (f[2] or '') ~= queue then
  return 1 -- a run of another queue never takes an entry of this one
end
raise_qfence(queue, ARGV[4])
return 1

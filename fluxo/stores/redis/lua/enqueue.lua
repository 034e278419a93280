-- A script on the keys of one queue.
-- KEYS: queued (entries, all of score 0, in admission order), seq. ARGV: entries' heads...
-- Adds each head with a fresh number of the queue after NUL, so no entry is ever made
-- twice; returns the server's clock (seconds) and the entries.
local out = {}
for i = 1, #ARGV do
  local entry = ARGV[i] .. '\0' .. redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], 0, entry)
  out[#out + 1] = entry
end
return {redis.call('TIME')[1], out}

-- Read-only, on the keys of one run.
-- KEYS: run, events, signals
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('LRANGE', KEYS[3], 0, -1)}

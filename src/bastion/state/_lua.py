"""Lua scripts of the Redis counter store: each operation is one script, so one round trip.

Conventions, because Redis Lua turns numbers into strings with only 14 significant digits
and truncates numbers it returns to integers: every number written or returned goes through
``F()`` (``%.17g``, which round-trips a double), and scripts return numbers as strings. Time
is the Redis server's ``TIME`` in milliseconds, never a client clock, so replicas with skewed
clocks agree on when a lease, lock or cooldown ends. Keys are always those in ``KEYS``, except
that budget scripts also touch the keys a reservation record lists; those share the record's
hash tag, so they live in the same Cluster slot.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BREAKER",
    "BUCKET",
    "IDEM_ABANDON",
    "IDEM_BEGIN",
    "IDEM_COMPLETE",
    "INCR",
    "RESERVE",
    "SETTLE",
    "USAGE",
]

_PRELUDE: Final = """
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes on 5/6
local function F(x) return string.format('%.17g', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function expire_new(k, ms)
  if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, ms) end
end
"""

# Budget helpers: a cap is a hash (settled, reserved, r:<id> -> amount) plus a zset of lease
# ends (id -> ms); ``reserved`` always equals the sum of the hash's r: fields.
_CAP: Final = """
local function live(h, z)
  local v = redis.call('HMGET', h, 'settled', 'reserved')
  local settled, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', F(now))
  if #dead > 0 then
    for _, id in ipairs(dead) do
      local f = 'r:' .. id
      reserved = reserved - tonumber(redis.call('HGET', h, f) or '0')
      redis.call('HDEL', h, f)
    end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', F(now))
    if redis.call('ZCARD', z) == 0 then reserved = 0 end
    redis.call('HSET', h, 'reserved', F(reserved))
  end
  return settled, reserved
end
"""

# KEYS: cap hash, lease zset (per cap) ..., reservation record.
# ARGV: id, amount, lease ms, then limit and ttl ms per cap.
# Returns {1} (reserved or already known) or {0, cap index, settled, reserved}.
RESERVE: Final = (
    _PRELUDE
    + _CAP
    + """
local rec = KEYS[#KEYS]
if redis.call('EXISTS', rec) == 1 then return {1} end
local id, amount, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = (#KEYS - 1) / 2
local reserved = {}
for i = 1, n do
  local settled, r = live(KEYS[2 * i - 1], KEYS[2 * i])
  if settled + r + amount > tonumber(ARGV[2 + 2 * i]) then
    return {0, i, F(settled), F(r)}
  end
  reserved[i] = r
end
local ttl_max = 0
for i = 1, n do
  local h, z, ttl = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[3 + 2 * i])
  redis.call('HSET', h, 'r:' .. id, F(amount), 'reserved', F(reserved[i] + amount))
  redis.call('ZADD', z, F(now + lease), id)
  expire_new(h, ttl)
  expire_new(z, ttl)
  redis.call('RPUSH', rec, h, z, ttl)
  if ttl > ttl_max then ttl_max = ttl end
end
redis.call('PEXPIRE', rec, ttl_max)
return {1}
"""
)

# KEYS: reservation record. ARGV: id, actual ('' releases). Returns 1, or 0 if unknown.
SETTLE: Final = (
    _PRELUDE
    + """
local rec, id = KEYS[1], ARGV[1]
local items = redis.call('LRANGE', rec, 0, -1)
if #items == 0 then return 0 end
local actual = tonumber(ARGV[2])
for i = 1, #items, 3 do
  local h, z, ttl = items[i], items[i + 1], items[i + 2]
  local amount = redis.call('HGET', h, 'r:' .. id)
  if amount then
    redis.call('HDEL', h, 'r:' .. id)
    redis.call('ZREM', z, id)
    local reserved = 0
    if redis.call('ZCARD', z) > 0 then
      reserved = tonumber(redis.call('HGET', h, 'reserved') or '0') - tonumber(amount)
    end
    redis.call('HSET', h, 'reserved', F(reserved))
  end
  if actual then
    local settled = tonumber(redis.call('HGET', h, 'settled') or '0')
    redis.call('HSET', h, 'settled', F(settled + actual))
  end
  if redis.call('EXISTS', h) == 1 then expire_new(h, ttl) end
end
redis.call('DEL', rec)
return 1
"""
)

# KEYS: cap hash, lease zset. Returns {settled, reserved}.
USAGE: Final = (
    _PRELUDE
    + _CAP
    + """
local settled, reserved = live(KEYS[1], KEYS[2])
return {F(settled), F(reserved)}
"""
)

# KEYS: bucket hash (tokens, ts in ms). ARGV: rate per ms, burst, amount, mode ('take' only
# debits if the tokens are there; 'charge' always debits, may go negative, caps at burst).
# Returns {allowed, tokens after}.
BUCKET: Final = (
    _PRELUDE
    + """
local k = KEYS[1]
local rate, burst, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', k, 'tokens', 'ts')
local tokens = burst
if v[1] then
  tokens = math.min(burst, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate)
end
if ARGV[4] == 'take' and tokens < amount then return {0, F(tokens)} end
tokens = math.min(burst, tokens - amount)
redis.call('HSET', k, 'tokens', F(tokens), 'ts', F(now))
redis.call('PEXPIRE', k, math.min(math.ceil((burst - tokens) / rate) + 1, 1e12))
return {1, F(tokens)}
"""
)

# KEYS: counter. ARGV: amount, limit ('' for none), ttl ms. Returns {ok, value}.
INCR: Final = """
local k = KEYS[1]
local value = tonumber(redis.call('GET', k) or '0')
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit and value + amount > limit then return {0, string.format('%.17g', value)} end
value = value + amount
redis.call('SET', k, string.format('%.17g', value), 'KEEPTTL')
if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, ARGV[3]) end
return {1, string.format('%.17g', value)}
"""

# A breaker's recording half, as a function shared by ``BREAKER`` and ``_lua_batch.FINISH``
# (one text, so the single-operation and batched paths cannot drift apart). ``k``: breaker
# hash; ``ok``: the outcome; ``keep``: retention ms (as sent). Returns the new state.
# Same state machine as ``_breaker.Breaker``.
_RECORD: Final = """
local function record(k, ok, threshold, rate, window, min_calls, cooldown, keep, nb)
  local v = redis.call('HMGET', k, 'st', 'fl')
  local st = v[1] or 'closed'
  local function open()
    redis.call('DEL', k)
    redis.call('HSET', k, 'st', 'open', 'ou', F(now + cooldown))
    redis.call('PEXPIRE', k, keep)
    return 'open'
  end
  if st == 'half_open' then
    if ok then
      redis.call('DEL', k)
      return 'closed'
    end
    return open()
  end
  if st == 'open' then return 'open' end
  local epoch = math.floor(now / (window / nb))
  local slot = epoch % nb
  local names = {}
  for i = 0, nb - 1 do
    names[#names + 1] = 'e' .. i
    names[#names + 1] = 'n' .. i
    names[#names + 1] = 'f' .. i
  end
  local r = redis.call('HMGET', k, unpack(names))
  local calls, fails, cn, cf = 0, 0, 0, 0
  for i = 0, nb - 1 do
    local e = tonumber(r[3 * i + 1] or '-1')
    local n, f = tonumber(r[3 * i + 2] or '0'), tonumber(r[3 * i + 3] or '0')
    if i == slot then
      if e ~= epoch then n, f = 0, 0 end
      n = n + 1
      if not ok then f = f + 1 end
      cn, cf, e = n, f, epoch
    end
    if e > epoch - nb then
      calls = calls + n
      fails = fails + f
    end
  end
  local streak = 0
  if not ok then streak = tonumber(v[2] or '0') + 1 end
  if not ok and ((threshold > 0 and streak >= threshold)
      or (calls >= min_calls and fails / calls >= rate)) then
    return open()
  end
  redis.call('HSET', k, 'st', 'closed', 'fl', streak,
    'e' .. slot, F(epoch), 'n' .. slot, F(cn), 'f' .. slot, F(cf))
  redis.call('PEXPIRE', k, keep)
  return 'closed'
end
"""

# A breaker's admission half, as two functions shared by ``BREAKER`` and ``_lua_batch.ADMIT``
# (one text, as for ``_RECORD``). ``allow_check`` writes nothing: it returns the answer
# {allowed, state, probe, wait ms} and whether the call is the half-open probe; only then must
# the caller ``allow_probe`` it, which marks the breaker half-open until ``cooldown`` ms from
# now. ADMIT checks every operation before it applies any, so the two are apart.
_ALLOW: Final = """
local function allow_check(k)
  local v = redis.call('HMGET', k, 'st', 'ou', 'pu')
  local st = v[1] or 'closed'
  if st == 'closed' then return {1, st, 0, '0'}, false end
  local untl = tonumber((st == 'open' and v[2]) or v[3])
  if now < untl then return {0, st, 0, F(untl - now)}, false end
  return {1, 'half_open', 1, '0'}, true
end
local function allow_probe(k, cooldown, keep)
  redis.call('HSET', k, 'st', 'half_open', 'pu', F(now + cooldown))
  redis.call('PEXPIRE', k, keep)
end
"""

# KEYS: breaker hash. ARGV: op ('allow', 'ok', 'fail'), failure threshold, error rate,
# window ms, min calls, cooldown ms, retention ms, buckets.
# 'allow' returns {allowed, state, probe, retry after ms} (``allow_check`` above); 'ok'/'fail'
# return the new state (``record`` above).
BREAKER: Final = (
    _PRELUDE
    + _RECORD
    + _ALLOW
    + """
local k, op = KEYS[1], ARGV[1]
if op == 'allow' then
  local answer, probe = allow_check(k)
  if probe then allow_probe(k, tonumber(ARGV[6]), ARGV[7]) end
  return answer
end
return record(k, op == 'ok', tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]))
"""
)

# KEYS: idempotency hash (fp, done, lu = lock until ms, ow = claimer's token, body). ARGV:
# fingerprint, ttl ms, lock ms, owner. Returns {'new'}, {'mismatch'}, {'done', body} or
# {'in_progress', wait ms}.
IDEM_BEGIN: Final = (
    _PRELUDE
    + """
local k, fp = KEYS[1], ARGV[1]
local v = redis.call('HMGET', k, 'fp', 'done', 'lu', 'body')
if v[1] then
  if v[1] ~= fp then return {'mismatch'} end
  if v[2] == '1' then return {'done', v[4]} end
  local lu = tonumber(v[3])
  if lu > now then return {'in_progress', F(lu - now)} end
end
redis.call('HSET', k, 'fp', fp, 'done', '0', 'lu', F(now + tonumber(ARGV[3])), 'ow', ARGV[4] or '')
redis.call('PEXPIRE', k, ARGV[2])
return {'new'}
"""
)

# KEYS: idempotency hash. ARGV: fingerprint, response, ttl ms. Returns 1 if stored.
IDEM_COMPLETE: Final = """
local k, fp = KEYS[1], ARGV[1]
local v = redis.call('HMGET', k, 'fp', 'done')
if v[1] and (v[1] ~= fp or v[2] == '1') then return 0 end
redis.call('HSET', k, 'fp', fp, 'done', '1', 'lu', '0', 'body', ARGV[2])
redis.call('PEXPIRE', k, ARGV[3])
return 1
"""

# KEYS: idempotency hash. ARGV: [owner] (then only a claim made with that token is dropped).
# Returns 1 if an unfinished claim was dropped.
IDEM_ABANDON: Final = """
local v = redis.call('HMGET', KEYS[1], 'done', 'ow')
if v[1] == '0' and (ARGV[1] == nil or v[2] == ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

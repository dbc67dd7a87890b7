"""The two Lua scripts behind ``admit`` and ``finish``: one call's phase in one round trip.

Same conventions as ``_lua`` (numbers through ``F()``, server time), and every key a script
touches is in ``KEYS``, named by the client: nothing is built inside Lua, so a Redis Cluster
routes the script by its keys, which must then share one hash tag. Operations are encoded
one after another in ``ARGV`` (a one-letter kind, then its fields) and take their keys from
``KEYS`` in the same order; the field lists are in ``_redis_batch``, which encodes them.

``ADMIT`` checks every operation first, writing nothing (except dropping expired leases, as
``RESERVE`` does), and stops at the first refusal; only when all pass does it apply them.
Each operation's logic is that of its one-operation script in ``_lua`` (``BUCKET``,
``INCR``, ``RESERVE``, ``SETTLE``), line for line; a breaker's admission in ``ADMIT`` and
its record in ``FINISH`` are not copies but ``_lua._ALLOW`` and ``_lua._RECORD``, the very
functions ``BREAKER`` calls (``ADMIT`` runs ``allow_check`` in its check phase and
``allow_probe`` in its apply phase).
"""

from __future__ import annotations

from typing import Final

from bastion.state._lua import _ALLOW, _CAP, _PRELUDE, _RECORD

__all__ = ["ADMIT", "FINISH"]

_BUCKET_NOW: Final = """
local function bucket_now(k, rate, burst)
  local v = redis.call('HMGET', k, 'tokens', 'ts')
  if not v[1] then return burst end
  return math.min(burst, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate)
end
local function bucket_put(k, tokens, rate, burst)
  redis.call('HSET', k, 'tokens', F(tokens), 'ts', F(now))
  redis.call('PEXPIRE', k, math.min(math.ceil((burst - tokens) / rate) + 1, 1e12))
end
"""

# Ops: T (take) rate/ms, burst, cost | KEYS bucket
#      I (incr_if_below) amount, limit ('' none), ttl ms | KEYS counter
#      B (breaker_allow) cooldown ms, keep ms | KEYS breaker
#      R (reserve) id, amount, lease ms, n, then limit and ttl ms per cap
#        | KEYS record, then cap hash and lease zset per cap
# Returns {refused index (0: none, all applied), {answer per operation checked}}:
#   T {allowed, tokens after}; I {ok, value}; B {allowed, state, probe, wait ms};
#   R {1} or {0, cap index, settled, reserved}.
ADMIT: Final = (
    _PRELUDE
    + _CAP
    + _BUCKET_NOW
    + _ALLOW
    + """
local ops, a, k = {}, 1, 1
while a <= #ARGV do
  local op = {t = ARGV[a], k = k}
  if op.t == 'T' then
    op.rate, op.burst, op.cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    a, k = a + 4, k + 1
  elseif op.t == 'I' then
    op.amount, op.limit, op.ttl = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3]
    a, k = a + 4, k + 1
  elseif op.t == 'B' then
    op.cooldown, op.keep = tonumber(ARGV[a + 1]), ARGV[a + 2]
    a, k = a + 3, k + 1
  elseif op.t == 'R' then
    op.id, op.amount, op.lease = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    op.n, op.a = tonumber(ARGV[a + 4]), a + 5
    a, k = a + 5 + 2 * op.n, k + 1 + 2 * op.n
  else
    return redis.error_reply('unknown admit operation ' .. tostring(op.t))
  end
  ops[#ops + 1] = op
end
local out = {}
for i, op in ipairs(ops) do
  local key = KEYS[op.k]
  if op.t == 'T' then
    op.tokens = bucket_now(key, op.rate, op.burst)
    if op.tokens < op.cost then
      out[i] = {0, F(op.tokens)}
      return {i, out}
    end
    out[i] = {1, F(op.tokens - op.cost)}
  elseif op.t == 'I' then
    local value = tonumber(redis.call('GET', key) or '0')
    if op.limit and value + op.amount > op.limit then
      out[i] = {0, F(value)}
      return {i, out}
    end
    op.value = value + op.amount
    out[i] = {1, F(op.value)}
  elseif op.t == 'B' then
    out[i], op.probe = allow_check(key)
    if out[i][1] == 0 then return {i, out} end
  else
    if redis.call('EXISTS', key) == 1 then
      op.known = true
    else
      op.reserved = {}
      for c = 1, op.n do
        local settled, r = live(KEYS[op.k + 2 * c - 1], KEYS[op.k + 2 * c])
        if settled + r + op.amount > tonumber(ARGV[op.a + 2 * c - 2]) then
          out[i] = {0, c, F(settled), F(r)}
          return {i, out}
        end
        op.reserved[c] = r
      end
    end
    out[i] = {1}
  end
end
for _, op in ipairs(ops) do
  local key = KEYS[op.k]
  if op.t == 'T' then
    bucket_put(key, math.min(op.burst, op.tokens - op.cost), op.rate, op.burst)
  elseif op.t == 'I' then
    redis.call('SET', key, F(op.value), 'KEEPTTL')
    expire_new(key, op.ttl)
  elseif op.t == 'B' then
    if op.probe then allow_probe(key, op.cooldown, op.keep) end
  elseif not op.known then
    local ttl_max = 0
    for c = 1, op.n do
      local h, z = KEYS[op.k + 2 * c - 1], KEYS[op.k + 2 * c]
      local ttl = tonumber(ARGV[op.a + 2 * c - 1])
      redis.call('HSET', h, 'r:' .. op.id, F(op.amount), 'reserved', F(op.reserved[c] + op.amount))
      redis.call('ZADD', z, F(now + op.lease), op.id)
      expire_new(h, ttl)
      expire_new(z, ttl)
      redis.call('RPUSH', key, h, z, ttl)
      if ttl > ttl_max then ttl_max = ttl end
    end
    redis.call('PEXPIRE', key, ttl_max)
  end
end
return {0, out}
"""
)

# Ops: S (settle/release) id, actual ('' releases), n | KEYS record, cap hash and lease zset
#        per cap (the record must list exactly these, in this order)
#      C (charge) rate/ms, burst, amount | KEYS bucket
#      I (incr) amount, ttl ms | KEYS counter
#      K (breaker_record) 'ok'/'fail', threshold, rate, window ms, min calls, cooldown ms,
#        keep ms, buckets | KEYS breaker
# Returns one answer per operation: S 1/0 (0: unknown id), C tokens, I value, K state.
FINISH: Final = (
    _PRELUDE
    + _BUCKET_NOW
    + _RECORD
    + """
local a, k = 1, 1
while a <= #ARGV do  -- first, before any write: each settle names its reservation's own caps
  local t = ARGV[a]
  if t == 'S' then
    local n = tonumber(ARGV[a + 3])
    local items = redis.call('LRANGE', KEYS[k], 0, -1)
    if #items > 0 then
      local same = #items == 3 * n
      for c = 1, n do
        same = same and items[3 * c - 2] == KEYS[k + 2 * c - 1] and items[3 * c - 1] == KEYS[k + 2 * c]
      end
      if not same then return redis.error_reply('settle caps differ from the reservation') end
    end
    a, k = a + 4, k + 1 + 2 * n
  elseif t == 'C' then
    a, k = a + 4, k + 1
  elseif t == 'I' then
    a, k = a + 3, k + 1
  elseif t == 'K' then
    a, k = a + 9, k + 1
  else
    return redis.error_reply('unknown finish operation ' .. tostring(t))
  end
end
local out = {}
a, k = 1, 1
while a <= #ARGV do
  local t, key = ARGV[a], KEYS[k]
  if t == 'S' then
    local id, actual, n = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local items = redis.call('LRANGE', key, 0, -1)
    if #items == 0 then
      out[#out + 1] = 0
    else
      for c = 1, n do
        local h, z, ttl = KEYS[k + 2 * c - 1], KEYS[k + 2 * c], items[3 * c]
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
      redis.call('DEL', key)
      out[#out + 1] = 1
    end
    a, k = a + 4, k + 1 + 2 * n
  elseif t == 'C' then
    local rate, burst, amount = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local tokens = math.min(burst, bucket_now(key, rate, burst) - amount)
    bucket_put(key, tokens, rate, burst)
    out[#out + 1] = F(tokens)
    a, k = a + 4, k + 1
  elseif t == 'I' then
    local value = tonumber(redis.call('GET', key) or '0') + tonumber(ARGV[a + 1])
    redis.call('SET', key, F(value), 'KEEPTTL')
    expire_new(key, ARGV[a + 2])
    out[#out + 1] = F(value)
    a, k = a + 3, k + 1
  elseif t == 'K' then
    out[#out + 1] = record(key, ARGV[a + 1] == 'ok', tonumber(ARGV[a + 2]),
      tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]),
      tonumber(ARGV[a + 6]), ARGV[a + 7], tonumber(ARGV[a + 8]))
    a, k = a + 9, k + 1
  end
end
return out
"""
)

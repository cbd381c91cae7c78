-- Admission of one request: every check, then every change, atomically, in one round trip.
-- All keys share the tenant's hash tag {t:<tenant_id>}, so this is safe on Redis Cluster
-- and MemoryDB. Buckets are token buckets kept in exact integer arithmetic: a level in
-- units of 1/60000 of a token (or request), refilled by `rate` units per millisecond.
--
-- KEYS: 1 key overrides (hash key_id -> expiry ms, 0 = revoked), 2 tenant status,
--       3 request bucket, 4 token bucket, 5 monthly quota counter, 6 in-flight leases (zset)
-- ARGV: 1 key_id, 2 key expiry ms from the key record (0 = none), 3 requests/min,
--       4 tokens/min, 5 monthly tokens, 6 max concurrent, 7 cost (tokens),
--       8 request id, 9 lease ms, 10 quota counter ttl s,
--       11 now in ms (optional, tests only; otherwise the server's clock, shared by all callers)
-- Returns: {verdict, requests remaining, requests reset ms, tokens remaining,
--           tokens reset ms, retry after ms, quota used}

local PERIOD = 60000
local now = tonumber(ARGV[11] or '')
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local key_id, record_expiry = ARGV[1], tonumber(ARGV[2])
local rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local monthly, max_concurrent = tonumber(ARGV[5]), tonumber(ARGV[6])
local cost = tonumber(ARGV[7])

local function level_of(key, rate)
  local cap = rate * PERIOD
  local stored = redis.call('HMGET', key, 'l', 'ts')
  if not stored[1] then
    return cap, cap
  end
  local elapsed = math.max(0, now - tonumber(stored[2]))
  return math.min(cap, tonumber(stored[1]) + elapsed * rate), cap
end

local function report(verdict, rq_level, rq_cap, tk_level, tk_cap, retry_ms, used)
  return {
    verdict,
    math.floor(rq_level / PERIOD), math.ceil((rq_cap - rq_level) / rpm),
    math.floor(tk_level / PERIOD), math.ceil((tk_cap - tk_level) / tpm),
    retry_ms, used,
  }
end

local rq_level, rq_cap = level_of(KEYS[3], rpm)
local tk_level, tk_cap = level_of(KEYS[4], tpm)
local used = tonumber(redis.call('GET', KEYS[5]) or '0')

-- Key and tenant state: revocation, rotation and suspension are written here by the
-- billing API, so they take effect on the very next request.
local override = redis.call('HGET', KEYS[1], key_id)
local expiry = record_expiry
if override then
  override = tonumber(override)
  if override == 0 then
    return report('key_revoked', rq_level, rq_cap, tk_level, tk_cap, 0, used)
  end
  expiry = override
end
if expiry > 0 and now >= expiry then
  return report('key_expired', rq_level, rq_cap, tk_level, tk_cap, 0, used)
end
if redis.call('GET', KEYS[2]) == 'suspended' then
  return report('suspended', rq_level, rq_cap, tk_level, tk_cap, 0, used)
end

if used + cost > monthly then
  return report('quota', rq_level, rq_cap, tk_level, tk_cap, 0, used)
end

-- Rate limits: name the first that trips, wait for the slowest.
local verdict, retry_ms = nil, 0
if rq_level < PERIOD then
  verdict = 'requests'
  retry_ms = math.ceil((PERIOD - rq_level) / rpm)
end
if tk_level < cost * PERIOD then
  verdict = verdict or 'tokens'
  retry_ms = math.max(retry_ms, math.ceil((cost * PERIOD - tk_level) / tpm))
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
if redis.call('ZCARD', KEYS[6]) >= max_concurrent then
  verdict = verdict or 'concurrency'
  local first = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
  retry_ms = math.max(retry_ms, math.min(1000, tonumber(first[2]) - now))
end
if verdict then
  return report(verdict, rq_level, rq_cap, tk_level, tk_cap, retry_ms, used)
end

-- Admitted: take from both buckets, reserve the quota, hold a concurrency lease.
rq_level = rq_level - PERIOD
tk_level = tk_level - cost * PERIOD
local function store(key, level, cap, rate)
  redis.call('HSET', key, 'l', string.format('%.0f', level), 'ts', now)
  -- A full bucket is the same as no bucket: let idle tenants cost no memory.
  redis.call('PEXPIRE', key, math.ceil((cap - level) / rate) + 1000)
end
store(KEYS[3], rq_level, rq_cap, rpm)
store(KEYS[4], tk_level, tk_cap, tpm)
used = redis.call('INCRBY', KEYS[5], cost)
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[10]))
redis.call('ZADD', KEYS[6], now + tonumber(ARGV[9]), ARGV[8])
redis.call('PEXPIRE', KEYS[6], tonumber(ARGV[9]))
return report('ok', rq_level, rq_cap, tk_level, tk_cap, 0, used)

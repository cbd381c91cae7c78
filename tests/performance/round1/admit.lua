-- The round-1 admit.lua (git 32990b1, before money): make bench-gateway's peer for today's script.
-- Admission of one request: every check, then every change, atomically, in one round trip.
-- All keys share the tenant's hash tag {t:<tenant_id>}, so this is safe on Redis Cluster
-- and MemoryDB. Buckets are token buckets kept in exact integer arithmetic: a level in
-- units of 1/60000 of a token (or request), refilled by `rate` units per millisecond.
--
-- KEYS: 1 key overrides (hash key_id -> expiry ms, 0 = revoked), 2 tenant status,
--       3 buckets (hash: r = request level, t = token level, ts = last update ms),
--       4 monthly quota counter, 5 in-flight leases (zset)
-- ARGV: 1 key_id, 2 key expiry ms from the key record (0 = none), 3 requests/min,
--       4 tokens/min, 5 monthly tokens, 6 max concurrent, 7 cost (tokens),
--       8 request id, 9 lease ms, 10 quota counter ttl s,
--       11 now in ms (optional, tests only; otherwise the server's clock, shared by all callers)
-- Returns: {verdict, requests remaining, requests reset ms, tokens remaining,
--           tokens reset ms, retry after ms}

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

-- Both buckets live in one hash and are always updated together, at the same instant.
local stored = redis.call('HMGET', KEYS[3], 'r', 't', 'ts')
local elapsed = stored[3] and math.max(0, now - tonumber(stored[3])) or 0
local function level_of(value, rate)
  local cap = rate * PERIOD
  if not value then
    return cap, cap
  end
  return math.min(cap, tonumber(value) + elapsed * rate), cap
end

local function report(verdict, rq_level, rq_cap, tk_level, tk_cap, retry_ms)
  return {
    verdict,
    math.floor(rq_level / PERIOD), math.ceil((rq_cap - rq_level) / rpm),
    math.floor(tk_level / PERIOD), math.ceil((tk_cap - tk_level) / tpm),
    retry_ms,
  }
end

local rq_level, rq_cap = level_of(stored[1], rpm)
local tk_level, tk_cap = level_of(stored[2], tpm)
local used = tonumber(redis.call('GET', KEYS[4]) or '0')

-- Key and tenant state: revocation, rotation and suspension are written here by the
-- billing API, so they take effect on the very next request.
local override = redis.call('HGET', KEYS[1], key_id)
local expiry = record_expiry
if override then
  override = tonumber(override)
  if override == 0 then
    return report('key_revoked', rq_level, rq_cap, tk_level, tk_cap, 0)
  end
  expiry = override
end
if expiry > 0 and now >= expiry then
  return report('key_expired', rq_level, rq_cap, tk_level, tk_cap, 0)
end
if redis.call('GET', KEYS[2]) == 'suspended' then
  return report('suspended', rq_level, rq_cap, tk_level, tk_cap, 0)
end

if used + cost > monthly then
  return report('quota', rq_level, rq_cap, tk_level, tk_cap, 0)
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
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
if redis.call('ZCARD', KEYS[5]) >= max_concurrent then
  verdict = verdict or 'concurrency'
  local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  retry_ms = math.max(retry_ms, math.min(1000, tonumber(first[2]) - now))
end
if verdict then
  return report(verdict, rq_level, rq_cap, tk_level, tk_cap, retry_ms)
end

-- Admitted: take from both buckets, reserve the quota, hold a concurrency lease.
rq_level = rq_level - PERIOD
tk_level = tk_level - cost * PERIOD
redis.call('HSET', KEYS[3], 'r', string.format('%.0f', rq_level), 't', string.format('%.0f', tk_level), 'ts', now)
-- Full buckets are the same as no buckets: let idle tenants cost no memory.
redis.call('PEXPIRE', KEYS[3], math.max(math.ceil((rq_cap - rq_level) / rpm), math.ceil((tk_cap - tk_level) / tpm)) + 1000)
used = redis.call('INCRBY', KEYS[4], cost)
if used == cost then  -- the month's first reservation creates the counter
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[10]))
end
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[9]), ARGV[8])
redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[9]))
return report('ok', rq_level, rq_cap, tk_level, tk_cap, 0)

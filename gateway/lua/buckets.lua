-- Prepended to admit.lua and gate.lua when they load (gateway/adapters/redis_store.py): the
-- clock, the buckets and the key and tenant checks both scripts make, written once.
-- Buckets are token buckets kept in exact integer arithmetic: a level in units of 1/60000 of
-- a request (or token), refilled by `rate` units per millisecond; full buckets are deleted.

local PERIOD = 60000

local function clock(given)  -- tests may give the time; otherwise the server's, shared by all callers
  local now = tonumber(given or '')
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)  -- Lua would write large numbers as 1e+15: Redis wants the digits
  if n == 0 then return '0' end  -- never '-0', which Redis does not take for an integer
  return string.format('%.0f', n)
end

local function refill(stored, rate, elapsed)
  local cap = rate * PERIOD
  if not stored then
    return cap, cap
  end
  return math.min(cap, tonumber(stored) + elapsed * rate), cap
end

-- The tenant's request and token buckets (hash r, t, ts), and the key's where its settings
-- (kcfg) give it rates of its own, refilled to `now`.
local function load_buckets(hash, key_hash, rpm, tpm, kcfg, now)
  local b = {rpm = rpm, tpm = tpm, krpm = tonumber(kcfg.rpm), ktpm = tonumber(kcfg.tpm)}
  local stored = redis.call('HMGET', hash, 'r', 't', 'ts')
  local elapsed = stored[3] and math.max(0, now - tonumber(stored[3])) or 0
  b.rq, b.rq_cap = refill(stored[1], rpm, elapsed)
  b.tk, b.tk_cap = refill(stored[2], tpm, elapsed)
  if b.krpm or b.ktpm then
    local kstored = redis.call('HMGET', key_hash, 'r', 't', 'ts')
    local kelapsed = kstored[3] and math.max(0, now - tonumber(kstored[3])) or 0
    if b.krpm then b.krq, b.krq_cap = refill(kstored[1], b.krpm, kelapsed) end
    if b.ktpm then b.ktk, b.ktk_cap = refill(kstored[2], b.ktpm, kelapsed) end
  end
  return b
end

-- The reply's figures: verdict, requests remaining, requests reset ms, tokens remaining, tokens
-- reset ms, retry after ms, cost nano, debits, tier tokens, then the key's requests remaining
-- and reset ms and tokens remaining and reset ms (-1 and 0 when the key has no such limit).
local function reply(b, verdict, retry_ms, cost, debits, tier_tokens)
  local out = {
    verdict,
    math.floor(b.rq / PERIOD), math.ceil((b.rq_cap - b.rq) / b.rpm),
    math.floor(b.tk / PERIOD), math.ceil((b.tk_cap - b.tk) / b.tpm),
    retry_ms, int(cost), debits, tier_tokens,
    -1, 0, -1, 0,
  }
  if b.krq then
    out[10], out[11] = math.floor(b.krq / PERIOD), math.ceil((b.krq_cap - b.krq) / b.krpm)
  end
  if b.ktk then
    out[12], out[13] = math.floor(b.ktk / PERIOD), math.ceil((b.ktk_cap - b.ktk) / b.ktpm)
  end
  return out
end

-- Whether the buckets hold `requests` and `tokens`: the first limit that trips, and how long
-- until the slowest of them would.
local function shortfall(b, requests, tokens)
  local verdict, retry_ms = nil, 0
  local function need(level, amount, rate, name)
    if level and amount > 0 and level < amount then
      verdict = verdict or name
      retry_ms = math.max(retry_ms, math.ceil((amount - level) / rate))
    end
  end
  need(b.rq, requests * PERIOD, b.rpm, 'requests')
  need(b.tk, tokens * PERIOD, b.tpm, 'tokens')
  need(b.krq, requests * PERIOD, b.krpm, 'key_requests')
  need(b.ktk, tokens * PERIOD, b.ktpm, 'key_tokens')
  return verdict, retry_ms
end

-- Take `requests` and `tokens` and write the buckets back as of `now`. Idle ones expire
-- when they would be full again: a full bucket is the same as none.
local function take(b, hash, key_hash, requests, tokens, now)
  local function write(h, r_level, r_cap, r_rate, t_level, t_cap, t_rate)
    local fields, ttl = {'ts', int(now)}, 1000
    if r_level then
      r_level = r_level - requests * PERIOD
      fields[#fields + 1], fields[#fields + 2] = 'r', int(r_level)
      ttl = math.max(ttl, math.ceil((r_cap - r_level) / r_rate) + 1000)
    end
    if t_level then
      t_level = t_level - tokens * PERIOD
      fields[#fields + 1], fields[#fields + 2] = 't', int(t_level)
      ttl = math.max(ttl, math.ceil((t_cap - t_level) / t_rate) + 1000)
    end
    redis.call('HSET', h, unpack(fields))
    redis.call('PEXPIRE', h, ttl)
    return r_level, t_level
  end
  b.rq, b.tk = write(hash, b.rq, b.rq_cap, b.rpm, b.tk, b.tk_cap, b.tpm)
  if b.krq or b.ktk then
    b.krq, b.ktk = write(key_hash, b.krq, b.krq_cap, b.krpm, b.ktk, b.ktk_cap, b.ktpm)
  end
end

-- Revocation, rotation and suspension are written here by the billing API, so they take
-- effect on the very next request: nil when the key may be used.
local function key_refusal(states, status, key_id, record_expiry, now)
  local override = redis.call('HGET', states, key_id)
  local expiry = record_expiry
  if override then
    override = tonumber(override)
    if override == 0 then
      return 'key_revoked'
    end
    expiry = override
  end
  if expiry > 0 and now >= expiry then
    return 'key_expired'
  end
  if redis.call('GET', status) == 'suspended' then
    return 'suspended'
  end
  return nil
end


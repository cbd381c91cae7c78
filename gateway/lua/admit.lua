-- Admission of one request: every check, then every change, atomically, in one round trip.
-- All keys share the tenant's hash tag {t:<tenant_id>}, so this is safe on Redis Cluster and
-- MemoryDB. Buckets are token buckets kept in exact integer arithmetic: a level in units of
-- 1/60000 of a token (or request), refilled by `rate` units per millisecond. Money is in
-- integers of 10^-9 of the currency ("nano"), exact in Lua doubles below 2^53.
--
-- KEYS  1 key states   hash key id -> expiry ms (0 = revoked)
--       2 status       string 'active' | 'suspended'
--       3 buckets      hash r, t, ts (the tenant's)
--       4 month        hash tok, cost (reserved this month), costc (charged), fired:* flags
--       5 inflight     zset request id -> lease expiry (the tenant's)
--       6 cfg          hash: the tenant's money settings; it exists once the tenant is seeded
--       7 key cfg      hash key id -> JSON of the key's own limits and budget
--       8 key buckets  hash r, t, ts (this key's)
--       9 key inflight zset (this key's)
--      10 key month    hash tok, cost, costc, fired:* (this key's)
--      11 grants       zset grant id -> expiry ms (2^52 = none)
--      12 credit       hash grant id -> remaining nano; _epoch (last grant), _low, _exh flags
--      13 events       stream of business events
--      14 active       set: the active-tenants index of the tenant's hash slot (the flusher's work list)
-- ARGV  1 key id, 2 key expiry ms from the key record (0 = none), 3 requests/min, 4 tokens/min,
--       5 monthly tokens, 6 max concurrent, 7 tokens, 8 request id, 9 lease ms,
--      10 month counters' ttl s, 11 tiers "up_to:nano_per_token,...,-:nano_per_token",
--      12 tenant id, 13 month YYYY-MM,
--      14 now in ms (optional, tests only; otherwise the server's clock, shared by all callers)
-- Returns {verdict, requests remaining, requests reset ms, tokens remaining, tokens reset ms,
--          retry after ms, cost nano, debits "grant:nano,...", tier tokens "n,n,...",
--          key requests remaining, key requests reset ms, key tokens remaining, key tokens reset ms}
-- (key figures are -1 when the key has no rate limits of its own)

local PERIOD = 60000
local now = tonumber(ARGV[14] or '')
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "Absent" must never read as "zero": a tenant whose state Redis does not hold (new, or
-- lost with Redis) is seeded from DynamoDB by the caller first.
if redis.call('EXISTS', KEYS[6]) == 0 then
  return {'unseeded', 0, 0, 0, 0, 0, 0, '', '', -1, 0, -1, 0}
end

local key_id, record_expiry = ARGV[1], tonumber(ARGV[2])
local rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local monthly, max_concurrent = tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens = tonumber(ARGV[7])
local request_id, lease_ms = ARGV[8], tonumber(ARGV[9])
local tenant_id, month = ARGV[12], ARGV[13]

local function bucket(stored, rate, elapsed)
  local cap = rate * PERIOD
  if not stored then
    return cap, cap
  end
  return math.min(cap, tonumber(stored) + elapsed * rate), cap
end

local function money(n)  -- nano units as a plain decimal string
  local sign = ''
  if n < 0 then sign, n = '-', -n end
  local whole = math.floor(n / 1e9)
  local frac = n - whole * 1e9
  local text = string.format('%.0f', whole)
  if frac > 0 then
    text = text .. '.' .. string.gsub(string.format('%09.0f', frac), '0+$', '')
  end
  return sign .. text
end

local function emit(kind, cause, data)
  redis.call('XADD', KEYS[13], '*', 'id', 'evt_' .. string.sub(redis.sha1hex(cause), 1, 24), 'type', kind,
             'created', tostring(math.floor(now / 1000)), 'tenant_id', tenant_id, 'data', cjson.encode(data))
  redis.call('SADD', KEYS[14], tenant_id)  -- something to flush: the flusher visits this tenant
end

-- The tenant's buckets, and this key's if it has rates of its own.
local stored = redis.call('HMGET', KEYS[3], 'r', 't', 'ts')
local elapsed = stored[3] and math.max(0, now - tonumber(stored[3])) or 0
local rq_level, rq_cap = bucket(stored[1], rpm, elapsed)
local tk_level, tk_cap = bucket(stored[2], tpm, elapsed)

local kcfg = redis.call('HGET', KEYS[7], key_id)
kcfg = kcfg and cjson.decode(kcfg) or {}
local krpm, ktpm = tonumber(kcfg.rpm), tonumber(kcfg.tpm)
local krq_level, krq_cap, ktk_level, ktk_cap
if krpm or ktpm then
  local kstored = redis.call('HMGET', KEYS[8], 'r', 't', 'ts')
  local kelapsed = kstored[3] and math.max(0, now - tonumber(kstored[3])) or 0
  if krpm then krq_level, krq_cap = bucket(kstored[1], krpm, kelapsed) end
  if ktpm then ktk_level, ktk_cap = bucket(kstored[2], ktpm, kelapsed) end
end

local cost, debits, tier_tokens, credit_plan = 0, {}, {}, {}
local function int(n)  -- Lua would write large numbers as 1e+15: Redis wants the digits
  if n == 0 then return '0' end  -- never '-0', which Redis does not take for an integer
  return string.format('%.0f', n)
end

local function report(verdict, retry_ms)
  local out = {
    verdict,
    math.floor(rq_level / PERIOD), math.ceil((rq_cap - rq_level) / rpm),
    math.floor(tk_level / PERIOD), math.ceil((tk_cap - tk_level) / tpm),
    retry_ms, int(cost), table.concat(debits, ','), table.concat(tier_tokens, ','),
    -1, 0, -1, 0,
  }
  if krq_level then
    out[10], out[11] = math.floor(krq_level / PERIOD), math.ceil((krq_cap - krq_level) / krpm)
  end
  if ktk_level then
    out[12], out[13] = math.floor(ktk_level / PERIOD), math.ceil((ktk_cap - ktk_level) / ktpm)
  end
  return out
end

-- Key and tenant state: revocation, rotation and suspension are written here by the
-- billing API, so they take effect on the very next request.
local override = redis.call('HGET', KEYS[1], key_id)
local expiry = record_expiry
if override then
  override = tonumber(override)
  if override == 0 then
    return report('key_revoked', 0)
  end
  expiry = override
end
if expiry > 0 and now >= expiry then
  return report('key_expired', 0)
end
if redis.call('GET', KEYS[2]) == 'suspended' then
  return report('suspended', 0)
end

-- Monthly token quotas, the tenant's and the key's.
local month_state = redis.call('HMGET', KEYS[4], 'tok', 'cost')
local used, spent = tonumber(month_state[1] or '0'), tonumber(month_state[2] or '0')
local key_state = redis.call('HMGET', KEYS[10], 'tok', 'cost')
local key_used, key_spent = tonumber(key_state[1] or '0'), tonumber(key_state[2] or '0')
if used + tokens > monthly then
  return report('quota', 0)
end
if kcfg.monthly and key_used + tokens > tonumber(kcfg.monthly) then
  return report('key_quota', 0)
end

-- The price: each of this request's tokens at the tier its place in the month falls in.
local floor = 0
for spec in string.gmatch(ARGV[11], '[^,]+') do
  local up_to, price = string.match(spec, '([^:]+):([^:]+)')
  price = tonumber(price)
  local ceiling = used + tokens
  if up_to ~= '-' then ceiling = math.min(tonumber(up_to), ceiling) end
  local inside = math.max(0, ceiling - math.max(used, floor))
  cost = cost + inside * price
  tier_tokens[#tier_tokens + 1] = inside
  if up_to == '-' then break end
  floor = tonumber(up_to)
end

-- Money: prepaid credit (soonest-expiring grants first), then hard budgets.
local cfg = redis.call('HMGET', KEYS[6], 'mode', 'budget', 'hard')
if cfg[1] == 'prepaid' then
  local grants = redis.call('ZRANGEBYSCORE', KEYS[11], '(' .. now, '+inf')
  local available, plan = 0, {}
  if #grants > 0 then
    local remaining = redis.call('HMGET', KEYS[12], unpack(grants))
    for i, grant in ipairs(grants) do
      local left = tonumber(remaining[i] or '0')
      if left > 0 and available < cost then
        local take = math.min(left, cost - available)
        plan[#plan + 1] = {grant, take}
        available = available + take
      end
    end
  end
  if available < cost then
    if redis.call('HSETNX', KEYS[12], '_exh', '1') == 1 then
      local epoch = redis.call('HGET', KEYS[12], '_epoch') or ''
      emit('credits.exhausted', tenant_id .. '|credits.exhausted|' .. epoch,
           {credits_remaining = money(available), request_cost = money(cost)})
    end
    return report('credits', 0)
  end
  for _, take in ipairs(plan) do
    debits[#debits + 1] = take[1] .. ':' .. int(take[2])
  end
  credit_plan = plan
end
if cfg[2] and cfg[2] ~= '' and cfg[3] == '1' and spent + cost > tonumber(cfg[2]) then
  return report('budget', 0)
end
if kcfg.budget and kcfg.hard == 1 and key_spent + cost > tonumber(kcfg.budget) then
  return report('key_budget', 0)
end

-- Rate limits: name the first that trips, wait for the slowest. The key's limits apply on top
-- of the tenant's; a refusal changes nothing, so a key at its limit never slows its siblings.
local verdict, retry_ms = nil, 0
local function take(level, need, rate, name)
  if level and level < need then
    verdict = verdict or name
    retry_ms = math.max(retry_ms, math.ceil((need - level) / rate))
  end
end
take(rq_level, PERIOD, rpm, 'requests')
take(tk_level, tokens * PERIOD, tpm, 'tokens')
take(krq_level, PERIOD, krpm, 'key_requests')
take(ktk_level, tokens * PERIOD, ktpm, 'key_tokens')
local function slots(zset, limit, name)
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
  if limit and redis.call('ZCARD', zset) >= limit then
    verdict = verdict or name
    local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
    retry_ms = math.max(retry_ms, math.min(1000, tonumber(first[2]) - now))
  end
end
slots(KEYS[5], max_concurrent, 'concurrency')
slots(KEYS[9], tonumber(kcfg.conc), 'key_concurrency')
if verdict then
  return report(verdict, retry_ms)
end

-- Admitted: take from the buckets, reserve the tokens and their cost, debit the credit, hold
-- concurrency leases (they expire in case the caller dies mid-request).
local function keep(hash, r_level, r_cap, r_rate, t_level, t_cap, t_rate)
  local fields, ttl = {'ts', int(now)}, 1000
  if r_level then
    r_level = r_level - PERIOD
    fields[#fields + 1], fields[#fields + 2] = 'r', int(r_level)
    ttl = math.max(ttl, math.ceil((r_cap - r_level) / r_rate) + 1000)
  end
  if t_level then
    t_level = t_level - tokens * PERIOD
    fields[#fields + 1], fields[#fields + 2] = 't', int(t_level)
    ttl = math.max(ttl, math.ceil((t_cap - t_level) / t_rate) + 1000)
  end
  redis.call('HSET', hash, unpack(fields))
  -- Full buckets are the same as no buckets: let idle tenants cost no memory.
  redis.call('PEXPIRE', hash, ttl)
  return r_level, t_level
end
rq_level, tk_level = keep(KEYS[3], rq_level, rq_cap, rpm, tk_level, tk_cap, tpm)
if krq_level or ktk_level then
  krq_level, ktk_level = keep(KEYS[8], krq_level, krq_cap, krpm, ktk_level, ktk_cap, ktpm)
end
local month_ttl = tonumber(ARGV[10])
for _, hash in ipairs({KEYS[4], KEYS[10]}) do
  redis.call('HINCRBY', hash, 'tok', int(tokens))
  redis.call('HINCRBY', hash, 'cost', int(cost))
  redis.call('EXPIRE', hash, month_ttl)
end
for _, take_one in ipairs(credit_plan) do
  redis.call('HINCRBY', KEYS[12], take_one[1], int(-take_one[2]))
end
for _, zset in ipairs({KEYS[5], KEYS[9]}) do
  redis.call('ZADD', zset, int(now + lease_ms), request_id)
  redis.call('PEXPIRE', zset, lease_ms)
end
return report('ok', 0)

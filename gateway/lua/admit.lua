-- Admission of one request: every check, then every change, atomically, in one round trip.
-- All keys share the tenant's hash tag {t:<tenant_id>}, so this is safe on Redis Cluster and
-- MemoryDB. The buckets and the key checks are buckets.lua's (prepended at load). Money is in
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
--      14 requests to take: 1, or 0 when gate.lua already counted this request
--      15 now in ms (optional, tests only; otherwise the server's clock, shared by all callers)
-- Returns buckets.lua's reply: {verdict, requests remaining, requests reset ms, tokens
-- remaining, tokens reset ms, retry after ms, cost nano, debits "grant:nano,...", tier tokens
-- "n,n,...", key requests remaining and reset ms, key tokens remaining and reset ms}

local now = clock(ARGV[15])

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
local requests = tonumber(ARGV[14])

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

local kcfg = redis.call('HGET', KEYS[7], key_id)
kcfg = kcfg and cjson.decode(kcfg) or {}
local b = load_buckets(KEYS[3], KEYS[8], rpm, tpm, kcfg, now)

local cost, debits, tier_tokens, credit_plan = 0, {}, {}, {}
local function report(verdict, retry_ms)
  return reply(b, verdict, retry_ms, cost, table.concat(debits, ','), table.concat(tier_tokens, ','))
end

local refused = key_refusal(KEYS[1], KEYS[2], key_id, record_expiry, now)
if refused then
  return report(refused, 0)
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
        local part = math.min(left, cost - available)
        plan[#plan + 1] = {grant, part}
        available = available + part
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
  for _, part in ipairs(plan) do
    debits[#debits + 1] = part[1] .. ':' .. int(part[2])
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
local verdict, retry_ms = shortfall(b, requests, tokens)
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
take(b, KEYS[3], KEYS[8], requests, tokens, now)
local month_ttl = tonumber(ARGV[10])
for _, hash in ipairs({KEYS[4], KEYS[10]}) do
  redis.call('HINCRBY', hash, 'tok', int(tokens))
  redis.call('HINCRBY', hash, 'cost', int(cost))
  redis.call('EXPIRE', hash, month_ttl)
end
for _, part in ipairs(credit_plan) do
  redis.call('HINCRBY', KEYS[12], part[1], int(-part[2]))
end
for _, zset in ipairs({KEYS[5], KEYS[9]}) do
  redis.call('ZADD', zset, int(now + lease_ms), request_id)
  redis.call('PEXPIRE', zset, lease_ms)
end
return report('ok', 0)

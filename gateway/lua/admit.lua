-- Admission of one request: every check, then every change, atomically, in one round trip.
-- All keys share the tenant's hash tag {t:<tenant_id>}, so this is safe on Redis Cluster and
-- MemoryDB. KEYS and ARGV are named in gateway/adapters/lua_scripts.py (ADMIT); the buckets,
-- the key checks, int, money and emit are prelude.lua's. Money is in integers of 10^-9 of the
-- currency ("nano"), exact in Lua doubles below 2^53.
--
-- Keys: key_states hash key id -> expiry ms (0 = revoked); status 'active' | 'suspended';
-- buckets hash: the tenant's and its keys' buckets (prelude.lua's load_buckets); month and key_month hash tok, cost (reserved this
-- month), costc (charged), fired:* flags; inflight and key_inflight zset request id -> lease
-- expiry; cfg hash: seeded, the tenant's money settings (it exists once the tenant is seeded);
-- key_cfg hash key id -> JSON of the key's own limits and budget; grants zset grant id ->
-- expiry ms (2^52 = none); credit hash grant id -> remaining nano, _epoch, _low, _exh; events
-- the business events stream; active the active-tenants index of the tenant's hash slot.
-- Args: tiers "up_to:nano_per_token,...,-:nano_per_token"; requests 1, or 0 when gate.lua
-- already counted this request; lane 'online' or 'batch' (a whole batch, reserved at its
-- creation); now (tests only; otherwise the server's clock).
--
-- Every read comes before the first write, so a refusal writes nothing (but for the expired
-- leases pruned at a concurrency limit, which count no more, and the credits.exhausted alert).
-- The key's own counters are touched only when its limits need them: its month when it has a
-- quota or a hard budget (otherwise settle.lua counts its month as it charges), its lease set
-- when it has a concurrency limit, its buckets when it has rates. The reply says which it
-- holds ('m', 'l'), for settle.lua.

local now = clock(a_now)

-- "Absent" must never read as "zero": a tenant whose state Redis does not hold (new, or
-- lost with Redis) is seeded from DynamoDB by the caller first.
local cfg = redis.call('HMGET', k_cfg, 'seeded', 'mode', 'budget', 'hard')
if not cfg[1] then
  return {'unseeded', 0, 0, 0, 0, 0, 0, '', '', -1, 0, -1, 0, ''}
end

local key_id, record_expiry = a_key_id, tonumber(a_record_expiry)
local rpm, tpm = tonumber(a_rpm), tonumber(a_tpm)
local monthly, max_concurrent = tonumber(a_monthly), tonumber(a_max_concurrent)
local tokens, requests = tonumber(a_tokens), tonumber(a_requests)

local kcfg = redis.call('HGET', k_key_cfg, key_id)
kcfg = kcfg and cjson.decode(kcfg) or {}
local key_monthly, key_conc = tonumber(kcfg.monthly), tonumber(kcfg.conc)
local key_budget = kcfg.hard == 1 and tonumber(kcfg.budget) or nil
local key_month = key_monthly or key_budget
local b = load_buckets(k_buckets, key_id, rpm, tpm, kcfg, now)

local cost, debits, tier_tokens, credit_plan = 0, {}, {}, {}
local function report(verdict, retry_ms)
  local holds = ''
  if verdict == 'ok' then holds = (key_month and 'm' or '') .. (key_conc and a_lane ~= 'batch' and 'l' or '') end
  return reply(b, verdict, retry_ms, cost, table.concat(debits, ','), table.concat(tier_tokens, ','), holds)
end

local refused = key_refusal(k_key_states, k_status, key_id, record_expiry, now)
if refused then
  return report(refused, 0)
end

-- Monthly token quotas, the tenant's and the key's.
local month_state = redis.call('HMGET', k_month, 'tok', 'cost')
local used, spent = tonumber(month_state[1] or '0'), tonumber(month_state[2] or '0')
if used + tokens > monthly then
  return report('quota', 0)
end
local key_state, key_used, key_spent = {}, 0, 0
if key_month then
  key_state = redis.call('HMGET', k_key_month, 'tok', 'cost')
  key_used, key_spent = tonumber(key_state[1] or '0'), tonumber(key_state[2] or '0')
  if key_monthly and key_used + tokens > key_monthly then
    return report('key_quota', 0)
  end
end

-- The price: each of this request's tokens at the tier its place in the month falls in.
local floor = 0
for spec in string.gmatch(a_tiers, '[^,]+') do
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
if cfg[2] == 'prepaid' then
  local grants = redis.call('ZRANGEBYSCORE', k_grants, '(' .. int(now), '+inf')
  local available = 0
  if #grants > 0 then
    local remaining = redis.call('HMGET', k_credit, unpack(grants))
    for i, grant in ipairs(grants) do
      local left = tonumber(remaining[i] or '0')
      if left > 0 and available < cost then
        local part = math.min(left, cost - available)
        credit_plan[#credit_plan + 1] = {grant, part, left}
        available = available + part
      end
    end
  end
  if available < cost then
    if redis.call('HSETNX', k_credit, '_exh', '1') == 1 then
      local epoch = redis.call('HGET', k_credit, '_epoch') or ''
      emit(k_events, a_tenant_id, now, 'credits.exhausted', a_tenant_id .. '|credits.exhausted|' .. epoch,
           {credits_remaining = money(available), request_cost = money(cost)})
      redis.call('SADD', k_active, a_tenant_id)  -- something to flush: the flusher visits this tenant
    end
    return report('credits', 0)
  end
  for _, part in ipairs(credit_plan) do
    debits[#debits + 1] = part[1] .. ':' .. int(part[2])
  end
end
if cfg[3] and cfg[3] ~= '' and cfg[4] == '1' and spent + cost > tonumber(cfg[3]) then
  return report('budget', 0)
end
if key_budget and key_spent + cost > key_budget then
  return report('key_budget', 0)
end

-- What an admitted request holds of the month: its tokens and cost reserved, its credit
-- debited. The month's figures were read above, so each hash is written once; its TTL is set
-- when this creates it.
local function reserve(hash, state, u, s)
  redis.call('HSET', hash, 'tok', int(u + tokens), 'cost', int(s + cost))
  if not state[1] then redis.call('EXPIRE', hash, a_month_ttl) end
end
local function reserve_month()
  reserve(k_month, month_state, used, spent)
  if key_month then reserve(k_key_month, key_state, key_used, key_spent) end
  if #credit_plan > 0 then
    local left = {}
    for _, part in ipairs(credit_plan) do
      left[#left + 1], left[#left + 2] = part[1], int(part[3] - part[2])
    end
    redis.call('HSET', k_credit, unpack(left))
  end
end

-- A batch (lane 'batch') reserves its whole cost here but takes nothing from the online
-- buckets and holds no lease: it has its own concurrency (gateway/services/batches.py).
if a_lane == 'batch' then
  reserve_month()
  return report('ok', 0)
end

-- Rate limits: name the first that trips, wait for the slowest. The key's limits apply on top
-- of the tenant's; a refusal changes nothing, so a key at its limit never slows its siblings.
local verdict, retry_ms = shortfall(b, requests, tokens)
local function slots(zset, limit, name)
  local held = redis.call('ZCARD', zset)
  if held >= limit then  -- at the limit: leases whose callers died count no more (pruned only here)
    held = held - redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
  end
  if held >= limit then
    verdict = verdict or name
    local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
    retry_ms = math.max(retry_ms, math.min(1000, tonumber(first[2]) - now))
  end
  return held
end
local held = slots(k_inflight, max_concurrent, 'concurrency')
if key_conc then slots(k_key_inflight, key_conc, 'key_concurrency') end
if verdict then
  return report(verdict, retry_ms)
end

-- Admitted: take from the buckets, reserve the month, hold concurrency leases (they expire in
-- case the caller dies mid-request). The lease set's deadline is kept in the buckets hash (ix): an empty set is gone, so a set this
-- finds empty (held 0) is new and gets its PEXPIRE whatever ix says.
local lease_ms = tonumber(a_lease_ms)
local expiry = now + lease_ms
local ix, ix_due = deadline(held > 0 and b.ix or nil, expiry)
take(b, k_buckets, requests, tokens, now, {'ix', int(ix)})
reserve_month()
redis.call('ZADD', k_inflight, int(expiry), a_request_id)
if ix_due then redis.call('PEXPIRE', k_inflight, int(ix - now)) end
if key_conc then
  redis.call('ZADD', k_key_inflight, int(expiry), a_request_id)
  redis.call('PEXPIRE', k_key_inflight, lease_ms)
end
return report('ok', 0)

-- Settle one admitted request in one round trip: release its concurrency leases, then either
-- keep what admission reserved (charge: the usage event goes on the tenant's stream, the
-- write-ahead buffer the flusher drains into DynamoDB) or give it all back (refund: tokens,
-- cost, and the credit debited from each grant). KEYS and ARGV are named in
-- gateway/adapters/lua_scripts.py (SETTLE); int, money and emit are prelude.lua's.
--
-- Alerts are decided here, on what was charged, so a refund never fires one and concurrency
-- can neither skip nor repeat one: a budget threshold fires when this charge takes the month's
-- charged cost from below it to at or above it, once per budget and month (a fired:* flag);
-- low credit fires when the remaining balance falls below the tenant's alert, once until the
-- next grant. Event ids derive from their cause (prelude.lua's emit).
--
-- Args: outcome 'charge' | 'refund'; debits "grant:nano,..."; unit the active-tenants index
-- member of the usage stream's part; key_holds what admission held on the key's own counters
-- ('m' its month, 'l' a lease: admit.lua's reply); once (below); fields the usage event's field/value pairs
-- (none: the caller records the event itself).
local tokens, cost, now = tonumber(a_tokens), tonumber(a_cost), tonumber(a_now)
local holds_month = string.find(a_key_holds, 'm', 1, true)

-- once: a name that makes this settlement happen at most once (a batch's chunk, which a
-- resumed worker may settle again); '' for online requests, which settle once by construction.
if a_once ~= '' then
  if redis.call('HSETNX', k_month, 'once:' .. a_once, '1') == 0 then
    return false
  end
  if redis.call('TTL', k_month) < 0 then redis.call('EXPIRE', k_month, a_month_ttl) end
end

redis.call('ZREM', k_inflight, a_request_id)
if string.find(a_key_holds, 'l', 1, true) then
  redis.call('ZREM', k_key_inflight, a_request_id)
end

if a_outcome ~= 'charge' then
  -- A counter Redis lost is rebuilt from DynamoDB without this request: nothing to give back.
  for _, hash in ipairs(holds_month and {k_month, k_key_month} or {k_month}) do
    if redis.call('EXISTS', hash) == 1 then
      redis.call('HINCRBY', hash, 'tok', int(-tokens))
      redis.call('HINCRBY', hash, 'cost', int(-cost))
    end
  end
  for grant, amount in string.gmatch(a_debits, '([^,:]+):([^,]+)') do
    if redis.call('HEXISTS', k_credit, grant) == 1 then
      redis.call('HINCRBY', k_credit, grant, amount)
    end
  end
  return false
end

-- spec: "level_nano:fraction,..." (the budget's alert levels, computed exactly by the caller);
-- amount: the budget as text; after: the month's charged cost with this charge.
local function thresholds(month_hash, after, spec, amount, scope, cause)
  if not spec or spec == '' then
    return
  end
  local before = after - cost
  for level, fraction in string.gmatch(spec, '([^,:]+):([^,]+)') do
    level = tonumber(level)
    if before < level and after >= level
        and redis.call('HSETNX', month_hash, 'fired:' .. amount .. ':' .. fraction, '1') == 1 then
      local data = {threshold = fraction, budget = amount, month = a_month, month_to_date_cost = money(after),
                    scope = scope}
      if scope == 'key' then data.key_id = a_key_id end
      emit(k_events, a_tenant_id, now, 'budget.threshold_crossed',
           cause .. '|' .. a_month .. '|' .. amount .. '|' .. fraction, data)
    end
  end
end

local cfg = redis.call('HMGET', k_cfg, 'mode', 'amount', 'thr', 'low')
local charged = redis.call('HINCRBY', k_month, 'costc', int(cost))
thresholds(k_month, charged, cfg[3], cfg[2], 'tenant', a_tenant_id .. '|budget.threshold_crossed')
local kcfg = redis.call('HGET', k_key_cfg, a_key_id)
kcfg = kcfg and cjson.decode(kcfg) or {}
local key_charged
if holds_month then
  key_charged = redis.call('HINCRBY', k_key_month, 'costc', int(cost))
else
  -- Admission reserved nothing on the key's month (no quota, no hard budget): the charge
  -- counts as its reservation too, so the month is whole should the key be given one.
  local m = redis.call('HMGET', k_key_month, 'tok', 'cost', 'costc')
  key_charged = tonumber(m[3] or '0') + cost
  redis.call('HSET', k_key_month, 'tok', int(tonumber(m[1] or '0') + tokens),
             'cost', int(tonumber(m[2] or '0') + cost), 'costc', int(key_charged))
  if not m[1] then redis.call('EXPIRE', k_key_month, a_month_ttl) end
end
thresholds(k_key_month, key_charged, kcfg.thr, kcfg.amount, 'key',
           a_tenant_id .. '|' .. a_key_id .. '|budget.threshold_crossed')

if cfg[1] == 'prepaid' and cfg[4] and cfg[4] ~= '' then
  local low = tonumber(cfg[4])
  local grants = redis.call('ZRANGEBYSCORE', k_grants, '(' .. int(now), '+inf')
  local credit = redis.call('HMGET', k_credit, '_low', '_epoch', unpack(grants))
  if not credit[1] then  -- not fired since the last grant
    local balance = 0
    for i = 3, #grants + 2 do
      balance = balance + math.max(0, tonumber(credit[i] or '0'))
    end
    if balance < low then
      redis.call('HSET', k_credit, '_low', '1')
      emit(k_events, a_tenant_id, now, 'credits.low', a_tenant_id .. '|credits.low|' .. (credit[2] or ''),
           {credits_remaining = money(balance), low_balance_alert = money(low)})
    end
  end
end

if #a_fields == 0 then
  return false  -- charged with no usage event to record (the caller records it itself)
end
-- Listed with its usage, atomically: the flusher visits active tenants only (an idle one costs
-- it nothing) and takes this one out only once both its streams are empty again.
redis.call('SADD', k_active, a_unit)
return redis.call('XADD', k_usage, '*', unpack(a_fields))

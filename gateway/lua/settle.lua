-- Settle one admitted request in one round trip: release its concurrency leases, then either
-- keep what admission reserved (charge: the usage event goes on the tenant's stream, the
-- write-ahead buffer the flusher drains into DynamoDB) or give it all back (refund: tokens,
-- cost, and the credit debited from each grant).
--
-- Alerts are decided here, on what was charged, so a refund never fires one and concurrency
-- can neither skip nor repeat one: a budget threshold fires when this charge takes the month's
-- charged cost from below it to at or above it, once per budget and month (HSETNX flag); low
-- credit fires when the remaining balance falls below the tenant's alert, once until the next
-- grant. Event ids derive from their cause, so a re-emission (after Redis lost its flags) is
-- stored and delivered once all the same.
--
-- KEYS  1 inflight, 2 key inflight, 3 month, 4 key month, 5 credit, 6 usage stream (the part the
--       event's ledger shard goes to), 7 events, 8 cfg, 9 key cfg, 10 grants, 11 the
--       active-tenants index of the tenant's slot
-- ARGV  1 request id, 2 'charge' | 'refund', 3 tokens, 4 cost nano, 5 debits "grant:nano,...",
--       6 key id, 7 tenant id, 8 month YYYY-MM, 9 now ms, 10 the index member of that stream part,
--       11.. usage event field/value pairs
local request_id, tokens, cost = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local key_id, tenant_id, month, now = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
local function int(n)
  if n == 0 then return '0' end  -- never '-0', which Redis does not take for an integer
  return string.format('%.0f', n)
end

redis.call('ZREM', KEYS[1], request_id)
redis.call('ZREM', KEYS[2], request_id)

if ARGV[2] ~= 'charge' then
  -- A counter Redis lost is rebuilt from DynamoDB without this request: nothing to give back.
  for _, hash in ipairs({KEYS[3], KEYS[4]}) do
    if redis.call('EXISTS', hash) == 1 then
      redis.call('HINCRBY', hash, 'tok', int(-tokens))
      redis.call('HINCRBY', hash, 'cost', int(-cost))
    end
  end
  for grant, amount in string.gmatch(ARGV[5], '([^,:]+):([^,]+)') do
    if redis.call('HEXISTS', KEYS[5], grant) == 1 then
      redis.call('HINCRBY', KEYS[5], grant, amount)
    end
  end
  return false
end

local function money(n)
  local whole = math.floor(n / 1e9)
  local frac = n - whole * 1e9
  local text = int(whole)
  if frac > 0 then
    text = text .. '.' .. string.gsub(string.format('%09.0f', frac), '0+$', '')
  end
  return text
end

local function emit(kind, cause, data)
  redis.call('XADD', KEYS[7], '*', 'id', 'evt_' .. string.sub(redis.sha1hex(cause), 1, 24), 'type', kind,
             'created', int(math.floor(now / 1000)), 'tenant_id', tenant_id, 'data', cjson.encode(data))
end

-- spec: "level_nano:fraction,..." (the budget's alert levels, computed exactly by the caller);
-- amount: the budget as text. Charged cost goes into the month hash's costc either way.
local function thresholds(month_hash, spec, amount, scope, cause)
  local before = tonumber(redis.call('HGET', month_hash, 'costc') or '0')
  local after = before + cost
  redis.call('HINCRBY', month_hash, 'costc', int(cost))
  if not spec or spec == '' then
    return
  end
  for level, fraction in string.gmatch(spec, '([^,:]+):([^,]+)') do
    level = tonumber(level)
    if before < level and after >= level
        and redis.call('HSETNX', month_hash, 'fired:' .. amount .. ':' .. fraction, '1') == 1 then
      local data = {threshold = fraction, budget = amount, month = month, month_to_date_cost = money(after),
                    scope = scope}
      if scope == 'key' then data.key_id = key_id end
      emit('budget.threshold_crossed', cause .. '|' .. month .. '|' .. amount .. '|' .. fraction, data)
    end
  end
end

local cfg = redis.call('HMGET', KEYS[8], 'mode', 'amount', 'thr', 'low')
thresholds(KEYS[3], cfg[3], cfg[2], 'tenant', tenant_id .. '|budget.threshold_crossed')
local kcfg = redis.call('HGET', KEYS[9], key_id)
kcfg = kcfg and cjson.decode(kcfg) or {}
thresholds(KEYS[4], kcfg.thr, kcfg.amount, 'key', tenant_id .. '|' .. key_id .. '|budget.threshold_crossed')

if cfg[1] == 'prepaid' and cfg[4] and cfg[4] ~= '' then
  local low = tonumber(cfg[4])
  local grants = redis.call('ZRANGEBYSCORE', KEYS[10], '(' .. int(now), '+inf')
  local balance = 0
  if #grants > 0 then
    for _, left in ipairs(redis.call('HMGET', KEYS[5], unpack(grants))) do
      balance = balance + math.max(0, tonumber(left or '0'))
    end
  end
  if balance < low and redis.call('HSETNX', KEYS[5], '_low', '1') == 1 then
    local epoch = redis.call('HGET', KEYS[5], '_epoch') or ''
    emit('credits.low', tenant_id .. '|credits.low|' .. epoch,
         {credits_remaining = money(balance), low_balance_alert = money(low)})
  end
end

if #ARGV < 11 then
  return false  -- charged with no usage event to record (the caller records it itself)
end
-- Listed with its usage, atomically: the flusher visits active tenants only (an idle one costs
-- it nothing) and takes this one out only once both its streams are empty again.
redis.call('SADD', KEYS[11], ARGV[10])
return redis.call('XADD', KEYS[6], '*', unpack(ARGV, 11))

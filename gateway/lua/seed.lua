-- Seed a tenant's admission state from DynamoDB, once: when Redis does not hold it (a new
-- tenant, or state Redis lost), the caller reads the tenant's records and the month's charged
-- usage from DynamoDB and hands them here. Usage still on the tenant's stream (charged, not
-- yet in DynamoDB: the flusher leaves an unseeded tenant's stream alone) is added on top.
-- If another caller seeded first, nothing is written: the first seed wins.
--
-- KEYS and ARGV are named in gateway/adapters/lua_scripts.py (SEED); int is prelude.lua's.
-- more: the month hash of each key, in the order of state.key_ids, then the usage stream's
--       further parts (a hot tenant's; absent keys read as empty)
-- state: JSON cfg {field: text}, status, key_states {key id: expiry ms | 0},
--       key_cfg {key id: JSON text}, key_ids [...], tok, cost, key_months {key id: [tok, cost]},
--       grants [[id, expiry ms, remaining nano]], epoch, fired [flag...], key_fired {key id: [flag...]},
--       low_fired, exh_fired, month_ttl, month_start_ms, month_end_ms
-- Returns 1 when it seeded, 0 when the tenant was already seeded.
if redis.call('EXISTS', k_cfg) == 1 then
  return 0
end
local state = cjson.decode(a_state)

local tok, cost = state.tok, state.cost
local key_months, slot = {}, {}
for i, key_id in ipairs(state.key_ids) do
  local known = state.key_months[key_id] or {0, 0}
  key_months[key_id] = {known[1], known[2]}
  slot[key_id] = k_more[i]
end
local remaining = {}
for _, grant in ipairs(state.grants) do
  remaining[grant[1]] = grant[3]
end
local entries = redis.call('XRANGE', k_usage, '-', '+')
for i = 1 + #state.key_ids, #k_more do
  for _, entry in ipairs(redis.call('XRANGE', k_more[i], '-', '+')) do
    entries[#entries + 1] = entry
  end
end
for _, entry in ipairs(entries) do
  local f = {}
  for i = 1, #entry[2], 2 do
    f[entry[2][i]] = entry[2][i + 1]
  end
  local ts, t, c = tonumber(f.ts or '0'), tonumber(f.tokens or '0'), tonumber(f.cost or '0')
  if ts >= state.month_start_ms and ts < state.month_end_ms then
    tok, cost = tok + t, cost + c
    if f.kid and key_months[f.kid] then
      key_months[f.kid][1] = key_months[f.kid][1] + t
      key_months[f.kid][2] = key_months[f.kid][2] + c
    end
  end
  for grant, amount in string.gmatch(f.debits or '', '([^,:]+):([^,]+)') do
    if remaining[grant] then
      remaining[grant] = remaining[grant] - tonumber(amount)
    end
  end
end

local cfg = {}
for field, value in pairs(state.cfg) do
  cfg[#cfg + 1], cfg[#cfg + 2] = field, value
end
redis.call('HSET', k_cfg, 'seeded', '1', unpack(cfg))
redis.call('SET', k_status, state.status)
for key_id, expiry in pairs(state.key_states) do
  redis.call('HSET', k_key_states, key_id, int(expiry))
end
for key_id, text in pairs(state.key_cfg) do
  redis.call('HSET', k_key_cfg, key_id, text)
end
local function month(hash, t, c, fired)
  redis.call('HSET', hash, 'tok', int(t), 'cost', int(c), 'costc', int(c))
  for _, flag in ipairs(fired or {}) do
    redis.call('HSET', hash, flag, '1')
  end
  redis.call('EXPIRE', hash, state.month_ttl)
end
month(k_month, tok, cost, state.fired)
for key_id, hash in pairs(slot) do
  month(hash, key_months[key_id][1], key_months[key_id][2], state.key_fired[key_id])
end
for _, grant in ipairs(state.grants) do
  redis.call('ZADD', k_grants, int(grant[2]), grant[1])
  redis.call('HSET', k_credit, grant[1], int(math.max(0, remaining[grant[1]])))
end
if state.epoch ~= '' then redis.call('HSET', k_credit, '_epoch', state.epoch) end
if state.low_fired then redis.call('HSET', k_credit, '_low', '1') end
if state.exh_fired then redis.call('HSET', k_credit, '_exh', '1') end
return 1

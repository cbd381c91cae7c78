-- The request gate: the cheap checks that come before a request's expensive work, or instead
-- of admission for a request that never reaches it. Key state and suspension first, then one
-- request from the tenant's bucket (and the key's, when it has a rate of its own); tokens,
-- quota and money are admit.lua's. Used before a large body is parsed and tokenized (admit
-- then takes no second request), for a request refused with a 4xx before admission (so a
-- 400 still costs a request, and a revoked key gets its 401 first), and by the read routes.
--
-- KEYS and ARGV are named in gateway/adapters/lua_scripts.py (GATE): the same keys as
-- admit.lua's of those names. Returns prelude.lua's reply (no cost, debits or tiers).

local now = clock(a_now)
if not redis.call('HGET', k_cfg, 'seeded') then
  return {'unseeded', 0, 0, 0, 0, 0, 0, '', '', -1, 0, -1, 0, ''}
end

local kcfg = redis.call('HGET', k_key_cfg, a_key_id)
kcfg = kcfg and cjson.decode(kcfg) or {}
local b = load_buckets(k_buckets, a_key_id, tonumber(a_rpm), tonumber(a_tpm), kcfg, now)

local refused = key_refusal(k_key_states, k_status, a_key_id, tonumber(a_record_expiry), now)
if refused then
  return reply(b, refused, 0, 0, '', '')
end
local verdict, retry_ms = shortfall(b, 1, 0)
if verdict then
  return reply(b, verdict, retry_ms, 0, '', '')
end
take(b, k_buckets, 1, 0, now)
return reply(b, 'ok', 0, 0, '', '')

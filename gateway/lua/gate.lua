-- The request gate: the cheap checks that come before a request's expensive work, or instead
-- of admission for a request that never reaches it. Key state and suspension first, then one
-- request from the tenant's bucket (and the key's, when it has a rate of its own); tokens,
-- quota and money are admit.lua's. Used before a large body is parsed and tokenized (admit
-- then takes no second request), for a request refused with a 4xx before admission (so a
-- 400 still costs a request, and a revoked key gets its 401 first), and by the read routes.
--
-- KEYS  1 key states, 2 status, 3 buckets, 4 cfg (exists once the tenant is seeded),
--       5 key cfg, 6 key buckets: the same keys as admit.lua's 1, 2, 3, 6, 7 and 8
-- ARGV  1 key id, 2 key expiry ms from the key record (0 = none), 3 requests/min,
--       4 tokens/min, 5 now in ms (optional, tests only)
-- Returns buckets.lua's reply (no cost, debits or tiers).

local now = clock(ARGV[5])
if redis.call('EXISTS', KEYS[4]) == 0 then
  return {'unseeded', 0, 0, 0, 0, 0, 0, '', '', -1, 0, -1, 0}
end

local key_id, record_expiry = ARGV[1], tonumber(ARGV[2])
local kcfg = redis.call('HGET', KEYS[5], key_id)
kcfg = kcfg and cjson.decode(kcfg) or {}
local b = load_buckets(KEYS[3], KEYS[6], tonumber(ARGV[3]), tonumber(ARGV[4]), kcfg, now)

local refused = key_refusal(KEYS[1], KEYS[2], key_id, record_expiry, now)
if refused then
  return reply(b, refused, 0, 0, '', '')
end
local verdict, retry_ms = shortfall(b, 1, 0)
if verdict then
  return reply(b, verdict, retry_ms, 0, '', '')
end
take(b, KEYS[3], KEYS[6], 1, 0, now)
return reply(b, 'ok', 0, 0, '', '')

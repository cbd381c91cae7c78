-- Project a new credit grant into a seeded tenant's state (an unseeded tenant gets it when it
-- is seeded from DynamoDB). Idempotent: a grant already projected is left as it is. A grant
-- opens a new alert cycle: credits.exhausted may fire again, and credits.low once the balance
-- is back above the alert level.
-- KEYS and ARGV are named in gateway/adapters/lua_scripts.py (GRANT): expiry ms (2^52 = none),
-- amount nano, now ms.
if redis.call('EXISTS', k_cfg) == 0 then
  return 0
end
if redis.call('HEXISTS', k_credit, a_grant_id) == 1 then
  return 1
end
redis.call('ZADD', k_grants, a_expiry, a_grant_id)
redis.call('HSET', k_credit, a_grant_id, a_amount, '_epoch', a_grant_id)
redis.call('HDEL', k_credit, '_exh')
local low = redis.call('HGET', k_cfg, 'low')
local balance = 0
local grants = redis.call('ZRANGEBYSCORE', k_grants, '(' .. a_now, '+inf')
if #grants > 0 then
  for _, left in ipairs(redis.call('HMGET', k_credit, unpack(grants))) do
    balance = balance + math.max(0, tonumber(left or '0'))
  end
end
if not low or low == '' or balance >= tonumber(low) then
  redis.call('HDEL', k_credit, '_low')
end
return 1

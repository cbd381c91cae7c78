-- Project a new credit grant into a seeded tenant's state (an unseeded tenant gets it when it
-- is seeded from DynamoDB). Idempotent: a grant already projected is left as it is. A grant
-- opens a new alert cycle: credits.exhausted may fire again, and credits.low once the balance
-- is back above the alert level.
-- KEYS  1 cfg, 2 grants, 3 credit
-- ARGV  1 grant id, 2 expiry ms (2^52 = none), 3 amount nano, 4 now ms
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return 1
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3], '_epoch', ARGV[1])
redis.call('HDEL', KEYS[3], '_exh')
local low = redis.call('HGET', KEYS[1], 'low')
local balance = 0
local grants = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[4], '+inf')
if #grants > 0 then
  for _, left in ipairs(redis.call('HMGET', KEYS[3], unpack(grants))) do
    balance = balance + math.max(0, tonumber(left or '0'))
  end
end
if not low or low == '' or balance >= tonumber(low) then
  redis.call('HDEL', KEYS[3], '_low')
end
return 1

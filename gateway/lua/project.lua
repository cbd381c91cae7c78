-- Project configuration the billing API changed into a seeded tenant's state: the tenant's
-- money settings (KEYS[2] = cfg, ARGV = field/value pairs) or one key's own limits and budget
-- (KEYS[2] = key cfg, ARGV = key id, JSON text or '' to remove). An unseeded tenant gets it
-- when it is seeded from DynamoDB, so nothing here may mark a tenant seeded.
-- KEYS  1 cfg (the seeded marker), 2 target hash
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if KEYS[2] == KEYS[1] then
  redis.call('HSET', KEYS[1], unpack(ARGV))
elseif ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return 1

-- Project configuration the billing API changed into a seeded tenant's state: the tenant's
-- money settings (target = cfg, values = field/value pairs) or one key's own limits and budget
-- (target = key cfg, values = key id, JSON text or '' to remove). An unseeded tenant gets it
-- when it is seeded from DynamoDB, so nothing here may mark a tenant seeded.
-- KEYS and ARGV are named in gateway/adapters/lua_scripts.py (PROJECT); cfg is the seeded marker.
if redis.call('EXISTS', k_cfg) == 0 then
  return 0
end
if k_target == k_cfg then
  redis.call('HSET', k_cfg, unpack(a_values))
elseif a_values[2] == '' then
  redis.call('HDEL', k_target, a_values[1])
else
  redis.call('HSET', k_target, a_values[1], a_values[2])
end
return 1

-- Take a tenant out of the active-tenants index once nothing of it is left to flush: both its
-- streams empty (acknowledged entries are deleted, so an empty stream has nothing pending).
-- One script in the tenant's hash slot, so a settle appending between the check and the
-- removal cannot happen: it runs before (the stream is not empty) or after (it adds the tenant
-- back).
--
-- KEYS  1 the index key of the tenant's slot, 2 usage stream, 3 events stream
-- ARGV  1 tenant id
-- Returns 1 when the tenant was removed, 0 when it stays (or was not listed).
if redis.call('XLEN', KEYS[2]) > 0 or redis.call('XLEN', KEYS[3]) > 0 then
  return 0
end
return redis.call('SREM', KEYS[1], ARGV[1])

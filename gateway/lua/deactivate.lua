-- Take a tenant out of the active-tenants index once nothing of it is left to flush: both its
-- streams empty (acknowledged entries are deleted, so an empty stream has nothing pending).
-- One script in the tenant's hash slot, so a settle appending between the check and the
-- removal cannot happen: it runs before (the stream is not empty) or after (it adds the tenant
-- back).
--
-- KEYS and ARGV are named in gateway/adapters/lua_scripts.py (DEACTIVATE): index the index key
-- of the tenant's slot, usage and events its streams, unit the work unit to take out.
-- Returns 1 when the tenant was removed, 0 when it stays (or was not listed).
if redis.call('XLEN', k_usage) > 0 or redis.call('XLEN', k_events) > 0 then
  return 0
end
return redis.call('SREM', k_index, a_unit)

-- Delete the consumers of one stream's group that hold no pending entries and have been idle
-- for at least min_idle ms, except keep (the caller). One script, so a consumer cannot take
-- an entry between the check and the delete (its pending entries would be lost with it).
--
-- KEYS and ARGV are named in gateway/adapters/lua_scripts.py (PRUNE_CONSUMERS).
-- Returns the names deleted.
local deleted = {}
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', k_stream, a_group)
if not ok then
  return deleted -- no stream or no group yet: nothing to prune
end
local min_idle = tonumber(a_min_idle)
for _, consumer in ipairs(consumers) do
  local info = {}
  for i = 1, #consumer, 2 do
    info[consumer[i]] = consumer[i + 1]
  end
  if info['name'] ~= a_keep and tonumber(info['pending']) == 0 and tonumber(info['idle']) >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', k_stream, a_group, info['name'])
    deleted[#deleted + 1] = info['name']
  end
end
return deleted

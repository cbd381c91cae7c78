-- Delete the consumers of one stream's group that hold no pending entries and have been idle
-- for at least ARGV[2] ms, except ARGV[3] (the caller). One script, so a consumer cannot take
-- an entry between the check and the delete (its pending entries would be lost with it).
--
-- KEYS: 1 the stream
-- ARGV: 1 group, 2 minimum idle time (ms), 3 consumer name to keep
-- Returns the names deleted.
local deleted = {}
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then
  return deleted -- no stream or no group yet: nothing to prune
end
local min_idle = tonumber(ARGV[2])
for _, consumer in ipairs(consumers) do
  local info = {}
  for i = 1, #consumer, 2 do
    info[consumer[i]] = consumer[i + 1]
  end
  if info['name'] ~= ARGV[3] and tonumber(info['pending']) == 0 and tonumber(info['idle']) >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    deleted[#deleted + 1] = info['name']
  end
end
return deleted

-- The round-1 settle.lua (git 32990b1, before money): make bench-gateway's peer for today's script.
-- Settle one admitted request in one round trip: release its concurrency lease, then
-- either keep the quota reservation and append the usage event to the tenant's stream
-- (the write-ahead buffer the flusher drains into DynamoDB), or refund the reservation.
--
-- KEYS: 1 in-flight leases, 2 monthly quota counter, 3 usage stream
-- ARGV: 1 request id, 2 'charge' | 'refund', 3 cost, 4.. usage event field/value pairs
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] == 'charge' then
  return redis.call('XADD', KEYS[3], '*', unpack(ARGV, 4))
end
redis.call('DECRBY', KEYS[2], tonumber(ARGV[3]))
return false

--[[
  Forgets a holder's deadline once the sweep has expired its leases, unless the deadline moved on
  meanwhile: the holder renewed or claimed since (a slow, not a dead, server), or one of its
  leases was found alive (expireLease-4 lifts the deadline to it).

  Input:
    KEYS[1]  holder deadlines  {p}:holder-deadlines (zset holder -> deadline ms)
    ARGV[1]  holder

  Output:
    1  forgotten; 0  kept (its deadline is still to come), or not there
]]
--- @include "redisNowMs"
local deadline = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if deadline == nil or deadline > redisNowMs() then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1

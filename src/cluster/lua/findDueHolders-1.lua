--[[
  Lists the holders whose deadline has passed, by Redis's clock: processes that stopped renewing,
  whose leases have all run out (a holder's deadline is never before any of its leases expires).
  Read-only; the sweep then reads each one's leases (listHolderLeases-2) and expires them.

  Input:
    KEYS[1]  holder deadlines  {p}:holder-deadlines (zset holder -> deadline ms)
    ARGV[1]  limit

  Output:
    array of holders ("serverId@bootId", or a bare serverId), most overdue first
]]
--- @include "redisNowMs"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', redisNowMs(), 'LIMIT', 0, tonumber(ARGV[1]))

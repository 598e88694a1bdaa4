--[[
  Turns a lease that ran out into an orphan: forgets its holder and removes it from the dead
  holder's owned set. Idempotent, so every server may sweep.

  Input:
    KEYS[1]  lease key         {p}:lease:<deviceId>
    KEYS[2]  holder deadlines  {p}:holder-deadlines (zset holder -> deadline ms)
    KEYS[3]  holders           {p}:holders
    KEYS[4]  owned set of the last holder  {p}:owned:<serverId> (any key when there is none)

    ARGV[1]  deviceId
    ARGV[2]  the holder the caller read ("holder:token", or "" for none)

  Output:
    1   expired: the device is an orphan, the caller places it
    0   the lease is alive (renewed or claimed since): its holder's deadline is lifted to cover
        it, so a sweep comes back when it runs out; nothing else
    -1  the holder changed since the caller read it: read again
]]
--- @include "redisNowMs"
local deviceId = ARGV[1]
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  local holder = string.match(redis.call('GET', KEYS[1]), '^(.*):%d+$')
  if holder then
    redis.call('ZADD', KEYS[2], 'GT', redisNowMs() + pttl, holder)
  end
  return 0
end
if pttl == -1 then
  -- A lease without expiry is a bug or a hand edit; refuse to treat it as an orphan.
  return 0
end
local holder = redis.call('HGET', KEYS[3], deviceId) or ''
if holder ~= ARGV[2] then
  return -1
end
redis.call('HDEL', KEYS[3], deviceId)
if holder ~= '' then
  redis.call('SREM', KEYS[4], deviceId)
end
return 1

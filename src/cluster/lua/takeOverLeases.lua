--[[
  A restarted server takes over the leases its dead predecessor (the same server id, an earlier
  boot with no connection left in Redis) still holds, at once and with new tokens, instead of
  waiting one TTL for them to expire. Only leases whose value names exactly the dead holder are
  taken; any other (expired meanwhile, claimed by another server) is left alone.

  Input:
    KEYS[1]    holder deadlines {p}:holder-deadlines
    KEYS[2]    holders        {p}:holders
    KEYS[3]    owned set      {p}:owned:<serverId> (the predecessor's and this boot's: one server id)
    KEYS[4]    token floor    {p}:token-floor
    KEYS[5]    claim embargo  {p}:claim-embargo
    KEYS[6..]  per device, two keys: {p}:lease:<deviceId>, {p}:fence:<deviceId>

    ARGV[1]    the dead holder, "serverId@bootId"
    ARGV[2]    this boot's holder, "serverId@bootId"
    ARGV[3]    ttl ms
    ARGV[4..]  deviceIds, in the order of the key pairs

  Output:
    flat array of the leases taken over: deviceId, new token, previous value, ...
    (empty while claims are embargoed: after Redis lost its data the leases are re-asserted or
    expire instead)
]]
--- @include "redisNowMs"
--- @include "grantLease"
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {}
end
local dead, holder, ttl = ARGV[1] .. ':', ARGV[2], tonumber(ARGV[3])
local floor = (tonumber(redis.call('GET', KEYS[4])) or 0) + 1
local deadline = redisNowMs() + ttl
local out = {}
for i = 4, #ARGV do
  local deviceId = ARGV[i]
  local leaseKey, fenceKey = KEYS[6 + (i - 4) * 2], KEYS[7 + (i - 4) * 2]
  local current = redis.call('GET', leaseKey)
  if current and string.sub(current, 1, #dead) == dead then
    local token = grantLease(leaseKey, fenceKey, KEYS[1], KEYS[2], KEYS[3], deviceId, holder, ttl, deadline, floor)
    out[#out + 1] = deviceId
    out[#out + 1] = token
    out[#out + 1] = current
  end
end
return out

--[[
  After Redis lost its data (or restarted), a server re-asserts the leases it still holds: a lease
  that is gone is written back with the same token, and the device's fence is lifted to at least
  that token, so later claims hand out higher ones. A lease someone else holds now is reported
  lost. Claims are embargoed meanwhile; re-assertion is not a claim and is allowed.

  A fence above the token (seeded from the store's lease_epoch) means a later token was handed out
  while this server was paused: the lease is lost even where Redis still shows this server's value
  (a replica promoted without the newer claim), and that stale value is removed so the device can
  be placed again at once.

  Input:
    KEYS[1]        holder deadlines {p}:holder-deadlines
    KEYS[2]        holders     {p}:holders
    KEYS[3]        owned set   {p}:owned:<serverId>
    KEYS[4..]      per lease, two keys: {p}:lease:<deviceId>, {p}:fence:<deviceId>

    ARGV[1]        holder ("serverId@bootId", or a bare serverId)
    ARGV[2]        ttl ms
    ARGV[3..]      deviceId, token, deviceId, token, ... (same order as the key pairs)

  Output:
    flat array of the lost leases: deviceId, current value ("" when none), ...
]]
--- @include "redisNowMs"
local holder, ttl = ARGV[1], tonumber(ARGV[2])
local deadline = redisNowMs() + ttl
local lost = {}
local written = false
local n = (#KEYS - 3) / 2
for i = 0, n - 1 do
  local leaseKey, fenceKey = KEYS[4 + i * 2], KEYS[5 + i * 2]
  local deviceId, token = ARGV[3 + i * 2], tonumber(ARGV[4 + i * 2])
  local mine = holder .. ':' .. string.format('%d', token)
  local current = redis.call('GET', leaseKey)
  local fence = tonumber(redis.call('GET', fenceKey)) or 0
  if fence > token then
    if current == mine then
      redis.call('DEL', leaseKey)
      current = false
    end
    if redis.call('HGET', KEYS[2], deviceId) == mine then
      redis.call('HDEL', KEYS[2], deviceId)
    end
    redis.call('SREM', KEYS[3], deviceId)
    lost[#lost + 1] = deviceId
    lost[#lost + 1] = current or ''
  elseif current == false or current == mine then
    redis.call('SET', leaseKey, mine, 'PX', ttl)
    if fence < token then
      redis.call('SET', fenceKey, token)
    end
    redis.call('HSET', KEYS[2], deviceId, mine)
    redis.call('SADD', KEYS[3], deviceId)
    written = true
  else
    redis.call('SREM', KEYS[3], deviceId)
    lost[#lost + 1] = deviceId
    lost[#lost + 1] = current
  end
end
if written then
  redis.call('ZADD', KEYS[1], 'GT', deadline, holder)
end
return lost

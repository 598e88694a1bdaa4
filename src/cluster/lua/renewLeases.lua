--[[
  Renews a batch of one server's leases in one call (the heartbeat), and reports the ones it lost.
  Called once per chunk of up to a thousand leases; chunks are pipelined, so a heartbeat is one
  round trip.

  Input:
    KEYS[1]       deadlines      {p}:deadlines
    KEYS[2]       owned set      {p}:owned:<serverId>
    KEYS[3..n+2]  lease keys     {p}:lease:<deviceId>, in the order of the pairs in ARGV

    ARGV[1]       holder ("serverId@bootId", or a bare serverId)
    ARGV[2]       ttl ms
    ARGV[3..]     deviceId, token, deviceId, token, ...

  Output:
    flat array of the lost leases: deviceId, current value ("" when the lease is gone), ...
    A lease counts as lost when its value is no longer exactly "holder:token".
]]
--- @include "redisNowMs"
local holder, ttl = ARGV[1], tonumber(ARGV[2])
local deadline = redisNowMs() + ttl
local lost = {}
for i = 3, #KEYS do
  local pair = (i - 3) * 2 + 3
  local deviceId, token = ARGV[pair], ARGV[pair + 1]
  local current = redis.call('GET', KEYS[i])
  if current == holder .. ':' .. token then
    redis.call('PEXPIRE', KEYS[i], ttl)
    redis.call('ZADD', KEYS[1], deadline, deviceId)
  else
    redis.call('SREM', KEYS[2], deviceId)
    lost[#lost + 1] = deviceId
    lost[#lost + 1] = current or ''
  end
end
return lost

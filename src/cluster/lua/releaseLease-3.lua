--[[
  Releases a lease this server holds (drain, rebalance, device stopped), so another server may
  claim it at once. The fence is kept: the next claim's token is still higher.

  Input:
    KEYS[1]  lease key      {p}:lease:<deviceId>
    KEYS[2]  holders        {p}:holders
    KEYS[3]  owned set      {p}:owned:<serverId>

    ARGV[1]  deviceId
    ARGV[2]  expected value "holder:token"

  Output:
    1  released
    0  not held with that value (lost already); nothing changed but this server's owned set
]]
local deviceId, expected = ARGV[1], ARGV[2]
redis.call('SREM', KEYS[3], deviceId)
if redis.call('GET', KEYS[1]) ~= expected then
  return 0
end
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[2], deviceId) == expected then
  redis.call('HDEL', KEYS[2], deviceId)
end
return 1

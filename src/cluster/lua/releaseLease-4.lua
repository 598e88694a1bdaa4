--[[
  Releases a lease this server holds (drain, rebalance, device stopped), so another server may
  claim it at once. The fence is kept: the next claim's token is still higher.

  Input:
    KEYS[1]  lease key      {p}:lease:<deviceId>
    KEYS[2]  deadlines      {p}:deadlines
    KEYS[3]  holders        {p}:holders
    KEYS[4]  owned set      {p}:owned:<serverId>

    ARGV[1]  deviceId
    ARGV[2]  expected value "holder:token"

  Output:
    1  released
    0  not held with that value (lost already); nothing changed but this server's owned set
]]
local deviceId, expected = ARGV[1], ARGV[2]
redis.call('SREM', KEYS[4], deviceId)
if redis.call('GET', KEYS[1]) ~= expected then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], deviceId)
if redis.call('HGET', KEYS[3], deviceId) == expected then
  redis.call('HDEL', KEYS[3], deviceId)
end
return 1

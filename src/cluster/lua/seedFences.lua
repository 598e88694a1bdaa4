--[[
  Lifts fencing counters to the durable store's lease_epoch, so that after Redis lost its data
  every new token is still higher than any token handed out before. Never lowers a counter.

  Input:
    KEYS[1..n]  fence keys  {p}:fence:<deviceId>
    ARGV[1..n]  the store's lease_epoch for each device, same order

  Output:
    number of counters lifted
]]
local lifted = 0
for i = 1, #KEYS do
  local epoch = tonumber(ARGV[i])
  if (tonumber(redis.call('GET', KEYS[i])) or 0) < epoch then
    redis.call('SET', KEYS[i], epoch)
    lifted = lifted + 1
  end
end
return lifted

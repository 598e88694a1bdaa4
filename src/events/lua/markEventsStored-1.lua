--[[
  Records that the store has a device's events up to a sequence (the write-behind applied them).
  Batches of one device are applied in order, but a batch applied again (a worker that died after
  applying it) or the restore after Redis lost its data may report an older sequence: the mark
  only goes up.

  Input:
    KEYS[1]  stored mark  {p}:event-stored:<deviceId> (string, no expiry: deleted with the device)
    ARGV[1]  sequence the store has up to

  Output:
    the mark after the call
]]
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local sequence = tonumber(ARGV[1])
if sequence > current then
  redis.call('SET', KEYS[1], string.format('%d', sequence))
  return sequence
end
return current

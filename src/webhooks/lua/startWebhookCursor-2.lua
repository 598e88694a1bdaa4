--[[
  Starts a newly registered webhook at the device's latest event, so it receives what happens
  from now on rather than everything the log still holds. A cursor already there (a rotation, a
  new URL for the same webhook) is kept, so nothing between the two registrations is skipped.

  Input:
    KEYS[1]  cursor         {p}:webhook:cursor:device:<deviceId>
    KEYS[2]  event seq      {p}:event-seq:<deviceId>

  Output:
    the cursor (0 when the device has no numbered events: the next one is 1)
]]
local current = redis.call('GET', KEYS[1])
if current then
  return tonumber(current)
end
local sequence = redis.call('GET', KEYS[2])
if not sequence then
  return 0
end
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], sequence, 'PX', ttl)
else
  redis.call('SET', KEYS[1], sequence)
end
return tonumber(sequence)

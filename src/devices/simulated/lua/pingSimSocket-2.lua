--[[
  Simulated WhatsApp: keep-alive of an open socket. A socket that was replaced or timed out is
  not revived: the caller learns it is gone. The answer also says whether WhatsApp holds
  something for the device, so a socket that missed the publish of it still takes it.

  Input:
    KEYS[1]  socket key  {p}:sim:socket:<deviceId>
    KEYS[2]  pending     {p}:sim:pending:<deviceId> (stream)
    ARGV[1]  socketId
    ARGV[2]  keep-alive timeout ms

  Output:
    1 still open (timeout renewed), 2 still open and something pending, 0 gone
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if redis.call('XLEN', KEYS[2]) > 0 then
    return 2
  end
  return 1
end
return 0

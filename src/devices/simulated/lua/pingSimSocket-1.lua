--[[
  Simulated WhatsApp: keep-alive of an open socket. A socket that was replaced or timed out is
  not revived: the caller learns it is gone.

  Input:
    KEYS[1]  socket key  {p}:sim:socket:<deviceId>
    ARGV[1]  socketId
    ARGV[2]  keep-alive timeout ms

  Output:
    1 still open (timeout renewed), 0 gone
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0

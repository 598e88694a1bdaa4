--[[
  Simulated WhatsApp: a socket closes cleanly. Only the socket itself can close itself; a newer
  socket for the same device is left alone.

  Input:
    KEYS[1]  socket key  {p}:sim:socket:<deviceId>
    ARGV[1]  socketId

  Output:
    1 closed, 0 it was not the open socket
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0

--[[
  Simulated WhatsApp: the device's socket acknowledges entries it was delivered; WhatsApp forgets
  them (an emptied stream goes with them). An acknowledgement from a socket that is no longer the
  device's open one never arrives (it went down that socket's connection), so its entries stay
  for the next socket.

  Input:
    KEYS[1]  socket key  {p}:sim:socket:<deviceId>
    KEYS[2]  pending     {p}:sim:pending:<deviceId> (stream)
    ARGV[1]  socketId
    ARGV[2..] stream ids of the entries acknowledged

  Output:
    the number of entries forgotten; 0 also when the socket is not open
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] or #ARGV < 2 then
  return 0
end
local forgotten = redis.call('XDEL', KEYS[2], unpack(ARGV, 2))
if redis.call('XLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2])
end
return forgotten

--[[
  Simulated WhatsApp: a socket closes cleanly. Only the socket itself can close itself; a newer
  socket for the same device is left alone. A close that happened goes into the history stream.

  Input:
    KEYS[1]  socket key  {p}:sim:socket:<deviceId>
    KEYS[2]  history     {p}:sim:history (stream, capped)
    ARGV[1]  socketId
    ARGV[2]  deviceId
    ARGV[3]  reason (closed: by its server; dropped: by WhatsApp)
    ARGV[4]  history cap (approximate MAXLEN)

  Output:
    1 closed, 0 it was not the open socket
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'close', 'd', ARGV[2], 's', ARGV[1], 'r', ARGV[3])
  return 1
end
return 0

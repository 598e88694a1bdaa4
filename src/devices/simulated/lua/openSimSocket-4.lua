--[[
  Simulated WhatsApp: a device's socket opens. Like WhatsApp, a second socket for the same device
  replaces the first, which is kicked with "conflict" (440); every such conflict is counted.
  The opening goes into the history stream (the stream id is Redis's clock), so a chaos run can
  prove no device ever had two sockets open at once.

  Input:
    KEYS[1]  socket key        {p}:sim:socket:<deviceId>  (string socketId, PX keep-alive timeout)
    KEYS[2]  conflicts         {p}:sim:conflicts          (hash deviceId -> count, field "total")
    KEYS[3]  connects          {p}:sim:connects           (hash deviceId -> count)
    KEYS[4]  history           {p}:sim:history            (stream, capped)
    ARGV[1]  deviceId
    ARGV[2]  socketId          <serverId>#<token>#<random>
    ARGV[3]  keep-alive timeout ms (a socket that stops pinging is gone after this long)
    ARGV[4]  kick channel
    ARGV[5]  history cap (approximate MAXLEN)

  Output:
    the kicked socketId, or "" when no other socket was open
]]
local deviceId, socketId = ARGV[1], ARGV[2]
local previous = redis.call('GET', KEYS[1])
local kicked = ''
if previous and previous ~= socketId then
  kicked = previous
  redis.call('HINCRBY', KEYS[2], deviceId, 1)
  redis.call('HINCRBY', KEYS[2], 'total', 1)
  redis.call('PUBLISH', ARGV[4], deviceId .. ' ' .. previous)
end
redis.call('SET', KEYS[1], socketId, 'PX', ARGV[3])
redis.call('HINCRBY', KEYS[3], deviceId, 1)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'k', 'open', 'd', deviceId, 's', socketId, 'x', kicked)
return kicked

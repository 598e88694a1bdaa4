--[[
  Simulated WhatsApp: a message sent through an open socket. Like WhatsApp, a message id it has
  already seen from this device is dropped (a resend after a crash delivers nothing twice), and a
  socket that is not the device's open one cannot send. Every delivery is logged, in order, so
  tests can check exactly-once and per-device order; deliveries and dropped repeats also go into
  the history stream.

  Input:
    KEYS[1]  socket key  {p}:sim:socket:<deviceId>
    KEYS[2]  seen ids    {p}:sim:seen:<deviceId> (set of WhatsApp message ids)
    KEYS[3]  delivery log {p}:sim:log:<deviceId> (list of JSON entries, oldest first)
    KEYS[4]  history     {p}:sim:history (stream, capped)
    ARGV[1]  socketId of the sender
    ARGV[2]  WhatsApp message id
    ARGV[3]  JSON entry to log (without the delivery time)
    ARGV[4]  deviceId
    ARGV[5]  history cap (approximate MAXLEN)

  Output:
    1 delivered, 0 duplicate (already delivered; nothing logged), -1 the socket is not open
]]
--- @include "redisNowMs"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'k', 'dup', 'd', ARGV[4], 's', ARGV[1], 'm', ARGV[2])
  return 0
end
local now = redisNowMs()
redis.call('RPUSH', KEYS[3], string.sub(ARGV[3], 1, -2) .. ',"deliveredAt":' .. now .. '}')
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'k', 'send', 'd', ARGV[4], 's', ARGV[1], 'm', ARGV[2])
return 1

--[[
  Simulated WhatsApp: someone writes to the device. WhatsApp gives the message its id and holds it
  for the device until one of its sockets acknowledges it; the device's socket, wherever it runs,
  is told on the inbound channel (its keep-alive notices what a lost publish would have missed).
  The id carries Redis's clock, so ids stay unique after Redis lost its data and the counter.

  Input:
    KEYS[1]  pending     {p}:sim:pending:<deviceId> (stream, capped, PX)
    KEYS[2]  id counter  {p}:sim:inbound-seq
    KEYS[3]  history     {p}:sim:history (stream, capped)
    ARGV[1]  deviceId
    ARGV[2]  sender's phone number, digits only
    ARGV[3]  text
    ARGV[4]  pending cap (entries; the oldest go first, as WhatsApp gives up on old messages)
    ARGV[5]  pending lifetime ms (from the last thing queued)
    ARGV[6]  history cap (approximate MAXLEN)
    ARGV[7]  inbound channel

  Output:
    the message's WhatsApp id
]]
--- @include "redisNowMs"
local now = redisNowMs()
local n = redis.call('INCR', KEYS[2])
local waMessageId = string.format('3A%012X%06X', now, n % 16777216)
-- WhatsApp stamps messages in whole seconds.
local sentAt = now - now % 1000
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], '*', 'k', 'message', 'm', waMessageId, 'f', ARGV[2], 'x', ARGV[3], 't', sentAt)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'k', 'inject', 'd', ARGV[1], 'm', waMessageId)
redis.call('PUBLISH', ARGV[7], ARGV[1])
return waMessageId

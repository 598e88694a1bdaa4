--[[
  Simulated WhatsApp: the recipient's phone acknowledges a message the device sent (delivered,
  read). Only a message WhatsApp received from the device has receipts. The receipt is held for
  the device like a message sent to it, so a device with no socket now gets it on its next one.

  Input:
    KEYS[1]  seen ids    {p}:sim:seen:<deviceId> (set of WhatsApp ids the device sent)
    KEYS[2]  pending     {p}:sim:pending:<deviceId> (stream, capped, PX)
    KEYS[3]  history     {p}:sim:history (stream, capped)
    ARGV[1]  deviceId
    ARGV[2]  WhatsApp id of the message the device sent
    ARGV[3]  chat JID (the recipient)
    ARGV[4]  status: delivered | read
    ARGV[5]  pending cap
    ARGV[6]  pending lifetime ms
    ARGV[7]  history cap (approximate MAXLEN)
    ARGV[8]  inbound channel

  Output:
    1 queued for the device, 0 WhatsApp never received that message from the device
]]
--- @include "redisNowMs"
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then
  return 0
end
local now = redisNowMs()
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], '*', 'k', 'receipt', 'm', ARGV[2], 'c', ARGV[3], 'r', ARGV[4], 't', now - now % 1000)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'k', 'receipt', 'd', ARGV[1], 'm', ARGV[2], 'r', ARGV[4])
redis.call('PUBLISH', ARGV[8], ARGV[1])
return 1

--[[
  Records how a message ended: `sent` (with WhatsApp's message id) or `failed` (with the reason).
  Not fenced: a send that happened is a fact even if the lease went meanwhile. A sent message
  never turns failed. The record then lives for the retention period, for inspection.

  A sent message's slot in the device's rate window moves from when the send began to now, when
  it is known to be delivered: the window then counts deliveries, so the next window's first
  send cannot reach WhatsApp less than a full window after this one did, however long a send took.

  Input:
    KEYS[1]  message record  {p}:msg:<messageId>
    KEYS[2]  send times      {p}:sends:<deviceId> (see beginSend-4.lua)
    ARGV[1]  "sent" or "failed"
    ARGV[2]  waMessageId (sent) or error (failed)
    ARGV[3]  retention ms
    ARGV[4]  rate window ms (0: leave the window alone)

  Output:
    1 recorded, 0 it was already sent (nothing changed), -1 no such record
]]
--- @include "redisNowMs"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return -1
end
if status == 'sent' then
  return 0
end
local now = redisNowMs()
if ARGV[1] == 'sent' then
  redis.call('HSET', KEYS[1], 'status', 'sent', 'sentAt', now, 'waMessageId', ARGV[2])
  redis.call('HDEL', KEYS[1], 'error')
  local window = tonumber(ARGV[4])
  if window > 0 and redis.call('ZADD', KEYS[2], 'XX', 'CH', now, redis.call('HGET', KEYS[1], 'id') or '') == 1 then
    redis.call('PEXPIRE', KEYS[2], window)
  end
else
  redis.call('HSET', KEYS[1], 'status', 'failed', 'failedAt', now, 'error', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

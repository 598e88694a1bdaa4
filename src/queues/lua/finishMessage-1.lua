--[[
  Records how a message ended: `sent` (with WhatsApp's message id) or `failed` (with the reason).
  Not fenced: a send that happened is a fact even if the lease went meanwhile. A sent message
  never turns failed. The record then lives for the retention period, for inspection.

  Input:
    KEYS[1]  message record  {p}:msg:<messageId>
    ARGV[1]  "sent" or "failed"
    ARGV[2]  waMessageId (sent) or error (failed)
    ARGV[3]  retention ms

  Output:
    1 recorded, 0 it was already sent (nothing changed), -1 no such record
]]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return -1
end
if status == 'sent' then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if ARGV[1] == 'sent' then
  redis.call('HSET', KEYS[1], 'status', 'sent', 'sentAt', now, 'waMessageId', ARGV[2])
  redis.call('HDEL', KEYS[1], 'error')
else
  redis.call('HSET', KEYS[1], 'status', 'failed', 'failedAt', now, 'error', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

--[[
  Records that a sent message reached the recipient's phone (`delivered`) or was opened (`read`,
  or `played` for a voice note or video), from the receipts WhatsApp sends the device. Each time
  is the first one reported: a later receipt (another group member's, a repeat after failover)
  leaves it alone. A read message was delivered too, so `read` also sets `deliveredAt` if no
  `delivered` came first. A record that expired (retention) is not re-created: the store's row
  gets the same times written behind.

  Input:
    KEYS[1]  message record  {p}:msg:<messageId>
    ARGV[1]  "delivered", "read" or "played"
    ARGV[2]  when, ms since the epoch

  Output:
    1 a time was recorded now, 0 both were already there, -1 no such record
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local recorded = redis.call('HSETNX', KEYS[1], 'deliveredAt', ARGV[2])
if ARGV[1] ~= 'delivered' then
  recorded = recorded + redis.call('HSETNX', KEYS[1], 'readAt', ARGV[2])
end
if recorded > 0 then
  return 1
end
return 0

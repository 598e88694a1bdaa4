--[[
  Accepts an outbound message: records it as `queued`, once per idempotency key. A repeated
  request with the same key (retried by a client, or sent to two servers at once) gets the first
  message back and records nothing.

  Input:
    KEYS[1]  idempotency key  {p}:idem:<deviceId>:<key> (a key no request uses when there is none)
    KEYS[2]  message record   {p}:msg:<messageId> (hash)
    ARGV[1]  messageId (new)
    ARGV[2]  idempotency window ms
    ARGV[3]  "1" when the request carried an idempotency key
    ARGV[4..] field, value, field, value, ... of the record

  Output:
    { messageId, 1 }         accepted now
    { firstMessageId, 0 }    the key was seen: the first message
]]
if ARGV[3] == '1' then
  local first = redis.call('GET', KEYS[1])
  if first then
    return { first, 0 }
  end
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'status', 'queued', 'acceptedAt', now, 'attempts', 0, unpack(fields))
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return { ARGV[1], 1 }

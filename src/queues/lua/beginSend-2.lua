--[[
  The owner is about to send a message: checks, immediately before the send, that it still holds
  the device's lease with its token, and records the intent (`sending`, with the token), so a
  crash between sending and recording is recognisable afterwards. A message already sent is not
  sent again.

  Input:
    KEYS[1]  message record  {p}:msg:<messageId>
    KEYS[2]  lease key       {p}:lease:<deviceId>
    ARGV[1]  "serverId:token" of the sender

  Output:
    { "go", attempt }            send now (attempt counts every begun send, this one included)
    { "sent", waMessageId }      already sent: do not send
    { "not_owner", holder }      the lease is not the sender's (holder "" when nobody holds it)
    { "missing", "" }            no such message record
]]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return { 'missing', '' }
end
if status == 'sent' then
  return { 'sent', redis.call('HGET', KEYS[1], 'waMessageId') or '' }
end
local holder = redis.call('GET', KEYS[2])
if holder ~= ARGV[1] then
  return { 'not_owner', holder or '' }
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'sending', 'sendingBy', ARGV[1])
return { 'go', attempt }

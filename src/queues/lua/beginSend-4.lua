--[[
  The owner is about to send a message: checks, immediately before the send, that it still holds
  the device's lease with its token, that the device is within its sending rate (a sliding
  window: never more than the limit in any window, unlike a fixed per-minute counter, which lets
  twice the limit through across a window edge), and records the intent (`sending`, with the
  token), so a crash between sending and recording is recognisable afterwards. A message already
  sent is not sent again.

  Input:
    KEYS[1]  message record  {p}:msg:<messageId>
    KEYS[2]  lease key       {p}:lease:<deviceId>
    KEYS[3]  send times      {p}:sends:<deviceId> (sorted set: messageId -> send time, ms)
    KEYS[4]  rate overrides  {p}:rate-limits (hash: deviceId -> sends allowed per window)
    ARGV[1]  the lease value the sender holds ("serverId@bootId:token")
    ARGV[2]  messageId
    ARGV[3]  default rate limit: sends allowed per window (a device's override in KEYS[4] wins)
    ARGV[4]  window ms
    ARGV[5]  deviceId

  Output:
    { "go", attempt }            send now (attempt counts every begun send, this one included)
    { "sent", waMessageId }      already sent: do not send
    { "not_owner", holder }      the lease is not the sender's (holder "" when nobody holds it)
    { "wait", ms }               the device is at its rate: try again in ms
    { "missing", "" }            no such message record
]]
--- @include "redisNowMs"
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
local now = redisNowMs()
local window = tonumber(ARGV[4])
-- Read here, at the send, so a changed limit applies to the very next message on any server.
local limit = tonumber(redis.call('HGET', KEYS[4], ARGV[5]) or ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
-- A retry of this very message after a failed send already holds its slot.
if not redis.call('ZSCORE', KEYS[3], ARGV[2]) then
  if redis.call('ZCARD', KEYS[3]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return { 'wait', math.max(1, tonumber(oldest[2]) + window - now) }
  end
  redis.call('ZADD', KEYS[3], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[3], window)
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'sending', 'sendingBy', ARGV[1])
return { 'go', attempt }

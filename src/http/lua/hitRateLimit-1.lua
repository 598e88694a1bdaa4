--[[
  Counts one request against a fixed-window rate limit shared by every server.

  Input:
    KEYS[1]  counter  {p}:ratelimit:<scope>:<subject>
    ARGV[1]  window ms

  Output:
    { requests in this window (this one included), ms until the window ends }
]]
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  -- A counter left without expiry (never by this script) must not block a caller forever.
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { count, ttl }

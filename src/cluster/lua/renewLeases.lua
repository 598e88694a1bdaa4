--[[
  Renews a batch of one server's leases in one call (the heartbeat), and reports the ones it lost.
  Called once per chunk of up to a thousand leases; chunks are pipelined, so a heartbeat is one
  round trip.

  Per lease it costs one GETEX, which reads the value and extends the key together. The sweep
  needs no per-lease deadline: the holder's one deadline, lifted once per chunk, is never before
  any of its leases expires (see grantLease), and the sweep looks at a holder's leases only once
  that deadline has passed.

  Input:
    KEYS[1]       holder deadlines  {p}:holder-deadlines (zset holder -> deadline ms)
    KEYS[2]       owned set         {p}:owned:<serverId>
    KEYS[3..n+2]  lease keys        {p}:lease:<deviceId>, in the order of the pairs in ARGV

    ARGV[1]       holder ("serverId@bootId", or a bare serverId)
    ARGV[2]       ttl ms
    ARGV[3..]     deviceId, token, deviceId, token, ...

  Output:
    flat array of the lost leases: deviceId, current value ("" when the lease is gone), ...
    A lease counts as lost when its value is no longer exactly "holder:token".
]]
--- @include "redisNowMs"
local holder, ttl = ARGV[1], tonumber(ARGV[2])
local now = redisNowMs()
local lost = {}
local renewed = false
for i = 3, #KEYS do
  local pair = (i - 3) * 2 + 3
  local deviceId, token = ARGV[pair], ARGV[pair + 1]
  local current = redis.call('GETEX', KEYS[i], 'PX', ttl)
  if current == holder .. ':' .. token then
    renewed = true
  else
    redis.call('SREM', KEYS[2], deviceId)
    lost[#lost + 1] = deviceId
    lost[#lost + 1] = current or ''
    if current then
      -- The GETEX extended a lease that is not this renewal's (rare: a server that was paused
      -- renews what it lost). Give it back the expiry its holder's deadline says, or the device
      -- would wait longer to move if that holder is dead; a deadline already past ends it now,
      -- as it would have ended without this GETEX.
      local other = string.match(current, '^(.*):%d+$')
      local deadline = other and tonumber(redis.call('ZSCORE', KEYS[1], other))
      if deadline then
        redis.call('PEXPIREAT', KEYS[i], deadline)
      elseif other then
        -- No deadline for its holder (it was forgotten meanwhile): one that covers the extension,
        -- so the sweep comes back for it.
        redis.call('ZADD', KEYS[1], 'GT', now + ttl, other)
      end
    end
  end
end
if renewed then
  redis.call('ZADD', KEYS[1], 'GT', now + ttl, holder)
end
return lost

--[[
  Picks the server a device should run on and reserves capacity there, atomically, so concurrent
  placements can never overfill a server; then tells the target through its inbox stream.

  Choice, by the rule of load that rebalance follows too (load.ts): live servers (server key
  present) that accept placements (`accepting` is not "0": a self-fenced server, or one whose
  inbox reader is down, would never claim), not draining, load below capacity, where
  load = owned devices + unexpired reservations; highest priority first, then lowest
  load/capacity, then lowest response time, then server id (so ties are deterministic).

  Only devices in the wanted set are placed: a device stopped or deleted through the API while a
  placement or an orphan was on its way is dropped here, atomically, instead of being started.

  Input:
    KEYS[1]  lease key           {p}:lease:<deviceId>
    KEYS[2]  placements          {p}:placements (zset deviceId -> reservation deadline)
    KEYS[3]  placement targets   {p}:placement-targets (hash deviceId -> serverId)
    KEYS[4]  wanted              {p}:wanted (set of devices whose desired state is running)
    then for each candidate server, four keys:
      server {p}:server:<id>, owned {p}:owned:<id>, reserved {p}:reserved:<id>, inbox {p}:inbox:<id>

    ARGV[1]  deviceId
    ARGV[2]  reservation ms (how long the target has to claim)
    ARGV[3]  server id to exclude ("" for none): the server draining the device, or the target
             whose reservation ran out unclaimed
    ARGV[4..] candidate server ids, in the order of their keys

  Output:
    { "placed", serverId }    reserved on serverId and announced in its inbox
    { "owned", value }        the device already has a lease ("holder:token"); any placement
                              left for it is dropped
    { "unwanted", "" }        the device is not wanted (stopped or deleted); any placement is dropped
    { "pending", serverId }   an unexpired reservation already exists
    { "none", "" }            no server can take it now; the device is left due in the
                              placements set, so the next sweep tries again
]]
--- @include "redisNowMs"
local deviceId, reservationMs, exclude = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local current = redis.call('GET', KEYS[1])
if current then
  -- A placement left for an owned device (made while claims were embargoed after a Redis data
  -- loss, then the holder re-asserted its lease) is moot; kept, it would stay due forever, and
  -- the sweep, which reads the oldest due placements first, would re-read it instead of newer ones.
  redis.call('ZREM', KEYS[2], deviceId)
  redis.call('HDEL', KEYS[3], deviceId)
  return { 'owned', current }
end
if redis.call('SISMEMBER', KEYS[4], deviceId) == 0 then
  redis.call('ZREM', KEYS[2], deviceId)
  redis.call('HDEL', KEYS[3], deviceId)
  return { 'unwanted', '' }
end

local now = redisNowMs()

local pendingUntil = redis.call('ZSCORE', KEYS[2], deviceId)
if pendingUntil and tonumber(pendingUntil) > now then
  return { 'pending', redis.call('HGET', KEYS[3], deviceId) or '' }
end

local best, bestPriority, bestRatio, bestResponse, bestIndex
for i = 4, #ARGV do
  local serverId = ARGV[i]
  local base = 4 + (i - 4) * 4
  local serverKey, ownedKey, reservedKey = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3]
  if serverId ~= exclude and redis.call('EXISTS', serverKey) == 1 then
    local fields = redis.call('HMGET', serverKey, 'capacity', 'priority', 'draining', 'responseTimeMs', 'accepting')
    local capacity = tonumber(fields[1]) or 0
    local priority = tonumber(fields[2]) or 0
    local draining = fields[3] == '1'
    local response = tonumber(fields[4]) or 0
    local refusing = fields[5] == '0'
    if not draining and not refusing and capacity > 0 then
      redis.call('ZREMRANGEBYSCORE', reservedKey, '-inf', now)
      local load = redis.call('SCARD', ownedKey) + redis.call('ZCARD', reservedKey)
      if load < capacity then
        local ratio = load / capacity
        local better = best == nil
          or priority > bestPriority
          or (priority == bestPriority and (ratio < bestRatio
            or (ratio == bestRatio and (response < bestResponse
              or (response == bestResponse and serverId < best)))))
        if better then
          best, bestPriority, bestRatio, bestResponse, bestIndex = serverId, priority, ratio, response, base
        end
      end
    end
  end
end

if best == nil then
  redis.call('ZADD', KEYS[2], now, deviceId)
  redis.call('HDEL', KEYS[3], deviceId)
  return { 'none', '' }
end

local until_ = now + reservationMs
redis.call('ZADD', KEYS[bestIndex + 3], until_, deviceId)
redis.call('ZADD', KEYS[2], until_, deviceId)
redis.call('HSET', KEYS[3], deviceId, best)
redis.call('XADD', KEYS[bestIndex + 4], 'MAXLEN', '~', 100000, '*', 'type', 'place', 'deviceId', deviceId)
return { 'placed', best }

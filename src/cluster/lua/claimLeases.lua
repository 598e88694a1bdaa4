--[[
  Claims a batch of devices' leases for one server, handing each the next fencing token of its
  device. A batch is what one read of the server's inbox brings (placements, up to a few hundred):
  the cluster-wide checks (embargo, run id, server live, token floor, Redis TIME) run once for all
  of them, and each device then costs only its own reads and writes.

  Input:
    KEYS[1]  holder deadlines     {p}:holder-deadlines (zset holder -> deadline ms)
    KEYS[2]  holders              {p}:holders (hash deviceId -> holder:token)
    KEYS[3]  owned set            {p}:owned:<serverId>
    KEYS[4]  claim embargo        {p}:claim-embargo
    KEYS[5]  server key           {p}:server:<serverId>
    KEYS[6]  reserved             {p}:reserved:<serverId>
    KEYS[7]  placements           {p}:placements
    KEYS[8]  placement targets    {p}:placement-targets
    KEYS[9]  token floor          {p}:token-floor (tokens are granted above it; see seedFences)
    KEYS[10] incarnation          {p}:incarnation (the run id fences were last re-seeded on)
    KEYS[11], KEYS[12], ...       per device, in the order of ARGV's pairs: its lease key
                                  {p}:lease:<deviceId>, then its fence key {p}:fence:<deviceId>

    ARGV[1]  serverId
    ARGV[2]  ttl ms
    ARGV[3]  "1" when the claims answer placements: each then needs the device's reservation to
             name this server (a late claim after the reservation expired, or after the device
             was stopped, must not start it); "0" otherwise
    ARGV[4]  the holder the lease values name: "serverId@bootId" (this start of the server), or
             "" for the bare serverId
    ARGV[5], ARGV[6], ...  per device: deviceId, minimum token (the store's lease_epoch + 1; 0
             when unknown)

  Output, either one triple for the whole batch, when a cluster-wide check refuses every claim:
    { -2, "", "" }                claims are embargoed (Redis lost its data less than one TTL ago)
    { -5, runId, seededOn }       this Redis (run id) is not the one fences were re-seeded on
                                  (seededOn, "" for none): it restarted or failed over, and its
                                  fences may be behind tokens already handed out; nothing granted
    { -3, "", "" }                the claiming server is not live (no server key): heartbeat first
  or one triple per device, in order, flattened:
    token, "holder:token", expired
                                  claimed; `expired` is the holder ("holder:token") of a lease
                                  that ran out without being released or swept (a failover that
                                  this claim completes before any sweep did), else ""
    -1, current value, ""         the lease is held (by anyone, this server included)
    -4, "", ""                    a placement claim without a reservation for this server
  (A batch of one device gets one triple either way, and it means the same.)
]]
--- @include "redisNowMs"
--- @include "grantLease"
-- One read for the three cluster-wide keys.
local cluster = redis.call('MGET', KEYS[4], KEYS[10], KEYS[9])
if cluster[1] then
  return { -2, '', '' }
end
-- The run id is this node's own, never replicated: a promoted replica carries the old master's
-- incarnation but has a run id of its own, so the check holds on the very node that would grant.
-- A plain find and a fixed-width cut (run ids are 40 hex digits): a pattern match over the INFO
-- text cost more than the rest of a claim's reads together.
local info = redis.call('INFO', 'server')
local at = string.find(info, 'run_id:', 1, true)
local runId = at and string.sub(info, at + 7, at + 46)
local seededOn = cluster[2]
if runId and runId ~= seededOn then
  return { -5, runId, seededOn or '' }
end
if redis.call('EXISTS', KEYS[5]) == 0 then
  return { -3, '', '' }
end

local serverId, ttl, viaPlacement = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local holder = ARGV[4]
if holder == nil or holder == '' then
  holder = serverId
end
local floorOfIncarnation = (tonumber(cluster[3]) or 0) + 1
local deadline = redisNowMs() + ttl

local out = {}
for i = 1, (#KEYS - 10) / 2 do
  local leaseKey, fenceKey = KEYS[9 + 2 * i], KEYS[10 + 2 * i]
  local deviceId, minToken = ARGV[3 + 2 * i], tonumber(ARGV[4 + 2 * i])
  local current = redis.call('GET', leaseKey)
  if current then
    out[#out + 1] = -1
    out[#out + 1] = current
    out[#out + 1] = ''
  else
    local target = redis.call('HGET', KEYS[8], deviceId)
    if viaPlacement and target ~= serverId then
      out[#out + 1] = -4
      out[#out + 1] = ''
      out[#out + 1] = ''
    else
      -- A release and a sweep both forget the holder, so one still named here held a lease that
      -- simply ran out: the sweep that would have counted this failover finds the new lease instead.
      local expired = redis.call('HGET', KEYS[2], deviceId) or ''
      local token, value = grantLease(leaseKey, fenceKey, KEYS[1], KEYS[2], KEYS[3], deviceId, holder, ttl, deadline,
        math.max(minToken, floorOfIncarnation))
      -- The reservation that brought the device here (if any) has done its job. Reservations are
      -- written together (a target, a placement deadline and an entry in the target's reserved
      -- set), so a device without a target has none to clear.
      if target then
        redis.call('ZREM', KEYS[6], deviceId)
        redis.call('ZREM', KEYS[7], deviceId)
        redis.call('HDEL', KEYS[8], deviceId)
      end
      out[#out + 1] = token
      out[#out + 1] = value
      out[#out + 1] = expired
    end
  end
end
return out

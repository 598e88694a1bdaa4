--[[
  Claims a device's lease for a server, handing out the next fencing token.

  Input:
    KEYS[1]  lease key            {p}:lease:<deviceId>
    KEYS[2]  fence key            {p}:fence:<deviceId>
    KEYS[3]  deadlines            {p}:deadlines (zset deviceId -> deadline ms)
    KEYS[4]  holders              {p}:holders (hash deviceId -> serverId:token)
    KEYS[5]  owned set            {p}:owned:<serverId>
    KEYS[6]  claim embargo        {p}:claim-embargo
    KEYS[7]  server key           {p}:server:<serverId>
    KEYS[8]  reserved             {p}:reserved:<serverId>
    KEYS[9]  placements           {p}:placements
    KEYS[10] placement targets    {p}:placement-targets
    KEYS[11] token floor          {p}:token-floor (tokens are granted above it; see seedFences)
    KEYS[12] incarnation          {p}:incarnation (the run id fences were last re-seeded on)

    ARGV[1]  deviceId
    ARGV[2]  serverId
    ARGV[3]  ttl ms
    ARGV[4]  minimum token (the store's lease_epoch + 1; 0 when unknown)
    ARGV[5]  "1" when the claim answers a placement: it then needs the device's reservation to
             name this server (a late claim after the reservation expired, or after the device
             was stopped, must not start it); "0" otherwise
    ARGV[6]  the holder the lease value names: "serverId@bootId" (this start of the server),
             or "" for the bare serverId

  Output:
    { token, "holder:token", expired }
                                  claimed; `expired` is the holder ("serverId:token") of a lease
                                  that ran out without being released or swept (a failover that
                                  this claim completes before any sweep did), else ""
    { -1, current value }         the lease is held (by anyone, this server included)
    { -2, "" }                    claims are embargoed (Redis lost its data less than one TTL ago)
    { -3, "" }                    the claiming server is not live (no server key): heartbeat first
    { -4, "" }                    a placement claim without a reservation for this server
    { -5, runId, seededOn }       this Redis (run id) is not the one fences were re-seeded on
                                  (seededOn, "" for none): it restarted or failed over, and its
                                  fences may be behind tokens already handed out; nothing granted
]]
-- One read for the three cluster-wide keys: a claim is the hot path of failover and start-up.
local cluster = redis.call('MGET', KEYS[6], KEYS[12], KEYS[11])
if cluster[1] then
  return { -2, '' }
end
-- The run id is this node's own, never replicated: a promoted replica carries the old master's
-- incarnation but has a run id of its own, so the check holds on the very node that would grant.
-- A plain find and a fixed-width cut (run ids are 40 hex digits): a pattern match over the INFO
-- text cost more than the rest of the claim's reads together.
local info = redis.call('INFO', 'server')
local at = string.find(info, 'run_id:', 1, true)
local runId = at and string.sub(info, at + 7, at + 46)
local seededOn = cluster[2]
if runId and runId ~= seededOn then
  return { -5, runId, seededOn or '' }
end
if redis.call('EXISTS', KEYS[7]) == 0 then
  return { -3, '' }
end
local current = redis.call('GET', KEYS[1])
if current then
  return { -1, current }
end
local target = redis.call('HGET', KEYS[10], ARGV[1])
if ARGV[5] == '1' and target ~= ARGV[2] then
  return { -4, '' }
end

local deviceId, serverId, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
-- The fence only goes up: INCR, then lift it to the floors when Redis's counter is behind. After
-- Redis lost its data the counter restarts from the store's lease_epoch, which may lack the newest
-- tokens (their records were still queued in this Redis): the incarnation floor, raised at each
-- re-seed, puts every token of the new incarnation above any of an earlier one.
local token = redis.call('INCR', KEYS[2])
local floor = math.max(tonumber(ARGV[4]), (tonumber(cluster[3]) or 0) + 1)
if token < floor then
  token = floor
  redis.call('SET', KEYS[2], token)
end

local holder = ARGV[6]
if holder == nil or holder == '' then
  holder = serverId
end
-- %d: Lua's own number-to-string turns tokens above 10^14 (high incarnation epochs) into 1e+14.
local value = holder .. ':' .. string.format('%d', token)
-- A release and a sweep both forget the holder, so one still named here held a lease that
-- simply ran out: the sweep that would have counted this failover finds the new lease instead.
local expired = redis.call('HGET', KEYS[4], deviceId) or ''
redis.call('SET', KEYS[1], value, 'PX', ttl)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[3], now + ttl, deviceId)
redis.call('HSET', KEYS[4], deviceId, value)
redis.call('SADD', KEYS[5], deviceId)
-- The reservation that brought the device here (if any) has done its job. Reservations are
-- written together (a target with a placement deadline and an entry in the target's reserved
-- set), so a device without a target has none to clear.
if target then
  redis.call('ZREM', KEYS[8], deviceId)
  redis.call('ZREM', KEYS[9], deviceId)
  redis.call('HDEL', KEYS[10], deviceId)
end
return { token, value, expired }

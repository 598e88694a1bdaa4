-- Grants a device's lease to `holder` under the device's next fencing token. The fence only goes
-- up: INCR, then lift it to `floor` when Redis's counter is behind (after Redis lost its data the
-- counter restarts from the store's lease_epoch, which may lack the newest tokens; the
-- incarnation floor, raised at each re-seed, puts every token of the new incarnation above any of
-- an earlier one). Writes the lease, its holder, the owner's owned set, and lifts the holder's
-- deadline to the lease's (ZADD GT: a holder's deadline is never before any of its leases
-- expires, which is what lets the sweep look at holders instead of leases); returns the token and
-- the lease value.
local function grantLease(leaseKey, fenceKey, holderDeadlinesKey, holdersKey, ownedKey, deviceId, holder, ttl, deadline, floor)
  local token = redis.call('INCR', fenceKey)
  if token < floor then
    token = floor
    redis.call('SET', fenceKey, token)
  end
  -- %d: Lua's own number-to-string turns tokens above 10^14 (high incarnation epochs) into 1e+14.
  local value = holder .. ':' .. string.format('%d', token)
  redis.call('SET', leaseKey, value, 'PX', ttl)
  redis.call('ZADD', holderDeadlinesKey, 'GT', deadline, holder)
  redis.call('HSET', holdersKey, deviceId, value)
  redis.call('SADD', ownedKey, deviceId)
  return token, value
end

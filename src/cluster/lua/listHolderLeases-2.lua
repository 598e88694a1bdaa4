--[[
  The leases a holder was last granted, as the sweep needs them once that holder is due: the
  devices of its server's owned set whose holders entry names this very holder (another boot of
  the same server id holds its own). Read-only: whether each ran out is expireLease-4's to decide.

  Input:
    KEYS[1]  owned set  {p}:owned:<serverId>
    KEYS[2]  holders    {p}:holders (hash deviceId -> holder:token)
    ARGV[1]  holder ("serverId@bootId", or a bare serverId)

  Output:
    flat array: deviceId, "holder:token", ...
]]
local prefix = ARGV[1] .. ':'
local out = {}
for _, deviceId in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('HGET', KEYS[2], deviceId)
  if value and string.sub(value, 1, #prefix) == prefix and string.find(value, '^%d+$', #prefix + 1) then
    out[#out + 1] = deviceId
    out[#out + 1] = value
  end
end
return out

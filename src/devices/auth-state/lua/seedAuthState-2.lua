--[[
  Fills in a device's missing auth state: from the durable snapshot (Redis lost its data) or
  with new creds (a device never linked, or logged out). Fenced like every auth-state write.

  Only a hash without creds is seeded, and only fields it lacks are written: keys that a socket
  wrote since Redis lost its data are newer than the snapshot's and are kept.

  Input:
    KEYS[1]  lease key   {p}:lease:<deviceId>
    KEYS[2]  auth state  {p}:auth:<deviceId> (hash)
    ARGV[1]  "serverId:token" the writer believes it holds
    ARGV[2 ..]  field, value pairs, `creds` among them

  Output:
    1 seeded, 0 refused (lease not held), -1 the hash has creds already (nothing written)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.call('HEXISTS', KEYS[2], 'creds') == 1 then
  return -1
end
for i = 2, #ARGV, 2 do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1

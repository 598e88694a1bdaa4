--[[
  Withdraws a device's published QR and pairing codes (it connected, or its socket closed), so
  the API never hands out a code nobody is waiting on. Fenced like the publish.

  Input:
    KEYS[1]  lease key  {p}:lease:<deviceId>
    KEYS[2]  QR key     {p}:qr:<deviceId>
    KEYS[3]  pairing    {p}:pairing:<deviceId>
    ARGV[1]  "serverId:token" the writer believes it holds

  Output:
    1 withdrawn (or nothing was published), 0 refused (lease not held)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3])
return 1

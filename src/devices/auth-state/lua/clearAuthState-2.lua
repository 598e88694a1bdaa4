--[[
  Clears a device's auth state after WhatsApp logged it out (401/403/419): the creds and every
  Signal key go, so the next start needs a new QR. Fenced: only the lease holder may clear.

  Input:
    KEYS[1]  lease key   {p}:lease:<deviceId>
    KEYS[2]  auth state  {p}:auth:<deviceId> (hash)
    ARGV[1]  "serverId:token" the writer believes it holds

  Output:
    1 cleared (or there was nothing to clear), 0 refused (lease not held)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2])
return 1

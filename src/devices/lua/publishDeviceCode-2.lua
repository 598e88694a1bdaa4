--[[
  Publishes a device's latest QR code or pairing code where any server's API can read it, for as
  long as WhatsApp honours it. Fenced: a socket that outlived its lease cannot publish a code
  that would link the phone to the wrong socket.

  Input:
    KEYS[1]  lease key  {p}:lease:<deviceId>
    KEYS[2]  code key   {p}:qr:<deviceId> or {p}:pairing:<deviceId> (string JSON, PX TTL)
    ARGV[1]  "serverId:token" the writer believes it holds
    ARGV[2]  JSON field name of the code: "qr" or "pairingCode"
    ARGV[3]  the code
    ARGV[4]  ms the code stays valid (the key's TTL)
    ARGV[5]  refresh: how many codes this device has shown in its current run
    ARGV[6]  round: how many sockets (rounds) in a row have shown codes, this one included

  Output:
    the expiry as Unix ms (Redis TIME), or 0 refused (lease not held)
]]
--- @include "redisNowMs"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local ttl = tonumber(ARGV[4])
local expiresAt = redisNowMs() + ttl
local value = {}
value[ARGV[2]] = ARGV[3]
-- cjson prints numbers with 14 significant digits; a ms timestamp has 13.
value['expiresAt'] = expiresAt
value['refresh'] = tonumber(ARGV[5])
value['round'] = tonumber(ARGV[6])
redis.call('SET', KEYS[2], cjson.encode(value), 'PX', ttl)
return expiresAt

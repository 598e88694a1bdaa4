--[[
  A fenced status write: records a device's live status only while the writer still holds the
  device's lease with exactly this token. A paused process that wakes after losing its lease
  writes nothing.

  Input:
    KEYS[1]  lease key          {p}:lease:<deviceId>
    KEYS[2]  device status key  {p}:device:<deviceId> (hash)
    ARGV[1]  the lease value ("serverId@bootId:token") the writer believes it holds
    ARGV[2]  status
    ARGV[3]  detail (JSON, may be "")
    ARGV[4]  wall-clock ms of the change (for display only)

  Output:
    1 written, 0 refused (the lease is held by someone else, or by nobody)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local sep = string.find(ARGV[1], ':[^:]*$')
-- The holder is "serverId@bootId" (or a bare serverId): readers want the server.
local holder = string.sub(ARGV[1], 1, sep - 1)
local boot = string.find(holder, '@', 1, true)
redis.call('HSET', KEYS[2],
  'status', ARGV[2],
  'serverId', boot and string.sub(holder, 1, boot - 1) or holder,
  'token', string.sub(ARGV[1], sep + 1),
  'detail', ARGV[3],
  'updatedAt', ARGV[4])
return 1

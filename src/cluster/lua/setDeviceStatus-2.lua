--[[
  A fenced status write: records a device's live status only while the writer still holds the
  device's lease with exactly this token. A paused process that wakes after losing its lease
  writes nothing.

  Input:
    KEYS[1]  lease key          {p}:lease:<deviceId>
    KEYS[2]  device status key  {p}:device:<deviceId> (hash)
    ARGV[1]  "serverId:token" the writer believes it holds
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
redis.call('HSET', KEYS[2],
  'status', ARGV[2],
  'serverId', string.sub(ARGV[1], 1, sep - 1),
  'token', string.sub(ARGV[1], sep + 1),
  'detail', ARGV[3],
  'updatedAt', ARGV[4])
return 1

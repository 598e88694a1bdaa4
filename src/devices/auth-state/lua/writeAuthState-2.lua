--[[
  A fenced write to a device's auth state: one Baileys `keys.set` (or one creds save) as one
  atomic batch. Only the lease holder with exactly this token writes; a stale owner (a paused
  process, a socket that outlived its lease) writes nothing, so it can never regress the Signal
  ratchet of the socket that replaced it.

  The lease is checked before anything is written, and sets run before deletes: Redis refuses a
  script's write for lack of memory only at the script's first write, never in the middle, so a
  batch is applied whole or not at all.

  Input:
    KEYS[1]  lease key   {p}:lease:<deviceId>
    KEYS[2]  auth state  {p}:auth:<deviceId> (hash: `creds`, `<type>:<id>`)
    ARGV[1]  "serverId:token" the writer believes it holds
    ARGV[2]  n, the number of fields to set
    ARGV[3 .. 2+2n]  field, value pairs to set
    ARGV[3+2n ..]    fields to delete

  Output:
    1 written, 0 refused (the lease is held by someone else, or by nobody)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
-- unpack() is bounded by Lua's C stack (about 8000 values), and one batch may hold more.
local CHUNK = 1000
local last = 2 + 2 * tonumber(ARGV[2])
local i = 3
while i <= last do
  local stop = math.min(i + 2 * CHUNK - 1, last)
  redis.call('HSET', KEYS[2], unpack(ARGV, i, stop))
  i = stop + 1
end
while i <= #ARGV do
  local stop = math.min(i + CHUNK - 1, #ARGV)
  redis.call('HDEL', KEYS[2], unpack(ARGV, i, stop))
  i = stop + 1
end
return 1

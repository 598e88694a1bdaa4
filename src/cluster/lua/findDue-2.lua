--[[
  Lists the members of a deadline sorted set whose deadline has passed, by Redis's clock, each
  with its entry in a companion hash. Read-only. Used for placements (placements +
  placement-targets: a reservation not claimed in time is placed again).

  Input:
    KEYS[1]  deadline zset   {p}:placements
    KEYS[2]  companion hash  {p}:placement-targets
    ARGV[1]  limit

  Output:
    flat array: member, hash value ("" when none), ...
]]
--- @include "redisNowMs"
local now = redisNowMs()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, member in ipairs(due) do
  out[#out + 1] = member
  out[#out + 1] = redis.call('HGET', KEYS[2], member) or ''
end
return out

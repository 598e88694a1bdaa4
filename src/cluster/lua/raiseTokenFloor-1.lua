--[[
  Raises the token floor (never lowers it): every token granted from now on is above it. A re-seed
  after Redis lost its data sets it to its new incarnation epoch times 2^32; several servers
  re-seeding at once may finish in any order, and the highest epoch stands.

  Input:
    KEYS[1]  token floor  {p}:token-floor
    ARGV[1]  the floor wanted

  Output:
    the floor now in place
]]
local wanted = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1])) or 0
if wanted > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return wanted
end
return current

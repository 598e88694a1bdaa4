-- Redis's own clock in milliseconds. Every deadline is on this clock, never a server's: servers'
-- clocks drift, Redis's is the one the lease TTLs run on.
local function redisNowMs()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

--[[
  Ends a delivery run's hold on a webhook target: frees it, or, after an event failed, leaves it
  paused for one retry interval, so no run delivers the target's later events before then.

  Input:
    KEYS[1]  pump lock      {p}:webhook:pump:<target>:<deviceId>

    ARGV[1]  holder id of the run
    ARGV[2]  pause, ms (0: free it now)
    ARGV[3]  value of the pause (`paused.<id>`), when pausing

  Output:
    1  released (or paused)
    0  not held by this run; nothing changed
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1

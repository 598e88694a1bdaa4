--[[
  Renews a delivery run's hold on a webhook target while it works.

  Input:
    KEYS[1]  pump lock      {p}:webhook:pump:<target>:<deviceId>

    ARGV[1]  holder id of the run
    ARGV[2]  hold, ms

  Output:
    1  renewed
    0  not held by this run (expired, taken by another)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1

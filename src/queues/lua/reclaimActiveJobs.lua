--[[
  A device's queue may hold a job that its previous owner had taken (active) when it died or was
  paused. BullMQ would return it to the queue only after its lock expires and two stalled checks
  pass, and the new owner would meanwhile send the messages behind it first. Before the new
  owner's worker starts, this puts such jobs back at the head of the wait list at once. Safe
  because the new owner holds the lease with a higher token: the old owner's send of that job is
  refused by beginSend (lease check), and its socket is no longer WhatsApp's open one.

  BullMQ keys (all under the queue's prefix, one hash tag):
    KEYS[1]  active list   <prefix>:<queue>:active
    KEYS[2]  wait list     <prefix>:<queue>:wait
    KEYS[3]  stalled set   <prefix>:<queue>:stalled
    KEYS[4]  marker zset   <prefix>:<queue>:marker
    KEYS[5..] lock key of each job id in ARGV, same order: <prefix>:<queue>:<jobId>:lock

  ARGV: the job ids the caller saw in the active list, oldest first

  Output: number of jobs put back
]]
local moved = 0
for i = #ARGV, 1, -1 do
  local jobId = ARGV[i]
  if redis.call('LREM', KEYS[1], 0, jobId) > 0 then
    redis.call('DEL', KEYS[4 + i])
    redis.call('SREM', KEYS[3], jobId)
    -- Workers take from the right end of the wait list: RPUSH puts the job first in line.
    redis.call('RPUSH', KEYS[2], jobId)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('ZADD', KEYS[4], 0, '0')
end
return moved

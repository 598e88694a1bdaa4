--[[
  Puts a device's waiting jobs in accept order at the head of its BullMQ wait list. After Redis
  lost its data the restore re-adds the pending messages' jobs, and BullMQ appends them at the
  tail, behind messages accepted since (and, after a failover to a replica that kept some of
  them, in no useful order). Jobs not waiting (active: a worker holds it; gone: finished) are
  left alone; a waiting job not named here (accepted after the store was read) stays behind the
  named ones, which is its place too.

  Called once per page of a device's pending messages: ARGV[1] is where the previous page ended,
  so pages follow each other. Several servers running the restore at once only repeat the same
  order.

  Input:
    KEYS[1]  wait list  <bullPrefix>:<queue>:wait (workers take from the right end)
    ARGV[1]  anchor: the job that goes just before these ("" for the head of the line)
    ARGV[2..] job ids in accept order

  Output: the new anchor (the last job placed, or ARGV[1] when none was waiting)
]]
local anchor = ARGV[1]
for i = 2, #ARGV do
  local jobId = ARGV[i]
  if redis.call('LREM', KEYS[1], 0, jobId) > 0 then
    -- "Before" in list order is "after" in the line: the right end is served first. LINSERT
    -- answers -1 when the anchor is no longer waiting (then nothing older is) and 0 when the
    -- list emptied: either way this job is first.
    if anchor == '' or redis.call('LINSERT', KEYS[1], 'BEFORE', anchor, jobId) <= 0 then
      redis.call('RPUSH', KEYS[1], jobId)
    end
    anchor = jobId
  end
end
return anchor

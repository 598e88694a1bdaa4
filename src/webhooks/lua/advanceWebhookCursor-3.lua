--[[
  Moves a webhook target's cursor past an event, for the delivery run that holds the target's
  pump lock only: a run that stalled (a long GC pause, a partition) and lost the lock to another
  must not move the cursor back over what the other delivered since. The cursor never goes
  down, and it lives exactly as long as the device's event numbering: should the numbering be
  gone (the device deleted, or Redis lost it with no store to restore it from) and start again
  at 1, a cursor left from before would skip the new events.

  Input:
    KEYS[1]  pump lock      {p}:webhook:pump:<target>:<deviceId>
    KEYS[2]  cursor         {p}:webhook:cursor:<target>:<deviceId>
    KEYS[3]  event seq      {p}:event-seq:<deviceId>

    ARGV[1]  holder id of the run
    ARGV[2]  sequence delivered (or moved to a retry)

  Output:
    1  the cursor is at the sequence or past it
    0  the run no longer holds the lock; nothing written
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local sequence = tonumber(ARGV[2])
local ttl = redis.call('PTTL', KEYS[3])
if ttl == -2 then
  -- The numbering is gone: so is every event this cursor counted.
  redis.call('DEL', KEYS[2])
  return 1
end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if sequence > current then
  current = sequence
end
if ttl > 0 then
  redis.call('SET', KEYS[2], current, 'PX', ttl)
else
  redis.call('SET', KEYS[2], current)
end
return 1

--[[
  Puts part of one device's event log back from the store after Redis lost its data (or failed
  over to a replica that missed the newest writes), before claims re-open. Without it the device's
  numbering would start again at 1 (or fall back) under readers that already saw the numbers, the
  events its webhook had not handed on would be gone from the stream, and a message WhatsApp
  delivers again would not be recognised as a repeat.

  Called in chunks of a device's events in sequence order; every step only moves forward, so
  chunks, a second server restoring at the same time, and a restore after the new holder already
  appended are all harmless:
  - an event goes into the stream only above the stream's last id (an entry id never goes back);
  - a dedup marker is set only where none is (NX), for what is left of its window;
  - the counter and the webhook cursors only go up.

  Input:
    KEYS[1]  sequence counter  {p}:event-seq:<deviceId> (string: the last sequence handed out)
    KEYS[2]  event stream      {p}:events:<deviceId> (fields id, type, at, data, as appendEvent-4 writes them)
    KEYS[3]  webhook cursors   {p}:webhook:cursor:device:<deviceId> (string: the last sequence
    KEYS[4]                    handed to the device's own webhook) and {p}:webhook:cursor:operator:<deviceId>
                               (to WEBHOOK_URL); the store's progress is where both had got to
    KEYS[5], KEYS[6], ...      per event, in ARGV's order: its dedup marker {p}:event-id:<eventId>
    ARGV[1]  the last sequence the store knows was handed out for the device (the counter's floor)
    ARGV[2]  the webhooks' last sequence in the store (0: none, the cursors are left as they are)
    ARGV[3]  retention ms (the stream expires after it, as appendEvent-4's does; the counter and cursors live as long as the device)
    ARGV[4]  dedup window ms
    ARGV[5]  max length of the stream
    ARGV[6], ARGV[7], ...  per event, six each: sequence, event id, type, at (ms, Redis's clock
             when the log accepted it), data (JSON), "1" to put it in the stream or "0" for the
             dedup marker only

  Output:
    { added, markers, counter }  entries added to the stream, markers set, the counter after
]]
--- @include "redisNowMs"
--- @include "streamLastSequence"

local now = redisNowMs()
local retention = tonumber(ARGV[3])
local dedup = tonumber(ARGV[4])
local last = streamLastSequence(KEYS[2])
local added = 0
local markers = 0

local count = (#ARGV - 5) / 6
for i = 1, count do
  local base = 5 + (i - 1) * 6
  local seq = tonumber(ARGV[base + 1])
  local at = tonumber(ARGV[base + 4])
  -- Entries older than the retention would have been trimmed had Redis kept its data.
  if ARGV[base + 6] == '1' and seq > last and at > now - retention then
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], string.format('%d-0', seq),
      'id', ARGV[base + 2], 'type', ARGV[base + 3], 'at', ARGV[base + 4], 'data', ARGV[base + 5])
    last = seq
    added = added + 1
  end
  local left = dedup - (now - at)
  if left > 0 and redis.call('SET', KEYS[4 + i], string.format('%d', seq), 'PX', left, 'NX') then
    markers = markers + 1
  end
end

local counter = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1]), last)
if counter > 0 then
  -- No expiry, as appendEvent-4's: the numbering lives as long as the device.
  redis.call('SET', KEYS[1], string.format('%d', counter))
end
if added > 0 then
  redis.call('PEXPIRE', KEYS[2], retention)
end
local webhook = tonumber(ARGV[2])
for k = 3, 4 do
  if webhook > 0 and tonumber(redis.call('GET', KEYS[k]) or '0') < webhook then
    redis.call('SET', KEYS[k], string.format('%d', webhook))
  end
end
return { added, markers, counter }

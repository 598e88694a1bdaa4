--[[
  Appends one event to a device's log, for the device's lease holder only: a process that lost
  the lease (paused, partitioned, replaced) must not add to a log its successor now writes. Event
  ids are deterministic, so the same WhatsApp message delivered again to a new owner after a
  failover, or an append retried after a lost reply, is dropped as a duplicate while its marker
  lives, and answered with the sequence the first one got. Accepted events are numbered 1, 2, 3...
  per device without gaps: the number is stored only after the entry is written, and the entry's
  id is `<sequence>-0`, so "after sequence N" is one XRANGE from `(N-0`.

  Input:
    KEYS[1]  lease key         {p}:lease:<deviceId>
    KEYS[2]  dedup marker      {p}:event-id:<eventId> (string: the event's sequence, PX window)
    KEYS[3]  sequence counter  {p}:event-seq:<deviceId> (string: the last sequence handed out;
                               no expiry: it goes when the device is deleted)
    KEYS[4]  event stream      {p}:events:<deviceId> (fields id, type, at, data)
    ARGV[1]  the lease value the appender holds ("serverId@bootId:token")
    ARGV[2]  event id
    ARGV[3]  event type
    ARGV[4]  event data (JSON)
    ARGV[5]  dedup window ms
    ARGV[6]  max length: the stream keeps at most this many entries
    ARGV[7]  retention ms (at least the dedup window): older entries are trimmed, and an idle
             device's stream expires

  Output:
    { "appended", seq, at }  written as entry <seq>-0; at: Redis's clock when it was, ms
    { "duplicate", seq }  an event with this id was appended as seq within the window; nothing written
    { "stale" }           the lease is not the appender's (another holder, or nobody); nothing written
]]
--- @include "redisNowMs"
--- @include "streamLastSequence"

-- Each append removes at most this many entries past the retention, so its cost stays bounded;
-- it is more than the one entry an append adds, so a backlog of old entries drains.
local TIME_TRIM_BATCH = 8

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return { 'stale' }
end
local first = redis.call('GET', KEYS[2])
if first then
  return { 'duplicate', tonumber(first) }
end

-- The counter outlives the stream: an idle device's next event goes on from its last number, which
-- the store and every receiver have seen, never from 1 again. Should the counter be lost alone,
-- the numbering goes on from the stream's last generated id (kept even when trimming emptied the
-- stream), never backwards; after Redis lost both, the restore sets it from the store first.
local function lastSequence()
  local counter = redis.call('GET', KEYS[3])
  if counter then
    return tonumber(counter)
  end
  return streamLastSequence(KEYS[4])
end

local now = redisNowMs()
local retention = tonumber(ARGV[7])
local seq = lastSequence() + 1
-- %d: Lua's own number-to-string would write large numbers as 1e+14.
local seqText = string.format('%d', seq)
-- Exact MAXLEN: at the cap each append removes one entry, which costs no more than `~` would,
-- and readers can rely on the newest max-length events being there (`~` keeps a node's worth more).
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[6], seqText .. '-0',
  'id', ARGV[2], 'type', ARGV[3], 'at', now, 'data', ARGV[4])
redis.call('SET', KEYS[3], seqText)
redis.call('PEXPIRE', KEYS[4], retention)
redis.call('SET', KEYS[2], seqText, 'PX', ARGV[5])

-- Sequence order is `at` order (one script at a time, on Redis's clock; should that clock step
-- back, an old entry merely waits for a later append). Fields stand as XADD above wrote them, so
-- `at` is the sixth.
local oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', TIME_TRIM_BATCH)
local expired = 0
for _, entry in ipairs(oldest) do
  if tonumber(entry[2][6]) > now - retention then
    break
  end
  expired = expired + 1
end
if expired > 0 then
  -- MINID drops ids below it: `<seq>-1` drops entry <seq>-0 and everything before it.
  redis.call('XTRIM', KEYS[4], 'MINID', string.format('%d-1', sequenceOf(oldest[expired][1])))
end
return { 'appended', seq, now }

--[[
  Creates an accepted message's Redis record (`queued`) under the id the store gave it, unless a
  record exists. The store decides what is accepted (once per idempotency key, durably); this is
  its working copy, created by the accepting server and again by the restore after Redis lost
  its data. Either may run twice, or both at once: an existing record (perhaps `sending` or
  already `sent`) is never reset, so nothing is sent twice because it was re-created.

  Input:
    KEYS[1]  message record  {p}:msg:<messageId> (hash)
    ARGV[1]  messageId (the store's)
    ARGV[2]  acceptedAt, ms since the epoch (the store's accept time)
    ARGV[3..] field, value, field, value, ... of the record

  Output:
    { "queued", 1 }    created now
    { status, 0 }      a record exists: its status
]]
local status = redis.call('HGET', KEYS[1], 'status')
if status then
  return { status, 0 }
end
local fields = {}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', 'queued', 'acceptedAt', ARGV[2], 'attempts', 0, unpack(fields))
return { 'queued', 1 }

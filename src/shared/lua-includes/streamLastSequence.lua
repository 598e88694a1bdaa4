-- A stream entry id `<sequence>-0` (the event log's) as the number it carries.
local function sequenceOf(entryId)
  return tonumber(string.match(entryId, '^%d+'))
end

-- The sequence of a stream's last generated id, which the stream keeps even when trimming emptied
-- it (0: no stream), so a numbering read from it never goes backwards.
local function streamLastSequence(key)
  if redis.call('EXISTS', key) == 0 then
    return 0
  end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      return sequenceOf(info[i + 1])
    end
  end
  -- Starting again at 1 here would move the sequence backwards under a reader.
  error('XINFO STREAM names no last-generated-id')
end

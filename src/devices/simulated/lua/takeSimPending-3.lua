--[[
  Simulated WhatsApp: delivers to the device's open socket what it holds for the device, oldest
  first. Nothing is removed: WhatsApp keeps each entry until the socket acknowledges it
  (ackSimPending), so a socket that dies first leaves it for the next. Each message delivered goes
  into the history stream with the socket it went to; a redelivery appears once per socket.

  Input:
    KEYS[1]  socket key  {p}:sim:socket:<deviceId>
    KEYS[2]  pending     {p}:sim:pending:<deviceId> (stream)
    KEYS[3]  history     {p}:sim:history (stream, capped)
    ARGV[1]  socketId
    ARGV[2]  deviceId
    ARGV[3]  most entries to deliver
    ARGV[4]  history cap (approximate MAXLEN)

  Output:
    the entries delivered, as XRANGE answers them ({id, {field, value, ...}}); empty when the
    socket is not the device's open one
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {}
end
local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', ARGV[3])
for _, entry in ipairs(entries) do
  local fields = entry[2]
  -- Fields in the order the send scripts add them: k (kind), m (WhatsApp id), ...
  if fields[2] == 'message' then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'k', 'inbound', 'd', ARGV[2], 's', ARGV[1], 'm', fields[4])
  end
end
return entries

--[[
  Claims a server id for one boot (one process start) while it starts, that is until its heartbeat
  names the boot in the server key. Two processes started at the same moment with one SERVER_ID
  would otherwise both find the id free; the claim lets only one of them have it.

  Another boot holds the id while the live server key names it (its heartbeat) or an unexpired
  claim does (a process still starting). Boots the caller proved dead (no connection of theirs
  left in Redis) do not count, so a crashed process restarted under the same id claims at once.
  The starting process calls this again every TTL/3 to keep its claim until its heartbeat runs.

  Input:
    KEYS[1]  server key   {p}:server:<serverId>        hash, PX TTL, written by the heartbeat
    KEYS[2]  claim key    {p}:server-claim:<serverId>  hash bootId, url; PX ARGV[3]

    ARGV[1]  this boot id
    ARGV[2]  this server's URL (for the message a refused process prints)
    ARGV[3]  lifetime of the claim, ms
    ARGV[4..] boot ids the caller has proved dead

  Output:
    {'beating'}           the server key names this boot: its heartbeat holds the id; nothing written
    {'claimed'}           the claim names this boot for ARGV[3] ms
    {'held', bootId}      another boot holds the id; nothing written
]]
local me = ARGV[1]
local dead = {}
for i = 4, #ARGV do
  dead[ARGV[i]] = true
end
local function heldByAnother(boot)
  return boot and boot ~= me and not dead[boot]
end

local beating = redis.call('HGET', KEYS[1], 'bootId')
if beating == me then
  return {'beating'}
end
if heldByAnother(beating) then
  return {'held', beating}
end
local claimed = redis.call('HGET', KEYS[2], 'bootId')
if heldByAnother(claimed) then
  return {'held', claimed}
end
redis.call('HSET', KEYS[2], 'bootId', me, 'url', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {'claimed'}

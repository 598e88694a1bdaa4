import { loadLuaScript } from '../../shared/lua.js';

// The simulated WhatsApp's Lua, one table for its sockets (connector.ts) and its inbound side
// (inbound.ts): each script is WhatsApp's side of one thing a socket or a phone does.

const LUA = new URL('./lua/', import.meta.url);
export const simScripts = {
  open: loadLuaScript(LUA, 'openSimSocket-4.lua'),
  ping: loadLuaScript(LUA, 'pingSimSocket-2.lua'),
  close: loadLuaScript(LUA, 'closeSimSocket-2.lua'),
  send: loadLuaScript(LUA, 'sendSimMessage-4.lua'),
  inbound: loadLuaScript(LUA, 'sendSimInbound-3.lua'),
  receipt: loadLuaScript(LUA, 'sendSimReceipt-3.lua'),
  take: loadLuaScript(LUA, 'takeSimPending-3.lua'),
  ack: loadLuaScript(LUA, 'ackSimPending-2.lua'),
};

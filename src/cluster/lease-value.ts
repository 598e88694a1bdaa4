// The lease value, `serverId@bootId:token`: who holds a device's lease (which server, and which
// start of it) under which fencing token. Every module that writes or compares one builds it here.

/** A lease's holder and token, as its value names them. */
export interface LeaseHolder {
  serverId: string;
  /** The holding process's boot id; absent in values that name no boot. */
  bootId?: string;
  token: number;
}

/**
 * The holder a lease value names: `serverId@bootId`, so that two processes started with one
 * SERVER_ID (a copied .env, or a crashed one and its restart) never take each other's leases for
 * their own. A bare `serverId` holder (no boot) is accepted too. Neither part contains '@' or ':'.
 */
export const holderId = (serverId: string, bootId?: string): string => (bootId ? `${serverId}@${bootId}` : serverId);

/** The server id part of a holder id; keys such as `owned:<serverId>` are per server, not per boot. */
export const serverIdOf = (holder: string): string => {
  const at = holder.indexOf('@');
  return at < 0 ? holder : holder.slice(0, at);
};

/** The lease value `holder:token`. */
export const leaseValue = (holder: string, token: number): string => `${holder}:${token}`;

/**
 * Parses `serverId@bootId:token` (or `serverId:token`). Server ids never contain ':' or '@', so
 * the last ':' splits off the token and the first '@' the boot.
 */
export function parseLeaseValue(value: string): LeaseHolder | null {
  const at = value.lastIndexOf(':');
  if (at <= 0) return null;
  const token = Number(value.slice(at + 1));
  if (!Number.isSafeInteger(token)) return null;
  const holder = value.slice(0, at);
  const boot = holder.indexOf('@');
  return boot < 0 ? { serverId: holder, token } : { serverId: holder.slice(0, boot), bootId: holder.slice(boot + 1), token };
}

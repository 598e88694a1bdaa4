// The chaos run's history: one JSON object per line, every event with `t` (ms since the epoch)
// and `kind`. Times come from the source that saw the event: Redis `TIME` for the simulated
// WhatsApp's events, the server's clock for lease records (write-behind stamps each record with
// the moment it happened), the runner's clock for its own calls and probes. Everything runs on
// one host, so the clocks agree to well under the margins the checker relies on (a stale owner
// self-fences a third of a TTL before anyone may claim).
//
// Kinds:
//   claim         deviceId serverId token           a lease granted (store: device_lease_events)
//   release       deviceId serverId token reason    a lease given up (release, drain, rebalance)
//   expire        deviceId serverId token           a lease swept after its holder stopped renewing
//   lease_lost    deviceId serverId token           a renewal found the lease gone
//   self_fence    serverId                          a server stopped everything (server_logs)
//   socket_open   deviceId serverId token socketId kicked   the simulated WhatsApp opened a
//                 socket; `kicked` names the socket it replaced while still open ("" if none)
//   socket_close  deviceId socketId reason          a socket closed itself
//   sim_reset                                       Redis lost its data: every simulated socket,
//                                                   seen id and queued message with it
//   accept        deviceId messageId seq            the HTTP API accepted a message (202);
//                                                   `seq` orders one device's messages
//   send          deviceId messageId serverId token duplicate   the simulated WhatsApp got a
//                 message; `duplicate` when it had already delivered that id (dropped)
//   store_write   deviceId serverId token what applied seq   a fenced write of the device's
//                 state that reached the store (device_state_writes): `applied` false when the
//                 fence refused it, `seq` the order the store applied writes in
//   connectivity  deviceId up                        the runner's probe saw the device connected
//                                                   where it should be (socket of the lease holder)
//                                                   or not; written on every change
//   fault         id fault phase boundMs target     a fault injected (`phase` start) or undone
//                                                   (end), both with the same `id`; recovery is
//                                                   measured from the start (from the end for a
//                                                   Redis restart) and must take at most boundMs
//   conflicts     total                              the simulated WhatsApp's conflict counter,
//                                                   summed over Redis restarts
//   final         deviceId owner socketServer token  each device's state once the run settled

export type FaultType =
  | 'sigkill'
  | 'sigstop'
  | 'sigterm'
  | 'redis_client_kill'
  | 'redis_restart'
  | 'store_outage'
  | 'server_join'
  | 'server_leave';

export type HistoryEvent =
  | { t: number; kind: 'claim'; deviceId: string; serverId: string; token: number }
  | { t: number; kind: 'expire'; deviceId: string; serverId: string; token: number }
  | { t: number; kind: 'lease_lost'; deviceId: string; serverId: string; token: number }
  | { t: number; kind: 'release'; deviceId: string; serverId: string; token: number; reason?: string }
  | { t: number; kind: 'self_fence'; serverId: string }
  | { t: number; kind: 'socket_open'; deviceId: string; serverId: string; token: number; socketId: string; kicked: string }
  | { t: number; kind: 'socket_close'; deviceId: string; socketId: string; reason?: string }
  | { t: number; kind: 'sim_reset' }
  | { t: number; kind: 'accept'; deviceId: string; messageId: string; seq: number }
  | { t: number; kind: 'send'; deviceId: string; messageId: string; serverId: string; token: number; duplicate: boolean }
  | { t: number; kind: 'store_write'; deviceId: string; serverId: string; token: number; what?: string; applied?: boolean; seq?: number }
  | { t: number; kind: 'connectivity'; deviceId: string; up: boolean }
  | { t: number; kind: 'fault'; id: number; fault: FaultType; phase: 'start' | 'end'; boundMs?: number; target?: string }
  | { t: number; kind: 'conflicts'; total: number }
  | { t: number; kind: 'final'; deviceId: string; owner: string | null; socketServer: string | null; token: number | null };

export type HistoryKind = HistoryEvent['kind'];

/** Parses JSON lines; a line that is not an event is an error naming the line. */
export function parseHistory(text: string): HistoryEvent[] {
  const events: HistoryEvent[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new Error(`history line ${i + 1} is not JSON`);
    }
    const e = value as Partial<HistoryEvent> | null;
    if (!e || typeof e !== 'object' || typeof e.t !== 'number' || typeof e.kind !== 'string') {
      throw new Error(`history line ${i + 1} has no numeric t and kind`);
    }
    events.push(e as HistoryEvent);
  });
  return events;
}

export const formatHistoryLine = (event: HistoryEvent) => `${JSON.stringify(event)}\n`;

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
//
// Inbound events (a contact writes to a device; wafleet logs it and delivers it to webhooks):
//   inject        deviceId waMessageId              the simulated WhatsApp took an inbound message
//                                                   for the device (the runner got its 202)
//   sim_inbound   deviceId waMessageId serverId token socketId   the simulated WhatsApp handed
//                 an inbound message to a socket of the device (once per socket it went to)
//   logged        deviceId sequence eventId type waMessageId   an event in the device's log,
//                 read through the pull API (GET /api/devices/:id/events) once the run settled
//   webhooks      enabled reason                    whether the servers deliver webhooks at all
//                                                   (a build without them: the checks that need
//                                                   deliveries are skipped, and the report says so)
//   webhook       deviceId eventId headerEventId type sequence waMessageId signature answer
//                 a POST the run's webhook receiver got: the body's event, the X-Wafleet-Event-Id
//                 header, whether X-Wafleet-Signature verified, and how the receiver answered it
//                 (an HTTP status, or `hang`: held past the servers' timeout, never answered)
//   receiver      id mode phase                     the receiver's own faults: answering 500
//                                                   (`error`), hanging (`hang`), refusing
//                                                   connections (`down`); start and end

export type FaultType =
  | 'sigkill'
  | 'sigstop'
  | 'sigterm'
  | 'redis_client_kill'
  | 'redis_restart'
  | 'store_outage'
  | 'server_join'
  | 'server_leave';

/** What the run's webhook receiver does for a while instead of answering 200. */
export type ReceiverFault = 'error' | 'hang' | 'down';

export type SignatureCheck = 'valid' | 'invalid' | 'missing';

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
  | { t: number; kind: 'final'; deviceId: string; owner: string | null; socketServer: string | null; token: number | null }
  | { t: number; kind: 'inject'; deviceId: string; waMessageId: string }
  | { t: number; kind: 'sim_inbound'; deviceId: string; waMessageId: string; serverId: string; token: number; socketId: string }
  | { t: number; kind: 'logged'; deviceId: string; sequence: number; eventId: string; type: string; waMessageId?: string }
  | { t: number; kind: 'webhooks'; enabled: boolean; reason?: string }
  | {
      t: number;
      kind: 'webhook';
      deviceId: string;
      eventId: string;
      headerEventId: string;
      type: string;
      sequence: number;
      waMessageId?: string;
      signature: SignatureCheck;
      answer: number | 'hang';
    }
  | { t: number; kind: 'receiver'; id: number; mode: ReceiverFault; phase: 'start' | 'end' };

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

import { WafleetError } from '../shared/errors.js';

/** The caller no longer holds the device's lease (or holds an older token). */
export class LeaseLostError extends WafleetError {
  constructor(
    readonly deviceId: string,
    readonly token: number,
    reason: string,
  ) {
    super('lease_lost', `lease of device ${deviceId} (token ${token}) is not held: ${reason}`);
  }
}

/** The server has gone too long without a successful renewal and must not act on any device. */
export class SelfFencedError extends WafleetError {
  constructor(readonly sinceMs: number) {
    super('self_fenced', `server is self-fenced: no successful lease renewal for ${Math.round(sinceMs)} ms`);
  }
}

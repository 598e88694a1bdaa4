import { WafleetError } from '../shared/errors.js';

/**
 * A write to a device's auth state was refused because the writer no longer holds the device's
 * lease with its token: another server owns the session now, and nothing was written.
 */
export class AuthStateFencedError extends WafleetError {
  constructor(
    readonly deviceId: string,
    readonly token: number,
    what: string,
  ) {
    super('auth_state_fenced', `auth state of device ${deviceId}: ${what} refused, lease (token ${token}) not held`);
  }
}

/** A stored auth state cannot be read back (corrupt JSON, an unknown shape). */
export class AuthStateCorruptError extends WafleetError {
  constructor(
    readonly deviceId: string,
    field: string,
    options?: { cause?: unknown },
  ) {
    super('auth_state_corrupt', `auth state of device ${deviceId}: field ${JSON.stringify(field)} cannot be read`, options);
  }
}

/** The device is not running here with that token, or its socket is not connected: retry later. */
export class DeviceNotConnectedError extends WafleetError {
  constructor(
    readonly deviceId: string,
    why: string,
  ) {
    super('device_not_connected', `device ${deviceId} cannot send now: ${why}`);
  }
}

/**
 * A message's media could not be downloaded from its mediaUrl. `permanent`: asking again cannot
 * help (a refused address, a body over the cap, a link that is gone); otherwise it may pass.
 */
export class MediaDownloadError extends WafleetError {
  constructor(
    readonly permanent: boolean,
    message: string,
    options?: { cause?: unknown },
  ) {
    super('media_download_failed', message, options);
  }
}

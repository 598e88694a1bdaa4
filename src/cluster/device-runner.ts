// What the lease core needs of whatever runs devices: it starts a device's socket when it gains
// the lease and stops it before letting the lease go. The device runtime (devices/runtime.ts)
// is one; the lease core never depends on how sockets are run.

export interface DeviceRunner {
  /**
   * Starts the device's socket under the token the guard holds for it. Idempotent for one token,
   * except that it reopens a socket the guard closed (a running device left with no socket).
   */
  start(deviceId: string, token: number): void;
  /** Stops the socket; the session is kept (never a logout). */
  stop(deviceId: string, reason: string): Promise<void>;
  stopAll(reason: string): Promise<void>;
  /**
   * Logs the device out on purpose (API): unlinks it at WhatsApp when its socket is connected,
   * clears its session in Redis and in the store (fenced by `token`), records `logged_out`, and
   * stops the socket. Works whether or not the device is running here; the lease is left to the
   * caller. Resolves with what was cleared (a newer owner's token refuses it).
   */
  logout(deviceId: string, token: number, reason: string): Promise<{ redis: boolean; store: boolean }>;
  /**
   * Calls `listener` whenever a device stops here for good on its own (logged out at WhatsApp,
   * refused, replaced again and again, never linked), after its desired state became `stopped` and
   * its lease was let go. Stops asked through stop, stopAll or logout are not reported: the asker
   * knows. What follows the device (its outbound worker, the coordinator's hold time) ends here.
   */
  onRetired(listener: (deviceId: string, token: number) => void): void;
}

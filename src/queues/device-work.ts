import { MediaDownloadError } from '../devices/errors.js';
import type { DeviceRuntime } from '../devices/runtime.js';
import { PermanentSendError, type MessageSender, type Outbound } from './outbound.js';

/**
 * The runtime the coordinator drives, with each device's outbound worker following its socket:
 * started under the same lease token, and stopped (before the socket) whenever the device stops
 * here, or after it stopped for good by itself, so the device's queue is worked off only where
 * the device runs.
 */
export function withOutboundWork(runtime: DeviceRuntime, outbound: Outbound): DeviceRuntime {
  runtime.onRetired((deviceId, token) => void outbound.stopDevice(deviceId, token));
  return {
    onRetired: (listener) => runtime.onRetired(listener),
    start(deviceId, token) {
      runtime.start(deviceId, token);
      outbound.startDevice(deviceId, token);
    },
    async stop(deviceId, reason) {
      await outbound.stopDevice(deviceId);
      await runtime.stop(deviceId, reason);
    },
    async stopAll(reason) {
      await outbound.stopAllDevices();
      await runtime.stopAll(reason);
    },
    async logout(deviceId, token, reason) {
      await outbound.stopDevice(deviceId);
      return runtime.logout(deviceId, token, reason);
    },
    send: (deviceId, token, message, waMessageId) => runtime.send(deviceId, token, message, waMessageId),
    get activeConnections() {
      return runtime.activeConnections;
    },
    get running() {
      return runtime.running;
    },
    statusCounts: () => runtime.statusCounts(),
    isRunning: (deviceId) => runtime.isRunning(deviceId),
    describe: (deviceId) => runtime.describe(deviceId),
  };
}

/**
 * The runtime as outbound's sender: a device is ready when it runs under the token, connected. A
 * media download the runtime calls hopeless is a permanent send error.
 */
export function runtimeSender(runtime: Pick<DeviceRuntime, 'describe' | 'send'>): MessageSender {
  return {
    ready: (deviceId, token) => {
      const state = runtime.describe(deviceId);
      return state !== null && state.token === token && state.connected;
    },
    async send(deviceId, token, message, waMessageId) {
      try {
        await runtime.send(deviceId, token, message, waMessageId);
      } catch (err) {
        // A refused media link (a private address, a body over the cap, a link that is gone) is
        // refused on every attempt: the message fails now with the reason.
        if (err instanceof MediaDownloadError && err.permanent) throw new PermanentSendError(err.message);
        throw err;
      }
    },
  };
}

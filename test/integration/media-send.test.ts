import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runtimeSender } from '../../src/queues/device-work.js';
import { createMessageRecords, type MessageRecords } from '../../src/queues/messages.js';
import { createOutbound, type Outbound } from '../../src/queues/outbound.js';
import { acceptInRedis } from '../helpers/messages.js';
import { createDeviceBed, eventually, silentLog, startTestServer, type DeviceBed, type TestServer } from '../helpers/devices.js';

// A media message on the real send path: the outbound worker, the device runtime (which downloads
// the media through the guarded client) and the simulated WhatsApp, on real Redis and a real store.
// The media server is a local listener that counts every connection made to it.

let bed: DeviceBed;
const closing: Array<() => Promise<void>> = [];

beforeAll(async () => {
  bed = await createDeviceBed();
});
afterEach(async () => {
  for (const close of closing.splice(0).reverse()) await close();
});
afterAll(async () => {
  await bed.cleanup();
});

interface MediaServer {
  url: string;
  connections: number;
  requests: string[];
}

async function mediaServer(answers: Array<(res: http.ServerResponse) => void>): Promise<MediaServer> {
  const media: MediaServer = { url: '', connections: 0, requests: [] };
  const server = http.createServer((req, res) => {
    media.requests.push(`${req.method} ${req.url}`);
    (answers[media.requests.length - 1] ?? answers.at(-1)!)(res);
  });
  server.on('connection', () => (media.connections += 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  media.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  closing.push(() => new Promise((resolve) => server.close(() => resolve())));
  return media;
}

/** A server whose device is linked and connected, with the device's outbound worker running. */
async function connectedDevice(env: Record<string, string> = {}): Promise<{ server: TestServer; deviceId: string; records: MessageRecords; outbound: Outbound }> {
  const server = await startTestServer(bed, 'srv-a', { env });
  closing.push(() => server.close());
  const deviceId = await bed.createDevice();
  const token = await server.start(deviceId);
  await eventually(() => server.runtime.describe(deviceId)?.connected === true, 15_000);
  const bull = new Redis(bed.t.url, { maxRetriesPerRequest: null });
  const records = createMessageRecords({ redis: server.redis, keys: bed.keys, retentionMs: 60_000 });
  const outbound = createOutbound({
    redis: bull, keys: bed.keys, records, guard: server.guard, sender: runtimeSender(server.runtime), log: silentLog, serverId: 'srv-a',
    ratePerMinute: 60, delayMs: [0, 0], attempts: 3, lockDurationMs: 5000, retentionMs: 60_000,
  });
  closing.push(async () => {
    await outbound.close();
    bull.disconnect();
  });
  outbound.startDevice(deviceId, token);
  return { server, deviceId, records, outbound };
}

const deliveries = async (deviceId: string) =>
  (await bed.t.redis.lrange(bed.keys.simLog(deviceId), 0, -1)).map((line) => JSON.parse(line) as { type: string; mediaBytes: number | null });

describe('media on the send path', () => {
  it('a mediaUrl at a private address fails the message at once, with the reason, and the address sees no request', async () => {
    const media = await mediaServer([(res) => res.end('not for strangers')]);
    const { deviceId, records, outbound } = await connectedDevice();
    const { id } = await acceptInRedis(records, { deviceId, to: '4915112345678', type: 'image', mediaUrl: `${media.url}/cat.jpg?signature=s3cr3t`, caption: 'look' });
    await outbound.enqueue(id, deviceId);
    await eventually(async () => (await records.get(id))?.status === 'failed', 15_000);

    const record = (await records.get(id))!;
    expect(record.attempts).toBe(1);
    expect(record.error).toBe(`media not downloaded: GET ${media.url}/cat.jpg refused: 127.0.0.1 is a loopback, private, link-local or reserved address`);
    expect(media.connections).toBe(0);
    expect(await deliveries(deviceId)).toEqual([]);
  });

  it('with private addresses allowed, the media is downloaded once per attempt and sent as bytes; a 503 is retried', async () => {
    const image = Buffer.alloc(2048, 7);
    const media = await mediaServer([(res) => res.writeHead(503).end(), (res) => res.writeHead(200, { 'content-type': 'image/jpeg' }).end(image)]);
    const { deviceId, records, outbound } = await connectedDevice({ OUTBOUND_ALLOW_PRIVATE: 'true' });
    const { id } = await acceptInRedis(records, { deviceId, to: '4915112345678', type: 'image', mediaUrl: `${media.url}/cat.jpg`, caption: 'look' });
    await outbound.enqueue(id, deviceId);
    await eventually(async () => (await records.get(id))?.status === 'sent', 15_000);

    expect((await records.get(id))!.attempts).toBe(2);
    expect(media.requests).toEqual(['GET /cat.jpg', 'GET /cat.jpg']);
    expect(await deliveries(deviceId)).toMatchObject([{ type: 'image', mediaBytes: 2048 }]);
  });
});

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInbox, INBOX_GROUP, INBOX_MAX_LENGTH, parseInboxMessage, type InboxMessage } from '../../src/cluster/inbox.js';
import { createClusterKeys, type ClusterKeys } from '../../src/cluster/keys.js';
import { useTestRedis, type TestRedis } from '../../harness/redis.js';

// The inbox: every kind of message survives the stream as the reader sees it, and what no reader
// understands parses to null (dropped) rather than to a half-filled message.

let t: TestRedis;
let keys: ClusterKeys;

beforeAll(async () => {
  t = await useTestRedis();
  keys = createClusterKeys(t.prefix);
});
afterAll(async () => {
  await t.cleanup();
});

const EVERY_KIND: InboxMessage[] = [
  { type: 'place', deviceId: 'dev-1' },
  { type: 'stop', deviceId: 'dev-2' },
  { type: 'logout', deviceId: 'dev-3' },
  { type: 'drain' },
  { type: 'rebalance', count: 7 },
];

describe('inbox', () => {
  it('delivers every kind of message through the stream to the group reader unchanged', async () => {
    const inbox = createInbox({ redis: t.redis, keys });
    await inbox.open('srv-a');
    await inbox.open('srv-a'); // idempotent: the group already exists
    for (const message of EVERY_KIND) await inbox.send('srv-a', message);
    const read = (await t.redis.xreadgroup('GROUP', INBOX_GROUP, 'srv-a', 'COUNT', 100, 'STREAMS', keys.inbox('srv-a'), '>')) as Array<
      [string, Array<[string, string[]]>]
    >;
    expect(read[0]![1].map(([, fields]) => parseInboxMessage(fields))).toEqual(EVERY_KIND);
  });

  it('parses what no reader understands to null', () => {
    expect(parseInboxMessage(['type', 'place'])).toBeNull();
    expect(parseInboxMessage(['type', 'rebalance', 'count', '0'])).toBeNull();
    expect(parseInboxMessage(['type', 'rebalance', 'count', 'many'])).toBeNull();
    expect(parseInboxMessage(['type', 'reboot', 'deviceId', 'dev-1'])).toBeNull();
    expect(parseInboxMessage(['deviceId'])).toBeNull();
  });

  it('placeDevice.lua caps the inbox at the same length as every other writer', () => {
    const lua = readFileSync(new URL('../../src/cluster/placement/placeDevice.lua', import.meta.url), 'utf8');
    const caps = [...lua.matchAll(/'MAXLEN', '~', (\d+)/g)].map((m) => Number(m[1]));
    expect(caps).toEqual([INBOX_MAX_LENGTH]);
  });
});

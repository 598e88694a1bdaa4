import { randomUUID } from 'node:crypto';
import type { MessageRecords, OutboundMessage } from '../../src/queues/messages.js';

/**
 * Creates a message's Redis record as the accept path does once the store has accepted it (an id
 * and an accept time): for tests about the Redis side only.
 */
export async function acceptInRedis(records: MessageRecords, message: OutboundMessage): Promise<{ id: string }> {
  const id = randomUUID();
  await records.accept({ ...message, id, acceptedAt: new Date() });
  return { id };
}

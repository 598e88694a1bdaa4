import { Cluster, ReplyError, type Redis } from 'ioredis';
import { WafleetError } from './errors.js';
import type { Logger } from './logger.js';
import type { RedisClient } from './redis.js';

// A lease or a fence that Redis evicts to make room is indistinguishable from one that expired:
// the sweep hands the device to another server while its owner still runs it, and a fence that
// starts again from nothing can hand out a token twice. Only `noeviction` rules that out, so a
// server refuses to start on anything else.

const REQUIRED = 'noeviction';

/** A Redis master that may evict keys; the process must not start on it. */
export class EvictionPolicyError extends WafleetError {
  constructor(
    readonly node: string,
    readonly policy: string,
  ) {
    super(
      'redis_eviction_policy',
      `Redis at ${node} has maxmemory-policy ${policy}; wafleet needs ${REQUIRED}. ` +
        'Under any other policy a full Redis may evict a live lease or a fence, and then two servers own one device. ' +
        `Fix it on that node with \`redis-cli CONFIG SET maxmemory-policy ${REQUIRED}\`, and put ` +
        `\`maxmemory-policy ${REQUIRED}\` in its redis.conf so a restart keeps it (every node that may become a master needs it).`,
    );
  }
}

/**
 * Reads `maxmemory-policy` on every master the client writes to (each Cluster master; under
 * Sentinel the one the client follows, since ioredis checks the role before using a node) and
 * throws EvictionPolicyError for the first that is not `noeviction`.
 *
 * Managed Redis services often refuse CONFIG, and some INFO: a setting that cannot be read is not
 * refused (the service may well be right), but warned about once, since it cannot be proved.
 */
export async function assertNoEviction(redis: RedisClient, log: Logger): Promise<void> {
  const masters = redis instanceof Cluster ? redis.nodes('master') : [redis];
  const unverified: Array<{ node: string; refused: string[] }> = [];
  for (const master of masters) {
    const node = describeNode(master);
    const { policy, refused } = await readPolicy(master);
    if (policy === null) unverified.push({ node, refused });
    else if (policy !== REQUIRED) throw new EvictionPolicyError(node, policy);
  }
  if (unverified.length > 0) {
    log.warn(
      { redis: unverified },
      `could not read Redis's maxmemory-policy (neither INFO memory nor CONFIG GET gave it); it must be ${REQUIRED}, ` +
        'or a full Redis may evict a live lease and two servers own one device: check it in your provider\'s settings',
    );
  }
}

/** INFO first: managed services that refuse CONFIG usually still answer it. */
async function readPolicy(node: Redis): Promise<{ policy: string | null; refused: string[] }> {
  const refused: string[] = [];
  try {
    const policy = /^maxmemory_policy:(\S+)/m.exec(await node.info('memory'))?.[1];
    if (policy) return { policy, refused };
    refused.push('INFO memory: no maxmemory_policy field');
  } catch (err) {
    refused.push(`INFO memory: ${refusal(err)}`);
  }
  try {
    const [, policy] = (await node.config('GET', 'maxmemory-policy')) as string[];
    if (policy) return { policy, refused };
    refused.push('CONFIG GET maxmemory-policy: no value');
  } catch (err) {
    refused.push(`CONFIG GET maxmemory-policy: ${refusal(err)}`);
  }
  return { policy: null, refused };
}

/** Only Redis's own "no" means unverifiable; a connection failure must stop start-up as one. */
function refusal(err: unknown): string {
  if (err instanceof ReplyError) return (err as Error).message;
  throw err;
}

/** host:port as the operator wrote it; under Sentinel, the master's address as connected. */
function describeNode(node: Redis): string {
  const { remoteAddress, remotePort } = node.stream ?? {};
  const [host, port] = node.options.sentinels?.length && remoteAddress ? [remoteAddress, remotePort] : [node.options.host, node.options.port];
  return host?.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

import type { TestProject } from 'vitest/node';
import { freePort, redisAnswers, startEphemeralRedis, type LocalRedis } from '../../harness/local-redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

// Finds the Redis the tests will share, starting a throwaway one when none answers, so `npm test`
// works for a newcomer with only a redis-server binary. Test files isolate themselves by key
// prefix (harness/redis.ts), so one Redis serves every file in parallel.
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const configured = process.env.TEST_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const url = new URL(configured);
  let started: LocalRedis | undefined;
  if (await redisAnswers(url.hostname, Number(url.port || 6379))) {
    project.provide('redisUrl', configured);
  } else {
    if (!['127.0.0.1', 'localhost', '::1'].includes(url.hostname)) {
      throw new Error(`No Redis answers at ${url.host} (TEST_REDIS_URL/REDIS_URL); start it or unset the variable.`);
    }
    started = await startEphemeralRedis(await freePort());
    console.log(`[test] no Redis at ${url.host}; started a throwaway redis-server on port ${started.port}`);
    project.provide('redisUrl', `redis://127.0.0.1:${started.port}`);
  }
  return async () => {
    await started?.stop();
  };
}

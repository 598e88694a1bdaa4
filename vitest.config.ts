import { defineConfig } from 'vitest/config';

// Two projects so the quick loop (`npm run test:unit`) never waits on process-spawning suites.
// Both use the same global setup, which finds (or starts) Redis and PostgreSQL/PGlite once.
export default defineConfig({
  test: {
    globalSetup: ['test/helpers/global-setup.ts'],
    // Two test files at a time, also on 2 cores (vitest's default there is one): most integration
    // files spend their time waiting on TTLs and child processes, so the suite takes about 11
    // minutes instead of 16. Every file isolates itself (own key prefix, own database).
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 20_000 },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});

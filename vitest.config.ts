import { defineConfig } from 'vitest/config';

// Two projects so the quick loop (`npm run test:unit`) never waits on process-spawning suites.
// Both use the same global setup, which finds (or starts) Redis and PostgreSQL/PGlite once.
export default defineConfig({
  test: {
    globalSetup: ['test/helpers/global-setup.ts'],
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

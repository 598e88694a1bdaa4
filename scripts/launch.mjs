// Runs a TypeScript entry point in this very process: `node scripts/launch.mjs src/main.ts`.
// pm2 starts this plain .mjs file, so it neither looks for ts-node nor puts a wrapper process
// between itself and wafleet (its signals must reach the server, which drains on them).
import { register } from 'tsx/esm/api';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const entry = process.argv[2];
if (!entry) {
  console.error('usage: node scripts/launch.mjs <entry.ts>');
  process.exit(2);
}
register();
await import(pathToFileURL(resolve(entry)).href);

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfigFromProcess, type Config } from '../../src/config/index.js';
import { ConfigError } from '../../src/shared/errors.js';

/** Scripts stop with the same one-message list of problems as the server does. */
export function loadConfigOrExit(): Config {
  try {
    return loadConfigFromProcess();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`wafleet: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

/** Stops a tool with its usage after a bad option: exit code 2, like every wafleet tool. */
export function usageExit(tool: string, usage: string, message: string): never {
  process.stderr.write(`wafleet ${tool}: ${message}\n\n${usage}\n`);
  process.exit(2);
}

const HELP = { help: { type: 'boolean', short: 'h' } } as const;

type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig['options']>;

type ToolArgs<O extends ParseArgsOptionsConfig> = ReturnType<typeof parseArgs<{ options: O & typeof HELP; strict: true; allowPositionals: false }>>['values'];

/** Parses a tool's options strictly; `--help` prints the usage and exits 0. */
export function parseToolArgs<const O extends ParseArgsOptionsConfig>(tool: string, usage: string, options: O): ToolArgs<O> {
  let values: ToolArgs<O>;
  try {
    values = parseArgs({ options: { ...options, ...HELP }, strict: true, allowPositionals: false }).values;
  } catch (err) {
    usageExit(tool, usage, (err as Error).message);
  }
  if ((values as { help?: boolean }).help) {
    console.log(usage);
    process.exit(0);
  }
  return values;
}

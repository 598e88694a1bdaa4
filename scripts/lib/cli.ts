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

// Base error for everything wafleet raises on purpose. A stable `code` lets the HTTP layer and
// the start-up path map errors in one place instead of matching on messages.
export class WafleetError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A start-up input (environment variable, server identity) is invalid; the process must stop. */
export class ConfigError extends WafleetError {
  readonly problems: string[];

  constructor(problems: string[]) {
    super('invalid_config', `Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.problems = problems;
  }
}

/** A dependency (Redis, the store) cannot be reached at start-up. */
export class DependencyUnavailableError extends WafleetError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

// Connection URLs carry passwords (Redis, PostgreSQL). Anything that names a URL in a log line
// or an error message goes through here first.
export function redactUrl(value: string): string {
  try {
    const url = new URL(value);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    // Not a URL we can parse: say nothing of it rather than risk echoing a secret.
    return '<unparseable url>';
  }
}

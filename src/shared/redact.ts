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

/** Credentials inside URLs anywhere in a text (an error message, a stack): `scheme://user:***@host`. */
export function redactUrlsIn(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:)[^\s@]+@/gi, '$1***@');
}

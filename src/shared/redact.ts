// Connection URLs carry passwords (Redis, PostgreSQL). Anything that names a URL in a log line
// or an error message goes through here first.
export function redactUrl(value: string): string {
  return showUrl(value, (url) => {
    if (url.password) url.password = '***';
    return url.toString();
  });
}

/**
 * A URL a user gave (a media link, a webhook): scheme, host and path only. Its credentials, query
 * and fragment are left out, as signed links (S3, CDNs) carry their token in the query.
 */
export function redactUserUrl(value: string): string {
  return showUrl(value, (url) => `${url.protocol}//${url.host}${url.pathname}`);
}

function showUrl(value: string, show: (url: URL) => string): string {
  try {
    return show(new URL(value));
  } catch {
    // Not a URL we can parse: say nothing of it rather than risk echoing a secret.
    return '<unparseable url>';
  }
}

/** Credentials inside URLs anywhere in a text (an error message, a stack): `scheme://user:***@host`. */
export function redactUrlsIn(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:)[^\s@]+@/gi, '$1***@');
}

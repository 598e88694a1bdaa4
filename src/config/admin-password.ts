// Rules for the monitoring port's basic-auth password. BullBoard can retry and remove jobs and the
// cluster page names every device and server, so the monitor has no default password: it refuses
// to start without one, and in production refuses a weak one. Messages never repeat the password.

export const ADMIN_PASSWORD_MIN_LENGTH = 12;
const MIN_DISTINCT_CHARACTERS = 6;
// Fragments that put a password near the top of every guessing list, however long it is.
const WELL_KNOWN = ['password', 'passw0rd', 'changeme', 'letmein', 'qwerty', '123456', 'abcdef', 'wafleet'];

/** Why the password is weak, as sentences; empty when it is not. */
export function adminPasswordWeaknesses(username: string, password: string): string[] {
  const weaknesses: string[] = [];
  if ([...password].length < ADMIN_PASSWORD_MIN_LENGTH) weaknesses.push(`is shorter than ${ADMIN_PASSWORD_MIN_LENGTH} characters`);
  if (password.toLowerCase() === username.toLowerCase()) weaknesses.push('is the same as ADMIN_USERNAME');
  if (new Set(password).size < MIN_DISTINCT_CHARACTERS) weaknesses.push(`uses fewer than ${MIN_DISTINCT_CHARACTERS} different characters`);
  const lower = password.toLowerCase();
  if (WELL_KNOWN.some((fragment) => lower.includes(fragment))) weaknesses.push('contains a well-known password');
  return weaknesses;
}

/**
 * What stops the monitor from starting, in loadConfig's `NAME: problem` form. Outside production
 * a weak password is allowed (the monitor warns); a missing one never is.
 */
export function adminPasswordProblems(options: { username: string; password: string | undefined; production: boolean }): string[] {
  const { username, password, production } = options;
  if (password === undefined) {
    return [
      'ADMIN_PASSWORD: is required to start the monitor (BullBoard and the cluster page have no default password); ' +
        'set it in .env or in the environment',
    ];
  }
  if (!production) return [];
  return adminPasswordWeaknesses(username, password).map(
    (weakness) => `ADMIN_PASSWORD: ${weakness}; NODE_ENV=production needs a strong password (${ADMIN_PASSWORD_MIN_LENGTH}+ characters, not the username, not a well-known one)`,
  );
}

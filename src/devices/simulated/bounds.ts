// How much the simulated WhatsApp keeps in Redis: nothing of it grows without a bound.

/**
 * The history stream `{p}:sim:history` keeps about this many entries: a chaos run reads and trims
 * it far more often, and a demo left running never grows it past a few megabytes.
 */
export const SIM_HISTORY_CAP = 100_000;

/**
 * What WhatsApp holds for one device until a socket acknowledges it (messages sent to it,
 * receipts): at most this many entries, the oldest dropped first, as WhatsApp gives up on
 * messages a device never comes back for...
 */
export const SIM_PENDING_CAP = 1000;

/** ...and for at most this long after the last one queued (WhatsApp keeps them for weeks). */
export const SIM_PENDING_TTL_MS = 14 * 86_400_000;

// An admin-triggered health check: the target server answers its own /health.

const PROBE_TIMEOUT_MS = 5000;

export async function probeHealth(url: string): Promise<{ healthy: boolean; responseTimeMs: number | null }> {
  const started = performance.now();
  try {
    const res = await fetch(new URL('/health', url), { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS), redirect: 'error' });
    const responseTimeMs = Math.round(performance.now() - started);
    const body = (await res.json().catch(() => null)) as { status?: string } | null;
    return { healthy: res.ok && body?.status === 'ok', responseTimeMs };
  } catch {
    return { healthy: false, responseTimeMs: null };
  }
}

/** Backoff arithmetic for the client: pure, with the random source and clock passed in. */

/** Statuses worth retrying: rate limited, or the server (or a proxy in front) briefly unable. */
export const RETRYABLE_STATUS: ReadonlySet<number> = new Set([429, 502, 503, 504])

/**
 * `Retry-After` as milliseconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3); null when
 * absent or unreadable. Never negative.
 */
export function parseRetryAfter(value: string | null | undefined, now: number): number | null {
  if (value === null || value === undefined) return null
  const v = value.trim()
  if (/^\d+$/.test(v)) return Number(v) * 1000
  const at = Date.parse(v)
  return Number.isNaN(at) ? null : Math.max(0, at - now)
}

/**
 * Wait before retry number `attempt` (0-based). The server's Retry-After wins (capped at
 * `maxMs`, plus up to 10% jitter so a fleet of clients does not return in lockstep); otherwise
 * exponential backoff with "equal jitter": half of base·2^attempt fixed, half random.
 */
export function retryDelay(attempt: number, retryAfterMs: number | null, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  if (retryAfterMs !== null) {
    const wait = Math.min(retryAfterMs, maxMs)
    return Math.round(wait + random() * Math.min(wait * 0.1, 1000))
  }
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30))
  return Math.round(cap / 2 + random() * (cap / 2))
}

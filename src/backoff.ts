/**
 * The one retry backoff policy, shared by the client (`client/index.ts`) and the webhook
 * notifier (`alerts/notifier.ts`). Pure: the random source and the clock are passed in, so
 * tests pin every wait without sleeping. No imports, so the client stays dependency-free.
 *
 *   server sent Retry-After ──► min(maxMs, its wait + up to 10% (≤ 1 s) jitter)
 *   otherwise ──────────────► "full jitter": random in [0, min(maxMs, baseMs · 2^attempt)]
 *
 * Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015) spreads a fleet
 * of senders that failed together over the whole window, so they do not return in lockstep;
 * the small jitter on top of Retry-After does the same for senders told the same instant.
 */

/** The shape of a backoff: how long the first window is and how long any wait may be. */
export interface BackoffPolicy {
  /** Window of the first retry, ms; doubled for each further one. */
  baseMs: number
  /** Cap on one wait, ms, a server's Retry-After included. */
  maxMs: number
}

/** Past this many doublings the window is the cap anyway; keeps 2^attempt finite. */
const MAX_DOUBLINGS = 30
/** Jitter added to a Retry-After wait: a tenth of it, at most this many ms. */
const RETRY_AFTER_JITTER_MAX_MS = 1000

/**
 * `Retry-After` as milliseconds from `now`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3);
 * null when absent or unreadable. Never negative (a date in the past means "now").
 */
export function parseRetryAfter(value: string | null | undefined, now: number): number | null {
  if (value === null || value === undefined) return null
  const v = value.trim()
  if (/^\d+$/.test(v)) return Number(v) * 1000
  // Every HTTP-date form names the month and weekday in letters; Date.parse alone would also
  // read "-5" or "1.5" as dates.
  if (!/[A-Za-z]{3}/.test(v)) return null
  const at = Date.parse(v)
  return Number.isNaN(at) ? null : Math.max(0, at - now)
}

/**
 * Milliseconds to wait before retry number `attempt` (0-based: 0 is the wait before the
 * second try). A server's Retry-After (`retryAfterMs`, from {@link parseRetryAfter}) wins,
 * with up to 10% (at most 1 s) added; otherwise full jitter over `[0, baseMs · 2^attempt]`.
 * Never more than `policy.maxMs`, never negative; an integer.
 *
 * @param random a source in [0, 1), as Math.random (the default).
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, retryAfterMs: number | null = null, random: () => number = Math.random): number {
  const { baseMs, maxMs } = policy
  if (retryAfterMs !== null && retryAfterMs >= 0) {
    const wait = Math.min(retryAfterMs, maxMs)
    return Math.min(maxMs, Math.round(wait + random() * Math.min(wait * 0.1, RETRY_AFTER_JITTER_MAX_MS)))
  }
  const window = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, attempt), MAX_DOUBLINGS))
  return Math.round(random() * window)
}

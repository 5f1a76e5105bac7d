/**
 * The client's retry rules: which answers are worth another try. How long to wait is the
 * shared policy in `../backoff.ts` (full jitter, Retry-After honoured, capped).
 */

/** Statuses worth retrying: rate limited, or the server (or a proxy in front) briefly unable. */
export const RETRYABLE_STATUS: ReadonlySet<number> = new Set([429, 502, 503, 504])

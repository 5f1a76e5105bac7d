/**
 * The input of the analytics math: one priced LLM call, reduced to the integers
 * that get summed. Everything is an integer on purpose (cost in nano-dollars,
 * latency in microseconds): integer addition below 2^53 is exact, so every sum is
 * independent of the order rows arrive in and bit-identical to a naive reference.
 */
export interface Row {
  /** Event time, epoch milliseconds (integer, may be far in the past or future). */
  ts: number
  /** Non-negative integer. */
  promptTokens: number
  /** Non-negative integer. */
  completionTokens: number
  /** Non-negative integer. */
  totalTokens: number
  /** Non-negative integer. */
  cachedTokens: number
  /** Non-negative integer. */
  reasoningTokens: number
  /** Integer microseconds, >= 0. */
  latencyUs: number
  /** Integer nano-dollars, >= 0. */
  costNanos: number
  error: boolean
  unpriced: boolean
  /**
   * The event's log position (single node: LMDB seq; cluster: JetStream stream seq), a safe
   * integer >= 0: what search pages and deletes name a row by. Absent = 0 (rows made without
   * an event, e.g. in tests and the rollup, which keeps no rows).
   */
  seq?: number
}

/**
 * Largest |ts| accepted: the ECMAScript Date range (±100,000,000 days). Keeping
 * timestamps inside it keeps every bucket computation (`k * DAY_MS`, `ts - start`)
 * an exact integer operation, with head-room below 2^53.
 */
export const MAX_TIMESTAMP_MS = 8.64e15

function isCount(v: unknown): boolean {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}

/**
 * Whether `row` satisfies the {@link Row} contract. The aggregators only accept
 * valid rows: a row with a fractional or negative count would make sums
 * order-dependent or meaningless, so it is refused (and counted) rather than stored.
 */
export function isValidRow(row: Row): boolean {
  return (
    typeof row === 'object' &&
    row !== null &&
    typeof row.ts === 'number' &&
    Number.isSafeInteger(row.ts) &&
    Math.abs(row.ts) <= MAX_TIMESTAMP_MS &&
    isCount(row.promptTokens) &&
    isCount(row.completionTokens) &&
    isCount(row.totalTokens) &&
    isCount(row.cachedTokens) &&
    isCount(row.reasoningTokens) &&
    isCount(row.latencyUs) &&
    isCount(row.costNanos) &&
    typeof row.error === 'boolean' &&
    typeof row.unpriced === 'boolean' &&
    (row.seq === undefined || isCount(row.seq))
  )
}

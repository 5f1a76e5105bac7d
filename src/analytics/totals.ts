import type { Row } from './row.js'

/**
 * Additive counters over a set of rows, in the OpenTelemetry sdk-metrics style:
 * a plain object plus pure `create` / `record` / `merge` functions.
 *
 * Invariant: every field is a sum of integers, so as long as each sum stays below
 * `Number.MAX_SAFE_INTEGER` (2^53 - 1) it is exact and independent of the order of
 * records and merges. (2^53 nano-dollars is about 9 million dollars per series and
 * range; 2^53 tokens is 9e15.)
 */
export interface Totals {
  /** Number of rows. */
  requests: number
  promptTokens: number
  completionTokens: number
  totalTokens: number
  cachedTokens: number
  reasoningTokens: number
  /** Sum of latencies in microseconds (average = latencyUsSum / requests). */
  latencyUsSum: number
  /** Sum of costs in nano-dollars. */
  costNanos: number
  /** Rows with `error: true`. */
  errors: number
  /** Rows whose model had no price (cost 0). */
  unpriced: number
}

/** A zeroed {@link Totals}. */
export function createTotals(): Totals {
  return {
    requests: 0,
    promptTokens: 0,
    completionTokens: 0,
    totalTokens: 0,
    cachedTokens: 0,
    reasoningTokens: 0,
    latencyUsSum: 0,
    costNanos: 0,
    errors: 0,
    unpriced: 0,
  }
}

/** Adds one row to `t` (in place). The row is assumed valid (see `isValidRow`). */
export function recordTotals(t: Totals, row: Row): void {
  t.requests += 1
  t.promptTokens += row.promptTokens
  t.completionTokens += row.completionTokens
  t.totalTokens += row.totalTokens
  t.cachedTokens += row.cachedTokens
  t.reasoningTokens += row.reasoningTokens
  t.latencyUsSum += row.latencyUs
  t.costNanos += row.costNanos
  if (row.error) t.errors += 1
  if (row.unpriced) t.unpriced += 1
}

/**
 * Adds one row's values, given in VALUE_FIELDS order (prompt, completion, total, cached,
 * reasoning tokens, latency µs, cost nano-dollars), to `t`: not its count or flags.
 */
export function addRowValues(t: Totals, v: ArrayLike<number>): void {
  t.promptTokens += v[0]
  t.completionTokens += v[1]
  t.totalTokens += v[2]
  t.cachedTokens += v[3]
  t.reasoningTokens += v[4]
  t.latencyUsSum += v[5]
  t.costNanos += v[6]
}

/** Adds `from` into `into` (in place) and returns `into`. */
export function mergeTotals(into: Totals, from: Totals): Totals {
  into.requests += from.requests
  into.promptTokens += from.promptTokens
  into.completionTokens += from.completionTokens
  into.totalTokens += from.totalTokens
  into.cachedTokens += from.cachedTokens
  into.reasoningTokens += from.reasoningTokens
  into.latencyUsSum += from.latencyUsSum
  into.costNanos += from.costNanos
  into.errors += from.errors
  into.unpriced += from.unpriced
  return into
}

/** Takes `part` (counted into `from` before) out of `from` (in place) and returns `from`. */
export function subtractTotals(from: Totals, part: Totals): Totals {
  for (const k of Object.keys(part) as (keyof Totals)[]) from[k] -= part[k]
  return from
}

/** A copy of `t`. */
export function cloneTotals(t: Totals): Totals {
  return mergeTotals(createTotals(), t)
}

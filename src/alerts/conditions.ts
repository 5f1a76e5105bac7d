/**
 * The alert conditions as pure functions of a window's {@link Aggregate}: no clock, no state.
 *
 * Units (what `value` and `threshold` mean):
 * - `cost_per_hour`: dollars per hour — the window's cost × 3600 / window_seconds.
 * - `avg_latency`, `p95_latency`: milliseconds (p95 from the DDSketch, within 1%).
 * - `error_rate`: a fraction 0..1 (errors / requests).
 * - `requests_per_minute`, `tokens_per_minute`: the window's count × 60 / window_seconds.
 *
 * The per-request statistics (latency, error rate) have no value without requests (null);
 * the volume ones are 0 then.
 */
import type { Aggregate } from '../analytics/series.js'
import type { Rule } from '../store/rules.js'

export type Condition = Rule['condition']
export type Comparator = Rule['comparator']

/** Conditions whose value is a volume (a sum scaled to a rate) rather than a per-request statistic. */
const VOLUME: ReadonlySet<Condition> = new Set(['cost_per_hour', 'requests_per_minute', 'tokens_per_minute'])

/** The condition's value over a window of `windowSeconds`, in the units above; null when undefined (no requests). */
export function conditionValue(condition: Condition, agg: Aggregate, windowSeconds: number): number | null {
  const t = agg.totals
  switch (condition) {
    case 'cost_per_hour':
      // Integer nano-dollars × 3600 stays exact below 2^53; one rounding, in the division.
      return (t.costNanos * 3600) / (windowSeconds * 1e9)
    case 'requests_per_minute':
      return (t.requests * 60) / windowSeconds
    case 'tokens_per_minute':
      return (t.totalTokens * 60) / windowSeconds
    case 'avg_latency':
      return t.requests === 0 ? null : t.latencyUsSum / t.requests / 1000
    case 'p95_latency':
      return t.requests === 0 || agg.sketch.count === 0 ? null : agg.sketch.quantile(0.95) / 1000
    case 'error_rate':
      return t.requests === 0 ? null : t.errors / t.requests
    default: {
      const never: never = condition
      throw new Error(`unknown condition ${String(never)}`)
    }
  }
}

/** `value <comparator> threshold`; a null value (no data) never compares true. */
export function compare(value: number | null, comparator: Comparator, threshold: number): boolean {
  if (value === null || Number.isNaN(value)) return false
  switch (comparator) {
    case 'gt':
      return value > threshold
    case 'gte':
      return value >= threshold
    case 'lt':
      return value < threshold
    case 'lte':
      return value <= threshold
    default: {
      const never: never = comparator
      throw new Error(`unknown comparator ${String(never)}`)
    }
  }
}

/**
 * Whether `min_samples` applies: a rule fires only with at least `min_samples` requests in the
 * window — except a volume condition compared with `lt`/`lte` ("traffic dropped"), where few
 * requests is the very thing watched; gating it would keep it from ever firing.
 */
export function gatedBySamples(condition: Condition, comparator: Comparator): boolean {
  return !(VOLUME.has(condition) && (comparator === 'lt' || comparator === 'lte'))
}

/** The result of evaluating one rule over its window. */
export interface Verdict {
  value: number | null
  /** Requests in the window. */
  samples: number
  /** The condition holds (and enough samples were seen where that applies). */
  holds: boolean
}

/** Evaluates `rule` over the aggregate of its window. */
export function judge(rule: Pick<Rule, 'condition' | 'comparator' | 'threshold' | 'window_seconds' | 'min_samples'>, agg: Aggregate): Verdict {
  const value = conditionValue(rule.condition, agg, rule.window_seconds)
  const samples = agg.totals.requests
  const enough = !gatedBySamples(rule.condition, rule.comparator) || samples >= rule.min_samples
  return { value, samples, holds: enough && compare(value, rule.comparator, rule.threshold) }
}

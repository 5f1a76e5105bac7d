/**
 * Analytics queries, answered from the aggregators' in-memory series only (no disk read).
 * Each series (model × provider) answers its part of the range exactly; the parts merge.
 * Without a model or provider filter, the whole hours of the range come from the rollup
 * (every model's hours in one store) and each series answers only the two partial edge hours.
 */
import { createAggregate, mergeTimeseries, type Aggregate, type TimeBucket } from './analytics/series.js'
import { createTotals, type Totals } from './analytics/totals.js'
import { DiscardSketch, LatencySketch } from './analytics/sketch.js'
import { HOUR_MS } from './analytics/time.js'
import type { Topology } from './actors/topology.js'

export interface RangeQuery {
  /** Inclusive, epoch ms (-Infinity = unbounded). */
  start: number
  /** Exclusive, epoch ms (+Infinity = unbounded). */
  end: number
  /** Keep only these models / providers (undefined = all). */
  models?: ReadonlySet<string>
  providers?: ReadonlySet<string>
}

function* selected(topology: Topology, q: RangeQuery) {
  if (q.models !== undefined) {
    for (const m of q.models) {
      const agg = topology.aggregator(m)
      if (agg === undefined) continue
      for (const [provider, store] of agg.view()) if (q.providers === undefined || q.providers.has(provider)) yield { model: agg.model, provider, store }
    }
    return
  }
  for (const agg of topology.aggregators()) {
    for (const [provider, store] of agg.view()) if (q.providers === undefined || q.providers.has(provider)) yield { model: agg.model, provider, store }
  }
}

/**
 * The whole hours [hs, he) inside the range of an unfiltered query (hs < he), or null when
 * the query is filtered or holds no whole hour: then every series answers the whole range.
 * Rows of [start, hs) and [he, end) are in partial hours, which only the series hold.
 */
function rollupHours(q: RangeQuery): [number, number] | null {
  if (q.models !== undefined || q.providers !== undefined) return null
  const hs = Math.ceil(q.start / HOUR_MS) * HOUR_MS
  const he = Math.floor(q.end / HOUR_MS) * HOUR_MS
  return hs < he ? [hs, he] : null
}

/** Totals and latency sketch over the range and filters. */
export function metrics(topology: Topology, q: RangeQuery): Aggregate {
  const acc = { totals: createTotals(), sketch: LatencySketch.dense() }
  const whole = rollupHours(q)
  if (whole === null) {
    for (const s of selected(topology, q)) s.store.aggregate(q.start, q.end, acc)
    return acc
  }
  for (const s of selected(topology, q)) {
    s.store.aggregate(q.start, whole[0], acc)
    s.store.aggregate(whole[1], q.end, acc)
  }
  topology.rollup.view().aggregate(whole[0], whole[1], acc)
  return acc
}

/** One row per (model, provider) with at least one request in range, most costly first. */
export function costs(topology: Topology, q: RangeQuery): Array<{ model: string; provider: string; agg: Aggregate }> {
  const rows: Array<{ model: string; provider: string; agg: Aggregate }> = []
  for (const s of selected(topology, q)) {
    // Costs need totals only: a discarding sketch skips every sketch merge of the range.
    const agg = s.store.aggregate(q.start, q.end, { totals: createTotals(), sketch: new DiscardSketch() })
    if (agg.totals.requests > 0) rows.push({ model: s.model, provider: s.provider, agg })
  }
  rows.sort((a, b) => b.agg.totals.costNanos - a.agg.totals.costNanos || b.agg.totals.requests - a.agg.totals.requests || (a.model < b.model ? -1 : a.model > b.model ? 1 : a.provider < b.provider ? -1 : 1))
  return rows
}

/** Buckets of `intervalMs` (epoch-aligned) with data in range, ascending. */
export function timeseries(topology: Topology, q: RangeQuery, intervalMs: number): TimeBucket[] {
  // The rollup holds hours only: it serves intervals made of whole hours.
  const whole = intervalMs % HOUR_MS === 0 ? rollupHours(q) : null
  const lists: TimeBucket[][] = []
  const add = (list: TimeBucket[]) => list.length > 0 && lists.push(list)
  if (whole === null) {
    for (const s of selected(topology, q)) add(s.store.timeseries(q.start, q.end, intervalMs))
  } else {
    add(topology.rollup.view().timeseries(whole[0], whole[1], intervalMs))
    for (const s of selected(topology, q)) {
      add(s.store.timeseries(q.start, whole[0], intervalMs))
      add(s.store.timeseries(whole[1], q.end, intervalMs))
    }
  }
  // One list (one series, or only whole hours): its buckets are fresh, no merge needed.
  return lists.length === 1 ? lists[0] : mergeTimeseries(lists)
}

const round = (x: number, digits = 3) => {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

/** Latency quantile in ms from the sketch, or null with no data. */
export function quantileMs(agg: Aggregate, q: number): number | null {
  if (agg.totals.requests === 0 || agg.sketch.count === 0) return null
  return round(agg.sketch.quantile(q) / 1000)
}

/** The public JSON fields shared by metrics, cost rows and buckets. */
export function totalsJson(t: Totals) {
  return {
    total_requests: t.requests,
    total_tokens: t.totalTokens,
    prompt_tokens: t.promptTokens,
    completion_tokens: t.completionTokens,
    cached_tokens: t.cachedTokens,
    reasoning_tokens: t.reasoningTokens,
    total_cost: t.costNanos / 1e9,
    avg_latency_ms: t.requests === 0 ? 0 : round(t.latencyUsSum / t.requests / 1000),
    error_count: t.errors,
    error_rate: t.requests === 0 ? 0 : t.errors / t.requests,
    unpriced_requests: t.unpriced
  }
}

/** Bucket count past which a timeseries request is refused (400): a chart needs far fewer. */
export const MAX_BUCKETS = 10_000

/** Every bucket of the range, filling empty ones with zeros, for charts. */
export function fillBuckets(buckets: TimeBucket[], start: number, end: number, intervalMs: number) {
  const out = []
  const first = Math.floor(start / intervalMs) * intervalMs
  let i = 0
  for (let t = first; t < end; t += intervalMs) {
    while (i < buckets.length && buckets[i].start < t) i++
    const b = i < buckets.length && buckets[i].start === t ? buckets[i] : null
    const agg = b ?? createAggregate()
    const totals = totalsJson(agg.totals)
    out.push({
      timestamp: new Date(t).toISOString(),
      requests: totals.total_requests,
      total_tokens: totals.total_tokens,
      prompt_tokens: totals.prompt_tokens,
      completion_tokens: totals.completion_tokens,
      cost: totals.total_cost,
      avg_latency_ms: totals.avg_latency_ms,
      p95_latency_ms: quantileMs(agg, 0.95),
      errors: totals.error_count,
      unpriced_requests: totals.unpriced_requests
    })
  }
  return out
}


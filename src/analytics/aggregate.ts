/**
 * Aggregates: the Totals plus latency sketch of a set of rows, which every query answers with,
 * and the pure helpers that make and combine them.
 */
import type { Row } from './row.js'
import type { Totals } from './totals.js'
import { LatencySketch } from './sketch.js'
import { cloneTotals, createTotals, mergeTotals, recordTotals } from './totals.js'

/** Totals plus latency sketch of one set of rows: what every query returns. */
export interface Aggregate {
  totals: Totals
  sketch: LatencySketch
}

/** One bucket of a timeseries (see `SeriesStore.timeseries`): `start` is epoch-aligned to the interval. */
export interface TimeBucket extends Aggregate {
  start: number
}

/** An empty {@link Aggregate}. */
export function createAggregate(): Aggregate {
  return { totals: createTotals(), sketch: new LatencySketch() }
}

/** Counts one row into `a` (in place). */
export function addRow(a: Aggregate, row: Row): void {
  recordTotals(a.totals, row)
  a.sketch.record(row.latencyUs)
}

/**
 * Adds `source` into `target` (in place) and returns `target`. This is how the
 * HTTP layer combines the answers of many series (one per model + provider).
 */
export function mergeInto(target: Aggregate, source: Aggregate): Aggregate {
  mergeTotals(target.totals, source.totals)
  target.sketch.merge(source.sketch)
  return target
}

/**
 * Combines timeseries of several series into one: buckets with the same `start`
 * are merged, the result is ascending by `start`. Inputs are not modified; a bucket
 * that no other list shares is passed through as is (so the result may share it).
 */
export function mergeTimeseries(lists: readonly (readonly TimeBucket[])[]): TimeBucket[] {
  const byStart = new Map<number, { bucket: TimeBucket; owned: boolean }>()
  for (const list of lists) {
    for (const b of list) {
      const have = byStart.get(b.start)
      if (have === undefined) {
        byStart.set(b.start, { bucket: b, owned: false })
        continue
      }
      if (!have.owned) {
        // Copied only when a second bucket joins it: inputs stay untouched.
        have.bucket = { start: b.start, totals: cloneTotals(have.bucket.totals), sketch: LatencySketch.dense().merge(have.bucket.sketch) }
        have.owned = true
      }
      mergeInto(have.bucket, b)
    }
  }
  return [...byStart.values()].map((x) => x.bucket).sort((a, b) => a.start - b.start)
}

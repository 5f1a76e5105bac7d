/**
 * Aggregates: the Totals plus latency sketch of a set of rows, which every query answers with,
 * and the pure helpers that make and combine them.
 */
import type { Row } from './row.js'
import type { Totals } from './totals.js'
import { LatencySketch } from './sketch.js'
import { addRowValues, cloneTotals, createTotals, mergeTotals, recordTotals, subtractTotals } from './totals.js'

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
 * Counts one row, given as a RowVisitor gives its values (prompt, completion, total, cached,
 * reasoning, latency µs, cost nanos) and flags (1 error, 2 unpriced), into an aggregate.
 */
export function addValues(acc: Aggregate, v: ArrayLike<number>, flags: number): void {
  const t = acc.totals
  t.requests += 1
  addRowValues(t, v)
  if ((flags & 1) !== 0) t.errors += 1
  if ((flags & 2) !== 0) t.unpriced += 1
  acc.sketch.record(v[5])
}

/**
 * Counts the same row into ten sums at offset `o` of `a` (requests, prompt, completion, total,
 * cached, reasoning, latency µs, cost nanos, errors, unpriced): a breakdown's per-group form.
 */
export function addSums(a: Float64Array, o: number, v: ArrayLike<number>, flags: number): void {
  a[o] += 1
  a[o + 1] += v[0]
  a[o + 2] += v[1]
  a[o + 3] += v[2]
  a[o + 4] += v[3]
  a[o + 5] += v[4]
  a[o + 6] += v[5]
  a[o + 7] += v[6]
  if ((flags & 1) !== 0) a[o + 8] += 1
  if ((flags & 2) !== 0) a[o + 9] += 1
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
 * Takes `part` (every row of which was counted into `target`) out of `target` (in place):
 * totals exact, the sketch as {@link LatencySketch.subtract} (extremes within its accuracy).
 */
export function subtractAggregate(target: Aggregate, part: Aggregate): Aggregate {
  subtractTotals(target.totals, part.totals)
  target.sketch.subtract(part.sketch)
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

/**
 * Timeseries buckets of several series summed as each series walks its range
 * (`SeriesStore.timeseries(…, into)`): one accumulator per bucket start, dense from the
 * start, instead of a bucket list per series merged afterwards (50 series → one pass, no
 * per-series sketches). A stored hour that is exactly one bucket is shared read only while
 * nothing else adds to that bucket, then copied (as {@link mergeTimeseries} does).
 */
export class BucketSum {
  readonly #by = new Map<number, { bucket: TimeBucket; owned: boolean }>()
  /** The bucket asked for last: series walk ascending, so most asks repeat it. */
  #last: { bucket: TimeBucket; owned: boolean } | null = null

  /** The bucket starting at `start`, to add into (owned here). */
  add(start: number): TimeBucket {
    let have = this.#last
    if (have === null || have.bucket.start !== start) {
      have = this.#by.get(start) ?? null
      if (have === null) {
        have = { bucket: { start, totals: createTotals(), sketch: LatencySketch.dense() }, owned: true }
        this.#by.set(start, have)
      }
      this.#last = have
    }
    if (!have.owned) {
      const b = have.bucket
      have.bucket = { start, totals: cloneTotals(b.totals), sketch: LatencySketch.dense().merge(b.sketch) }
      have.owned = true
    }
    return have.bucket
  }

  /** Counts `agg` (read only, not modified) as part of the bucket starting at `start`. */
  share(start: number, agg: Aggregate): void {
    if (agg.totals.requests === 0) return
    if (!this.#by.has(start)) {
      this.#by.set(start, { bucket: { start, totals: agg.totals, sketch: agg.sketch }, owned: false })
      return
    }
    mergeInto(this.add(start), agg)
  }

  /** The buckets holding at least one request, ascending by start (shared ones read only). */
  list(): TimeBucket[] {
    const out: TimeBucket[] = []
    for (const x of this.#by.values()) if (x.bucket.totals.requests > 0) out.push(x.bucket)
    return out.sort((a, b) => a.start - b.start)
  }
}

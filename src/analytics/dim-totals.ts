/**
 * All-time totals per value of one dimension (user or session) of a project: requests,
 * prompt, completion, total, cached and reasoning tokens, latency µs, cost nano-dollars,
 * errors, unpriced — {@link DIM_FIELDS} numbers per value id, in one growable array.
 *
 * What it is for: a breakdown by user over a range holding most of the project's events is the
 * all-time totals minus the few events outside the range, so it costs O(values + rows outside)
 * instead of a scan of every row inside (see queries.ts). Built on first use from the rows,
 * then kept up to date as events are routed, like the postings.
 */
import type { PricedEvent } from '../events.js'
import { LatencySketch } from './sketch.js'
import { addSums } from './aggregate.js'

export const DIM_FIELDS = 10

/** A priced event's values in RowVisitor order into `v`; returns its flags (1 error, 2 unpriced). */
export function eventValues(e: PricedEvent, v: Float64Array): number {
  v[0] = e.prompt
  v[1] = e.completion
  v[2] = e.total
  v[3] = e.cached
  v[4] = e.reasoning
  v[5] = Math.round(e.latency * 1000)
  v[6] = e.costNanos
  return (e.error ? 1 : 0) | (e.unpriced ? 2 : 0)
}

export class DimTotals {
  #acc = new Float64Array(DIM_FIELDS * 64)
  /**
   * Each value's latency sketch (all time): a breakdown's shown groups take theirs minus the
   * rows outside the range, so a heavy user's percentile never reads its rows. A sparse sketch
   * of a value with a few events is a few hundred bytes.
   */
  readonly #sketches: LatencySketch[] = []
  /** Ids below this may hold totals. */
  #top = 0

  /** Adds one event (values in RowVisitor order: prompt, completion, total, cached, reasoning, latency µs, cost) to value `id`. */
  add(id: number, v: ArrayLike<number>, flags: number): void {
    if (id >= this.#top) this.#reserve(id + 1)
    const a = this.#acc
    addSums(a, id * DIM_FIELDS, v, flags)
    ;(this.#sketches[id] ??= new LatencySketch()).record(v[5])
  }

  /**
   * The totals of every row `eachRow` visits (the same as {@link DimTotals.add} for each), built
   * value by value: first every value's sums, then the rows' latencies laid out by value (a
   * counting sort into one array of 8 bytes a row, dropped after), then each value's sketch from
   * its latencies at once. Adding row by row touched a random value's sketch per row (memory
   * bound: ~6 s for 10M rows of 100,000 users).
   */
  static build(eachRow: (visit: (id: number, v: ArrayLike<number>, flags: number) => void) => void): DimTotals {
    const t = new DimTotals()
    let rows = 0
    eachRow((id, v, flags) => {
      if (id >= t.#top) t.#reserve(id + 1)
      addSums(t.#acc, id * DIM_FIELDS, v, flags)
      rows++
    })
    const top = t.#top
    const acc = t.#acc
    // Where each value's latencies start (the requests column counts its rows).
    const at = new Float64Array(top + 1)
    for (let id = 0; id < top; id++) at[id + 1] = at[id] + acc[id * DIM_FIELDS]
    const next = at.slice(0, top)
    const latencies = new Float64Array(rows)
    eachRow((id, v) => {
      latencies[next[id]++] = v[5]
    })
    for (let id = 0; id < top; id++) if (at[id + 1] > at[id]) t.#sketches[id] = LatencySketch.ofValues(latencies.subarray(at[id], at[id + 1]))
    return t
  }

  /** Value `id`'s all-time latency sketch (read only), or undefined when it has no event. */
  sketch(id: number): LatencySketch | undefined {
    return this.#sketches[id]
  }

  #reserve(n: number): void {
    if (n * DIM_FIELDS > this.#acc.length) {
      const grown = new Float64Array(Math.max(n * DIM_FIELDS, this.#acc.length * 2))
      grown.set(this.#acc)
      this.#acc = grown
    }
    this.#top = n
  }

  /** Read only: the totals, {@link DIM_FIELDS} per id, for ids below {@link DimTotals.top}. */
  get totals(): Float64Array {
    return this.#acc
  }

  get top(): number {
    return this.#top
  }
}

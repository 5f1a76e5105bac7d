/**
 * Re-pricing accepted events in memory (DESIGN §8, issue 14): the change list's columns as the
 * analytics code reads them, and the plan a {@link SeriesStore} builds before it applies one.
 *
 * A re-price changes only an event's cost and unpriced flag — never its latency, tokens or
 * time — so every pre-aggregate changes by a sum of (after − before) per event it holds and
 * the latency sketches do not change at all. Rows are SET to the new cost (a row already at
 * it is not changed: re-applying is a no-op); a coarse hour (no rows) subtracts `before` and
 * adds `after`, once per re-price id (the hour keeps the ids it applied).
 *
 * Why a plan: finding the rows (a walk of the minutes holding them) is the long part and
 * changes nothing, so it can run in slices while readers go on seeing the old costs; the
 * apply then writes the row words and swaps the aggregates in one synchronous step, so no
 * reader sees part of it (see Topology.reprice).
 */
import { lowerBound } from './sorted.js'
import { floorDiv, MINUTE_MS } from './time.js'

/**
 * One entry per event whose cost changes, as typed columns (10M entries take ~340 MB, no object
 * per event). Indexes name entries; within the set of entries given to one store, seqs ascend.
 */
export interface CostColumns {
  seqs: Float64Array
  ts: Float64Array
  /** Cost nano-dollars the state counts now (coarse hours subtract it) and its unpriced flag. */
  before: Float64Array
  beforeUnpriced: Uint8Array
  /** The new cost and flag. */
  after: Float64Array
  afterUnpriced: Uint8Array
}

/** Per-unit change of (cost nanos, unpriced count), keyed by minute slot or hour key. */
export type Deltas = Map<number, { cost: number; unpriced: number; n: number }>

/** Adds (cost, unpriced) of `n` entries to `key`'s delta. */
export function addDelta(d: Deltas, key: number, cost: number, unpriced: number, n: number): void {
  const have = d.get(key)
  if (have === undefined) d.set(key, { cost, unpriced, n })
  else {
    have.cost += cost
    have.unpriced += unpriced
    have.n += n
  }
}

/**
 * What {@link SeriesStore.planReprice} found, for {@link SeriesStore.applyReprice}: the rows to
 * set (row index, new cost, new flag) and the delta of every minute, hour and coarse hour.
 * Valid only while the store is unchanged since (its generation is checked).
 */
export interface RepricePlan {
  readonly id: string
  /** The store's generation when planned: a store changed since refuses the plan. */
  readonly gen: number
  rows: Int32Array
  costs: Float64Array
  unpriced: Uint8Array
  n: number
  /** Minute slots holding their own aggregate, by slot. */
  minutes: Deltas
  /** Hours that hold their rows (every one an entry falls in, delta 0 or not), by hour key. */
  hours: Deltas
  /** Coarse hours not yet holding `id`, by hour key: before → after of every entry there. */
  coarse: Deltas
  /** Entries whose event was found (a row, or an entry of a coarse hour not yet applied). */
  matched: number
}

/** A plan with nothing in it yet. */
export function emptyPlan(id: string, gen: number): RepricePlan {
  return { id, gen, rows: new Int32Array(16), costs: new Float64Array(16), unpriced: new Uint8Array(16), n: 0, minutes: new Map(), hours: new Map(), coarse: new Map(), matched: 0 }
}

/** Appends one row to set. */
export function planRow(p: RepricePlan, r: number, cost: number, unpriced: boolean): void {
  if (p.n === p.rows.length) {
    const cap = p.n * 2
    const rows = new Int32Array(cap)
    rows.set(p.rows)
    const costs = new Float64Array(cap)
    costs.set(p.costs)
    const flags = new Uint8Array(cap)
    flags.set(p.unpriced)
    p.rows = rows
    p.costs = costs
    p.unpriced = flags
  }
  p.rows[p.n] = r
  p.costs[p.n] = cost
  p.unpriced[p.n] = unpriced ? 1 : 0
  p.n++
}

/**
 * The entries `idx` grouped by minute of their `ts`, minutes ascending, each group in `idx`'s
 * order (a stable counting sort over the distinct minutes, found by a numeric sort of the keys:
 * no Map or object per entry). Returns the entries in that order and, per group, its minute key
 * and where it starts (plus a final end). An entry whose `ts` is not a number goes nowhere.
 */
export function byMinute(c: CostColumns, idx: ArrayLike<number>): { order: Uint32Array; minutes: Float64Array; starts: Uint32Array } {
  const n = idx.length
  const keys = new Float64Array(n)
  for (let j = 0; j < n; j++) keys[j] = floorDiv(c.ts[idx[j]], MINUTE_MS)
  const sorted = keys.slice().sort()
  let m = 0
  for (let j = 0; j < n; j++) if (!Number.isNaN(sorted[j]) && (m === 0 || sorted[j] !== sorted[m - 1])) sorted[m++] = sorted[j]
  const minutes = sorted.slice(0, m)
  // Each entry's group, then a counting sort by group (stable: entries keep idx's order).
  const group = new Uint32Array(n)
  const starts = new Uint32Array(m + 1)
  for (let j = 0; j < n; j++) {
    const k = keys[j]
    const lo = lowerBound(minutes, k)
    // NaN matches no minute: counted past the last group.
    group[j] = lo < m && minutes[lo] === k ? lo : m
    if (group[j] < m) starts[group[j] + 1]++
  }
  for (let g = 0; g < m; g++) starts[g + 1] += starts[g]
  const at = starts.slice(0, m)
  const order = new Uint32Array(starts[m])
  for (let j = 0; j < n; j++) {
    const g = group[j]
    if (g < m) order[at[g]++] = idx[j]
  }
  return { order, minutes, starts }
}

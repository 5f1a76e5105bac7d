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
import type { StagedCosts } from './row-store.js'
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

/** {@link CostColumns} with each entry's provider: an index into `names` (which names the models too). */
export interface ChangeNames extends CostColumns {
  provider: Uint32Array
  names: readonly string[]
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
  /** Rows [0, stagedTo) are written into chunk copies (`staged`) the apply swaps in (see SeriesStore.stageReprice). */
  staged: StagedCosts | undefined
  stagedTo: number
  /**
   * Minute aggregates the store held when the plan was begun: one made later (rows appended
   * pushed its minute past the threshold, summed at old costs) is summed again at the apply.
   */
  aggs: number
}

/** A plan with nothing in it yet. */
export function emptyPlan(id: string, gen: number, aggs = 0): RepricePlan {
  return { id, gen, rows: new Int32Array(16), costs: new Float64Array(16), unpriced: new Uint8Array(16), n: 0, minutes: new Map(), hours: new Map(), coarse: new Map(), matched: 0, staged: undefined, stagedTo: 0, aggs }
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

/** Entries grouped by minute (see {@link groupByMinute}). */
export interface MinuteGroups {
  /** The entries, group after group. */
  order: Uint32Array
  /** Each group's minute key (floor(ts / MINUTE_MS)), ascending. */
  minutes: Float64Array
  /** Where each group starts in `order`, plus a final end. */
  starts: Uint32Array
}

/**
 * The entries `idx` grouped by minute of their `ts`, minutes ascending, each group in `idx`'s
 * order (stable), with no Map or object per entry; an entry whose `ts` is not a number goes
 * nowhere. A generator that yields after about every `step` entries of work, so a caller can
 * give the event loop a turn there (10M entries take seconds); {@link byMinute} runs it whole.
 *
 * How: a counting sort over the minutes between the smallest and the largest when that span
 * is at most max(4 × entries, 2^20) minutes (the usual case: O(entries + span)); else the
 * distinct minutes by a numeric sort of the keys (one step: O(n log n)) and a binary search each.
 */
export function* groupByMinute(c: CostColumns, idx: ArrayLike<number>, step: number): Generator<void, MinuteGroups> {
  const n = idx.length
  const keys = new Float64Array(n)
  let lo = Infinity
  let hi = -Infinity
  for (let j = 0; j < n; j++) {
    if (j % step === step - 1) yield
    const k = floorDiv(c.ts[idx[j]], MINUTE_MS)
    keys[j] = k
    // NaN compares false: never a bound.
    if (k < lo) lo = k
    if (k > hi) hi = k
  }
  if (!(lo <= hi)) return { order: new Uint32Array(0), minutes: new Float64Array(0), starts: new Uint32Array(1) }
  const span = hi - lo + 1
  // at[x]: entries of minute lo + x, then (from the prefix pass on) where the next one goes.
  let at: Uint32Array
  let minutes: Float64Array
  let group: (j: number) => number
  if (span <= Math.max(4 * n, 2 ** 20)) {
    at = new Uint32Array(span)
    for (let j = 0; j < n; j++) if (keys[j] === keys[j]) at[keys[j] - lo]++
    yield
    let m = 0
    for (let x = 0; x < span; x++) if (at[x] > 0) m++
    minutes = new Float64Array(m)
    for (let x = 0, g = 0; x < span; x++) if (at[x] > 0) minutes[g++] = lo + x
    group = (j) => (keys[j] === keys[j] ? keys[j] - lo : -1)
  } else {
    const sorted = keys.slice().sort()
    let m = 0
    for (let j = 0; j < n; j++) if (sorted[j] === sorted[j] && (m === 0 || sorted[j] !== sorted[m - 1])) sorted[m++] = sorted[j]
    minutes = sorted.slice(0, m)
    at = new Uint32Array(m)
    const of = new Int32Array(n)
    for (let j = 0; j < n; j++) {
      if (j % step === step - 1) yield
      const g = lowerBound(minutes, keys[j])
      of[j] = g < m && minutes[g] === keys[j] ? g : -1
      if (of[j] >= 0) at[of[j]]++
    }
    group = (j) => of[j]
  }
  yield
  // Counts to start offsets (over the minutes held), then each entry to its place.
  const starts = new Uint32Array(minutes.length + 1)
  let o = 0
  for (let x = 0, g = 0; x < at.length; x++) {
    const count = at[x]
    if (count === 0) continue
    starts[g++] = o
    at[x] = o
    o += count
  }
  starts[minutes.length] = o
  const order = new Uint32Array(o)
  for (let j = 0; j < n; j++) {
    if (j % step === step - 1) yield
    const x = group(j)
    if (x >= 0) order[at[x]++] = idx[j]
  }
  return { order, minutes, starts }
}

/** {@link groupByMinute} run whole, in one go. */
export function byMinute(c: CostColumns, idx: ArrayLike<number>): MinuteGroups {
  const it = groupByMinute(c, idx, Infinity)
  for (;;) {
    const r = it.next()
    if (r.done === true) return r.value
  }
}

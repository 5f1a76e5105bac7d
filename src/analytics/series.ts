import type { Row } from './row.js'
import type { Totals } from './totals.js'
import { isValidRow, MAX_TIMESTAMP_MS } from './row.js'
import { LatencySketch, type LatencySketchJSON } from './sketch.js'
import { DAY_MS, floorDiv, HOUR_MS, MINUTE_MS } from './time.js'
import { cloneTotals, createTotals, mergeTotals, recordTotals } from './totals.js'

/** Totals plus latency sketch of one set of rows: what every query returns. */
export interface Aggregate {
  totals: Totals
  sketch: LatencySketch
}

/** One bucket of {@link SeriesStore.timeseries}: `start` is epoch-aligned to the interval. */
export interface TimeBucket extends Aggregate {
  start: number
}

/** An empty {@link Aggregate}. */
export function createAggregate(): Aggregate {
  return { totals: createTotals(), sketch: new LatencySketch() }
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
 * are merged, the result is ascending by `start`. Inputs are not modified.
 */
export function mergeTimeseries(lists: readonly (readonly TimeBucket[])[]): TimeBucket[] {
  const byStart = new Map<number, TimeBucket>()
  for (const list of lists) {
    for (const b of list) {
      const have = byStart.get(b.start)
      if (have === undefined) {
        byStart.set(b.start, { start: b.start, totals: cloneTotals(b.totals), sketch: b.sketch.clone() })
      } else {
        mergeInto(have, b)
      }
    }
  }
  return [...byStart.values()].sort((a, b) => a.start - b.start)
}

/**
 * Current {@link SeriesSnapshot} format version. 2 added `coarse` (hours past retention);
 * version 1 (no coarse hours) is still read.
 */
export const SERIES_SNAPSHOT_VERSION = 2

/** One hour folded by retention: its totals and latency sketch, without its rows. */
export interface CoarseHour {
  /** Hour key: floor(ts / HOUR_MS) of the rows it holds. */
  hour: number
  totals: Totals
  sketch: LatencySketchJSON
}

/** What {@link SeriesStore.retain} is asked to keep raw. */
export interface RetentionPolicy {
  /** Rows with `ts` before this (epoch ms; rounded down to its hour) are folded. -Infinity: none by age. */
  before: number
  /**
   * Most raw rows to keep (0 = no limit). Past 1.25 × this, the oldest hours (by event time)
   * before the hour of `now` are folded until at most this many rows are left.
   */
  maxRows: number
  /** Now (epoch ms): the hour holding it, and later ones, are never folded by `maxRows`. */
  now: number
}

/**
 * Plain-data form of a {@link SeriesStore} (msgpack-friendly): the raw rows as
 * columns, `rows` long each. The pre-aggregates are not stored: they are a pure
 * function of the rows, so rebuilding them on restore can never disagree with
 * the rows (and the snapshot stays ~66 bytes per row).
 * Readers accept typed arrays or plain number arrays for every column.
 */
export interface SeriesSnapshot {
  version: 1 | 2
  /** Number of rows (length of every column). */
  rows: number
  /** Rows refused by `record` so far (a diagnostic counter, kept across restarts). */
  rejected: number
  ts: Float64Array
  promptTokens: Float64Array
  completionTokens: Float64Array
  totalTokens: Float64Array
  cachedTokens: Float64Array
  reasoningTokens: Float64Array
  latencyUs: Float64Array
  costNanos: Float64Array
  /** 1 for rows with `error: true`, else 0. */
  error: Uint8Array
  /** 1 for rows with `unpriced: true`, else 0. */
  unpriced: Uint8Array
  /** Hours folded by retention (version 2; absent in version 1), ascending. */
  coarse?: CoarseHour[]
}

/** Numeric columns of a row, in their order inside a row's stride in storage. */
const VALUE_FIELDS = [
  'promptTokens',
  'completionTokens',
  'totalTokens',
  'cachedTokens',
  'reasoningTokens',
  'latencyUs',
  'costNanos',
] as const
const STRIDE = VALUE_FIELDS.length
const V_LATENCY = 5
const FLAG_ERROR = 1
const FLAG_UNPRICED = 2

/** Rows live in chunks of up to 2^13 rows; a row index is (chunk << 13) | offset. */
const CHUNK_SHIFT = 13
const CHUNK_ROWS = 1 << CHUNK_SHIFT
const CHUNK_MASK = CHUNK_ROWS - 1
/** Chunks start small and double up to CHUNK_ROWS, so small series stay small. */
const FIRST_CHUNK_ROWS = 16
const LATER_CHUNK_ROWS = 1024
/** Row and minute-slot indexes are Int32 (the linked lists use -1 as the end). */
const MAX_ROWS = 0x7fffffff

/**
 * A minute keeps its own Totals + sketch only once it holds this many rows.
 * Below it, answering a whole minute from its raw rows costs at most as much as
 * a sketch merge, and an Aggregate per sparse minute (~600 bytes) would dominate
 * memory at a few events per minute.
 */
export const MINUTE_AGGREGATE_THRESHOLD = 64

/** Hour of a day: aggregate of its rows plus the minute slots holding them. */
interface HourNode extends Aggregate {
  /**
   * minutes[m] = slot + 1 of minute m of the hour, 0 when it has no rows; null once the hour
   * is *coarse* (folded by retention): its rows are gone, its totals and sketch stay exact.
   */
  minutes: Int32Array | null
}

/** Day: aggregate of its rows plus its hours (undefined when empty). */
interface DayNode extends Aggregate {
  hours: (HourNode | undefined)[]
}

function addRow(a: Aggregate, row: Row): void {
  recordTotals(a.totals, row)
  a.sketch.record(row.latencyUs)
}

/** First index of `keys` (ascending) whose value is >= `key`. */
function lowerBound(keys: readonly number[], key: number): number {
  let lo = 0
  let hi = keys.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (keys[mid] < key) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** Index of the first of `n` sub-units of `width` (starting at `unitStart`) that may overlap [s, ...). */
function firstSub(unitStart: number, width: number, s: number): number {
  const lo = s - unitStart
  return lo <= 0 ? 0 : Math.floor(lo / width)
}

/** Index of the last of `n` sub-units of `width` (starting at `unitStart`) that overlaps [..., e). */
function lastSub(unitStart: number, width: number, n: number, e: number): number {
  const hi = e - unitStart
  return hi >= n * width ? n - 1 : Math.ceil(hi / width) - 1
}

/**
 * Clamps a query range to integers inside the accepted timestamp range. Row
 * timestamps are integers in [-MAX_TIMESTAMP_MS, MAX_TIMESTAMP_MS], so
 * `start <= ts < end` holds exactly when `ceil(start) <= ts < ceil(end)`, and
 * clamping both ends to [-MAX, MAX + 1] selects the same rows while keeping all
 * further arithmetic on exact integers (±Infinity included).
 */
function normalizeRange(start: number, end: number): [number, number] {
  if (Number.isNaN(start) || Number.isNaN(end) || typeof start !== 'number' || typeof end !== 'number') {
    throw new RangeError(`range bounds must be numbers (got ${start}, ${end})`)
  }
  const clamp = (v: number): number => Math.max(-MAX_TIMESTAMP_MS, Math.min(MAX_TIMESTAMP_MS + 1, Math.ceil(v)))
  return [clamp(start), clamp(end)]
}

/**
 * All rows of one series (the caller keeps one per model + provider), with
 * pre-aggregates that answer any half-open range [start, end) exactly without
 * scanning all rows.
 *
 * Layout (a tree, all levels UTC-aligned to the epoch):
 * ```
 *  #dayKeys (sorted) ─► DayNode { totals, sketch, hours[24] }
 *                          └─► HourNode { totals, sketch, minutes: Int32Array(60) → slot+1 }
 *                                 └─► minute slot: head row, row count, optional Aggregate
 *                                        └─► rows: singly linked list through chunked columns
 * ```
 * Raw rows are stored column-wise in chunked typed arrays (no object per row):
 * 7 Float64 values, the offset of `ts` inside its minute (Uint16: 0..59,999), a
 * flag byte and an Int32 "next row of the same minute" link: 63 bytes per row.
 * A row's full timestamp is its minute's start + offset, the minute being known
 * from the path that reached it.
 *
 * A range decomposes into whole days, whole hours at the edges of partial days,
 * whole minutes at the edges of partial hours, and raw rows of at most two
 * partial minutes, so {@link SeriesStore.aggregate} touches
 * O(log days + days in range + 2·24 hours + 2·60 minutes) nodes plus the rows of
 * ≤ 2 minutes (and of whole edge minutes below {@link MINUTE_AGGREGATE_THRESHOLD}).
 *
 * Retention ({@link SeriesStore.retain}) turns old hours *coarse*: their rows and minute
 * slots are dropped, their (and their day's) Totals and sketch stay, so hour-aligned ranges
 * stay exact and a coarse hour's rows count as at its start.
 *
 * Invariants: every node's Totals/sketch equal those of exactly the rows below
 * it (for a coarse hour: of the rows it folded or took in); every hour before
 * {@link SeriesStore.horizon} is coarse, every later one holds its rows;
 * `#dayKeys` is strictly ascending and equals the key set of `#days`;
 * sums are exact while each stays below 2^53 (see {@link Totals}).
 */
export class SeriesStore {
  #days = new Map<number, DayNode>()
  #dayKeys: number[] = []

  // Row columns, chunked. Chunk c holds rows [c << CHUNK_SHIFT, ...).
  #vals: Float64Array[] = []
  #offs: Uint16Array[] = []
  #flags: Uint8Array[] = []
  #next: Int32Array[] = []
  #size = 0

  // Minute slots, parallel columns grown by doubling.
  #mHead: Int32Array = new Int32Array(0)
  #mCount: Int32Array = new Int32Array(0)
  /** Index + 1 into #minuteAggs, 0 while the minute is below the threshold. */
  #mAgg: Int32Array = new Int32Array(0)
  #minuteSlots = 0
  #minuteAggs: Aggregate[] = []

  #minTs = Infinity
  #maxTs = -Infinity
  /** Hours with a key below this are coarse: a row recorded there only updates aggregates. */
  #coarseBefore = -Infinity
  #coarseHours = 0
  /** Rows counted in coarse hours only (folded, or recorded late into a coarse hour). */
  #coarseRows = 0
  #rejected = 0
  #scanned = 0
  /** Days that gained rows since the last {@link SeriesStore.takeDirtyDays} (incremental snapshots). */
  #dirty = new Set<number>()
  #lastDirty = NaN

  /** Number of raw rows retained (rows folded into coarse hours are not counted). */
  get size(): number {
    return this.#size
  }

  /** Rows counted only in coarse hours (see {@link SeriesStore.retain}). */
  get coarseRows(): number {
    return this.#coarseRows
  }

  /** Hours folded by retention (kept as totals + sketch, without rows). */
  get coarseHours(): number {
    return this.#coarseHours
  }

  /**
   * Every hour starting before this (epoch ms) is coarse; -Infinity when none is.
   * Invariant: hours at or after it hold their rows.
   */
  get horizon(): number {
    return this.#coarseBefore === -Infinity ? -Infinity : this.#coarseBefore * HOUR_MS
  }

  /** Rows refused by {@link SeriesStore.record} because they broke the {@link Row} contract. */
  get rejected(): number {
    return this.#rejected
  }

  /**
   * Raw rows read by queries so far (a diagnostic: pins that queries do not
   * scan the whole series).
   */
  get scannedRows(): number {
    return this.#scanned
  }

  /**
   * Smallest and largest `ts` seen, or null when empty. After a restore, a coarse hour counts
   * as its first and last millisecond (its rows' own times are not kept).
   */
  bounds(): { min: number; max: number } | null {
    return this.#minTs === Infinity ? null : { min: this.#minTs, max: this.#maxTs }
  }

  /**
   * Adds one row; rows may arrive in any order. Amortised O(1) plus two or three
   * sketch updates (each a binary search over a bucket's few distinct keys).
   * Never throws: a row breaking the {@link Row} contract is refused, counted in
   * {@link SeriesStore.rejected}, and `false` returned.
   */
  record(row: Row): boolean {
    if (!isValidRow(row) || this.#size >= MAX_ROWS) {
      this.#rejected += 1
      return false
    }
    const ts = row.ts
    const minuteKey = floorDiv(ts, MINUTE_MS)
    const hourKey = floorDiv(minuteKey, 60)
    const dayKey = floorDiv(hourKey, 24)

    const day = this.#days.get(dayKey) ?? this.#newDay(dayKey)
    if (dayKey !== this.#lastDirty) {
      this.#dirty.add(dayKey)
      this.#lastDirty = dayKey
    }
    const h = hourKey - dayKey * 24
    let hour = day.hours[h]
    if (hour === undefined) {
      const coarse = hourKey < this.#coarseBefore
      hour = { totals: createTotals(), sketch: new LatencySketch(), minutes: coarse ? null : new Int32Array(60) }
      day.hours[h] = hour
      if (coarse) this.#coarseHours++
    }
    if (ts < this.#minTs) this.#minTs = ts
    if (ts > this.#maxTs) this.#maxTs = ts
    if (hour.minutes === null) {
      // Past retention: exact at hour resolution, no row kept.
      addRow(day, row)
      addRow(hour, row)
      this.#coarseRows++
      return true
    }
    const m = minuteKey - hourKey * 60
    let slot = hour.minutes[m] - 1
    if (slot < 0) {
      slot = this.#newMinuteSlot()
      hour.minutes[m] = slot + 1
    }

    this.#appendRow(row, ts - minuteKey * MINUTE_MS, slot)
    addRow(day, row)
    addRow(hour, row)
    const count = ++this.#mCount[slot]
    const agg = this.#mAgg[slot]
    if (agg > 0) {
      addRow(this.#minuteAggs[agg - 1], row)
    } else if (count === MINUTE_AGGREGATE_THRESHOLD) {
      const a = createAggregate()
      this.#collectRows(slot, 0, MINUTE_MS, a)
      this.#minuteAggs.push(a)
      this.#mAgg[slot] = this.#minuteAggs.length
    }
    return true
  }

  /**
   * Retention: folds hours into *coarse* hours — their rows and minute data are dropped, their
   * totals and latency sketch (and so their day's) stay exact. Every hour before
   * `policy.before` (rounded down to its hour) is folded, and rows recorded there later are
   * counted into the hour without a row. With `maxRows`, once more than 1.25 × `maxRows` raw
   * rows are held, the oldest hours before the hour of `now` are folded until at most
   * `maxRows` are left (the slack keeps the O(rows) compaction amortised O(1) per row).
   *
   * A query then counts a coarse hour whole when its start is inside the range: ranges
   * aligned to hours stay exact; inside a coarse hour, every row counts as at the hour's start.
   * Folded days are marked dirty (their snapshot segment is rewritten). Returns rows folded.
   */
  retain(policy: RetentionPolicy): number {
    const byAge = policy.before === -Infinity ? -Infinity : floorDiv(Math.max(-MAX_TIMESTAMP_MS, Math.min(MAX_TIMESTAMP_MS, Math.floor(policy.before))), HOUR_MS)
    if (byAge > this.#coarseBefore) this.#coarseBefore = byAge
    const fold: Array<[day: DayNode, dayKey: number, h: number]> = []
    let left = this.#size
    const nowHour = floorDiv(Math.floor(policy.now), HOUR_MS)
    const byCount = policy.maxRows > 0 && this.#size > policy.maxRows + Math.max(1, policy.maxRows >> 2)
    // Ascending by time: once an hour is neither old nor foldable by count, no later one is.
    scan: for (const dayKey of this.#dayKeys) {
      const day = this.#days.get(dayKey) as DayNode
      for (let h = 0; h < 24; h++) {
        const hour = day.hours[h]
        if (hour === undefined || hour.minutes === null) continue
        const hourKey = dayKey * 24 + h
        const foldable = hourKey < this.#coarseBefore || (byCount && left > policy.maxRows && hourKey < nowHour)
        if (!foldable) break scan
        fold.push([day, dayKey, h])
        left -= hour.totals.requests
      }
    }
    if (fold.length === 0) return 0
    let folded = 0
    for (const [day, dayKey, h] of fold) {
      const hour = day.hours[h] as HourNode
      hour.minutes = null
      folded += hour.totals.requests
      this.#coarseHours++
      this.#dirty.add(dayKey)
      const hourKey = dayKey * 24 + h
      if (hourKey + 1 > this.#coarseBefore) this.#coarseBefore = hourKey + 1
    }
    this.#lastDirty = NaN
    this.#coarseRows += folded
    this.#compactRows()
    return folded
  }

  /** Rebuilds row and minute storage with only the rows of hours that are not coarse. */
  #compactRows(): void {
    const vals = this.#vals
    const offs = this.#offs
    const flags = this.#flags
    const next = this.#next
    const mHead = this.#mHead
    const mCount = this.#mCount
    const mAgg = this.#mAgg
    const minuteAggs = this.#minuteAggs
    this.#vals = []
    this.#offs = []
    this.#flags = []
    this.#next = []
    this.#size = 0
    this.#mHead = new Int32Array(0)
    this.#mCount = new Int32Array(0)
    this.#mAgg = new Int32Array(0)
    this.#minuteSlots = 0
    this.#minuteAggs = []
    const list: number[] = []
    for (const dayKey of this.#dayKeys) {
      const day = this.#days.get(dayKey) as DayNode
      for (const hour of day.hours) {
        if (hour === undefined || hour.minutes === null) continue
        for (let m = 0; m < 60; m++) {
          const old = hour.minutes[m] - 1
          if (old < 0) continue
          const slot = this.#newMinuteSlot()
          hour.minutes[m] = slot + 1
          list.length = 0
          for (let r = mHead[old]; r >= 0; r = next[r >>> CHUNK_SHIFT][r & CHUNK_MASK]) list.push(r)
          // Appended back to front: each append links at the head, so the list keeps its order.
          for (let j = list.length - 1; j >= 0; j--) {
            const r = list[j]
            const c = r >>> CHUNK_SHIFT
            const i = r & CHUNK_MASK
            this.#appendRaw(vals[c], i, offs[c][i], flags[c][i], slot)
          }
          this.#mCount[slot] = mCount[old]
          if (mAgg[old] > 0) {
            this.#minuteAggs.push(minuteAggs[mAgg[old] - 1])
            this.#mAgg[slot] = this.#minuteAggs.length
          }
        }
      }
    }
  }

  /** {@link SeriesStore.#appendRow} from another store's columns (compaction). */
  #appendRaw(srcVals: Float64Array, srcI: number, offset: number, flags: number, slot: number): void {
    const r = this.#size
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    if (c === this.#offs.length) this.#resizeChunk(c, c === 0 ? FIRST_CHUNK_ROWS : LATER_CHUNK_ROWS)
    else if (i === this.#offs[c].length) this.#resizeChunk(c, i * 2)
    this.#vals[c].set(srcVals.subarray(srcI * STRIDE, srcI * STRIDE + STRIDE), i * STRIDE)
    this.#offs[c][i] = offset
    this.#flags[c][i] = flags
    this.#next[c][i] = this.#mHead[slot]
    this.#mHead[slot] = r
    this.#size = r + 1
  }

  #newDay(dayKey: number): DayNode {
    const day: DayNode = { totals: createTotals(), sketch: new LatencySketch(), hours: new Array(24) }
    this.#days.set(dayKey, day)
    const keys = this.#dayKeys
    // Days are usually created in time order (append); a late day is spliced in.
    if (keys.length === 0 || keys[keys.length - 1] < dayKey) keys.push(dayKey)
    else keys.splice(lowerBound(keys, dayKey), 0, dayKey)
    return day
  }

  #newMinuteSlot(): number {
    const slot = this.#minuteSlots++
    if (slot === this.#mHead.length) {
      const cap = Math.max(16, slot * 2)
      const grow = (old: Int32Array): Int32Array => {
        const a = new Int32Array(cap)
        a.set(old)
        return a
      }
      this.#mHead = grow(this.#mHead)
      this.#mCount = grow(this.#mCount)
      this.#mAgg = grow(this.#mAgg)
    }
    this.#mHead[slot] = -1
    return slot
  }

  /** Stores the row's columns and links it at the head of its minute's list. */
  #appendRow(row: Row, offset: number, slot: number): void {
    const r = this.#size
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    if (c === this.#offs.length) this.#resizeChunk(c, c === 0 ? FIRST_CHUNK_ROWS : LATER_CHUNK_ROWS)
    else if (i === this.#offs[c].length) this.#resizeChunk(c, i * 2)
    const vals = this.#vals[c]
    const b = i * STRIDE
    vals[b] = row.promptTokens
    vals[b + 1] = row.completionTokens
    vals[b + 2] = row.totalTokens
    vals[b + 3] = row.cachedTokens
    vals[b + 4] = row.reasoningTokens
    vals[b + 5] = row.latencyUs
    vals[b + 6] = row.costNanos
    this.#offs[c][i] = offset
    this.#flags[c][i] = (row.error ? FLAG_ERROR : 0) | (row.unpriced ? FLAG_UNPRICED : 0)
    this.#next[c][i] = this.#mHead[slot]
    this.#mHead[slot] = r
    this.#size = r + 1
  }

  /** (Re)allocates chunk `c` with room for `rows` rows, keeping its contents. */
  #resizeChunk(c: number, rows: number): void {
    const vals = new Float64Array(rows * STRIDE)
    const offs = new Uint16Array(rows)
    const flags = new Uint8Array(rows)
    const next = new Int32Array(rows)
    if (c < this.#offs.length) {
      vals.set(this.#vals[c])
      offs.set(this.#offs[c])
      flags.set(this.#flags[c])
      next.set(this.#next[c])
    }
    this.#vals[c] = vals
    this.#offs[c] = offs
    this.#flags[c] = flags
    this.#next[c] = next
  }

  /** Adds the rows of minute `slot` whose offset is in [lo, hi) to `acc`. */
  #collectRows(slot: number, lo: number, hi: number, acc: Aggregate): void {
    const t = acc.totals
    const sketch = acc.sketch
    let scanned = 0
    for (let r = this.#mHead[slot]; r >= 0; ) {
      const c = r >>> CHUNK_SHIFT
      const i = r & CHUNK_MASK
      scanned++
      const off = this.#offs[c][i]
      if (off >= lo && off < hi) {
        const vals = this.#vals[c]
        const b = i * STRIDE
        const flags = this.#flags[c][i]
        t.requests += 1
        t.promptTokens += vals[b]
        t.completionTokens += vals[b + 1]
        t.totalTokens += vals[b + 2]
        t.cachedTokens += vals[b + 3]
        t.reasoningTokens += vals[b + 4]
        t.latencyUsSum += vals[b + 5]
        t.costNanos += vals[b + 6]
        t.errors += flags & FLAG_ERROR
        t.unpriced += (flags & FLAG_UNPRICED) >>> 1
        sketch.record(vals[b + V_LATENCY])
      }
      r = this.#next[c][i]
    }
    this.#scanned += scanned
  }

  /**
   * Totals and latency sketch of the rows with `start <= ts < end`, added into
   * `into` (a fresh {@link Aggregate} by default), which is returned.
   * Bounds may be ±Infinity or fractional; `start >= end` selects nothing.
   * Exact: the totals equal a naive sum over the selected rows.
   * Throws RangeError on a NaN bound.
   */
  aggregate(start: number, end: number, into: Aggregate = createAggregate()): Aggregate {
    const [s, e] = normalizeRange(start, end)
    if (s >= e) return into
    const keys = this.#dayKeys
    for (let k = lowerBound(keys, floorDiv(s, DAY_MS)); k < keys.length; k++) {
      const dStart = keys[k] * DAY_MS
      if (dStart >= e) break
      this.#addDay(this.#days.get(keys[k]) as DayNode, dStart, s, e, into)
    }
    return into
  }

  #addDay(day: DayNode, dStart: number, s: number, e: number, acc: Aggregate): void {
    if (s <= dStart && dStart + DAY_MS <= e) {
      mergeInto(acc, day)
      return
    }
    const last = lastSub(dStart, HOUR_MS, 24, e)
    for (let h = firstSub(dStart, HOUR_MS, s); h <= last; h++) {
      const hour = day.hours[h]
      if (hour !== undefined) this.#addHour(hour, dStart + h * HOUR_MS, s, e, acc)
    }
  }

  #addHour(hour: HourNode, hStart: number, s: number, e: number, acc: Aggregate): void {
    if (s <= hStart && hStart + HOUR_MS <= e) {
      mergeInto(acc, hour)
      return
    }
    const minutes = hour.minutes
    if (minutes === null) {
      // Coarse: its rows count as at the hour's start.
      if (s <= hStart && hStart < e) mergeInto(acc, hour)
      return
    }
    const last = lastSub(hStart, MINUTE_MS, 60, e)
    for (let m = firstSub(hStart, MINUTE_MS, s); m <= last; m++) {
      const slot = minutes[m] - 1
      if (slot >= 0) this.#addMinute(slot, hStart + m * MINUTE_MS, s, e, acc)
    }
  }

  #addMinute(slot: number, mStart: number, s: number, e: number, acc: Aggregate): void {
    if (s <= mStart && mStart + MINUTE_MS <= e) {
      const agg = this.#mAgg[slot]
      if (agg > 0) mergeInto(acc, this.#minuteAggs[agg - 1])
      else this.#collectRows(slot, 0, MINUTE_MS, acc)
      return
    }
    this.#collectRows(slot, Math.max(0, s - mStart), Math.min(MINUTE_MS, e - mStart), acc)
  }

  /**
   * Per-interval aggregates over [start, end): one {@link TimeBucket} per
   * epoch-aligned interval `[k·intervalMs, (k+1)·intervalMs)` that overlaps the
   * range and holds at least one selected row, ascending by `start`. Each
   * bucket counts only rows inside [start, end), exactly (edges from raw rows).
   *
   * `intervalMs` must be a positive multiple of one minute (the API uses 1m, 5m
   * and 1h; multiples of an hour or a day walk coarser nodes). Throws RangeError
   * otherwise or on a NaN bound. The number of buckets is bounded by the data,
   * not by the range; callers bound the range/interval ratio if they must.
   */
  timeseries(start: number, end: number, intervalMs: number): TimeBucket[] {
    if (!Number.isSafeInteger(intervalMs) || intervalMs <= 0 || intervalMs % MINUTE_MS !== 0) {
      throw new RangeError(`intervalMs must be a positive multiple of ${MINUTE_MS}, got ${intervalMs}`)
    }
    const [s, e] = normalizeRange(start, end)
    const out: TimeBucket[] = []
    if (s >= e) return out
    // Walk the coarsest unit that never straddles an interval boundary.
    const unit = intervalMs % DAY_MS === 0 ? DAY_MS : intervalMs % HOUR_MS === 0 ? HOUR_MS : MINUTE_MS
    let cur: TimeBucket | undefined
    const bucketFor = (unitStart: number): TimeBucket => {
      const bStart = floorDiv(unitStart, intervalMs) * intervalMs
      if (cur === undefined || cur.start !== bStart) {
        // A unit with rows only outside [s, e) leaves an empty bucket: drop it.
        if (cur !== undefined && cur.totals.requests > 0) out.push(cur)
        cur = { start: bStart, totals: createTotals(), sketch: new LatencySketch() }
      }
      return cur
    }
    const keys = this.#dayKeys
    for (let k = lowerBound(keys, floorDiv(s, DAY_MS)); k < keys.length; k++) {
      const dStart = keys[k] * DAY_MS
      if (dStart >= e) break
      const day = this.#days.get(keys[k]) as DayNode
      if (unit === DAY_MS) {
        this.#addDay(day, dStart, s, e, bucketFor(dStart))
        continue
      }
      const lastH = lastSub(dStart, HOUR_MS, 24, e)
      for (let h = firstSub(dStart, HOUR_MS, s); h <= lastH; h++) {
        const hour = day.hours[h]
        if (hour === undefined) continue
        const hStart = dStart + h * HOUR_MS
        if (unit === HOUR_MS) {
          this.#addHour(hour, hStart, s, e, bucketFor(hStart))
          continue
        }
        const minutes = hour.minutes
        if (minutes === null) {
          if (s <= hStart && hStart < e) mergeInto(bucketFor(hStart), hour)
          continue
        }
        const lastM = lastSub(hStart, MINUTE_MS, 60, e)
        for (let m = firstSub(hStart, MINUTE_MS, s); m <= lastM; m++) {
          const slot = minutes[m] - 1
          if (slot < 0) continue
          const mStart = hStart + m * MINUTE_MS
          this.#addMinute(slot, mStart, s, e, bucketFor(mStart))
        }
      }
    }
    const tail = cur as TimeBucket | undefined
    if (tail !== undefined && tail.totals.requests > 0) out.push(tail)
    return out
  }

  /** The UTC day keys (floor(ts / DAY_MS)) holding rows, ascending. */
  dayKeys(): readonly number[] {
    return this.#dayKeys
  }

  /**
   * Days that gained rows since the previous call (or since the store was made), ascending;
   * the set is cleared. An incremental snapshot writes only these days' rows.
   */
  takeDirtyDays(): number[] {
    const out = [...this.#dirty].sort((a, b) => a - b)
    this.#dirty.clear()
    this.#lastDirty = NaN
    return out
  }

  /**
   * Plain-data copy of the rows (see {@link SeriesSnapshot}), ordered by minute, and of the
   * coarse hours: everything, or only that of the given `days` (day keys). O(rows copied);
   * the store is not modified.
   */
  toSnapshot(days?: readonly number[]): SeriesSnapshot {
    const dayKeys = days ?? this.#dayKeys
    let n = 0
    const coarse: CoarseHour[] = []
    for (const k of dayKeys) {
      const day = this.#days.get(k)
      if (day === undefined) continue
      for (let h = 0; h < 24; h++) {
        const hour = day.hours[h]
        if (hour === undefined) continue
        if (hour.minutes === null) coarse.push({ hour: k * 24 + h, totals: cloneTotals(hour.totals), sketch: hour.sketch.toJSON() })
        else n += hour.totals.requests
      }
    }
    const cols = VALUE_FIELDS.map(() => new Float64Array(n))
    const ts = new Float64Array(n)
    const error = new Uint8Array(n)
    const unpriced = new Uint8Array(n)
    let w = 0
    for (const dayKey of dayKeys) {
      const day = this.#days.get(dayKey)
      if (day === undefined) continue
      for (let h = 0; h < 24; h++) {
        const hour = day.hours[h]
        if (hour === undefined || hour.minutes === null) continue
        for (let m = 0; m < 60; m++) {
          const slot = hour.minutes[m] - 1
          if (slot < 0) continue
          const mStart = dayKey * DAY_MS + h * HOUR_MS + m * MINUTE_MS
          for (let r = this.#mHead[slot]; r >= 0; ) {
            const c = r >>> CHUNK_SHIFT
            const i = r & CHUNK_MASK
            ts[w] = mStart + this.#offs[c][i]
            for (let f = 0; f < STRIDE; f++) cols[f][w] = this.#vals[c][i * STRIDE + f]
            const flags = this.#flags[c][i]
            error[w] = flags & FLAG_ERROR
            unpriced[w] = (flags & FLAG_UNPRICED) >>> 1
            w++
            r = this.#next[c][i]
          }
        }
      }
    }
    return {
      version: SERIES_SNAPSHOT_VERSION,
      rows: n,
      // A part of the rows carries no counter: whoever stores parts keeps `rejected` once.
      rejected: days === undefined ? this.#rejected : 0,
      ts,
      promptTokens: cols[0],
      completionTokens: cols[1],
      totalTokens: cols[2],
      cachedTokens: cols[3],
      reasoningTokens: cols[4],
      latencyUs: cols[5],
      costNanos: cols[6],
      error,
      unpriced,
      coarse,
    }
  }

  /**
   * Rebuilds a store from {@link SeriesStore.toSnapshot} output (typed arrays or
   * plain arrays). Every query on the result answers exactly as on the original.
   * Throws an Error naming the problem on an unknown version or malformed data
   * (wrong column length, invalid row): a snapshot is read fully or not at all.
   */
  static fromSnapshot(data: unknown): SeriesStore {
    return SeriesStore.fromSnapshots([data])
  }

  /**
   * Rebuilds one store from several snapshots of disjoint row sets (e.g. one per day, as
   * written by incremental snapshots). `rejected` counters add up (plus `rejected`, for a
   * counter kept beside day parts, which carry none). Same checks as
   * {@link SeriesStore.fromSnapshot}; the result has no dirty days.
   */
  static fromSnapshots(parts: readonly unknown[], rejected = 0): SeriesStore {
    const store = new SeriesStore()
    let rejectedTotal = rejected
    for (const part of parts) rejectedTotal += SeriesStore.#load(store, part)
    store.#rejected = rejectedTotal
    store.takeDirtyDays()
    return store
  }

  /** Installs one coarse hour (see {@link CoarseHour}); `fail` throws. */
  #loadCoarse(data: unknown, fail: (why: string) => never): void {
    if (typeof data !== 'object' || data === null) fail('not an object')
    const c = data as Record<string, unknown>
    const hourKey = c.hour
    if (typeof hourKey !== 'number' || !Number.isSafeInteger(hourKey) || Math.abs(hourKey * HOUR_MS) > MAX_TIMESTAMP_MS) fail('hour must be an hour key')
    const totals = createTotals()
    const t = c.totals as Record<string, unknown> | null
    if (typeof t !== 'object' || t === null) fail('totals missing')
    for (const k of Object.keys(totals) as (keyof Totals)[]) {
      const v = (t as Record<string, unknown>)[k]
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`totals.${k} must be a non-negative integer`)
      totals[k] = v as number
    }
    let sketch: LatencySketch
    try {
      sketch = LatencySketch.fromJSON(c.sketch)
    } catch (err) {
      return fail(`sketch: ${(err as Error).message}`)
    }
    if (sketch.count !== totals.requests || totals.requests === 0) fail('sketch count does not match requests')
    const hk = hourKey as number
    const dayKey = floorDiv(hk, 24)
    const day = this.#days.get(dayKey) ?? this.#newDay(dayKey)
    const h = hk - dayKey * 24
    if (day.hours[h] !== undefined) fail('hour given twice')
    day.hours[h] = { totals, sketch, minutes: null }
    mergeTotals(day.totals, totals)
    day.sketch.merge(sketch)
    this.#coarseHours++
    this.#coarseRows += totals.requests
    if (hk + 1 > this.#coarseBefore) this.#coarseBefore = hk + 1
    const hStart = hk * HOUR_MS
    if (hStart < this.#minTs) this.#minTs = hStart
    if (hStart + HOUR_MS - 1 > this.#maxTs) this.#maxTs = hStart + HOUR_MS - 1
  }

  /** Records one snapshot's rows into `store`; returns its `rejected` counter. */
  static #load(store: SeriesStore, data: unknown): number {
    const fail = (why: string): never => {
      throw new Error(`invalid SeriesStore snapshot: ${why}`)
    }
    if (typeof data !== 'object' || data === null) fail('not an object')
    const d = data as Record<string, unknown>
    if (d.version !== SERIES_SNAPSHOT_VERSION && d.version !== 1) {
      fail(`unsupported version ${String(d.version)} (this build reads versions 1 and ${SERIES_SNAPSHOT_VERSION})`)
    }
    if (d.version === SERIES_SNAPSHOT_VERSION) {
      if (!Array.isArray(d.coarse)) fail('coarse must be an array')
      for (const [i, c] of (d.coarse as unknown[]).entries()) store.#loadCoarse(c, (why) => fail(`coarse hour ${i}: ${why}`))
    } else if (d.coarse !== undefined) fail('coarse needs version 2')
    const n = d.rows
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > MAX_ROWS) fail('rows must be a non-negative integer')
    const rejected = d.rejected
    if (typeof rejected !== 'number' || !Number.isSafeInteger(rejected) || rejected < 0) {
      fail('rejected must be a non-negative integer')
    }
    const column = (name: string): ArrayLike<number> => {
      const v = d[name]
      const ok = Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView))
      if (!ok) fail(`column ${name} is missing or not an array`)
      const col = v as ArrayLike<number>
      if (col.length !== n) fail(`column ${name} has ${col.length} entries, expected ${n as number}`)
      return col
    }
    const ts = column('ts')
    const vals = VALUE_FIELDS.map(column)
    const error = column('error')
    const unpriced = column('unpriced')
    const row: Row = {
      ts: 0,
      promptTokens: 0,
      completionTokens: 0,
      totalTokens: 0,
      cachedTokens: 0,
      reasoningTokens: 0,
      latencyUs: 0,
      costNanos: 0,
      error: false,
      unpriced: false,
    }
    const flag = (v: unknown, name: string, i: number): boolean => {
      if (v !== 0 && v !== 1) fail(`row ${i}: ${name} must be 0 or 1, got ${String(v)}`)
      return v === 1
    }
    // Recorded back to front: each minute's list is head-first, so this rebuilds
    // the same lists and `toSnapshot()` of the result equals `data` (a fixed point).
    for (let i = (n as number) - 1; i >= 0; i--) {
      row.ts = ts[i]
      for (let f = 0; f < STRIDE; f++) row[VALUE_FIELDS[f]] = vals[f][i]
      row.error = flag(error[i], 'error', i)
      row.unpriced = flag(unpriced[i], 'unpriced', i)
      if (!store.record(row)) fail(`row ${i} breaks the Row contract`)
    }
    return rejected as number
  }
}

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
 * Current {@link SeriesSnapshot} format version. 2 added `coarse` (hours past retention);
 * version 1 (no coarse hours) is still read.
 */
export const SERIES_SNAPSHOT_VERSION = 3

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
  version: 1 | 2 | 3
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
  /**
   * Version 3, only when some row has dimensions: each row's dimension words (see
   * {@link RowDims}), `rows` × 3 (user, session, attribute set); absent = all zero.
   */
  dims?: Uint32Array
}

/**
 * A row's dimensions as ids into its project's dictionaries (analytics/dimensions.ts): the
 * user, the session and the interned set of tags and metadata values; 0 = none.
 */
export interface RowDims {
  user: number
  session: number
  attrs: number
}

/**
 * Visits one raw row (see {@link SeriesStore.scanRows}): `v` holds its values in VALUE_FIELDS
 * order (prompt, completion, total, cached, reasoning tokens, latency µs, cost nano-dollars),
 * reused between calls; `flags` bit 0 = error, bit 1 = unpriced; `ts` its time (epoch ms).
 */
export type RowVisitor = (v: Float64Array, flags: number, user: number, session: number, attrs: number, ts: number) => void

/** The numeric fields of a row, in the order the snapshot columns and the `#wide` escape use. */
const VALUE_FIELDS = [
  'promptTokens',
  'completionTokens',
  'totalTokens',
  'cachedTokens',
  'reasoningTokens',
  'latencyUs',
  'costNanos',
] as const
const NUM_VALUES = VALUE_FIELDS.length

/*
 * Row layout: CORE Uint32 words per row in its chunk's `#core` array:
 *
 *   0 tokens: promptTokens (bits 0-23) | completionTokens bits 0-7 (bits 24-31)
 *   1 latencyUs   2 costNanos mod 2^32
 *   3 meta: offset of ts in its minute (bits 0-15: 0..59,999) | FLAG_* (bits 16-19)
 *           | completionTokens bits 8-19 (bits 20-31)
 *   4 next row of the same minute, as Uint32 (`| 0` reads it back; -1 = end of list)
 *
 * So prompts below 2^24 tokens and completions below 2^20 (today's context windows are far
 * smaller) with latency below 2^32 µs (71 minutes) take no more. What does not fit goes to
 * one of two exact escapes, flagged in `meta`:
 * - FLAG_EXT: the row's EXT words in its chunk's `#ext` array (allocated on the chunk's first
 *   such row): cachedTokens, reasoningTokens, totalTokens, floor(costNanos / 2^32). A row
 *   without it has cached = reasoning = 0, total = prompt + completion and cost < 2^32.
 * - FLAG_WIDE: a count or the latency does not fit its bits above (any value up to 2^53 is
 *   legal): the row's values live in `#wide` (by row index, VALUE_FIELDS order) and its
 *   tokens, latency and cost words are unused.
 * So a typical row costs 20 bytes (one with cached or reasoning tokens, 36).
 */
const CORE = 5
const C_TOKENS = 0
const C_LATENCY = 1
const C_COST = 2
const C_META = 3
const C_NEXT = 4
const PROMPT_MASK = 0xffffff
const PROMPT_LIMIT = 2 ** 24
const COMPLETION_LIMIT = 2 ** 20
const EXT = 4
const E_CACHED = 0
const E_REASONING = 1
const E_TOTAL = 2
const E_COST_HIGH = 3
const OFFSET_MASK = 0xffff
const FLAG_ERROR = 1 << 16
const FLAG_UNPRICED = 1 << 17
const FLAG_EXT = 1 << 18
const FLAG_WIDE = 1 << 19
const TWO_32 = 2 ** 32
/** Dimension words per row (user, session, attribute set), in chunks allocated on a chunk's first row with any. */
const DIMS = 3

/** Rows live in chunks of up to 2^12 rows; a row index is (chunk << 12) | offset. */
const CHUNK_SHIFT = 12
const CHUNK_ROWS = 1 << CHUNK_SHIFT
const CHUNK_MASK = CHUNK_ROWS - 1
/**
 * The first chunk starts small and doubles up to CHUNK_ROWS, so small series stay small;
 * later chunks are allocated whole: one allocation size, no copies, no freed halves left to
 * fragment the allocator (the slack is at most one chunk, ~96 KiB, per series).
 */
const FIRST_CHUNK_ROWS = 16
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
 * Raw rows are stored in chunked Uint32Arrays (no object per row): prompt and completion
 * packed, latency, cost mod 2^32, the offset of `ts` inside its minute with the flags, and
 * the "next row of the same minute" link: 20 bytes per row. Values that do not fit (cached
 * or reasoning tokens, a total that is not prompt + completion, cost >= 2^32, larger
 * counts) go to exact escapes (see CORE above), so every value reads back as recorded.
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

  // Rows, chunked (layout: see CORE). Chunk c holds rows [c << CHUNK_SHIFT, ...).
  #core: Uint32Array[] = []
  /** Per chunk: EXT words per row, allocated on the chunk's first FLAG_EXT row. */
  #ext: (Uint32Array | null)[] = []
  /** Values of the FLAG_WIDE rows, by row index (VALUE_FIELDS order). */
  #wide = new Map<number, Float64Array>()
  /** Per chunk: DIMS words per row, allocated on the chunk's first row with a dimension. */
  #dims: (Uint32Array | null)[] = []
  /** Row capacity of the last chunk (earlier chunks are full). */
  #lastChunkRows = 0
  #size = 0
  /** Scratch for one row's values (VALUE_FIELDS order). */
  #tmp = new Float64Array(NUM_VALUES)

  // Minute slots, parallel columns grown by half (see #newMinuteSlot).
  #mHead: Int32Array = new Int32Array(0)
  /**
   * The minute's row count while it is below {@link MINUTE_AGGREGATE_THRESHOLD}; once it has
   * its own Aggregate, -(index + 1) into #minuteAggs (the count is no longer needed).
   */
  #mState: Int32Array = new Int32Array(0)
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
  record(row: Row, dims?: RowDims): boolean {
    if (!isValidRow(row) || this.#size >= MAX_ROWS) {
      this.#rejected += 1
      return false
    }
    const ts = row.ts
    const minuteKey = floorDiv(ts, MINUTE_MS)
    const hourKey = floorDiv(minuteKey, 60)
    const dayKey = floorDiv(hourKey, 24)

    const day = this.#days.get(dayKey) ?? this.#newDay(dayKey)
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

    this.#appendRow(row, ts - minuteKey * MINUTE_MS, slot, dims)
    addRow(day, row)
    addRow(hour, row)
    const state = this.#mState[slot]
    if (state < 0) {
      addRow(this.#minuteAggs[-state - 1], row)
    } else if (state + 1 === MINUTE_AGGREGATE_THRESHOLD) {
      const a = createAggregate()
      this.#collectRows(slot, 0, MINUTE_MS, a)
      this.#minuteAggs.push(a)
      this.#mState[slot] = -this.#minuteAggs.length
    } else {
      this.#mState[slot] = state + 1
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
   * Folding renumbers the rows (see {@link SeriesStore.toSnapshotRows}). Returns rows folded.
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
      const hourKey = dayKey * 24 + h
      if (hourKey + 1 > this.#coarseBefore) this.#coarseBefore = hourKey + 1
    }
    this.#coarseRows += folded
    this.#compactRows()
    return folded
  }

  /** Rebuilds row and minute storage with only the rows of hours that are not coarse. */
  #compactRows(): void {
    const core = this.#core
    const ext = this.#ext
    const wide = this.#wide
    const dims = this.#dims
    const mHead = this.#mHead
    const mState = this.#mState
    const minuteAggs = this.#minuteAggs
    this.#core = []
    this.#ext = []
    this.#dims = []
    this.#wide = new Map()
    this.#lastChunkRows = 0
    this.#size = 0
    this.#mHead = new Int32Array(0)
    this.#mState = new Int32Array(0)
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
          for (let r = mHead[old]; r >= 0; r = core[r >>> CHUNK_SHIFT][(r & CHUNK_MASK) * CORE + C_NEXT] | 0) list.push(r)
          // Appended back to front: each append links at the head, so the list keeps its order.
          for (let j = list.length - 1; j >= 0; j--) this.#appendRaw(core, ext, wide, dims, list[j], slot)
          const state = mState[old]
          if (state < 0) {
            this.#minuteAggs.push(minuteAggs[-state - 1])
            this.#mState[slot] = -this.#minuteAggs.length
          } else {
            this.#mState[slot] = state
          }
        }
      }
    }
  }

  /** {@link SeriesStore.#appendRow} from another store's storage (compaction): copies row `src`. */
  #appendRaw(core: Uint32Array[], ext: (Uint32Array | null)[], wide: Map<number, Float64Array>, dims: (Uint32Array | null)[], src: number, slot: number): void {
    const r = this.#newRow()
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    const srcCore = core[src >>> CHUNK_SHIFT]
    const si = src & CHUNK_MASK
    const to = this.#core[c]
    // Value words and meta (C_TOKENS..C_META) as they are; the link is this store's.
    to.set(srcCore.subarray(si * CORE, si * CORE + C_NEXT), i * CORE)
    const meta = srcCore[si * CORE + C_META]
    if ((meta & FLAG_EXT) !== 0) {
      const from = ext[src >>> CHUNK_SHIFT] as Uint32Array
      ;(this.#ext[c] ?? this.#newExt(c)).set(from.subarray(si * EXT, si * EXT + EXT), i * EXT)
    }
    if ((meta & FLAG_WIDE) !== 0) this.#wide.set(r, wide.get(src) as Float64Array)
    const from = dims[src >>> CHUNK_SHIFT]
    if (from !== null && (from[si * DIMS] | from[si * DIMS + 1] | from[si * DIMS + 2]) !== 0) {
      ;(this.#dims[c] ?? this.#newDims(c)).set(from.subarray(si * DIMS, si * DIMS + DIMS), i * DIMS)
    }
    this.#link(r, slot)
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
      // x1.5 keeps copies amortised O(1) and leaves at most a third unused (doubling: half).
      const cap = Math.max(16, slot + (slot >>> 1))
      const grow = (old: Int32Array): Int32Array => {
        const a = new Int32Array(cap)
        a.set(old)
        return a
      }
      this.#mHead = grow(this.#mHead)
      this.#mState = grow(this.#mState)
    }
    this.#mHead[slot] = -1
    return slot
  }

  /** Stores the row (see CORE) and links it at the head of its minute's list. */
  #appendRow(row: Row, offset: number, slot: number, dims: RowDims | undefined): void {
    const r = this.#newRow()
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    if (dims !== undefined && (dims.user | dims.session | dims.attrs) !== 0) {
      const words = this.#dims[c] ?? this.#newDims(c)
      words[i * DIMS] = dims.user
      words[i * DIMS + 1] = dims.session
      words[i * DIMS + 2] = dims.attrs
    }
    const core = this.#core[c]
    const b = i * CORE
    const prompt = row.promptTokens
    const completion = row.completionTokens
    const total = row.totalTokens
    const cached = row.cachedTokens
    const reasoning = row.reasoningTokens
    const latency = row.latencyUs
    const cost = row.costNanos
    let meta = offset | (row.error ? FLAG_ERROR : 0) | (row.unpriced ? FLAG_UNPRICED : 0)
    // A total other than prompt + completion goes to an extension word, so it must fit in one
    // (prompt + completion < 2^25 here, so a total >= 2^32 is never that sum).
    const needsExt = cached !== 0 || reasoning !== 0 || total !== prompt + completion || cost >= TWO_32
    if (prompt >= PROMPT_LIMIT || completion >= COMPLETION_LIMIT || latency >= TWO_32 || cached >= TWO_32 || reasoning >= TWO_32 || total >= TWO_32) {
      meta |= FLAG_WIDE
      this.#wide.set(r, Float64Array.of(prompt, completion, total, cached, reasoning, latency, cost))
    } else {
      // Bit operations give an Int32; the Uint32Array store keeps its 32 bits.
      core[b + C_TOKENS] = prompt | (completion << 24)
      meta |= (completion >>> 8) << 20
      core[b + C_LATENCY] = latency
      // A Uint32Array store takes the value mod 2^32 (ToUint32 is exact for any integer).
      core[b + C_COST] = cost
      if (needsExt) {
        meta |= FLAG_EXT
        const words = this.#ext[c] ?? this.#newExt(c)
        const e = i * EXT
        words[e + E_CACHED] = cached
        words[e + E_REASONING] = reasoning
        words[e + E_TOTAL] = total
        words[e + E_COST_HIGH] = (cost - (cost >>> 0)) / TWO_32
      }
    }
    core[b + C_META] = meta
    this.#link(r, slot)
  }

  /** Links stored row `r` at the head of minute `slot`'s list. */
  #link(r: number, slot: number): void {
    this.#core[r >>> CHUNK_SHIFT][(r & CHUNK_MASK) * CORE + C_NEXT] = this.#mHead[slot]
    this.#mHead[slot] = r
  }

  /** Index of a new row at the end, with room for it; its words are zero. */
  #newRow(): number {
    const r = this.#size
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    if (c === this.#core.length) {
      this.#lastChunkRows = c === 0 ? FIRST_CHUNK_ROWS : CHUNK_ROWS
      this.#core.push(new Uint32Array(this.#lastChunkRows * CORE))
      this.#ext.push(null)
      this.#dims.push(null)
    } else if (i === this.#lastChunkRows) {
      // Only the first chunk grows (see FIRST_CHUNK_ROWS).
      const rows = i * 2
      const grow = (old: Uint32Array, words: number): Uint32Array => {
        const a = new Uint32Array(rows * words)
        a.set(old)
        return a
      }
      this.#core[c] = grow(this.#core[c], CORE)
      const ext = this.#ext[c]
      if (ext !== null) this.#ext[c] = grow(ext, EXT)
      const dims = this.#dims[c]
      if (dims !== null) this.#dims[c] = grow(dims, DIMS)
      this.#lastChunkRows = rows
    }
    this.#size = r + 1
    return r
  }

  /** Allocates chunk `c`'s EXT words. */
  #newExt(c: number): Uint32Array {
    const ext = new Uint32Array((c === this.#core.length - 1 ? this.#lastChunkRows : CHUNK_ROWS) * EXT)
    this.#ext[c] = ext
    return ext
  }

  /** Allocates chunk `c`'s dimension words. */
  #newDims(c: number): Uint32Array {
    const dims = new Uint32Array((c === this.#core.length - 1 ? this.#lastChunkRows : CHUNK_ROWS) * DIMS)
    this.#dims[c] = dims
    return dims
  }

  /** Whether any row holds a dimension word. */
  get hasDims(): boolean {
    return this.#dims.some((d) => d !== null)
  }

  /**
   * Visits every raw row with `start <= ts < end` (any order), with its values and dimension
   * words: what filtered queries and breakdowns read, since the pre-aggregates hold every row
   * of their unit regardless of dimensions. O(rows in range + minutes held in range).
   * Returns false, having visited nothing, when the range holds a coarse hour (folded by
   * retention: its rows, and so their dimensions, are gone): the caller must answer otherwise.
   */
  scanRows(start: number, end: number, visit: RowVisitor): boolean {
    if (!this.rowsAvailable(start, end)) return false
    const [s, e] = normalizeRange(start, end)
    if (s >= e) return true
    const keys = this.#dayKeys
    const first = lowerBound(keys, floorDiv(s, DAY_MS))
    const v = this.#tmp
    let scanned = 0
    for (let k = first; k < keys.length; k++) {
      const dStart = keys[k] * DAY_MS
      if (dStart >= e) break
      const day = this.#days.get(keys[k]) as DayNode
      for (let h = firstSub(dStart, HOUR_MS, s), lastH = lastSub(dStart, HOUR_MS, 24, e); h <= lastH; h++) {
        const hour = day.hours[h]
        if (hour === undefined || hour.minutes === null) continue
        const hStart = dStart + h * HOUR_MS
        for (let m = firstSub(hStart, MINUTE_MS, s), lastM = lastSub(hStart, MINUTE_MS, 60, e); m <= lastM; m++) {
          const slot = hour.minutes[m] - 1
          if (slot < 0) continue
          const mStart = hStart + m * MINUTE_MS
          const lo = Math.max(0, s - mStart)
          const hi = Math.min(MINUTE_MS, e - mStart)
          for (let r = this.#mHead[slot]; r >= 0; ) {
            const c = r >>> CHUNK_SHIFT
            const core = this.#core[c]
            const b = (r & CHUNK_MASK) * CORE
            const meta = core[b + C_META]
            const off = meta & OFFSET_MASK
            scanned++
            if (off >= lo && off < hi) {
              this.#readValues(r, v)
              const dims = this.#dims[c]
              const d = (r & CHUNK_MASK) * DIMS
              const flags = ((meta & FLAG_ERROR) !== 0 ? 1 : 0) | ((meta & FLAG_UNPRICED) !== 0 ? 2 : 0)
              if (dims === null) visit(v, flags, 0, 0, 0, mStart + off)
              else visit(v, flags, dims[d], dims[d + 1], dims[d + 2], mStart + off)
            }
            r = core[b + C_NEXT] | 0
          }
        }
      }
    }
    this.#scanned += scanned
    return true
  }

  /** Whether every row with `start <= ts < end` is held raw (no coarse hour with rows overlaps the range). */
  rowsAvailable(start: number, end: number): boolean {
    if (this.#coarseHours === 0) return true
    const [s, e] = normalizeRange(start, end)
    const keys = this.#dayKeys
    for (let k = lowerBound(keys, floorDiv(s, DAY_MS)); k < keys.length && keys[k] * DAY_MS < e; k++) {
      const day = this.#days.get(keys[k]) as DayNode
      const dStart = keys[k] * DAY_MS
      for (let h = firstSub(dStart, HOUR_MS, s), last = lastSub(dStart, HOUR_MS, 24, e); h <= last; h++) {
        const hour = day.hours[h]
        if (hour !== undefined && hour.minutes === null && hour.totals.requests > 0) return false
      }
    }
    return true
  }

  /** Row `r`'s values, VALUE_FIELDS order, into `out` (the slow path of {@link SeriesStore.#collectRows}). */
  #readValues(r: number, out: Float64Array): Float64Array {
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    const core = this.#core[c]
    const b = i * CORE
    const meta = core[b + C_META]
    if ((meta & FLAG_WIDE) !== 0) {
      out.set(this.#wide.get(r) as Float64Array)
      return out
    }
    const tokens = core[b + C_TOKENS]
    const prompt = tokens & PROMPT_MASK
    const completion = ((meta >>> 20) << 8) | (tokens >>> 24)
    out[0] = prompt
    out[1] = completion
    out[5] = core[b + C_LATENCY]
    if ((meta & FLAG_EXT) !== 0) {
      const ext = this.#ext[c] as Uint32Array
      const e = i * EXT
      out[2] = ext[e + E_TOTAL]
      out[3] = ext[e + E_CACHED]
      out[4] = ext[e + E_REASONING]
      out[6] = ext[e + E_COST_HIGH] * TWO_32 + core[b + C_COST]
    } else {
      out[2] = prompt + completion
      out[3] = 0
      out[4] = 0
      out[6] = core[b + C_COST]
    }
    return out
  }

  /** Adds the rows of minute `slot` whose offset is in [lo, hi) to `acc`. */
  #collectRows(slot: number, lo: number, hi: number, acc: Aggregate): void {
    const t = acc.totals
    const sketch = acc.sketch
    let scanned = 0
    for (let r = this.#mHead[slot]; r >= 0; ) {
      const core = this.#core[r >>> CHUNK_SHIFT]
      const b = (r & CHUNK_MASK) * CORE
      scanned++
      const meta = core[b + C_META]
      const off = meta & OFFSET_MASK
      if (off >= lo && off < hi) {
        t.requests += 1
        if ((meta & FLAG_ERROR) !== 0) t.errors += 1
        if ((meta & FLAG_UNPRICED) !== 0) t.unpriced += 1
        if ((meta & (FLAG_EXT | FLAG_WIDE)) === 0) {
          const tokens = core[b + C_TOKENS]
          const prompt = tokens & PROMPT_MASK
          const completion = ((meta >>> 20) << 8) | (tokens >>> 24)
          const latency = core[b + C_LATENCY]
          t.promptTokens += prompt
          t.completionTokens += completion
          t.totalTokens += prompt + completion
          t.latencyUsSum += latency
          t.costNanos += core[b + C_COST]
          sketch.record(latency)
        } else {
          const v = this.#readValues(r, this.#tmp)
          t.promptTokens += v[0]
          t.completionTokens += v[1]
          t.totalTokens += v[2]
          t.cachedTokens += v[3]
          t.reasoningTokens += v[4]
          t.latencyUsSum += v[5]
          t.costNanos += v[6]
          sketch.record(v[5])
        }
      }
      r = core[b + C_NEXT] | 0
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
      const state = this.#mState[slot]
      if (state < 0) mergeInto(acc, this.#minuteAggs[-state - 1])
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
   * Buckets are read only: a bucket that is exactly one stored hour shares that hour's
   * totals and sketch (no copy).
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
          if (intervalMs === HOUR_MS && s <= hStart && hStart + HOUR_MS <= e) {
            // The bucket is exactly this hour: share its aggregate instead of copying it.
            if (cur !== undefined && cur.totals.requests > 0) out.push(cur)
            cur = undefined
            out.push({ start: hStart, totals: hour.totals, sketch: hour.sketch })
            continue
          }
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

  /**
   * Plain-data copy of every raw row (see {@link SeriesSnapshot}), ordered by minute, and of
   * the coarse hours, with the `rejected` counter. O(rows); the store is not modified.
   */
  toSnapshot(): SeriesSnapshot {
    return { ...this.toSnapshotRows(0, this.#size, { coarse: true }), rejected: this.#rejected }
  }

  /**
   * Plain-data copy (see {@link SeriesSnapshot}, `rejected` 0) of the raw rows whose row index
   * is in [from, to) and, with `coarse`, of every coarse hour: snapshots in parts that cost
   * what they copy. Row indexes number rows in the order they were recorded, 0 to
   * {@link SeriesStore.size} − 1, so the rows recorded after a cut at `size` are [size, …) —
   * until {@link SeriesStore.retain} folds anything, which renumbers them all.
   *
   * O(minutes held + rows copied + rows at or past `to` passed over). A caller copying one
   * range in several calls, each ending where the previous began (`to` = previous `from`),
   * passes the same `cursor` object to each (no retain in between): every minute's walk then
   * resumes where it stopped, so the whole range costs O(rows) (invariant used: along a
   * minute's list, row indexes decrease). Throws RangeError unless 0 <= from <= to <= size.
   */
  toSnapshotRows(from: number, to: number, opts: { coarse?: boolean; cursor?: { at: Int32Array | null } } = {}): SeriesSnapshot {
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || from > to || to > this.#size) {
      throw new RangeError(`row range [${from}, ${to}) is not inside [0, ${this.#size}]`)
    }
    const n = to - from
    const cols = VALUE_FIELDS.map(() => new Float64Array(n))
    const ts = new Float64Array(n)
    const error = new Uint8Array(n)
    const unpriced = new Uint8Array(n)
    const dimsOut = this.hasDims ? new Uint32Array(n * DIMS) : undefined
    const coarse: CoarseHour[] = []
    // cursor.at[slot]: the row the walk of that minute resumes at (-1 end, -2 not walked yet).
    const cursor = opts.cursor
    if (cursor !== undefined && (cursor.at === null || cursor.at.length < this.#minuteSlots)) {
      const grown = new Int32Array(this.#minuteSlots).fill(-2)
      if (cursor.at !== null) grown.set(cursor.at)
      cursor.at = grown
    }
    const at = cursor?.at ?? null
    let w = 0
    for (const dayKey of this.#dayKeys) {
      const day = this.#days.get(dayKey) as DayNode
      for (let h = 0; h < 24; h++) {
        const hour = day.hours[h]
        if (hour === undefined) continue
        if (hour.minutes === null) {
          if (opts.coarse === true) coarse.push({ hour: dayKey * 24 + h, totals: cloneTotals(hour.totals), sketch: hour.sketch.toJSON() })
          continue
        }
        if (n === 0) continue
        for (let m = 0; m < 60; m++) {
          const slot = hour.minutes[m] - 1
          if (slot < 0) continue
          const mStart = dayKey * DAY_MS + h * HOUR_MS + m * MINUTE_MS
          let r = at === null || at[slot] === -2 ? this.#mHead[slot] : at[slot]
          // Newest first: pass over rows at or past `to`, then copy down to `from`.
          while (r >= to) r = this.#core[r >>> CHUNK_SHIFT][(r & CHUNK_MASK) * CORE + C_NEXT] | 0
          while (r >= from) {
            const core = this.#core[r >>> CHUNK_SHIFT]
            const b = (r & CHUNK_MASK) * CORE
            const meta = core[b + C_META]
            ts[w] = mStart + (meta & OFFSET_MASK)
            const v = this.#readValues(r, this.#tmp)
            for (let f = 0; f < NUM_VALUES; f++) cols[f][w] = v[f]
            error[w] = (meta & FLAG_ERROR) !== 0 ? 1 : 0
            unpriced[w] = (meta & FLAG_UNPRICED) !== 0 ? 1 : 0
            const rowDims = this.#dims[r >>> CHUNK_SHIFT]
            if (dimsOut !== undefined && rowDims !== null) dimsOut.set(rowDims.subarray((r & CHUNK_MASK) * DIMS, (r & CHUNK_MASK) * DIMS + DIMS), w * DIMS)
            w++
            r = core[b + C_NEXT] | 0
          }
          if (at !== null) at[slot] = r
        }
      }
    }
    if (w !== n) throw new Error(`row range [${from}, ${to}) yielded ${w} rows, expected ${n}`)
    return {
      version: SERIES_SNAPSHOT_VERSION,
      rows: n,
      rejected: 0,
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
      ...(dimsOut === undefined ? {} : { dims: dimsOut })
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
   * Rebuilds one store from several snapshots of disjoint row sets (e.g. the row-range parts
   * of incremental snapshots). `rejected` counters add up (plus `rejected`, for a counter kept
   * beside parts, which carry none). Same checks as {@link SeriesStore.fromSnapshot}.
   */
  static fromSnapshots(parts: readonly unknown[], rejected = 0): SeriesStore {
    const store = new SeriesStore()
    let rejectedTotal = rejected
    for (const part of parts) rejectedTotal += SeriesStore.#load(store, part)
    store.#rejected = rejectedTotal
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
    if (this.#days.get(dayKey)?.hours[hk - dayKey * 24] !== undefined) fail('hour given twice')
    // Every hour before the horizon is coarse: this one becomes so, then takes its aggregate.
    if (hk + 1 > this.#coarseBefore) this.#coarseBefore = hk + 1
    this.addHour(hk, { totals, sketch })
  }

  /** Records one snapshot's rows into `store`; returns its `rejected` counter. */
  static #load(store: SeriesStore, data: unknown): number {
    const fail = (why: string): never => {
      throw new Error(`invalid SeriesStore snapshot: ${why}`)
    }
    if (typeof data !== 'object' || data === null) fail('not an object')
    const d = data as Record<string, unknown>
    if (d.version !== 3 && d.version !== 2 && d.version !== 1) {
      fail(`unsupported version ${String(d.version)} (this build reads versions 1 to ${SERIES_SNAPSHOT_VERSION})`)
    }
    if (d.version !== 1) {
      if (!Array.isArray(d.coarse)) fail('coarse must be an array')
      for (const [i, c] of (d.coarse as unknown[]).entries()) store.#loadCoarse(c, (why) => fail(`coarse hour ${i}: ${why}`))
    } else if (d.coarse !== undefined) fail('coarse needs version 2')
    if (d.dims !== undefined && d.version !== 3) fail('dims needs version 3')
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
    let dims: ArrayLike<number> | null = null
    if (d.dims !== undefined) {
      const ok = Array.isArray(d.dims) || (ArrayBuffer.isView(d.dims) && !(d.dims instanceof DataView))
      if (!ok || (d.dims as ArrayLike<number>).length !== (n as number) * DIMS) fail(`column dims must hold ${DIMS} words per row`)
      dims = d.dims as ArrayLike<number>
    }
    const rowDims: RowDims = { user: 0, session: 0, attrs: 0 }
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
      for (let f = 0; f < NUM_VALUES; f++) row[VALUE_FIELDS[f]] = vals[f][i]
      row.error = flag(error[i], 'error', i)
      row.unpriced = flag(unpriced[i], 'unpriced', i)
      if (dims !== null) {
        rowDims.user = dims[i * DIMS]
        rowDims.session = dims[i * DIMS + 1]
        rowDims.attrs = dims[i * DIMS + 2]
      }
      if (!store.record(row, dims === null ? undefined : rowDims)) fail(`row ${i} breaks the Row contract`)
    }
    return rejected as number
  }

  /**
   * A store that keeps no rows: every hour is coarse from the start, so each recorded row
   * only adds to its hour's and day's totals and sketch. Queries on it are exact for ranges
   * aligned to hours (the all-models rollup that queries over every series use).
   */
  static hoursOnly(): SeriesStore {
    const store = new SeriesStore()
    store.#coarseBefore = Infinity
    return store
  }

  /** Calls `fn` with every hour's key (floor(ts / HOUR_MS)) and aggregate, ascending; read only. */
  forEachHour(fn: (hourKey: number, agg: Aggregate) => void): void {
    for (const dayKey of this.#dayKeys) {
      const day = this.#days.get(dayKey) as DayNode
      for (let h = 0; h < 24; h++) {
        const hour = day.hours[h]
        if (hour !== undefined) fn(dayKey * 24 + h, hour)
      }
    }
  }

  /**
   * Adds a whole hour's aggregate (e.g. another store's, from {@link SeriesStore.forEachHour})
   * into hour `hourKey` and its day. Only for hours this store keeps as aggregates (a
   * {@link SeriesStore.hoursOnly} store, or hours before its horizon): throws RangeError
   * otherwise, since rows would then disagree with their hour.
   */
  addHour(hourKey: number, agg: Aggregate): void {
    if (!Number.isSafeInteger(hourKey) || Math.abs(hourKey * HOUR_MS) > MAX_TIMESTAMP_MS || hourKey >= this.#coarseBefore) {
      throw new RangeError(`hour ${hourKey} is not an aggregate-only hour of this store`)
    }
    const n = agg.totals.requests
    if (n === 0) return
    const dayKey = floorDiv(hourKey, 24)
    const day = this.#days.get(dayKey) ?? this.#newDay(dayKey)
    const h = hourKey - dayKey * 24
    let hour = day.hours[h]
    if (hour === undefined) {
      hour = { totals: createTotals(), sketch: new LatencySketch(), minutes: null }
      day.hours[h] = hour
      this.#coarseHours++
    }
    mergeInto(hour, agg)
    mergeInto(day, agg)
    this.#coarseRows += n
    const hStart = hourKey * HOUR_MS
    if (hStart < this.#minTs) this.#minTs = hStart
    if (hStart + HOUR_MS - 1 > this.#maxTs) this.#maxTs = hStart + HOUR_MS - 1
  }
}

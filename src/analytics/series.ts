/**
 * SeriesStore: every row of one series (the caller keeps one per model + provider) under a
 * day / hour / minute index with pre-aggregates, answering any range exactly; and retention,
 * which turns old hours *coarse*.
 *
 * One term: a **coarse hour** is an hour kept only as its aggregate (Totals + latency sketch),
 * without its rows. Retention *folds* an hour (makes it coarse); a row recorded late into a
 * coarse hour only adds to the aggregate; a {@link SeriesStore.coarseOnly} store has only
 * coarse hours; {@link SeriesStore.coarseBefore} is the time before which every hour is
 * coarse. The snapshot keeps the coarse hours in its `coarse` field.
 *
 * Deletes: {@link SeriesStore.forget} removes rows by their seq and recomputes every minute, hour
 * and day aggregate they were in from the rows left (so the store answers as one that never
 * recorded them); a coarse hour has no rows to find by seq, so an event there is taken out of
 * its aggregates by {@link SeriesStore.subtractCoarse} instead (counts and sums exact).
 *
 * Re-pricing (reprice.ts): {@link SeriesStore.planReprice} finds the rows of the events whose
 * cost changes (and the coarse hours' before → after) without changing anything;
 * {@link SeriesStore.applyReprice} then sets the rows' cost words and shifts the minute, hour
 * and day totals in one step (sketches unchanged: a re-price changes no latency).
 *
 * The other jobs live beside it: aggregate.ts (Aggregate and its helpers), row-store.ts (the
 * packed row codec and the per-minute row lists), series-snapshot.ts (the snapshot codec).
 * What other modules imported from here is re-exported below.
 */
import type { Row } from './row.js'
import type { RowDims, RowVisitor } from './row-store.js'
import type { SeriesSnapshot } from './series-snapshot.js'
import { addRow, addValues, createAggregate, mergeInto, subtractAggregate, type Aggregate, type BucketSum, type TimeBucket } from './aggregate.js'
import { isValidRow, MAX_TIMESTAMP_MS } from './row.js'
import { MAX_ROWS, readPacked, RowStore } from './row-store.js'
import { hourOrder, isPacked, PackedBuilder, packedColumns, rowOf, scratchRow, sketchOf, snapshotColumns, SnapshotBuilder, type PackedColumns, type PackedSeriesPart, type SnapshotColumns } from './series-snapshot.js'
import { DiscardSketch, LatencySketch } from './sketch.js'
import { lowerBound } from './sorted.js'
import { DAY_MS, floorDiv, HOUR_MS, MINUTE_MS } from './time.js'
import { addRowValues, cloneTotals, createTotals, mergeTotals, recordTotals, subtractTotals, type Totals } from './totals.js'
import { addDelta, byMinute, emptyPlan, planRow, type CostColumns, type Deltas, type RepricePlan } from './reprice.js'

export { BucketSum, createAggregate, mergeInto, mergeTimeseries, type Aggregate, type TimeBucket } from './aggregate.js'
export type { RowDims, RowVisitor } from './row-store.js'
export { isPacked, PACKED_SNAPSHOT_VERSION, SERIES_SNAPSHOT_VERSION, type CoarseHour, type PackedSeriesPart, type SeriesPart, type SeriesSnapshot } from './series-snapshot.js'

/**
 * Options of {@link SeriesStore.toSnapshotRows}: `coarse` adds every coarse hour; `cursor`, shared
 * by the calls copying one range in slices, lets each minute's walk resume where it stopped.
 */
export interface SnapshotRowsOptions {
  coarse?: boolean
  cursor?: { at: Int32Array | null }
}

/** What {@link SeriesStore.retain} is asked to keep raw. */
export interface RetentionPolicy {
  /** Hours starting before this (epoch ms; rounded down to its hour) turn coarse. -Infinity: none by age. */
  before: number
  /**
   * Most raw rows to keep (0 = no limit). Past 1.25 × this, the oldest hours (by event time)
   * before the hour of `now` turn coarse until at most this many rows are left.
   */
  maxRows: number
  /** Now (epoch ms): the hour holding it, and later ones, never turn coarse by `maxRows`. */
  now: number
}

/**
 * A minute keeps its own Totals + sketch only once it holds this many rows.
 * Below it, answering a whole minute from its raw rows costs at most as much as
 * a sketch merge, and an Aggregate per sparse minute (~600 bytes) would dominate
 * memory at a few events per minute.
 */
export const MINUTE_AGGREGATE_THRESHOLD = 64

/** Days spanned (in hours) past which a series keeps no running sums of its hours' totals (80 bytes an hour). */
export const PREFIX_MAX_HOURS = 24 * 400

/** Words per hour boundary in the running sums: the ten fields of Totals. */
const TOTAL_FIELDS = 10

/** Rows recorded out of time order below which {@link SeriesStore.settle} leaves the layout as it is. */
export const SETTLE_MIN_ROWS = 4096

/** Hour of a day: aggregate of its rows plus the minute slots holding them. */
interface HourNode extends Aggregate {
  /**
   * minutes[m] = slot + 1 of minute m of the hour, 0 when it has no rows; null once the hour
   * is coarse: its rows are gone, its totals and sketch stay exact.
   */
  minutes: Int32Array | null
  /** A coarse hour's seqs taken out by {@link SeriesStore.subtractCoarse} (so taking one out twice is a no-op). */
  forgotten?: number[]
  /**
   * Ids of the re-prices applied to the hour (see {@link SeriesStore.applyReprice}): a coarse
   * hour applies each once. Kept on a raw hour too, so a fold after a re-price keeps them.
   */
  repriced?: string[]
}

/** Day: aggregate of its rows plus its hours (undefined when empty). */
interface DayNode extends Aggregate {
  hours: (HourNode | undefined)[]
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
 *                          └─► HourNode { totals, sketch, minutes: Int32Array(60) → slot+1 | null (coarse) }
 *                                 └─► minute slot: a RowStore list, row count or optional Aggregate
 *                                        └─► rows: singly linked list through chunked columns
 * ```
 * Raw rows live in a {@link RowStore} (row-store.ts: 24 bytes per typical row, exact escapes
 * for values that do not fit), one list per minute slot. A row's full timestamp is its
 * minute's start + the offset the row store keeps, the minute being known from the path that
 * reached it.
 *
 * A range decomposes into whole days, whole hours at the edges of partial days,
 * whole minutes at the edges of partial hours, and raw rows of at most two
 * partial minutes, so {@link SeriesStore.aggregate} touches
 * O(log days + days in range + 2·24 hours + 2·60 minutes) nodes plus the rows of
 * ≤ 2 minutes (and of whole edge minutes below {@link MINUTE_AGGREGATE_THRESHOLD}).
 *
 * Retention ({@link SeriesStore.retain}) folds old hours: they become coarse hours, their
 * rows and minute slots dropped, their (and their day's) Totals and sketch kept, so
 * hour-aligned ranges stay exact and a coarse hour's rows count as at its start.
 *
 * Invariants: every node's Totals/sketch equal those of exactly the rows below
 * it (for a coarse hour: of the rows it folded or took in); every hour before
 * {@link SeriesStore.coarseBefore} is coarse, every later one holds its rows;
 * `#dayKeys` is strictly ascending and equals the key set of `#days`;
 * sums are exact while each stays below 2^53 (see totals.ts).
 */
export class SeriesStore {
  #days = new Map<number, DayNode>()
  #dayKeys: number[] = []

  /** The raw rows, one list per minute slot (slot = list id). */
  #rows = new RowStore()
  /**
   * Per minute slot: its row count while it is below {@link MINUTE_AGGREGATE_THRESHOLD}; once
   * it has its own Aggregate, -(index + 1) into #minuteAggs (the count is no longer needed).
   * Grown with the slots (see #newMinuteSlot).
   */
  #mState: Int32Array = new Int32Array(0)
  #minuteAggs: Aggregate[] = []

  #minTs = Infinity
  #maxTs = -Infinity
  /** Hours with a key below this are coarse: a row recorded there only updates aggregates. */
  #coarseBeforeHour = -Infinity
  #coarseHours = 0
  /** Rows counted in coarse hours only (folded, or recorded late into a coarse hour). */
  #coarseRows = 0
  #rejected = 0
  #scanned = 0
  /**
   * Rows recorded, since the rows were last laid out in time order, more than a minute before
   * the newest row (arrival out of time order): a minute's rows are then scattered over the
   * chunks, and reading an edge minute costs a cache miss per row. See {@link SeriesStore.settle}.
   */
  #scattered = 0
  /**
   * Totals-only reads (cost breakdowns): running sums of the hours' totals, TOTAL_FIELDS words
   * per hour boundary — row i holds the totals of every hour in [#prefixBase, #prefixBase + i) —
   * so the whole hours of a range cost one subtraction instead of a walk over day and hour
   * nodes (50 series × ~40 nodes per cost query, a cache miss each). Built on the first such
   * read; rows from hour key #prefixStale on are stale (a row recorded there), the whole of it
   * when #gen moved (any other change of totals bumps #gen).
   */
  #prefix: Float64Array | null = null
  #prefixBase = 0
  #prefixHours = 0
  #prefixGen = -1
  #prefixStale = Infinity
  /**
   * Bumped by every change that could make a re-price plan made before wrong (a fold, a delete,
   * a compaction, another re-price, a coarse hour set or shifted): such a plan is stale. Not by
   * {@link SeriesStore.record}: an append neither renumbers rows nor changes a planned row, so a
   * plan stays valid while events keep coming (see {@link SeriesStore.planReprice}).
   */
  #gen = 0

  /** Number of raw rows retained (rows of coarse hours are not counted; nor rows forgotten). */
  get size(): number {
    return this.#rows.live
  }

  /**
   * Row indexes in use: {@link SeriesStore.size} plus the holes rows removed by
   * {@link SeriesStore.forget} left (until a compaction renumbers them). The bound of
   * {@link SeriesStore.toSnapshotRows}' ranges; rows recorded after a cut at `rowEnd` are [rowEnd, …).
   */
  get rowEnd(): number {
    return this.#rows.size
  }

  /** Rows counted only in coarse hours (see {@link SeriesStore.retain}). */
  get coarseRows(): number {
    return this.#coarseRows
  }

  /** Coarse hours held (kept as totals + sketch, without rows). */
  get coarseHours(): number {
    return this.#coarseHours
  }

  /**
   * Every hour starting before this (epoch ms) is coarse; -Infinity when none is.
   * Invariant: hours at or after it hold their rows.
   */
  get coarseBefore(): number {
    return this.#coarseBeforeHour === -Infinity ? -Infinity : this.#coarseBeforeHour * HOUR_MS
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

  /** Whether any row holds a dimension word. */
  get hasDims(): boolean {
    return this.#rows.hasDims
  }

  /**
   * Smallest and largest `ts` seen, or null when empty. After a restore (or once a delete
   * recomputed them), a coarse hour counts as its first and last millisecond (its rows' own
   * times are not kept).
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
    if (!isValidRow(row) || this.#rows.size >= MAX_ROWS) {
      this.#rejected += 1
      return false
    }
    const ts = row.ts
    const minuteKey = floorDiv(ts, MINUTE_MS)
    const hourKey = floorDiv(minuteKey, 60)
    const dayKey = floorDiv(hourKey, 24)
    if (hourKey < this.#prefixStale) this.#prefixStale = hourKey

    const day = this.#days.get(dayKey) ?? this.#newDay(dayKey)
    const h = hourKey - dayKey * 24
    let hour = day.hours[h]
    if (hour === undefined) {
      const coarse = hourKey < this.#coarseBeforeHour
      hour = { totals: createTotals(), sketch: new LatencySketch(), minutes: coarse ? null : new Int32Array(60) }
      day.hours[h] = hour
      if (coarse) this.#coarseHours++
    }
    // More than a minute behind the newest row: its minute's rows end up apart in memory.
    const late = ts < this.#maxTs - MINUTE_MS
    if (ts < this.#minTs) this.#minTs = ts
    if (ts > this.#maxTs) this.#maxTs = ts
    if (hour.minutes === null) {
      // A coarse hour: exact at hour resolution, no row kept.
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

    const rows = this.#rows
    if (late) this.#scattered++
    rows.append(row, ts - minuteKey * MINUTE_MS, slot, dims)
    addRow(day, row)
    addRow(hour, row)
    const state = this.#mState[slot]
    if (state < 0) {
      addRow(this.#minuteAggs[-state - 1], row)
    } else if (state + 1 === MINUTE_AGGREGATE_THRESHOLD) {
      const a = createAggregate()
      this.#scanned += rows.sum(slot, 0, MINUTE_MS, a)
      this.#minuteAggs.push(a)
      this.#mState[slot] = -this.#minuteAggs.length
    } else {
      this.#mState[slot] = state + 1
    }
    return true
  }

  /**
   * Retention: folds hours, which makes them coarse — their rows and minute data are dropped,
   * their totals and latency sketch (and so their day's) stay exact. Every hour before
   * `policy.before` (rounded down to its hour) is folded, and rows recorded there later are
   * counted into the coarse hour without a row. With `maxRows`, once more than 1.25 × `maxRows`
   * raw rows are held, the oldest hours before the hour of `now` are folded until at most
   * `maxRows` are left (the slack keeps the O(rows) compaction amortised O(1) per row).
   *
   * A query then counts a coarse hour whole when its start is inside the range: ranges
   * aligned to hours stay exact; inside a coarse hour, every row counts as at the hour's start.
   * Folding renumbers the rows (see {@link SeriesStore.toSnapshotRows}). Returns rows folded.
   */
  retain(policy: RetentionPolicy): number {
    const byAge = policy.before === -Infinity ? -Infinity : floorDiv(Math.max(-MAX_TIMESTAMP_MS, Math.min(MAX_TIMESTAMP_MS, Math.floor(policy.before))), HOUR_MS)
    if (byAge > this.#coarseBeforeHour) this.#coarseBeforeHour = byAge
    const fold: Array<[day: DayNode, dayKey: number, h: number]> = []
    let left = this.#rows.live
    const nowHour = floorDiv(Math.floor(policy.now), HOUR_MS)
    const byCount = policy.maxRows > 0 && left > policy.maxRows + Math.max(1, policy.maxRows >> 2)
    // Ascending by time: once an hour is neither old nor foldable by count, no later one is.
    scan: for (const dayKey of this.#dayKeys) {
      const day = this.#days.get(dayKey) as DayNode
      for (let h = 0; h < 24; h++) {
        const hour = day.hours[h]
        if (hour === undefined || hour.minutes === null) continue
        const hourKey = dayKey * 24 + h
        const foldable = hourKey < this.#coarseBeforeHour || (byCount && left > policy.maxRows && hourKey < nowHour)
        if (!foldable) break scan
        fold.push([day, dayKey, h])
        left -= hour.totals.requests
      }
    }
    if (fold.length === 0) return 0
    this.#gen++
    let folded = 0
    for (const [day, dayKey, h] of fold) {
      const hour = day.hours[h] as HourNode
      hour.minutes = null
      folded += hour.totals.requests
      this.#coarseHours++
      const hourKey = dayKey * 24 + h
      if (hourKey + 1 > this.#coarseBeforeHour) this.#coarseBeforeHour = hourKey + 1
    }
    this.#coarseRows += folded
    this.#compactRows()
    return folded
  }

  /**
   * Lays the rows out again in time order (minute by minute, each minute's rows adjacent) when
   * at least {@link SETTLE_MIN_ROWS} and an eighth of the rows held arrived out of time order
   * since the last layout, so queries read a range's edge minutes from contiguous memory instead
   * of one cache miss per row. Renumbers the rows (as a retention fold does: the owner's
   * snapshot parts must be rewritten) and makes a re-price plan stale. Returns whether it did.
   * O(rows) when it does; the owner calls it when idle, so at most O(1) amortised per row.
   */
  settle(): boolean {
    if (this.#scattered < SETTLE_MIN_ROWS || this.#scattered * 8 < this.#rows.live) return false
    this.#gen++
    this.#compactRows()
    return true
  }

  /** Rows recorded out of time order since the rows were last laid out (see {@link SeriesStore.settle}). */
  get scatteredRows(): number {
    return this.#scattered
  }

  /** Rebuilds row and minute storage with only the rows of hours that are not coarse (and no removed rows). */
  #compactRows(): void {
    this.#scattered = 0
    const old = this.#rows
    const mState = this.#mState
    const minuteAggs = this.#minuteAggs
    this.#rows = new RowStore()
    this.#mState = new Int32Array(0)
    this.#minuteAggs = []
    const scratch: number[] = []
    for (const dayKey of this.#dayKeys) {
      const day = this.#days.get(dayKey) as DayNode
      for (const hour of day.hours) {
        if (hour === undefined || hour.minutes === null) continue
        for (let m = 0; m < 60; m++) {
          const was = hour.minutes[m] - 1
          if (was < 0) continue
          const slot = this.#newMinuteSlot()
          hour.minutes[m] = slot + 1
          this.#rows.copyList(old, was, slot, scratch)
          const state = mState[was]
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

  /**
   * Deletes rows by their event's seq: every raw row whose seq is in `seqs` (and, with `range`,
   * whose `ts` is in [range.start, range.end)) is unlinked, and the minute, hour and day
   * aggregates it was counted in are RECOMPUTED from the rows left — not decremented — so
   * totals, sketches and their extremes equal those of a store that never recorded it. An hour
   * or day left without rows is dropped. `removed`, when given, sees each removed row first
   * (values, flags, dimension words, ts, seq).
   *
   * Where rows are looked for: given a Map (seq → the event's ts), only the minutes of those
   * times (a row whose ts is not the one given is not found): O(rows of those minutes); given
   * a Set, every minute of `range` (or of the store): O(rows held there).
   *
   * Coarse hours are not reached: their rows are gone, so no seq can be found there (see
   * {@link SeriesStore.subtractCoarse}). Idempotent: a seq with no row is a no-op.
   * Removed rows leave holes in the row numbering (see {@link SeriesStore.rowEnd}) until holes
   * reach a quarter of the live rows; then the rows are compacted, renumbering them (as a
   * retention fold does). Returns the rows removed.
   *
   * Cost: a changed minute's aggregate is rebuilt from its rows; a changed hour and day take the
   * removed rows out (totals exact; sketch bucket counts exact) and, only when a removed latency
   * was their smallest or largest, find their exact new extremes from what they hold — so the
   * result is the same as a rebuild from the rows left, at O(removed rows + buckets).
   */
  forget(seqs: ReadonlySet<number> | ReadonlyMap<number, number>, range?: { start: number; end: number }, removed?: RowVisitor): number {
    if (seqs.size === 0 || this.#rows.live === 0) return 0
    let minSeq = Infinity
    let maxSeq = -Infinity
    for (const q of seqs.keys()) {
      if (q < minSeq) minSeq = q
      if (q > maxSeq) maxSeq = q
    }
    const [s, e] = range === undefined ? [-MAX_TIMESTAMP_MS, MAX_TIMESTAMP_MS + 1] : normalizeRange(range.start, range.end)
    if (s >= e) return 0
    const rows = this.#rows
    let total = 0
    let edge = false
    /** The removed rows by hour key (what each changed hour and its day lose). */
    const gone = new Map<number, Aggregate>()
    const seen: RowVisitor = (v, flags, u, se, a, ts, seq) => {
      if (ts === this.#minTs || ts === this.#maxTs) edge = true
      const hourKey = floorDiv(ts, HOUR_MS)
      let agg = gone.get(hourKey)
      if (agg === undefined) gone.set(hourKey, (agg = createAggregate()))
      addValues(agg, v, flags)
      removed?.(v, flags, u, se, a, ts, seq)
    }
    /** Changed hours, by day: updated once each at the end. */
    const changed = new Map<number, Set<number>>()
    const minute = (dayKey: number, h: number, hour: HourNode, m: number): void => {
      const slot = (hour.minutes as Int32Array)[m] - 1
      if (slot < 0) return
      const mStart = (dayKey * 24 + h) * HOUR_MS + m * MINUTE_MS
      const n = rows.remove(slot, Math.max(0, s - mStart), Math.min(MINUTE_MS, e - mStart), mStart, seqs, minSeq, maxSeq, seen)
      if (n === 0) return
      total += n
      const hours = changed.get(dayKey) ?? new Set<number>()
      changed.set(dayKey, hours.add(h))
      const state = this.#mState[slot]
      if (state >= 0) {
        this.#mState[slot] = state - n
        if (state === n) (hour.minutes as Int32Array)[m] = 0
        return
      }
      const agg = createAggregate()
      rows.sum(slot, 0, MINUTE_MS, agg)
      if (agg.totals.requests > 0) {
        this.#minuteAggs[-state - 1] = agg
        return
      }
      // The slot is left empty and unused (compaction drops it); its aggregate goes.
      this.#mState[slot] = 0
      this.#minuteAggs[-state - 1] = createAggregate()
      ;(hour.minutes as Int32Array)[m] = 0
    }
    if (seqs instanceof Map) {
      const minutes = new Set<number>()
      for (const ts of seqs.values()) if (Number.isSafeInteger(ts) && ts >= s && ts < e) minutes.add(floorDiv(ts, MINUTE_MS))
      for (const minuteKey of minutes) {
        const hourKey = floorDiv(minuteKey, 60)
        const dayKey = floorDiv(hourKey, 24)
        const hour = this.#days.get(dayKey)?.hours[hourKey - dayKey * 24]
        if (hour !== undefined && hour.minutes !== null) minute(dayKey, hourKey - dayKey * 24, hour, minuteKey - hourKey * 60)
      }
    } else {
      const keys = this.#dayKeys
      for (let k = lowerBound(keys, floorDiv(s, DAY_MS)); k < keys.length; k++) {
        const dayKey = keys[k]
        const dStart = dayKey * DAY_MS
        if (dStart >= e) break
        const day = this.#days.get(dayKey) as DayNode
        for (let h = firstSub(dStart, HOUR_MS, s), lastH = lastSub(dStart, HOUR_MS, 24, e); h <= lastH; h++) {
          const hour = day.hours[h]
          if (hour === undefined || hour.minutes === null) continue
          const hStart = dStart + h * HOUR_MS
          for (let m = firstSub(hStart, MINUTE_MS, s), lastM = lastSub(hStart, MINUTE_MS, 60, e); m <= lastM; m++) minute(dayKey, h, hour, m)
        }
      }
    }
    if (total === 0) return 0
    this.#gen++
    const emptied: number[] = []
    for (const [dayKey, hours] of changed) {
      const day = this.#days.get(dayKey) as DayNode
      const dayGone = createAggregate()
      for (const h of hours) {
        const hour = day.hours[h] as HourNode
        const lost = gone.get(dayKey * 24 + h) as Aggregate
        mergeInto(dayGone, lost)
        if (lost.totals.requests === hour.totals.requests) {
          day.hours[h] = undefined
          continue
        }
        const ext = lost.sketch.min <= hour.sketch.min || lost.sketch.max >= hour.sketch.max ? this.#hourExtremes(dayKey * 24 + h, hour) : { min: hour.sketch.min, max: hour.sketch.max }
        // New objects: a timeseries bucket may share the old ones (read only).
        hour.totals = subtractTotals(cloneTotals(hour.totals), lost.totals)
        hour.sketch = hour.sketch.clone().subtract(lost.sketch, ext)
      }
      if (dayGone.totals.requests === day.totals.requests) {
        emptied.push(dayKey)
        continue
      }
      let ext = { min: day.sketch.min, max: day.sketch.max }
      if (dayGone.sketch.min <= ext.min || dayGone.sketch.max >= ext.max) {
        ext = { min: Infinity, max: -Infinity }
        for (const hour of day.hours) {
          if (hour === undefined) continue
          ext.min = Math.min(ext.min, hour.sketch.min)
          ext.max = Math.max(ext.max, hour.sketch.max)
        }
      }
      day.totals = subtractTotals(cloneTotals(day.totals), dayGone.totals)
      day.sketch = day.sketch.clone().subtract(dayGone.sketch, ext)
    }
    this.#dropDays(emptied)
    if (edge) this.#recomputeBounds()
    if (rows.dead * 4 >= rows.live) this.#compactRows()
    return total
  }

  /**
   * Takes one event out of the coarse hour holding `ts` and its day (the delete path for hours
   * retention folded, whose rows, and so seqs, are gone): `v` its values in RowVisitor order,
   * `flags` 1 error, 2 unpriced, `seq` its log position. Counts and sums are exact; the sketch
   * loses the event's bucket, so the extremes become those of the buckets left (within the
   * sketch's 1%). An hour or day left empty is dropped. Returns false, changing nothing, when
   * the hour is not coarse, `seq` was already taken out of it (so a re-applied delete is a
   * no-op), or the hour does not hold that much (it never counted the event).
   *
   * The caller must only pass events the hour counted: a coarse hour cannot tell which seqs it
   * holds (e.g. after a restart, events past the snapshot were replayed, or skipped if deleted).
   */
  subtractCoarse(ts: number, v: ArrayLike<number>, flags: number, seq: number): boolean {
    if (!Number.isSafeInteger(ts) || Math.abs(ts) > MAX_TIMESTAMP_MS) return false
    const hourKey = floorDiv(ts, HOUR_MS)
    const dayKey = floorDiv(hourKey, 24)
    const day = this.#days.get(dayKey)
    const hour = day?.hours[hourKey - dayKey * 24]
    if (day === undefined || hour === undefined || hour.minutes !== null) return false
    if (hour.forgotten?.includes(seq) === true) return false
    const one = createAggregate()
    const t = one.totals
    t.requests = 1
    addRowValues(t, v)
    t.errors = flags & 1
    t.unpriced = (flags >>> 1) & 1
    one.sketch.record(v[5])
    for (const k of Object.keys(t) as (keyof Totals)[]) if (!(hour.totals[k] >= t[k])) return false
    this.#gen++
    if (hour.totals.requests === 1) {
      day.hours[hourKey - dayKey * 24] = undefined
      this.#coarseHours--
    } else {
      subtractAggregate(hour, one)
      ;(hour.forgotten ??= []).push(seq)
    }
    this.#coarseRows--
    if (this.#recomputeDay(day)) this.#dropDays([dayKey])
    this.#recomputeBounds()
    return true
  }

  /**
   * Finds what re-pricing the entries `idx` of `c` (indexes; their seqs ascending) changes in
   * this store, changing nothing (see analytics/reprice.ts): each entry's row, looked for by
   * seq in the minute of its `ts` (a row whose cost and flag already are the new ones is left
   * out: re-applying changes nothing), or, when its hour is coarse and has not applied
   * re-price `id` yet, the hour's before → after. An entry found nowhere (not this series', or
   * deleted) is skipped. Pass the plan of an earlier call to add to it (slices of one
   * re-price); throws when the store changed since that plan was begun (rows appended do not
   * count: they leave every planned row and delta as it was, and an entry recorded after its
   * minute was planned is simply not in the plan). O(entries + rows of the minutes holding them).
   */
  planReprice(c: CostColumns, idx: ArrayLike<number>, id: string, plan: RepricePlan = emptyPlan(id, this.#gen, this.#minuteAggs.length)): RepricePlan {
    if (plan.gen !== this.#gen || plan.id !== id) throw new Error('re-price plan of another store state or id')
    const { order, minutes, starts } = byMinute(c, idx)
    const seqs = new Float64Array(order.length)
    for (let j = 0; j < order.length; j++) seqs[j] = c.seqs[order[j]]
    const rows = this.#rows
    for (let g = 0; g < minutes.length; g++) {
      const minuteKey = minutes[g]
      const from = starts[g]
      const to = starts[g + 1]
      if (!Number.isSafeInteger(minuteKey) || Math.abs(minuteKey * MINUTE_MS) > MAX_TIMESTAMP_MS) continue
      for (let j = from + 1; j < to; j++) if (!(seqs[j] > seqs[j - 1])) throw new RangeError(`re-price entries must have ascending seqs (seq ${seqs[j]} after ${seqs[j - 1]})`)
      const hourKey = floorDiv(minuteKey, 60)
      const dayKey = floorDiv(hourKey, 24)
      const hour = this.#days.get(dayKey)?.hours[hourKey - dayKey * 24]
      if (hour === undefined) continue
      if (hour.minutes === null) {
        if (hour.repriced?.includes(id) === true) continue
        for (let j = from; j < to; j++) {
          const k = order[j]
          addDelta(plan.coarse, hourKey, c.after[k] - c.before[k], c.afterUnpriced[k] - c.beforeUnpriced[k], 1)
        }
        plan.matched += to - from
        continue
      }
      // Marked even when no row is found: after a fold, a re-apply then skips the hour whole.
      addDelta(plan.hours, hourKey, 0, 0, 0)
      const slot = hour.minutes[minuteKey - hourKey * 60] - 1
      if (slot < 0) continue
      // The group's sums, added to the minute's and the hour's deltas once.
      let dCost = 0
      let dUnpriced = 0
      let changed = 0
      rows.locate(slot, seqs, from, to, (r, j) => {
        const k = order[j]
        plan.matched++
        const cost = c.after[k]
        const unpriced = c.afterUnpriced[k] === 1
        const was = rows.costOf(r)
        const wasUnpriced = rows.unpricedOf(r)
        if (was === cost && wasUnpriced === unpriced) return
        planRow(plan, r, cost, unpriced)
        dCost += cost - was
        dUnpriced += (unpriced ? 1 : 0) - (wasUnpriced ? 1 : 0)
        changed++
      })
      if (changed === 0) continue
      // Only a minute holding its own aggregate now: one that gets it from rows appended later
      // (summed at old costs) is summed again at the apply (see RepricePlan.aggs).
      if (this.#mState[slot] < 0) addDelta(plan.minutes, slot, dCost, dUnpriced, changed)
      addDelta(plan.hours, hourKey, dCost, dUnpriced, changed)
    }
    return plan
  }

  /** Whether `plan` (of {@link SeriesStore.planReprice}) is still valid: nothing but appends since it was begun. */
  isCurrent(plan: RepricePlan): boolean {
    return plan.gen === this.#gen
  }

  /**
   * Writes the next (up to) `most` rows of `plan` into copies of their row chunks, changing
   * nothing readers see: {@link SeriesStore.applyReprice} then swaps the copies in (a pointer
   * per chunk) instead of writing each row, so the step readers cannot interleave with is
   * O(chunks + hours), not O(rows). Call after the plan is complete; returns the rows left.
   */
  stageReprice(plan: RepricePlan, most: number): number {
    if (plan.gen !== this.#gen) throw new Error('re-price plan of another store state or id')
    const to = Math.min(plan.n, plan.stagedTo + most)
    plan.staged = this.#rows.stageCosts(plan.rows, plan.costs, plan.unpriced, plan.stagedTo, to, plan.staged)
    plan.stagedTo = to
    return plan.n - to
  }

  /**
   * Applies a plan of {@link SeriesStore.planReprice} in one step: sets the rows' cost words
   * and flags (swapping in the chunks {@link SeriesStore.stageReprice} prepared, writing the rest), adds each delta to the minute aggregates, hours and days that hold them (the
   * sketches stay: a re-price changes no latency), and marks every hour reached with the
   * re-price's id. A coarse hour whose totals could not have counted the entries' `before`
   * (a cost or unpriced count would go below zero or past its requests) is left unchanged.
   * Returns null, changing nothing, when the store changed since the plan was begun (plan
   * again); else the rows set plus the coarse-hour entries applied, and the delta of every hour
   * whose totals changed (the rollup adds those: {@link SeriesStore.shiftHours}).
   */
  applyReprice(plan: RepricePlan): { changed: number; shifts: Deltas } | null {
    if (plan.gen !== this.#gen) return null
    this.#gen++
    const rows = this.#rows
    if (plan.staged !== undefined) rows.commitCosts(plan.staged)
    for (let i = plan.stagedTo; i < plan.n; i++) rows.setCost(plan.rows[i], plan.costs[i], plan.unpriced[i] === 1)
    for (const [slot, d] of plan.minutes) {
      const state = this.#mState[slot]
      if (state >= 0 || -state - 1 >= plan.aggs) continue
      const t = this.#minuteAggs[-state - 1].totals
      t.costNanos += d.cost
      t.unpriced += d.unpriced
    }
    if (this.#minuteAggs.length > plan.aggs) {
      // Aggregates made since the plan began (appends; anything else would have made the plan
      // stale) were summed from rows at their old costs: summed again, from the rows as set now.
      // Rare (a minute crossing the threshold meanwhile); O(minute slots) to find them.
      const mState = this.#mState
      for (let slot = 0; slot < mState.length; slot++) {
        const k = -mState[slot] - 1
        if (k < plan.aggs) continue
        const a = createAggregate()
        this.#scanned += rows.sum(slot, 0, MINUTE_MS, a)
        this.#minuteAggs[k] = a
      }
    }
    let changed = plan.n
    const shifts: Deltas = new Map()
    const mark = (hour: HourNode): void => {
      if (hour.repriced === undefined) hour.repriced = [plan.id]
      else if (!hour.repriced.includes(plan.id)) hour.repriced.push(plan.id)
    }
    for (const [hourKey, d] of plan.hours) {
      mark(this.#hourAt(hourKey) as HourNode)
      if (d.cost !== 0 || d.unpriced !== 0) shifts.set(hourKey, d)
    }
    for (const [hourKey, d] of plan.coarse) {
      const hour = this.#hourAt(hourKey) as HourNode
      if (!SeriesStore.#canShift(hour, d)) continue
      mark(hour)
      changed += d.n
      if (d.cost !== 0 || d.unpriced !== 0) shifts.set(hourKey, d)
    }
    this.#shift(shifts)
    return { changed, shifts }
  }

  /**
   * Adds each delta's cost and unpriced count to coarse hour `hourKey` and its day: the
   * re-price of a store without rows (the rollup, by the sum of its series' shifts). An hour
   * not held, not coarse, or whose totals would go out of range (below zero, more unpriced than
   * requests) is skipped. Returns the hours shifted.
   */
  shiftHours(deltas: Deltas): number {
    const ok: Deltas = new Map()
    for (const [hourKey, d] of deltas) {
      const hour = Number.isSafeInteger(hourKey) ? this.#hourAt(hourKey) : undefined
      if (hour !== undefined && hour.minutes === null && SeriesStore.#canShift(hour, d)) ok.set(hourKey, d)
    }
    if (ok.size > 0) this.#gen++
    this.#shift(ok)
    return ok.size
  }

  /** Whether `hour` can take delta `d` (its cost stays >= 0, its unpriced count in [0, requests]). */
  static #canShift(hour: HourNode, d: { cost: number; unpriced: number }): boolean {
    const t = hour.totals
    return t.costNanos + d.cost >= 0 && t.unpriced + d.unpriced >= 0 && t.unpriced + d.unpriced <= t.requests
  }

  /** Adds each delta to its hour (held) and their days, as new Totals objects (a timeseries bucket may share the old ones, read only). */
  #shift(deltas: Deltas): void {
    const days: Deltas = new Map()
    const add = (a: Aggregate, d: { cost: number; unpriced: number }): void => {
      const t = cloneTotals(a.totals)
      t.costNanos += d.cost
      t.unpriced += d.unpriced
      a.totals = t
    }
    for (const [hourKey, d] of deltas) {
      if (d.cost === 0 && d.unpriced === 0) continue
      add(this.#hourAt(hourKey) as HourNode, d)
      addDelta(days, floorDiv(hourKey, 24), d.cost, d.unpriced, 0)
    }
    for (const [dayKey, d] of days) add(this.#days.get(dayKey) as DayNode, d)
  }

  /** Hour `hourKey`'s node, or undefined when not held. */
  #hourAt(hourKey: number): HourNode | undefined {
    const dayKey = floorDiv(hourKey, 24)
    return this.#days.get(dayKey)?.hours[hourKey - dayKey * 24]
  }

  /**
   * {@link SeriesStore.planReprice} then {@link SeriesStore.applyReprice}, in one step.
   * Returns what applyReprice does.
   */
  reprice(c: CostColumns, idx: ArrayLike<number>, id: string): { changed: number; shifts: Deltas } {
    return this.applyReprice(this.planReprice(c, idx, id)) as { changed: number; shifts: Deltas }
  }

  /**
   * Marks the dimension ids every raw row holds (see RowStore.markDims): what a delete checks
   * before blanking dictionary values. Rows of coarse hours are gone: they mark nothing.
   */
  markDims(users: Uint8Array, sessions: Uint8Array, attrs: Uint8Array): void {
    this.#rows.markDims(users, sessions, attrs)
  }

  /**
   * Read only: the aggregate of hour `hourKey` (floor(ts / HOUR_MS)), coarse or not, or
   * undefined when the hour holds nothing (the rollup rebuilds a changed hour from these).
   */
  hourAggregate(hourKey: number): Aggregate | undefined {
    const dayKey = floorDiv(hourKey, 24)
    return this.#days.get(dayKey)?.hours[hourKey - dayKey * 24]
  }

  /**
   * Replaces coarse hour `hourKey` with (a copy of) `agg`, or drops it when `agg` is null or
   * empty, and recomputes its day from its hours. Only for hours before
   * {@link SeriesStore.coarseBefore} (every hour of a {@link SeriesStore.coarseOnly} store, such as
   * the rollup); throws RangeError otherwise.
   */
  setHour(hourKey: number, agg: Aggregate | null): void {
    if (!Number.isSafeInteger(hourKey) || Math.abs(hourKey * HOUR_MS) > MAX_TIMESTAMP_MS || hourKey >= this.#coarseBeforeHour) {
      throw new RangeError(`hour ${hourKey} is not a coarse hour of this store`)
    }
    this.#gen++
    const dayKey = floorDiv(hourKey, 24)
    const h = hourKey - dayKey * 24
    const had = this.#days.get(dayKey)?.hours[h]
    if (had !== undefined) {
      this.#coarseRows -= had.totals.requests
      this.#coarseHours--
      ;(this.#days.get(dayKey) as DayNode).hours[h] = undefined
    }
    if (agg !== null && agg.totals.requests > 0) {
      const day = this.#days.get(dayKey) ?? this.#newDay(dayKey)
      day.hours[h] = { totals: createTotals(), sketch: new LatencySketch(), minutes: null }
      mergeInto(day.hours[h] as HourNode, agg)
      this.#coarseRows += agg.totals.requests
      this.#coarseHours++
    }
    const day = this.#days.get(dayKey)
    if (day !== undefined && this.#recomputeDay(day)) this.#dropDays([dayKey])
    this.#recomputeBounds()
  }

  /** Exact smallest and largest latency a raw hour holds (its minutes' aggregates, or their rows). */
  #hourExtremes(hourKey: number, hour: HourNode): { min: number; max: number } {
    const out = { min: Infinity, max: -Infinity }
    const minutes = hour.minutes as Int32Array
    for (let m = 0; m < 60; m++) {
      const slot = minutes[m] - 1
      if (slot < 0) continue
      const state = this.#mState[slot]
      if (state < 0) {
        const sk = this.#minuteAggs[-state - 1].sketch
        if (sk.count === 0) continue
        out.min = Math.min(out.min, sk.min)
        out.max = Math.max(out.max, sk.max)
        continue
      }
      this.#rows.visit(slot, 0, MINUTE_MS, hourKey * HOUR_MS + m * MINUTE_MS, (v) => {
        if (v[5] < out.min) out.min = v[5]
        if (v[5] > out.max) out.max = v[5]
      })
    }
    return out
  }

  /** Sets a day's aggregate to the merge of its hours; true when it has none left. */
  #recomputeDay(day: DayNode): boolean {
    const agg = createAggregate()
    let any = false
    for (const hour of day.hours) {
      if (hour === undefined) continue
      mergeInto(agg, hour)
      any = true
    }
    day.totals = agg.totals
    day.sketch = agg.sketch
    return !any
  }

  /** Removes days (keys) left without hours. */
  #dropDays(dayKeys: readonly number[]): void {
    if (dayKeys.length === 0) return
    for (const k of dayKeys) this.#days.delete(k)
    const gone = new Set(dayKeys)
    this.#dayKeys = this.#dayKeys.filter((k) => !gone.has(k))
  }

  /**
   * Smallest and largest ts again, after rows or hours went: from the first and last hour held
   * (a coarse one counts as its first and last millisecond; a raw one by its rows' times).
   */
  #recomputeBounds(): void {
    this.#minTs = Infinity
    this.#maxTs = -Infinity
    const keys = this.#dayKeys
    const edge = (dayKey: number, h: number, hour: HourNode): void => {
      const hStart = (dayKey * 24 + h) * HOUR_MS
      if (hour.minutes === null) {
        this.#minTs = Math.min(this.#minTs, hStart)
        this.#maxTs = Math.max(this.#maxTs, hStart + HOUR_MS - 1)
        return
      }
      for (let m = 0; m < 60; m++) {
        const slot = hour.minutes[m] - 1
        if (slot < 0) continue
        this.#rows.visit(slot, 0, MINUTE_MS, hStart + m * MINUTE_MS, (_v, _f, _u, _s, _a, ts) => {
          if (ts < this.#minTs) this.#minTs = ts
          if (ts > this.#maxTs) this.#maxTs = ts
        })
      }
    }
    if (keys.length === 0) return
    const first = this.#days.get(keys[0]) as DayNode
    const h0 = first.hours.findIndex((x) => x !== undefined)
    edge(keys[0], h0, first.hours[h0] as HourNode)
    const last = this.#days.get(keys[keys.length - 1]) as DayNode
    const h1 = last.hours.findLastIndex((x) => x !== undefined)
    edge(keys[keys.length - 1], h1, last.hours[h1] as HourNode)
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

  /** A new minute slot: a new row list, and its state word (row count 0). */
  #newMinuteSlot(): number {
    const slot = this.#rows.newList()
    if (slot === this.#mState.length) {
      // Grown as the row store grows its list heads: x1.5, amortised O(1).
      const state = new Int32Array(Math.max(16, slot + (slot >>> 1)))
      state.set(this.#mState)
      this.#mState = state
    }
    return slot
  }

  /**
   * Visits every raw row with `start <= ts < end` (any order), with its values and dimension
   * words: what filtered queries and breakdowns read, since the pre-aggregates hold every row
   * of their unit regardless of dimensions. O(rows in range + minutes held in range).
   * Returns false, having visited nothing, when the range holds a coarse hour (its rows, and
   * so their dimensions, are gone): the caller must answer otherwise.
   */
  scanRows(start: number, end: number, visit: RowVisitor): boolean {
    if (!this.rowsAvailable(start, end)) return false
    const [s, e] = normalizeRange(start, end)
    if (s >= e) return true
    const keys = this.#dayKeys
    const first = lowerBound(keys, floorDiv(s, DAY_MS))
    const rows = this.#rows
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
          scanned += rows.visit(slot, Math.max(0, s - mStart), Math.min(MINUTE_MS, e - mStart), mStart, visit)
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
    // Totals only (a discarding sketch): whole hours from the running sums, edges walked.
    if (into.sketch instanceof DiscardSketch) {
      const hs = Math.ceil(s / HOUR_MS)
      const he = Math.floor(e / HOUR_MS)
      if (he - hs >= 2 && this.#addWholeHours(hs, he, into.totals)) {
        this.#walk(s, hs * HOUR_MS, into)
        this.#walk(he * HOUR_MS, e, into)
        return into
      }
    }
    this.#walk(s, e, into)
    return into
  }

  /** The day, hour and minute walk of {@link SeriesStore.aggregate} over normalised [s, e). */
  #walk(s: number, e: number, into: Aggregate): void {
    if (s >= e) return
    const keys = this.#dayKeys
    for (let k = lowerBound(keys, floorDiv(s, DAY_MS)); k < keys.length; k++) {
      const dStart = keys[k] * DAY_MS
      if (dStart >= e) break
      this.#addDay(this.#days.get(keys[k]) as DayNode, dStart, s, e, into)
    }
  }

  /**
   * Adds the totals of the hours with keys in [hs, he) from the running sums (built or brought
   * up to date first); false, adding nothing, where the store keeps none (empty, or its days
   * span more than {@link PREFIX_MAX_HOURS}). Exact: integer sums below 2^53 subtract exactly.
   */
  #addWholeHours(hs: number, he: number, t: Totals): boolean {
    const p = this.#prefixFor()
    if (p === null) return false
    const a = Math.max(0, Math.min(this.#prefixHours, hs - this.#prefixBase)) * TOTAL_FIELDS
    const b = Math.max(0, Math.min(this.#prefixHours, he - this.#prefixBase)) * TOTAL_FIELDS
    if (b <= a) return true
    t.requests += p[b] - p[a]
    t.promptTokens += p[b + 1] - p[a + 1]
    t.completionTokens += p[b + 2] - p[a + 2]
    t.totalTokens += p[b + 3] - p[a + 3]
    t.cachedTokens += p[b + 4] - p[a + 4]
    t.reasoningTokens += p[b + 5] - p[a + 5]
    t.latencyUsSum += p[b + 6] - p[a + 6]
    t.costNanos += p[b + 7] - p[a + 7]
    t.errors += p[b + 8] - p[a + 8]
    t.unpriced += p[b + 9] - p[a + 9]
    return true
  }

  /** The running sums of the hours' totals, current; null where none is kept (see {@link SeriesStore.aggregate}). */
  #prefixFor(): Float64Array | null {
    const keys = this.#dayKeys
    if (keys.length === 0) return null
    const base = keys[0] * 24
    const hours = (keys[keys.length - 1] + 1) * 24 - base
    if (hours > PREFIX_MAX_HOURS) return null
    let from: number
    if (this.#prefix === null || this.#prefixGen !== this.#gen || base !== this.#prefixBase || hours !== this.#prefixHours) {
      this.#prefix = new Float64Array((hours + 1) * TOTAL_FIELDS)
      this.#prefixBase = base
      this.#prefixHours = hours
      this.#prefixGen = this.#gen
      from = 0
    } else if (this.#prefixStale === Infinity) {
      return this.#prefix
    } else {
      from = Math.max(0, this.#prefixStale - base)
    }
    this.#prefixStale = Infinity
    const p = this.#prefix
    for (let i = from; i < hours; i++) {
      const o = i * TOTAL_FIELDS
      const n = o + TOTAL_FIELDS
      const hourKey = base + i
      const dayKey = floorDiv(hourKey, 24)
      const t = this.#days.get(dayKey)?.hours[hourKey - dayKey * 24]?.totals
      if (t === undefined) {
        p.copyWithin(n, o, n)
        continue
      }
      p[n] = p[o] + t.requests
      p[n + 1] = p[o + 1] + t.promptTokens
      p[n + 2] = p[o + 2] + t.completionTokens
      p[n + 3] = p[o + 3] + t.totalTokens
      p[n + 4] = p[o + 4] + t.cachedTokens
      p[n + 5] = p[o + 5] + t.reasoningTokens
      p[n + 6] = p[o + 6] + t.latencyUsSum
      p[n + 7] = p[o + 7] + t.costNanos
      p[n + 8] = p[o + 8] + t.errors
      p[n + 9] = p[o + 9] + t.unpriced
    }
    return p
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
      else this.#scanned += this.#rows.sum(slot, 0, MINUTE_MS, acc)
      return
    }
    this.#scanned += this.#rows.sum(slot, Math.max(0, s - mStart), Math.min(MINUTE_MS, e - mStart), acc)
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
   * totals and sketch (no copy). With `into`, the buckets are added into that sum (several
   * series' buckets summed as they are walked, see {@link BucketSum}) and [] is returned.
   */
  timeseries(start: number, end: number, intervalMs: number, into?: BucketSum): TimeBucket[] {
    if (!Number.isSafeInteger(intervalMs) || intervalMs <= 0 || intervalMs % MINUTE_MS !== 0) {
      throw new RangeError(`intervalMs must be a positive multiple of ${MINUTE_MS}, got ${intervalMs}`)
    }
    const [s, e] = normalizeRange(start, end)
    const out: TimeBucket[] = []
    if (s >= e) return out
    if (into !== undefined) {
      // Summed with other series' buckets as the walk goes: no list of this series' own.
      this.#walkBuckets(s, e, intervalMs, (bStart) => into.add(bStart), (hStart, hour) => into.share(hStart, hour))
      return out
    }
    let cur: TimeBucket | undefined
    const bucketFor = (bStart: number): TimeBucket => {
      if (cur === undefined || cur.start !== bStart) {
        // A unit with rows only outside [s, e) leaves an empty bucket: drop it.
        if (cur !== undefined && cur.totals.requests > 0) out.push(cur)
        cur = { start: bStart, totals: createTotals(), sketch: new LatencySketch() }
      }
      return cur
    }
    this.#walkBuckets(s, e, intervalMs, bucketFor, (hStart, hour) => {
      // The bucket is exactly this hour: share its aggregate instead of copying it.
      if (cur !== undefined && cur.totals.requests > 0) out.push(cur)
      cur = undefined
      out.push({ start: hStart, totals: hour.totals, sketch: hour.sketch })
    })
    const tail = cur as TimeBucket | undefined
    if (tail !== undefined && tail.totals.requests > 0) out.push(tail)
    return out
  }

  /**
   * The walk of {@link SeriesStore.timeseries} over normalised [s, e): `bucket(bStart)` is the
   * aggregate to add a unit starting in bucket `bStart` into (called in ascending order of
   * units); `whole(hStart, hour)` takes a stored hour that is exactly one bucket, read only.
   */
  #walkBuckets(s: number, e: number, intervalMs: number, bucket: (bStart: number) => Aggregate, whole: (hStart: number, hour: Aggregate) => void): void {
    // Walk the coarsest unit that never straddles an interval boundary.
    const unit = intervalMs % DAY_MS === 0 ? DAY_MS : intervalMs % HOUR_MS === 0 ? HOUR_MS : MINUTE_MS
    const bucketFor = (unitStart: number) => bucket(floorDiv(unitStart, intervalMs) * intervalMs)
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
            whole(hStart, hour)
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
  }

  /**
   * Plain-data copy of every raw row (see {@link SeriesSnapshot}), ordered by minute, and of
   * the coarse hours, with the `rejected` counter. O(rows); the store is not modified.
   */
  toSnapshot(): SeriesSnapshot {
    return { ...this.toSnapshotRows(0, this.#rows.size, { coarse: true }), rejected: this.#rejected }
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
  toSnapshotRows(from: number, to: number, opts: SnapshotRowsOptions = {}): SeriesSnapshot {
    const out = new SnapshotBuilder(this.#liveRowsIn(from, to), this.#rows.hasDims)
    const rows = this.#rows
    this.#copyRows(opts, out, out.rows, (r, mStart) => rows.copyOut(r, from, to, mStart, out))
    return out.finish(`row range [${from}, ${to})`)
  }

  /**
   * {@link SeriesStore.toSnapshotRows} in the row store's own encoding ({@link PackedSeriesPart}):
   * what the aggregators persist, since restoring it copies words instead of re-encoding values.
   * Same rows in the same order, same costs and cursor.
   */
  toPackedRows(from: number, to: number, opts: SnapshotRowsOptions = {}): PackedSeriesPart {
    const out = new PackedBuilder(this.#liveRowsIn(from, to))
    const rows = this.#rows
    this.#copyRows(opts, out, out.rows, (r, mStart) => {
      const before = out.w
      const at = rows.copyOutPacked(r, from, to, out)
      out.endMinute(mStart / MINUTE_MS, before)
      return at
    })
    return out.finish(`row range [${from}, ${to})`)
  }

  /** Live rows among the row indexes [from, to); throws RangeError unless 0 <= from <= to <= size. */
  #liveRowsIn(from: number, to: number): number {
    const rows = this.#rows
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || from > to || to > rows.size) {
      throw new RangeError(`row range [${from}, ${to}) is not inside [0, ${rows.size}]`)
    }
    // Rows removed by forget leave holes in the numbering: only live rows are copied.
    return to - from - rows.deadIn(from, to)
  }

  /**
   * The walk behind {@link SeriesStore.toSnapshotRows} and {@link SeriesStore.toPackedRows}:
   * coarse hours to `out` (with `opts.coarse`), then each minute's list, ascending, through
   * `copy(row to start at, minute start)`, which returns the row it stopped at (see the cursor).
   */
  #copyRows(opts: SnapshotRowsOptions, out: { addCoarseHour: (hour: number, agg: Aggregate, forgotten?: readonly number[], repriced?: readonly string[]) => void }, n: number, copy: (r: number, mStart: number) => number): void {
    const rows = this.#rows
    // cursor.at[slot]: the row the walk of that minute resumes at (-1 end, -2 not walked yet).
    const cursor = opts.cursor
    if (cursor !== undefined && (cursor.at === null || cursor.at.length < rows.lists)) {
      const grown = new Int32Array(rows.lists).fill(-2)
      if (cursor.at !== null) grown.set(cursor.at)
      cursor.at = grown
    }
    const at = cursor?.at ?? null
    for (const dayKey of this.#dayKeys) {
      const day = this.#days.get(dayKey) as DayNode
      for (let h = 0; h < 24; h++) {
        const hour = day.hours[h]
        if (hour === undefined) continue
        if (hour.minutes === null) {
          if (opts.coarse === true) out.addCoarseHour(dayKey * 24 + h, hour, hour.forgotten, hour.repriced)
          continue
        }
        if (n === 0) continue
        for (let m = 0; m < 60; m++) {
          const slot = hour.minutes[m] - 1
          if (slot < 0) continue
          const mStart = dayKey * DAY_MS + h * HOUR_MS + m * MINUTE_MS
          // Newest first: pass over rows at or past `to`, then copy down to `from`.
          const r = copy(at === null || at[slot] === -2 ? rows.head(slot) : at[slot], mStart)
          if (at !== null) at[slot] = r
        }
      }
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
    const addCoarseHour = (hourKey: number, agg: Aggregate, forgotten: number[] | undefined, repriced: string[] | undefined): boolean => store.#restoreCoarseHour(hourKey, agg, forgotten, repriced)
    let rejectedTotal = rejected
    const columns: SnapshotColumns[] = []
    const packed: PackedColumns[] = []
    for (const part of parts) {
      const c = isPacked(part) ? packedColumns(part, addCoarseHour) : snapshotColumns(part, addCoarseHour)
      rejectedTotal += c.rejected
      if ('runStart' in c) packed.push(c)
      else columns.push(c)
    }
    store.#loadRows(columns)
    store.#loadPacked(packed)
    store.#minuteAggregates()
    store.#rejected = rejectedTotal
    return store
  }

  /**
   * {@link SeriesStore.#loadRows} for packed parts ({@link PackedSeriesPart}): the same lists,
   * aggregates and sketches, rows restored in the same order (parts in order, each back to
   * front; grouped by hour), but a row's words are copied, not decoded and re-encoded, and what
   * is grouped by hour is a part's *segments* — its runs of one hour, contiguous since a part
   * lists its minutes ascending — not rows: one hour gathers a few stretches of each part.
   */
  #loadPacked(parts: readonly PackedColumns[]): void {
    if (parts.length === 0) return
    const row = scratchRow()
    const rowDims: RowDims = { user: 0, session: 0, attrs: 0 }
    const recordRuns = (c: PackedColumns, kLo: number, kHi: number): void => {
      for (let k = kHi; k >= kLo; k--) {
        const mStart = c.minutes[k] * MINUTE_MS
        for (let i = c.runStart[k + 1] - 1; i >= c.runStart[k]; i--) {
          if (!this.record(row, readPacked(c, i, c.wideAt, mStart, row, rowDims))) throw new Error(`invalid SeriesStore snapshot: row ${i} breaks the Row contract`)
        }
      }
    }
    // Segments: part segPart[g]'s runs segHi[g] down to segLo[g], all of hour segHour[g].
    let runs = 0
    for (const c of parts) runs += c.minutes.length
    const segPart = new Uint32Array(runs)
    const segLo = new Uint32Array(runs)
    const segHi = new Uint32Array(runs)
    const segHour = new Float64Array(runs)
    let n = 0
    let min = Infinity
    let max = -Infinity
    for (let p = 0; p < parts.length; p++) {
      const c = parts[p]
      for (let hi = c.minutes.length - 1; hi >= 0; ) {
        const hourKey = floorDiv(c.minutes[hi], 60)
        let lo = hi
        while (lo > 0 && floorDiv(c.minutes[lo - 1], 60) === hourKey) lo--
        if (hourKey < this.#coarseBeforeHour) recordRuns(c, lo, hi)
        else {
          segPart[n] = p
          segLo[n] = lo
          segHi[n] = hi
          segHour[n] = hourKey
          if (hourKey < min) min = hourKey
          if (hourKey > max) max = hourKey
          n++
        }
        hi = lo - 1
      }
    }
    // Segments by hour, each hour's in the order above (stable): a counting sort, or a sort when the hours span too far.
    const order = new Uint32Array(n)
    for (let g = 0; g < n; g++) order[g] = g
    if (n > 0 && max - min < 1 << 22) {
      const count = new Int32Array(max - min + 2)
      for (let g = 0; g < n; g++) count[segHour[g] - min + 1]++
      for (let h = 1; h < count.length; h++) count[h] += count[h - 1]
      for (let g = 0; g < n; g++) order[count[segHour[g] - min]++] = g
    } else if (n > 0) {
      order.set(Array.from(order).sort((a, b) => segHour[a] - segHour[b] || a - b))
    }
    const rows = this.#rows
    let latencies = new Float64Array(64)
    const bounds = { min: this.#minTs, max: this.#maxTs }
    for (let at = 0; at < n; ) {
      const hourKey = segHour[order[at]]
      let end = at
      while (end < n && segHour[order[end]] === hourKey) end++
      const dayKey = floorDiv(hourKey, 24)
      const day = this.#days.get(dayKey) ?? this.#newDay(dayKey)
      const h = hourKey - dayKey * 24
      if (day.hours[h] !== undefined) {
        for (let g = at; g < end; g++) recordRuns(parts[segPart[order[g]]], segLo[order[g]], segHi[order[g]])
        at = end
        continue
      }
      const totals = createTotals()
      const minutes = new Int32Array(60)
      const base = hourKey * 60
      let size = 0
      for (let g = at; g < end; g++) {
        const c = parts[segPart[order[g]]]
        // The hour's minute lists first (so list ids follow the restore order), and their row counts.
        for (let k = segHi[order[g]]; k >= segLo[order[g]]; k--) {
          const m = c.minutes[k] - base
          let slot = minutes[m] - 1
          if (slot < 0) {
            slot = this.#newMinuteSlot()
            minutes[m] = slot + 1
          }
          this.#mState[slot] += c.runStart[k + 1] - c.runStart[k]
        }
        size += c.runStart[segHi[order[g]] + 1] - c.runStart[segLo[order[g]]]
      }
      if (latencies.length < size) latencies = new Float64Array(2 * size)
      let held = 0
      for (let g = at; g < end; g++) {
        const c = parts[segPart[order[g]]]
        held = rows.appendRuns(c, segLo[order[g]], segHi[order[g]], c.wideAt, minutes, base, totals, latencies, held, bounds)
      }
      const hour: HourNode = { totals, sketch: sketchOf(latencies.subarray(0, held)), minutes }
      day.hours[h] = hour
      mergeTotals(day.totals, hour.totals)
      day.sketch.merge(hour.sketch)
      at = end
    }
    this.#minTs = Math.min(this.#minTs, bounds.min)
    this.#maxTs = Math.max(this.#maxTs, bounds.max)
  }

  /** After a bulk restore: each minute holding MINUTE_AGGREGATE_THRESHOLD rows gets its aggregate (as record() makes it). */
  #minuteAggregates(): void {
    const rows = this.#rows
    for (let slot = 0; slot < rows.lists; slot++) {
      if (this.#mState[slot] < MINUTE_AGGREGATE_THRESHOLD) continue
      const a = createAggregate()
      this.#scanned += rows.sum(slot, 0, MINUTE_MS, a)
      this.#minuteAggs.push(a)
      this.#mState[slot] = -this.#minuteAggs.length
    }
  }

  /**
   * Restores the rows of snapshot parts into this new store (no raw rows yet) as recording them
   * one by one would (parts in order, each back to front: the same minute lists, aggregates and
   * sketches), but hour by hour: each hour's totals and sketch are made once from its rows (one
   * sketch at its size, not a bucket insert per row per level), and its day's by merging its
   * hours. Rows land in hour order, so one hour's rows share their chunks. Rows of coarse hours,
   * or of an hour already holding rows, take the row-by-row path.
   */
  #loadRows(parts: readonly SnapshotColumns[]): void {
    const row = scratchRow()
    const rowDims: RowDims = { user: 0, session: 0, attrs: 0 }
    const one = (c: SnapshotColumns, i: number): void => {
      if (!this.record(row, rowOf(c, i, row, rowDims))) throw new Error(`invalid SeriesStore snapshot: row ${i} breaks the Row contract`)
    }
    const order = hourOrder(parts, this.#coarseBeforeHour)
    if (order === null) {
      for (const c of parts) for (let i = c.rows - 1; i >= 0; i--) one(c, i)
      return
    }
    for (const [p, i] of order.coarse) one(parts[p], i)
    const rows = this.#rows
    let latencies = new Float64Array(64)
    for (let g = 0; g < order.hours.length; g++) {
      const hourKey = order.hours[g]
      const from = order.start[g]
      const to = order.start[g + 1]
      const dayKey = floorDiv(hourKey, 24)
      const day = this.#days.get(dayKey) ?? this.#newDay(dayKey)
      const h = hourKey - dayKey * 24
      if (day.hours[h] !== undefined) {
        for (let k = from; k < to; k++) one(parts[order.part[k]], order.row[k])
        continue
      }
      const totals = createTotals()
      const minutes = new Int32Array(60)
      if (latencies.length < to - from) latencies = new Float64Array(2 * (to - from))
      for (let k = from; k < to; k++) {
        const dims = rowOf(parts[order.part[k]], order.row[k], row, rowDims)
        const ts = row.ts
        const minuteKey = floorDiv(ts, MINUTE_MS)
        const m = minuteKey - hourKey * 60
        let slot = minutes[m] - 1
        if (slot < 0) {
          slot = this.#newMinuteSlot()
          minutes[m] = slot + 1
        }
        rows.append(row, ts - minuteKey * MINUTE_MS, slot, dims)
        this.#mState[slot]++
        recordTotals(totals, row)
        latencies[k - from] = row.latencyUs
        if (ts < this.#minTs) this.#minTs = ts
        if (ts > this.#maxTs) this.#maxTs = ts
      }
      const hour: HourNode = { totals, sketch: sketchOf(latencies.subarray(0, to - from)), minutes }
      day.hours[h] = hour
      mergeTotals(day.totals, hour.totals)
      day.sketch.merge(hour.sketch)
    }
  }

  /** Installs coarse hour `hourKey` from a snapshot; false when the hour is already held. */
  #restoreCoarseHour(hourKey: number, agg: Aggregate, forgotten: number[] | undefined, repriced: string[] | undefined): boolean {
    const dayKey = floorDiv(hourKey, 24)
    if (this.#days.get(dayKey)?.hours[hourKey - dayKey * 24] !== undefined) return false
    // Every hour before coarseBefore is coarse: this one becomes so, then takes its aggregate.
    if (hourKey + 1 > this.#coarseBeforeHour) this.#coarseBeforeHour = hourKey + 1
    this.addHour(hourKey, agg)
    const hour = (this.#days.get(dayKey) as DayNode).hours[hourKey - dayKey * 24] as HourNode
    if (forgotten !== undefined && forgotten.length > 0) hour.forgotten = forgotten.slice()
    if (repriced !== undefined && repriced.length > 0) hour.repriced = repriced.slice()
    return true
  }

  /**
   * A store that keeps no rows: every hour is coarse from the start, so each recorded row
   * only adds to its hour's and day's totals and sketch. Queries on it are exact for ranges
   * aligned to hours (the all-models rollup that queries over every series use).
   */
  static coarseOnly(): SeriesStore {
    const store = new SeriesStore()
    store.#coarseBeforeHour = Infinity
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
   * into coarse hour `hourKey` and its day. Only for hours before
   * {@link SeriesStore.coarseBefore} (every hour of a {@link SeriesStore.coarseOnly} store):
   * throws RangeError otherwise, since rows would then disagree with their hour.
   */
  addHour(hourKey: number, agg: Aggregate): void {
    if (!Number.isSafeInteger(hourKey) || Math.abs(hourKey * HOUR_MS) > MAX_TIMESTAMP_MS || hourKey >= this.#coarseBeforeHour) {
      throw new RangeError(`hour ${hourKey} is not a coarse hour of this store`)
    }
    const n = agg.totals.requests
    if (n === 0) return
    this.#gen++
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

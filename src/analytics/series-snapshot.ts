/**
 * The snapshot codec of a {@link SeriesStore}: its plain-data form ({@link SeriesSnapshot}),
 * the builder `SeriesStore.toSnapshotRows` fills, and the checked loader behind
 * `SeriesStore.fromSnapshots`.
 */
import type { Aggregate } from './aggregate.js'
import type { Row } from './row.js'
import type { PackedOut, PackedRows, RowColumns, RowDims } from './row-store.js'
import type { SeriesStore } from './series.js'
import type { Totals } from './totals.js'
import { checkPacked, DIMS, MAX_ROWS, PACKED, packedOffset, readDims, VALUE_FIELDS } from './row-store.js'
import { isValidRow, MAX_TIMESTAMP_MS } from './row.js'
import { LatencySketch, type LatencySketchJSON } from './sketch.js'
import { floorDiv, HOUR_MS, MINUTE_MS } from './time.js'
import { cloneTotals, createTotals } from './totals.js'

/**
 * Current {@link SeriesSnapshot} format version. 2 added `coarse` (the coarse hours); 3 added
 * `dims`; 4 added `seq` (each row's log position). Only version 4 is read: an older snapshot
 * has no seqs, so its rows could never be found by a search page or a delete — it is refused
 * (the caller then rebuilds from the log, exactly), never read with made-up seqs.
 */
export const SERIES_SNAPSHOT_VERSION = 4

/** One coarse hour (see `SeriesStore`): its totals and latency sketch, without its rows. */
export interface CoarseHour {
  /** Hour key: floor(ts / HOUR_MS) of the rows it holds. */
  hour: number
  totals: Totals
  sketch: LatencySketchJSON
  /** Seqs of events a delete took out of it (`SeriesStore.subtractCoarse`), when any: taking one out again is a no-op. */
  forgotten?: number[]
  /** Ids of the re-prices applied to it (`SeriesStore.applyReprice`), when any: applying one again is a no-op. Absent in older snapshots (none applied). */
  repriced?: string[]
}

/**
 * Plain-data form of a {@link SeriesStore} (msgpack-friendly): the raw rows as
 * columns, `rows` long each. The pre-aggregates are not stored: they are a pure
 * function of the rows, so rebuilding them on restore can never disagree with
 * the rows (and the snapshot stays ~74 bytes per row). Coarse hours have no rows: they
 * are stored as their aggregates (`coarse`).
 * Readers accept typed arrays or plain number arrays for every column.
 */
export interface SeriesSnapshot {
  version: 4
  /** Number of rows (length of every column). */
  rows: number
  /** Rows refused by `record` so far (a diagnostic counter, kept across restarts). */
  rejected: number
  ts: Float64Array
  /** Each row's log position (0 for a row recorded without one). */
  seq: Float64Array
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
  /** The coarse hours, ascending. */
  coarse: CoarseHour[]
  /**
   * Only when some row has dimensions: each row's dimension words (see
   * {@link RowDims}), `rows` × 3 (user, session, attribute set); absent = all zero.
   */
  dims?: Uint32Array
}

/**
 * A snapshot part in the row store's own encoding (version 5): what the aggregators persist,
 * since a restore copies its words instead of decoding and re-encoding every value, and it is
 * about a third of {@link SeriesSnapshot}'s bytes (28 bytes a typical row with dimensions,
 * against 86). Same rows, same order, same checks on reading; `SeriesStore.fromSnapshots`
 * reads both forms. The rows are grouped by minute: `minutes[k]` (a minute key,
 * floor(ts / MINUTE_MS)) holds the next `runs[k]` rows, each row's time being its minute's
 * start + the offset its words keep (see row-store.ts's {@link PackedRows}).
 */
export interface PackedSeriesPart {
  version: 5
  rows: number
  /** Rows refused by `record` so far (0 in parts; see {@link SeriesSnapshot}). */
  rejected: number
  minutes: Float64Array
  runs: Uint32Array
  /** PACKED words per row. */
  words: Uint32Array
  ext?: Uint32Array
  seqHigh?: Uint32Array
  dims?: Uint32Array
  wide?: Float64Array
  /** The coarse hours, ascending. */
  coarse: CoarseHour[]
}

export const PACKED_SNAPSHOT_VERSION = 5

/** A part as `SeriesStore.fromSnapshots` reads it: either form. */
export type SeriesPart = SeriesSnapshot | PackedSeriesPart

/** A packed part being filled (rows by `RowStore.copyOutPacked`, a minute at a time, then coarse hours). */
export class PackedBuilder implements PackedOut {
  words: Uint32Array
  ext: Uint32Array | null = null
  seqHigh: Uint32Array | null = null
  dims: Uint32Array | null = null
  wide: number[] = []
  w = 0
  readonly #minutes: number[] = []
  readonly #runs: number[] = []
  readonly #coarse: CoarseHour[] = []

  constructor(readonly rows: number) {
    this.words = new Uint32Array(rows * PACKED)
  }

  /** Call after copying minute `minuteKey`'s rows (`before`: `w` before them); an empty run is left out. */
  endMinute(minuteKey: number, before: number): void {
    if (this.w > before) {
      this.#minutes.push(minuteKey)
      this.#runs.push(this.w - before)
    }
  }

  addCoarseHour(hour: number, agg: Aggregate, forgotten?: readonly number[], repriced?: readonly string[]): void {
    this.#coarse.push(coarseHourOf(hour, agg, forgotten, repriced))
  }

  finish(what: string): PackedSeriesPart {
    if (this.w !== this.rows) throw new Error(`${what} yielded ${this.w} rows, expected ${this.rows}`)
    return {
      version: PACKED_SNAPSHOT_VERSION,
      rows: this.rows,
      rejected: 0,
      minutes: Float64Array.from(this.#minutes),
      runs: Uint32Array.from(this.#runs),
      words: this.words,
      ...(this.ext === null ? {} : { ext: this.ext }),
      ...(this.seqHigh === null ? {} : { seqHigh: this.seqHigh }),
      ...(this.dims === null ? {} : { dims: this.dims }),
      ...(this.wide.length === 0 ? {} : { wide: Float64Array.from(this.wide) }),
      coarse: this.#coarse
    }
  }
}

/** One checked packed part (see {@link packedColumns}). */
export interface PackedColumns extends PackedRows {
  rows: number
  rejected: number
  minutes: Float64Array
  /** runStart[k]: the first row of run k; runStart[runs] = rows. */
  runStart: Uint32Array
  /** {@link checkPacked}'s answer: where each wide row's values are. */
  wideAt: Int32Array | null
}

/** Whether `data` claims to be a {@link PackedSeriesPart} (checked by {@link packedColumns}). */
export function isPacked(data: unknown): boolean {
  return typeof data === 'object' && data !== null && (data as { version?: unknown }).version === PACKED_SNAPSHOT_VERSION
}

/**
 * Checks one {@link PackedSeriesPart} whole (shape, runs, every row's words: see row-store.ts's
 * `checkPacked`) and loads its coarse hours through `addCoarseHour`. Throws an Error naming the
 * problem: a part is read fully or not at all.
 */
export function packedColumns(data: unknown, addCoarseHour: CoarseHourSink): PackedColumns {
  const fail = snapshotError
  const d = data as Record<string, unknown>
  const { n, rejected } = partHeader(d, addCoarseHour)
  const minutes = d.minutes
  const runs = d.runs
  if (!(minutes instanceof Float64Array) || !(runs instanceof Uint32Array) || minutes.length !== runs.length) fail('minutes and runs must be a Float64Array and a Uint32Array of one length')
  const mins = minutes as Float64Array
  const runStart = new Uint32Array(mins.length + 1)
  let total = 0
  for (let k = 0; k < mins.length; k++) {
    const m = mins[k]
    if (!Number.isSafeInteger(m) || Math.abs(m * MINUTE_MS) > MAX_TIMESTAMP_MS) fail(`run ${k}: minute must be a minute key`)
    if ((runs as Uint32Array)[k] === 0) fail(`run ${k} is empty`)
    runStart[k] = total
    total += (runs as Uint32Array)[k]
  }
  if (total !== n) fail(`runs hold ${total} rows, expected ${n}`)
  runStart[mins.length] = total
  const opt = (name: string): Uint32Array | Float64Array | null => (d[name] === undefined ? null : (d[name] as Uint32Array | Float64Array))
  const src: PackedRows = { words: d.words as Uint32Array, ext: opt('ext') as Uint32Array | null, seqHigh: opt('seqHigh') as Uint32Array | null, dims: opt('dims') as Uint32Array | null, wide: opt('wide') as Float64Array | null }
  const wideAt = checkPacked(src, n, fail)
  // A row at the last minute of the accepted range may still be past it.
  for (let k = 0; k < mins.length; k++) {
    if (mins[k] * MINUTE_MS + MINUTE_MS - 1 <= MAX_TIMESTAMP_MS) continue
    for (let i = runStart[k]; i < runStart[k + 1]; i++) {
      if (mins[k] * MINUTE_MS + packedOffset(src, i) > MAX_TIMESTAMP_MS) fail(`row ${i}: time is past the accepted range`)
    }
  }
  return { ...src, rows: n, rejected, minutes: mins, runStart, wideAt }
}

/**
 * What both part forms begin with, checked: the coarse hours (loaded through `addCoarseHour`),
 * the row count and the `rejected` counter. Throws naming the problem.
 */
function partHeader(d: Record<string, unknown>, addCoarseHour: CoarseHourSink): { n: number; rejected: number } {
  const fail = snapshotError
  if (!Array.isArray(d.coarse)) fail('coarse must be an array')
  for (const [i, c] of (d.coarse as unknown[]).entries()) loadCoarseHour(c, addCoarseHour, (why) => fail(`coarse hour ${i}: ${why}`))
  const n = d.rows
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > MAX_ROWS) fail('rows must be a non-negative integer')
  const rejected = d.rejected
  if (typeof rejected !== 'number' || !Number.isSafeInteger(rejected) || rejected < 0) fail('rejected must be a non-negative integer')
  return { n: n as number, rejected: rejected as number }
}

/** A copy of coarse hour `hour`'s aggregate, the seqs taken out of it and the re-prices it applied. */
function coarseHourOf(hour: number, agg: Aggregate, forgotten?: readonly number[], repriced?: readonly string[]): CoarseHour {
  return {
    hour,
    totals: cloneTotals(agg.totals),
    sketch: agg.sketch.toJSON(),
    ...(forgotten === undefined ? {} : { forgotten: forgotten.slice() }),
    ...(repriced === undefined ? {} : { repriced: repriced.slice() })
  }
}

/** The columns of one snapshot being filled (rows by `RowStore.copyOut`, then coarse hours). */
export class SnapshotBuilder implements RowColumns {
  readonly ts: Float64Array
  readonly seq: Float64Array
  readonly values: Float64Array[]
  readonly error: Uint8Array
  readonly unpriced: Uint8Array
  readonly dims: Uint32Array | undefined
  w = 0
  readonly #coarse: CoarseHour[] = []

  /** Room for `rows` rows; `withDims`: whether to copy their dimension words. */
  constructor(readonly rows: number, withDims: boolean) {
    this.ts = new Float64Array(rows)
    this.seq = new Float64Array(rows)
    this.values = VALUE_FIELDS.map(() => new Float64Array(rows))
    this.error = new Uint8Array(rows)
    this.unpriced = new Uint8Array(rows)
    this.dims = withDims ? new Uint32Array(rows * DIMS) : undefined
  }

  /** Adds coarse hour `hour` (hour key), copying its aggregate, the seqs taken out of it and the re-prices it applied. */
  addCoarseHour(hour: number, agg: Aggregate, forgotten?: readonly number[], repriced?: readonly string[]): void {
    this.#coarse.push(coarseHourOf(hour, agg, forgotten, repriced))
  }

  /** The snapshot (`rejected` 0); `what` names the rows asked for if fewer or more were written. */
  finish(what: string): SeriesSnapshot {
    if (this.w !== this.rows) throw new Error(`${what} yielded ${this.w} rows, expected ${this.rows}`)
    const cols = this.values
    return {
      version: SERIES_SNAPSHOT_VERSION,
      rows: this.rows,
      rejected: 0,
      ts: this.ts,
      seq: this.seq,
      promptTokens: cols[0],
      completionTokens: cols[1],
      totalTokens: cols[2],
      cachedTokens: cols[3],
      reasoningTokens: cols[4],
      latencyUs: cols[5],
      costNanos: cols[6],
      error: this.error,
      unpriced: this.unpriced,
      coarse: this.#coarse,
      ...(this.dims === undefined ? {} : { dims: this.dims })
    }
  }
}

/**
 * Makes `hourKey` a coarse hour of the store being loaded holding `agg` (and the seqs taken out
 * of it, and the re-prices it applied); false when the store already holds that hour.
 */
export type CoarseHourSink = (hourKey: number, agg: Aggregate, forgotten: number[] | undefined, repriced: string[] | undefined) => boolean

/** One snapshot part's checked columns (see {@link snapshotColumns}), `rows` long each. */
export interface SnapshotColumns {
  rows: number
  rejected: number
  ts: ArrayLike<number>
  seq: ArrayLike<number>
  /** In VALUE_FIELDS order. */
  vals: ArrayLike<number>[]
  error: ArrayLike<number>
  unpriced: ArrayLike<number>
  /** DIMS words per row, or null when the part has none. */
  dims: ArrayLike<number> | null
}

const snapshotError = (why: string): never => {
  throw new Error(`invalid SeriesStore snapshot: ${why}`)
}

/**
 * Checks one snapshot's shape and loads its coarse hours through `addCoarseHour`; returns its
 * columns, whose rows {@link rowOf} reads (and checks) one at a time. Throws an Error naming
 * the problem on an unknown version or malformed data (wrong column length).
 */
export function snapshotColumns(data: unknown, addCoarseHour: CoarseHourSink): SnapshotColumns {
  const fail = snapshotError
  if (typeof data !== 'object' || data === null) fail('not an object')
  const d = data as Record<string, unknown>
  if (d.version !== SERIES_SNAPSHOT_VERSION) {
    const older = typeof d.version === 'number' && d.version >= 1 && d.version < SERIES_SNAPSHOT_VERSION
    fail(`unsupported version ${String(d.version)} (this build reads version ${SERIES_SNAPSHOT_VERSION}${older ? ' only: older rows carry no log position' : ''})`)
  }
  const { n, rejected } = partHeader(d, addCoarseHour)
  const column = (name: string): ArrayLike<number> => {
    const v = d[name]
    const ok = Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView))
    if (!ok) fail(`column ${name} is missing or not an array`)
    const col = v as ArrayLike<number>
    if (col.length !== n) fail(`column ${name} has ${col.length} entries, expected ${n}`)
    return col
  }
  const ts = column('ts')
  const seq = column('seq')
  const vals = VALUE_FIELDS.map(column)
  const error = column('error')
  const unpriced = column('unpriced')
  let dims: ArrayLike<number> | null = null
  if (d.dims !== undefined) {
    const ok = Array.isArray(d.dims) || (ArrayBuffer.isView(d.dims) && !(d.dims instanceof DataView))
    if (!ok || (d.dims as ArrayLike<number>).length !== n * DIMS) fail(`column dims must hold ${DIMS} words per row`)
    dims = d.dims as ArrayLike<number>
  }
  return { rows: n, rejected, ts, seq, vals, error, unpriced, dims }
}

/** A reusable {@link Row} for {@link rowOf}. */
export function scratchRow(): Row {
  return { ts: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0, cachedTokens: 0, reasoningTokens: 0, latencyUs: 0, costNanos: 0, error: false, unpriced: false, seq: 0 }
}

/**
 * Reads row `i` of `c` into `row` (and its dimension words into `rowDims`); returns the dims
 * to record with (undefined when the part has none). Throws when a flag is not 0 or 1 or the
 * row breaks the {@link Row} contract, naming the row.
 */
export function rowOf(c: SnapshotColumns, i: number, row: Row, rowDims: RowDims): RowDims | undefined {
  row.ts = c.ts[i]
  row.seq = c.seq[i]
  const v = c.vals
  row.promptTokens = v[0][i]
  row.completionTokens = v[1][i]
  row.totalTokens = v[2][i]
  row.cachedTokens = v[3][i]
  row.reasoningTokens = v[4][i]
  row.latencyUs = v[5][i]
  row.costNanos = v[6][i]
  const error = c.error[i]
  if (error !== 0 && error !== 1) snapshotError(`row ${i}: error must be 0 or 1, got ${String(error)}`)
  const unpriced = c.unpriced[i]
  if (unpriced !== 0 && unpriced !== 1) snapshotError(`row ${i}: unpriced must be 0 or 1, got ${String(unpriced)}`)
  row.error = error === 1
  row.unpriced = unpriced === 1
  if (!isValidRow(row)) snapshotError(`row ${i} breaks the Row contract`)
  return c.dims === null ? undefined : readDims(c.dims, i, rowDims)
}

/**
 * The rows of several parts grouped by hour, for a bulk restore (`SeriesStore.fromSnapshots`):
 * `order` lists (part, row) pairs (`part[k]`, `row[k]`) hour by hour ascending (`hours[g]`,
 * its entries `start[g]` to `start[g + 1]`), and within an hour in the order a row-by-row
 * restore records them (parts in order, each back to front) — so every minute's list comes out
 * the same. Rows of hours before `coarseBeforeHour` are left out (`coarse`: a restore counts
 * them into their coarse hour). Every row is read and checked ({@link rowOf}) on the way.
 * Null when the rows span too many hours to count by hour key (a restore then records row by row).
 */
export interface HourOrder {
  part: Uint32Array
  row: Uint32Array
  hours: number[]
  start: Int32Array
  coarse: Array<[part: number, row: number]>
}

/** Widest hour span {@link hourOrder} counts directly (about 480 years: 16 MB of counters). */
const MAX_HOUR_SPAN = 1 << 22

export function hourOrder(parts: readonly SnapshotColumns[], coarseBeforeHour: number): HourOrder | null {
  let total = 0
  for (const c of parts) total += c.rows
  const hourOf = new Float64Array(total)
  const partOf = new Uint32Array(total)
  const rowOfG = new Uint32Array(total)
  const row = scratchRow()
  const rowDims: RowDims = { user: 0, session: 0, attrs: 0 }
  const coarse: Array<[number, number]> = []
  let min = Infinity
  let max = -Infinity
  let g = 0
  for (let p = 0; p < parts.length; p++) {
    const c = parts[p]
    for (let i = c.rows - 1; i >= 0; i--) {
      rowOf(c, i, row, rowDims)
      const hourKey = floorDiv(row.ts, HOUR_MS)
      if (hourKey < coarseBeforeHour) {
        coarse.push([p, i])
        continue
      }
      hourOf[g] = hourKey
      partOf[g] = p
      rowOfG[g] = i
      if (hourKey < min) min = hourKey
      if (hourKey > max) max = hourKey
      g++
    }
  }
  const n = g
  if (n === 0) return { part: partOf.subarray(0, 0), row: rowOfG.subarray(0, 0), hours: [], start: new Int32Array(1), coarse }
  const span = max - min + 1
  if (span > MAX_HOUR_SPAN) return null
  // Counting sort by hour (stable: each hour keeps the order above).
  const count = new Int32Array(span + 1)
  for (let k = 0; k < n; k++) count[hourOf[k] - min + 1]++
  const hours: number[] = []
  const starts: number[] = []
  for (let h = 0; h < span; h++) {
    if (count[h + 1] !== 0) {
      hours.push(min + h)
      starts.push(count[h])
    }
    count[h + 1] += count[h]
  }
  starts.push(n)
  const part = new Uint32Array(n)
  const rowAt = new Uint32Array(n)
  for (let k = 0; k < n; k++) {
    const at = count[hourOf[k] - min]++
    part[at] = partOf[k]
    rowAt[at] = rowOfG[k]
  }
  return { part, row: rowAt, hours, start: Int32Array.from(starts), coarse }
}

/** The sketch of `values` (latencies in µs): {@link LatencySketch.ofValues}. */
export function sketchOf(values: Float64Array): LatencySketch {
  return LatencySketch.ofValues(values)
}

/**
 * Loads one snapshot into `store`: its coarse hours through `addCoarseHour`, then its rows
 * through `store.record`. Returns the snapshot's `rejected` counter. Throws an Error naming the
 * problem on an unknown version or malformed data (wrong column length, invalid row).
 * (`SeriesStore.fromSnapshots` restores in bulk instead; this is the row-by-row reference.)
 */
export function loadSnapshot(store: SeriesStore, data: unknown, addCoarseHour: CoarseHourSink): number {
  const c = snapshotColumns(data, addCoarseHour)
  const row = scratchRow()
  const rowDims: RowDims = { user: 0, session: 0, attrs: 0 }
  // Recorded back to front: each minute's list is head-first, so this rebuilds
  // the same lists and `toSnapshot()` of the result equals `data` (a fixed point).
  for (let i = c.rows - 1; i >= 0; i--) {
    const dims = rowOf(c, i, row, rowDims)
    if (!store.record(row, dims)) snapshotError(`row ${i} breaks the Row contract`)
  }
  return c.rejected
}

/** Checks one {@link CoarseHour} and hands it to `addCoarseHour`; `fail` throws. */
function loadCoarseHour(data: unknown, addCoarseHour: CoarseHourSink, fail: (why: string) => never): void {
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
  const forgotten = c.forgotten
  if (forgotten !== undefined && (!Array.isArray(forgotten) || !forgotten.every((q) => typeof q === 'number' && Number.isSafeInteger(q) && q >= 0))) fail('forgotten must be an array of seqs')
  const repriced = c.repriced
  if (repriced !== undefined && (!Array.isArray(repriced) || !repriced.every((id) => typeof id === 'string' && id.length > 0))) fail('repriced must be an array of re-price ids')
  if (!addCoarseHour(hourKey as number, { totals, sketch }, forgotten as number[] | undefined, repriced as string[] | undefined)) fail('hour given twice')
}

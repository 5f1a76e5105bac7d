/**
 * The snapshot codec of a {@link SeriesStore}: its plain-data form ({@link SeriesSnapshot}),
 * the builder `SeriesStore.toSnapshotRows` fills, and the checked loader behind
 * `SeriesStore.fromSnapshots`.
 */
import type { Aggregate } from './aggregate.js'
import type { Row } from './row.js'
import type { RowColumns, RowDims } from './row-store.js'
import type { SeriesStore } from './series.js'
import type { Totals } from './totals.js'
import { DIMS, MAX_ROWS, NUM_VALUES, VALUE_FIELDS } from './row-store.js'
import { MAX_TIMESTAMP_MS } from './row.js'
import { LatencySketch, type LatencySketchJSON } from './sketch.js'
import { HOUR_MS } from './time.js'
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
    this.#coarse.push({
      hour,
      totals: cloneTotals(agg.totals),
      sketch: agg.sketch.toJSON(),
      ...(forgotten === undefined ? {} : { forgotten: forgotten.slice() }),
      ...(repriced === undefined ? {} : { repriced: repriced.slice() })
    })
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

/**
 * Loads one snapshot into `store`: its coarse hours through `addCoarseHour`, then its rows
 * through `store.record`. Returns the snapshot's `rejected` counter. Throws an Error naming the
 * problem on an unknown version or malformed data (wrong column length, invalid row).
 */
export function loadSnapshot(store: SeriesStore, data: unknown, addCoarseHour: CoarseHourSink): number {
  const fail = (why: string): never => {
    throw new Error(`invalid SeriesStore snapshot: ${why}`)
  }
  if (typeof data !== 'object' || data === null) fail('not an object')
  const d = data as Record<string, unknown>
  if (d.version !== SERIES_SNAPSHOT_VERSION) {
    const older = typeof d.version === 'number' && d.version >= 1 && d.version < SERIES_SNAPSHOT_VERSION
    fail(`unsupported version ${String(d.version)} (this build reads version ${SERIES_SNAPSHOT_VERSION}${older ? ' only: older rows carry no log position' : ''})`)
  }
  if (!Array.isArray(d.coarse)) fail('coarse must be an array')
  for (const [i, c] of (d.coarse as unknown[]).entries()) loadCoarseHour(c, addCoarseHour, (why) => fail(`coarse hour ${i}: ${why}`))
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
  const seqs = column('seq')
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
    seq: 0,
  }
  const flag = (v: unknown, name: string, i: number): boolean => {
    if (v !== 0 && v !== 1) fail(`row ${i}: ${name} must be 0 or 1, got ${String(v)}`)
    return v === 1
  }
  // Recorded back to front: each minute's list is head-first, so this rebuilds
  // the same lists and `toSnapshot()` of the result equals `data` (a fixed point).
  for (let i = (n as number) - 1; i >= 0; i--) {
    row.ts = ts[i]
    row.seq = seqs[i]
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

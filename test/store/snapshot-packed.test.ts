/**
 * Packed snapshot parts (SeriesStore.toPackedRows, version 5: the row store's own words) against
 * the column parts (toSnapshotRows, version 4). What it pins: restoring the packed parts gives the
 * same store as restoring the column parts cut at the same rows — every answer, minute list, hour
 * and day sketch, coarse hour, dimension word and seq (test/store/snapshot-bulk.test.ts pins the
 * column restore to the row-by-row reference) — through v8's serialisation as the snapshot
 * writer stores them; both forms mix in one restore; damage is refused with what is wrong named;
 * and a typical row takes about a third of the bytes.
 */
import t from 'tap'
import fc from 'fast-check'
import { serialize, deserialize } from 'node:v8'
import { PACKED_SNAPSHOT_VERSION, SeriesStore, type PackedSeriesPart, type SeriesPart, type SeriesSnapshot } from '../../src/analytics/series.js'
import { seriesImage } from '../helpers/series-image.js'
import type { Row } from '../../src/analytics/row.js'
import { DAY, HOUR, MIN, rowArb } from '../analytics/fixtures/naive.js'

const image = seriesImage

const SEQS = [1, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 3, 2 ** 53 - 1]

/**
 * Rows recorded with seqs (some past 2^32) and dimension words; both part forms cut at the
 * same rows, newest first with one cursor per snapshot as the aggregators copy them. With
 * `retainBefore`, hours before it are folded and one coarse part leads each form.
 */
function build(rows: readonly Row[], cut: number, slice: number, withDims: boolean, retainBefore: number | null): { store: SeriesStore; cols: SeriesSnapshot[]; packed: PackedSeriesPart[] } {
  const store = new SeriesStore()
  const cols: SeriesSnapshot[] = []
  const packed: PackedSeriesPart[] = []
  let copied = 0
  const take = (from: number): void => {
    const cc = { at: null as Int32Array | null }
    const cp = { at: null as Int32Array | null }
    for (let hi = store.rowEnd; hi > from; hi -= slice) {
      const lo = Math.max(from, hi - slice)
      cols.push(store.toSnapshotRows(lo, hi, { cursor: cc }))
      packed.push(store.toPackedRows(lo, hi, { cursor: cp }))
    }
  }
  rows.forEach((r, i) => {
    const seq = i % 5 === 4 ? SEQS[i % SEQS.length] + 0 : i + 1
    store.record({ ...r, seq }, withDims && i % 3 !== 0 ? { user: i % 7, session: (i * 3) % 5, attrs: i % 2 } : undefined)
    if ((i + 1) % cut === 0) {
      take(copied)
      copied = store.rowEnd
    }
  })
  if (retainBefore !== null) {
    store.retain({ before: retainBefore, maxRows: 0, now: 0 })
    cols.length = 0
    packed.length = 0
    cols.push(store.toSnapshotRows(0, 0, { coarse: true }))
    packed.push(store.toPackedRows(0, 0, { coarse: true }))
    take(0)
    return { store, cols, packed }
  }
  take(copied)
  return { store, cols, packed }
}

/** What the snapshot writer stores and reads back: v8's serialisation. */
const stored = <T>(parts: readonly T[]): T[] => parts.map((p) => deserialize(serialize(p)) as T)

t.test('a restore from packed parts is the restore from column parts', async (t) => {
  let checked = 0
  fc.assert(
    fc.property(
      fc.array(rowArb({ negative: true }), { maxLength: 150 }),
      fc.array(rowArb({ dense: true }), { maxLength: 200 }),
      fc.integer({ min: 1, max: 60 }),
      fc.integer({ min: 1, max: 40 }),
      fc.boolean(),
      fc.option(fc.integer({ min: 0, max: 200 }), { nil: null }),
      (sparse, dense, cut, slice, withDims, retainHours) => {
        const rows: Row[] = []
        for (let i = 0; i < Math.max(sparse.length, dense.length); i++) {
          if (i < sparse.length) rows.push(sparse[i])
          if (i < dense.length) rows.push(dense[i])
        }
        const before = retainHours === null || rows.length === 0 ? null : Math.min(...rows.map((r) => r.ts)) + retainHours * HOUR
        const { store, cols, packed } = build(rows, cut, slice, withDims, before)
        for (const p of packed) if (p.version !== PACKED_SNAPSHOT_VERSION) throw new Error('toPackedRows made no packed part')
        if (packed.reduce((n, p) => n + p.rows, 0) !== cols.reduce((n, p) => n + p.rows, 0)) throw new Error('the forms hold different row counts')
        const want = image(SeriesStore.fromSnapshots(cols, 2))
        const back = SeriesStore.fromSnapshots(stored(packed), 2)
        if (image(back) !== want) throw new Error('the packed restore differs from the column restore')
        if (back.rejected !== 2) throw new Error(`rejected ${back.rejected}, expected 2`)
        if (before === null && JSON.stringify(SeriesStore.fromSnapshots(packed).aggregate(-Infinity, Infinity)) !== JSON.stringify(store.aggregate(-Infinity, Infinity))) {
          throw new Error('the packed restore differs from the original')
        }
        checked++
      },
    ),
    { numRuns: 150 },
  )
  t.equal(checked, 150, 'every run compared the two restores')
})

t.test('every row value and seq reads back exactly, escapes included', async (t) => {
  const store = new SeriesStore()
  const base = { ts: 20_000 * DAY + 5 * MIN + 17, promptTokens: 10, completionTokens: 20, totalTokens: 30, cachedTokens: 0, reasoningTokens: 0, latencyUs: 900, costNanos: 1234, error: false, unpriced: false }
  const rows: Row[] = [
    { ...base, seq: 1 },
    { ...base, ts: base.ts + 1, cachedTokens: 4, reasoningTokens: 3, totalTokens: 40, costNanos: 2 ** 40 + 5, error: true, seq: 2 },
    { ...base, ts: base.ts + 2, promptTokens: 2 ** 30, completionTokens: 2 ** 25, totalTokens: 2 ** 30 + 2 ** 25, latencyUs: 2 ** 35, unpriced: true, seq: 2 ** 53 - 1 },
    { ...base, ts: -DAY + 59_999, seq: 2 ** 32 },
  ]
  rows.forEach((r, i) => store.record(r, { user: i, session: 0, attrs: i === 2 ? 0 : 9 }))
  const part = store.toPackedRows(0, store.rowEnd)
  t.ok(part.ext instanceof Uint32Array, 'the cached/reasoning row took the EXT escape')
  t.equal(part.wide?.length, 7, 'one wide row, seven values')
  t.ok(part.seqHigh instanceof Uint32Array, 'seqs past 2^32 keep their high words')
  const back = SeriesStore.fromSnapshots(stored([part]))
  t.same(back.toSnapshot(), store.toSnapshot())
  const seen: string[] = []
  back.scanRows(-Infinity, Infinity, (v, flags, user, _s, attrs, ts, seq) => seen.push(`${ts}|${[...v].join(',')}|${flags}|${user},${attrs}|${seq}`))
  t.same(seen.sort(), rows.map((r, i) => `${r.ts}|${[r.promptTokens, r.completionTokens, r.totalTokens, r.cachedTokens, r.reasoningTokens, r.latencyUs, r.costNanos].join(',')}|${(r.error ? 1 : 0) | (r.unpriced ? 2 : 0)}|${i},${i === 2 ? 0 : 9}|${r.seq}`).sort())
})

t.test('column and packed parts mix in one restore', async (t) => {
  const store = new SeriesStore()
  const row = (i: number): Row => ({ ts: 20_000 * DAY + (i % 180) * MIN + i, promptTokens: i, completionTokens: 1, totalTokens: i + 1, cachedTokens: 0, reasoningTokens: 0, latencyUs: 100 + i, costNanos: 3 * i, error: false, unpriced: false, seq: i + 1 })
  for (let i = 0; i < 500; i++) store.record(row(i))
  const parts: SeriesPart[] = [store.toPackedRows(250, 500), store.toSnapshotRows(0, 250)]
  const mixed = SeriesStore.fromSnapshots(stored(parts))
  t.same(mixed.aggregate(-Infinity, Infinity), store.aggregate(-Infinity, Infinity))
  t.same(mixed.timeseries(-Infinity, Infinity, MIN), store.timeseries(-Infinity, Infinity, MIN))
  t.equal(mixed.size, 500)
})

t.test('a typical row takes about a third of the column form\'s bytes', async (t) => {
  const store = new SeriesStore()
  for (let i = 0; i < 4096; i++) {
    store.record({ ts: 20_000 * DAY + Math.floor(i * 631) % (30 * DAY), promptTokens: 500 + (i % 900), completionTokens: 80 + (i % 300), totalTokens: 580 + (i % 900) + (i % 300), cachedTokens: 0, reasoningTokens: 0, latencyUs: 200_000 + i, costNanos: 9_000 + i, error: i % 50 === 0, unpriced: false, seq: i + 1 }, { user: 1 + (i % 1000), session: 0, attrs: 1 + (i % 7) })
  }
  const cols = serialize(store.toSnapshotRows(0, 4096)).length
  const packed = serialize(store.toPackedRows(0, 4096)).length
  t.ok(packed * 2.5 < cols, `packed ${packed} bytes against ${cols}: at most 40%`)
  t.ok(packed / 4096 < 40, `${(packed / 4096).toFixed(1)} bytes a row`)
})

t.test('damaged packed parts are refused with what is wrong named', async (t) => {
  const store = new SeriesStore()
  const base = { ts: 20_000 * DAY + 5 * MIN + 17, promptTokens: 10, completionTokens: 20, totalTokens: 30, cachedTokens: 0, reasoningTokens: 0, latencyUs: 900, costNanos: 1234, error: false, unpriced: false }
  store.record({ ...base, seq: 1 })
  store.record({ ...base, ts: base.ts + MIN, cachedTokens: 2, totalTokens: 32, seq: 2 })
  store.record({ ...base, ts: base.ts + 2 * MIN, latencyUs: 2 ** 33, seq: 3 })
  const good = store.toPackedRows(0, 3)
  t.equal(good.minutes.length, 3, 'three minutes, three runs')
  t.doesNotThrow(() => SeriesStore.fromSnapshots([good]))
  const words = (edit: (w: Uint32Array) => void): Uint32Array => {
    const w = good.words.slice()
    edit(w)
    return w
  }
  const bad: Array<[string, unknown, RegExp]> = [
    ['offset past its minute', { ...good, words: words((w) => { w[3] = (w[3] & ~0xffff) | 60_000 }) }, /row 0: offset 60000 is past its minute/],
    ['both escapes', { ...good, words: words((w) => { w[5 + 3] |= 1 << 19 }) }, /row 1: both escapes flagged/],
    ['EXT without ext', { ...good, ext: undefined }, /row 1: flagged FLAG_EXT without ext words/],
    ['WIDE without values', { ...good, wide: undefined }, /row 2: flagged FLAG_WIDE without wide values/],
    ['a wide value not a count', { ...good, wide: good.wide!.map((v, i) => (i === 5 ? -1 : v)) }, /row 2: wide value latencyUs must be a non-negative integer/],
    ['wide values of no row', { ...good, wide: Float64Array.from([...good.wide!, ...good.wide!]) }, /wide holds 2 rows, 1 are flagged/],
    ['cost past 2^53', { ...good, ext: good.ext!.map((v, i) => (i === 4 + 3 ? 2 ** 21 : v)) }, /row 1: cost is not a safe integer/],
    ['seq past 2^53', { ...good, seqHigh: Uint32Array.of(0, 2 ** 21, 0) }, /row 1: seq is not a safe integer/],
    ['words cut short', { ...good, words: good.words.subarray(0, 14) }, /words must be a Uint32Array of 5 words per row/],
    ['runs not adding up', { ...good, runs: Uint32Array.of(1, 1, 2) }, /runs hold 4 rows, expected 3/],
    ['an empty run', { ...good, runs: Uint32Array.of(0, 2, 1) }, /run 0 is empty/],
    ['a minute not a key', { ...good, minutes: Float64Array.of(good.minutes[0] + 0.5, good.minutes[1], good.minutes[2]) }, /run 0: minute must be a minute key/],
    ['minutes as plain numbers', { ...good, minutes: Array.from(good.minutes) }, /minutes and runs must be/],
    ['a row past the accepted range', { ...good, minutes: Float64Array.of(8.64e15 / MIN, good.minutes[1], good.minutes[2]) }, /row 0: time is past the accepted range/],
    ['rows not a count', { ...good, rows: -1 }, /rows must be a non-negative integer/],
  ]
  for (const [name, data, msg] of bad) t.throws(() => SeriesStore.fromSnapshots([data]), msg, name)
})

/**
 * The bulk restore of a series (SeriesStore.fromSnapshots: rows grouped by hour, each hour's
 * sketch made at once, days merged from their hours) against the row-by-row reference
 * (loadSnapshot: every row through record(), parts in order, each back to front). What it
 * pins: the two stores are the same store — every answer, every minute list (toSnapshot is
 * ordered by minute, then list order), every hour's and day's aggregate and sketch, minute
 * aggregates (minute-resolution timeseries), coarse hours, dimension words and seqs.
 */
import t from 'tap'
import fc from 'fast-check'
import { SeriesStore, type SeriesSnapshot } from '../../src/analytics/series.js'
import { seriesImage } from '../helpers/series-image.js'
import { loadSnapshot, sketchOf } from '../../src/analytics/series-snapshot.js'
import { LatencySketch } from '../../src/analytics/sketch.js'
import type { Row } from '../../src/analytics/row.js'
import { HOUR, MIN, rowArb } from '../analytics/fixtures/naive.js'

/** The row-by-row restore (what fromSnapshots did before the bulk path). */
function reference(parts: readonly SeriesSnapshot[], rejected = 0): SeriesStore {
  const store = new SeriesStore()
  let coarseBefore = -Infinity
  let total = rejected
  for (const p of parts) {
    total += loadSnapshot(store, p, (hourKey, agg) => {
      // The same coarse-hour install fromSnapshots makes, through public API.
      if (hourKey + 1 > coarseBefore) coarseBefore = hourKey + 1
      store.retain({ before: coarseBefore * HOUR, maxRows: 0, now: 0 })
      if (store.hourAggregate(hourKey) !== undefined) return false
      store.addHour(hourKey, agg)
      return true
    })
  }
  return Object.assign(store, { refRejected: total })
}

const image = seriesImage

/** Rows with dimension words and seqs, recorded into `store`; parts cut every `cut` rows. */
function build(rows: readonly Row[], cut: number, withDims: boolean, retainBefore: number | null): { store: SeriesStore; parts: SeriesSnapshot[] } {
  const store = new SeriesStore()
  const parts: SeriesSnapshot[] = []
  let copied = 0
  rows.forEach((r, i) => {
    store.record({ ...r, seq: i + 1 }, withDims ? { user: i % 7, session: (i * 3) % 5, attrs: i % 2 } : undefined)
    if ((i + 1) % cut === 0) {
      parts.push(store.toSnapshotRows(copied, store.rowEnd))
      copied = store.rowEnd
    }
  })
  if (retainBefore !== null) {
    store.retain({ before: retainBefore, maxRows: 0, now: 0 })
    // A fold renumbers rows: one part with the coarse hours, then every row.
    return { store, parts: [store.toSnapshotRows(0, store.rowEnd, { coarse: true })] }
  }
  parts.push(store.toSnapshotRows(copied, store.rowEnd))
  return { store, parts }
}

t.test('a bulk restore is the row-by-row restore, part by part', async (t) => {
  fc.assert(
    fc.property(
      fc.array(rowArb(), { maxLength: 150 }),
      fc.array(rowArb({ dense: true }), { maxLength: 200 }),
      fc.integer({ min: 1, max: 60 }),
      fc.boolean(),
      fc.option(fc.integer({ min: 0, max: 200 }), { nil: null }),
      (sparse, dense, cut, withDims, retainHours) => {
        // Interleaved, so hours fill out of order and across parts.
        const rows: Row[] = []
        for (let i = 0; i < Math.max(sparse.length, dense.length); i++) {
          if (i < sparse.length) rows.push(sparse[i])
          if (i < dense.length) rows.push(dense[i])
        }
        const before = retainHours === null || rows.length === 0 ? null : Math.min(...rows.map((r) => r.ts)) + retainHours * HOUR
        const { store, parts } = build(rows, cut, withDims, before)
        const bulk = SeriesStore.fromSnapshots(parts, 3)
        const ref = reference(parts, 3)
        const want = image(ref)
        if (image(bulk) !== want) throw new Error('bulk restore differs from the row-by-row restore')
        t.equal(bulk.rejected, 3)
        // And both answer as the store they were taken from (bounds aside: a coarse hour's are its edges).
        if (before === null && JSON.stringify(bulk.aggregate(-Infinity, Infinity)) !== JSON.stringify(store.aggregate(-Infinity, Infinity))) throw new Error('bulk restore differs from the original')
        // Rows recorded after the restore go where they would in the reference.
        const late = { ...(rows[0] ?? dense[0] ?? sparse[0] ?? { ts: 5, promptTokens: 1, completionTokens: 1, totalTokens: 2, cachedTokens: 0, reasoningTokens: 0, latencyUs: 7, costNanos: 9, error: false, unpriced: false }), seq: 99_999 }
        bulk.record(late)
        ref.record(late)
        if (image(bulk) !== image(ref)) throw new Error('a row recorded after the restore lands differently')
      },
    ),
    { numRuns: 120 },
  )
})

t.test('sketchOf makes the sketch recording each value makes', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 2 ** 32 }), fc.constantFrom(1, 2, 1_000_000, 2 ** 53 - 1)), { maxLength: 300 }),
      (values) => {
        const one = new LatencySketch()
        for (const v of values) one.record(v)
        const bulk = sketchOf(Float64Array.from(values))
        t.same(bulk.toJSON(), one.toJSON())
        t.equal(bulk.count, values.length)
      },
    ),
    { numRuns: 200 },
  )
})

t.test('malformed parts are refused by the bulk restore with the row named', async (t) => {
  const store = new SeriesStore()
  store.record({ ts: 1_000, promptTokens: 1, completionTokens: 2, totalTokens: 3, cachedTokens: 0, reasoningTokens: 0, latencyUs: 5, costNanos: 7, error: false, unpriced: false, seq: 4 })
  const snap = store.toSnapshot()
  t.throws(() => SeriesStore.fromSnapshots([{ ...snap, error: Uint8Array.of(2) }]), /row 0: error must be 0 or 1, got 2/)
  t.throws(() => SeriesStore.fromSnapshots([{ ...snap, latencyUs: Float64Array.of(-1) }]), /row 0 breaks the Row contract/)
  t.throws(() => SeriesStore.fromSnapshots([snap, { ...snap, ts: [0.5] }]), /row 0 breaks the Row contract/)
})

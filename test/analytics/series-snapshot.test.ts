import t from 'tap'
import fc from 'fast-check'
import { SERIES_SNAPSHOT_VERSION, SeriesStore } from '../../src/analytics/series.js'
import type { SeriesSnapshot } from '../../src/analytics/series.js'
import type { Row } from '../../src/analytics/row.js'
import { HOUR, MIN, pointSpec, resolvePoint, rowArb } from './fixtures/naive.js'

function storeOf(rows: readonly Row[]): SeriesStore {
  const s = new SeriesStore()
  for (const r of rows) s.record(r)
  return s
}

function answers(store: SeriesStore, s: number, e: number): string {
  return JSON.stringify({
    agg: store.aggregate(s, e),
    m: store.timeseries(s, e, MIN),
    h: store.timeseries(s, e, HOUR),
    bounds: store.bounds(),
    size: store.size,
    rejected: store.rejected,
  })
}

/** Typed arrays as plain arrays: what a JSON-ish encoder would hand back. */
function asPlainArrays(snap: SeriesSnapshot): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(snap).map(([k, v]) => [k, ArrayBuffer.isView(v) ? Array.from(v as Float64Array) : v]),
  )
}

t.test('a restored store answers every query identically', async (t) => {
  fc.assert(
    fc.property(
      fc.array(rowArb(), { maxLength: 150 }),
      fc.array(rowArb({ dense: true }), { maxLength: 100 }),
      fc.array(fc.tuple(pointSpec, pointSpec), { minLength: 1, maxLength: 4 }),
      (sparse, dense, rs) => {
        const rows = [...sparse, ...dense]
        const store = storeOf(rows)
        store.record({ ...rows[0], ts: 0.5 } as Row) // one refused row, to carry `rejected`
        const snap = store.toSnapshot()
        const back = SeriesStore.fromSnapshot(snap)
        const backPlain = SeriesStore.fromSnapshot(asPlainArrays(snap))
        for (const [a, b] of [[{ kind: 0, idx: 0, delta: 0, raw: 0 }, { kind: 1, idx: 0, delta: 0, raw: 0 }], ...rs]) {
          const s = resolvePoint(a, rows)
          const e = resolvePoint(b, rows)
          const want = answers(store, s, e)
          if (answers(back, s, e) !== want) throw new Error(`restored store differs on [${s}, ${e})`)
          if (answers(backPlain, s, e) !== want) throw new Error(`plain-array restore differs on [${s}, ${e})`)
        }
        // A snapshot of the restored store is the same data again.
        t.same(back.toSnapshot(), snap)
      },
    ),
    { numRuns: 60 },
  )
})

t.test('snapshot is plain versioned data', async (t) => {
  const store = new SeriesStore()
  store.record({
    ts: 61_000,
    promptTokens: 1,
    completionTokens: 2,
    totalTokens: 3,
    cachedTokens: 4,
    reasoningTokens: 5,
    latencyUs: 6,
    costNanos: 7,
    error: true,
    unpriced: false,
  })
  t.same(store.toSnapshot(), {
    version: SERIES_SNAPSHOT_VERSION,
    rows: 1,
    rejected: 0,
    ts: Float64Array.of(61_000),
    seq: Float64Array.of(0),
    promptTokens: Float64Array.of(1),
    completionTokens: Float64Array.of(2),
    totalTokens: Float64Array.of(3),
    cachedTokens: Float64Array.of(4),
    reasoningTokens: Float64Array.of(5),
    latencyUs: Float64Array.of(6),
    costNanos: Float64Array.of(7),
    error: Uint8Array.of(1),
    unpriced: Uint8Array.of(0),
    coarse: [],
  })
  const empty = SeriesStore.fromSnapshot(new SeriesStore().toSnapshot())
  t.equal(empty.size, 0)
})

t.test('fromSnapshot rejects unknown versions and malformed data, never misreads', async (t) => {
  const store = storeOf(
    fc.sample(rowArb(), { numRuns: 5, seed: 42 }),
  )
  const good = asPlainArrays(store.toSnapshot())
  const bad: [string, unknown, RegExp][] = [
    ['not an object', 'snapshot', /not an object/],
    ['null', null, /not an object/],
    ['unknown version', { ...good, version: 99 }, /unsupported version 99/],
    ['no version', { ...good, version: undefined }, /unsupported version undefined/],
    ['bad rows', { ...good, rows: -1 }, /rows must be/],
    ['bad rejected', { ...good, rejected: 1.5 }, /rejected must be/],
    ['missing column', { ...good, costNanos: undefined }, /column costNanos is missing/],
    ['short column', { ...good, ts: (good.ts as number[]).slice(1) }, /column ts has 4 entries, expected 5/],
    ['rows mismatch', { ...good, rows: 6 }, /expected 6/],
    ['bad flag', { ...good, error: [0, 0, 2, 0, 0] }, /row 2: error must be 0 or 1/],
    ['negative tokens', { ...good, promptTokens: [1, -1, 1, 1, 1] }, /row 1 breaks the Row contract/],
    ['fractional ts', { ...good, ts: [1.5, 1, 1, 1, 1] }, /row 0 breaks the Row contract/],
    ['DataView column', { ...good, ts: new DataView(new ArrayBuffer(40)) }, /column ts is missing or not an array/],
  ]
  for (const [name, data, msg] of bad) t.throws(() => SeriesStore.fromSnapshot(data), msg, name)
})

t.test('row-range parts cut after each phase, restored together, answer identically', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.array(rowArb(), { maxLength: 60 }), { minLength: 1, maxLength: 4 }),
      fc.array(fc.tuple(pointSpec, pointSpec), { minLength: 1, maxLength: 3 }),
      (phases, rs) => {
        const store = new SeriesStore()
        const parts: SeriesSnapshot[] = []
        let cut = 0
        for (const phase of phases) {
          for (const r of phase) store.record(r)
          // Only the rows recorded since the previous cut are copied.
          parts.push(store.toSnapshotRows(cut, store.size))
          cut = store.size
        }
        const restored = SeriesStore.fromSnapshots(parts, store.rejected)
        if (restored.size !== store.size || restored.rejected !== store.rejected) return false
        const all = phases.flat()
        for (const [a, b] of rs) {
          const s = resolvePoint(a, all)
          const e = resolvePoint(b, all)
          if (answers(restored, s, e) !== answers(store, s, e)) return false
        }
        return true
      }
    ),
    { numRuns: 150 }
  )
  t.pass('property held')
})

t.test('a row-range part carries no rejected counter; the whole snapshot does', async (t) => {
  const store = new SeriesStore()
  const row = (ts: number): Row => ({ ts, promptTokens: 1, completionTokens: 1, totalTokens: 2, cachedTokens: 0, reasoningTokens: 0, latencyUs: 5, costNanos: 7, error: false, unpriced: false })
  store.record(row(0))
  store.record(row(86_400_000 + 5))
  store.record(row(86_400_000 + 6))
  store.record({ ...row(1), latencyUs: -1 })
  const part = store.toSnapshotRows(1, 3)
  t.equal(part.rows, 2)
  t.equal(part.rejected, 0)
  t.equal(store.toSnapshot().rejected, 1)
  t.equal(store.toSnapshotRows(3, 3).rows, 0, 'an empty range is an empty part')
  t.equal(SeriesStore.fromSnapshots([store.toSnapshotRows(0, 1), part], 1).rejected, 1)
})

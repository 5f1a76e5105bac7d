/**
 * SeriesStore.forget: rows removed by seq leave a store that answers every query exactly as a
 * fresh store fed only the kept rows (totals, sketches and their extremes, timeseries at every
 * unit, scanRows, bounds, size), through snapshots and further records; subtractCoarse takes an
 * event out of a coarse hour (counts and sums exact), once; setHour/hourAggregate for the rollup.
 */
import t from 'tap'
import fc from 'fast-check'
import { SeriesStore, createAggregate, mergeInto } from '../../src/analytics/series.js'
import type { Row } from '../../src/analytics/row.js'
import { DAY, HOUR, MIN, pointSpec, resolvePoint, rowArb, type PointSpec } from './fixtures/naive.js'
import { answers, dimsArb, recsArb, sketchJson, storeOf, type Rec } from './fixtures/series-answers.js'

const recsGen = recsArb({ sparse: 120, dense: 200, burst: 150 })

function same(a: SeriesStore, b: SeriesStore, recs: readonly Rec[], ranges: ReadonlyArray<[PointSpec, PointSpec]>): string | null {
  if (a.size !== b.size) return `size ${a.size} vs ${b.size}`
  if (JSON.stringify(a.bounds()) !== JSON.stringify(b.bounds())) return `bounds ${JSON.stringify(a.bounds())} vs ${JSON.stringify(b.bounds())}`
  const rows = recs.map((r) => r.row)
  const all: Array<[number, number]> = [[-Infinity, Infinity], ...ranges.map(([x, y]): [number, number] => [resolvePoint(x, rows), resolvePoint(y, rows)])]
  for (const [s, e] of all) {
    const want = answers(b, s, e)
    const got = answers(a, s, e)
    if (got !== want) return `[${s}, ${e}): ${got} vs ${want}`
  }
  return null
}

const pick = (recs: readonly Rec[], mask: readonly boolean[]) => recs.filter((_, i) => mask[i % mask.length])

t.test('property: forget equals a fresh store of the kept rows, for every query', async (t) => {
  fc.assert(
    fc.property(
      recsGen,
      fc.array(fc.boolean(), { minLength: 1, maxLength: 50 }),
      fc.option(fc.tuple(pointSpec, pointSpec), { nil: undefined }),
      fc.array(fc.tuple(pointSpec, pointSpec), { minLength: 1, maxLength: 4 }),
      fc.array(fc.tuple(rowArb(), dimsArb), { maxLength: 30 }),
      fc.boolean(),
      (recs, mask, rangeSpec, ranges, later, byTime) => {
        const store = storeOf(recs)
        const doomed = pick(recs, mask)
        const rows = recs.map((r) => r.row)
        const range = rangeSpec === undefined ? undefined : { start: resolvePoint(rangeSpec[0], rows), end: resolvePoint(rangeSpec[1], rows) }
        const inRange = (r: Rec) => range === undefined || (r.row.ts >= range.start && r.row.ts < range.end)
        const gone = new Set(doomed.filter(inRange).map((r) => r.row.seq as number))
        const seen: number[] = []
        // Seqs with no row are no-ops: throw some in.
        const asked = new Set([...doomed.map((r) => r.row.seq as number), 1e15, 7e14])
        // The seq → ts form looks in those minutes only; the set form everywhere.
        const byTs = new Map([...doomed.map((r): [number, number] => [r.row.seq as number, r.row.ts]), [1e15, 5 * MIN]])
        const removed = store.forget(byTime ? byTs : asked, range, (_v, _f, _u, _s, _a, _ts, seq) => seen.push(seq))
        if (removed !== gone.size) throw new Error(`removed ${removed}, expected ${gone.size}`)
        if (JSON.stringify(seen.sort((a, b) => a - b)) !== JSON.stringify([...gone].sort((a, b) => a - b))) throw new Error('removed rows seen')
        const kept = recs.filter((r) => !gone.has(r.row.seq as number))
        const fresh = storeOf(kept)
        let diff = same(store, fresh, kept, ranges)
        if (diff !== null) throw new Error(`after forget: ${diff}`)
        // Idempotent.
        if (store.forget(asked, range) !== 0 || store.forget(byTs, range) !== 0) throw new Error('second forget removed rows')
        // A snapshot holds the kept rows only (the holes are not copied); the restore answers alike.
        const back = SeriesStore.fromSnapshot(store.toSnapshot())
        diff = same(back, fresh, kept, ranges)
        if (diff !== null) throw new Error(`restored: ${diff}`)
        // Later rows land as in the fresh store.
        const more = later.map(([row, dims], i): Rec => ({ row: { ...row, seq: 2 ** 40 + i }, dims }))
        for (const r of more) {
          store.record(r.row, r.dims)
          fresh.record(r.row, r.dims)
        }
        diff = same(store, fresh, [...kept, ...more], ranges)
        if (diff !== null) throw new Error(`after later rows: ${diff}`)
        return true
      }
    ),
    { numRuns: 150 }
  )
  t.pass('property held')
})

t.test('forget in several steps, down to nothing: holes, compaction, row-range parts', async (t) => {
  const recs: Rec[] = []
  for (let i = 0; i < 5000; i++) recs.push({ row: { ts: 20_000 * DAY + ((i * 7919) % (3 * HOUR)), promptTokens: i, completionTokens: 1, totalTokens: i + 1, cachedTokens: i % 3, reasoningTokens: 0, latencyUs: 1000 + i, costNanos: 5 * i, error: i % 9 === 0, unpriced: false, seq: i }, dims: { user: i % 4, session: 0, attrs: 0 } })
  const store = storeOf(recs)
  let kept = recs
  // 1% first: holes only (no compaction), the row numbering keeps its length.
  const first = new Set(recs.filter((r) => (r.row.seq as number) % 100 === 0).map((r) => r.row.seq as number))
  t.equal(store.forget(first), 50)
  kept = kept.filter((r) => !first.has(r.row.seq as number))
  t.equal(store.size, 4950)
  t.equal(store.rowEnd, 5000, 'holes stay until compaction')
  // Parts by row range, as the aggregator's snapshot cuts them, skip the holes.
  const parts = [store.toSnapshotRows(0, 2000), store.toSnapshotRows(2000, 5000)]
  t.equal(parts[0].rows + parts[1].rows, 4950)
  t.equal(same(SeriesStore.fromSnapshots(parts), storeOf(kept), kept, []), null, 'parts restore the kept rows')
  // Then most: a compaction renumbers.
  const second = new Set(kept.filter((r) => (r.row.seq as number) % 3 !== 0).map((r) => r.row.seq as number))
  t.equal(store.forget(second), second.size)
  kept = kept.filter((r) => !second.has(r.row.seq as number))
  t.equal(store.size, kept.length)
  t.equal(store.rowEnd, kept.length, 'compacted: no holes left')
  t.equal(same(store, storeOf(kept), kept, []), null)
  // A narrowed range removes only rows inside it.
  const all = new Set(kept.map((r) => r.row.seq as number))
  const start = 20_000 * DAY + HOUR
  const inside = kept.filter((r) => r.row.ts >= start && r.row.ts < start + HOUR)
  t.equal(store.forget(all, { start, end: start + HOUR }), inside.length)
  kept = kept.filter((r) => !inside.includes(r))
  t.equal(same(store, storeOf(kept), kept, []), null)
  t.same(store.timeseries(-Infinity, Infinity, HOUR).map((b) => b.start), [20_000 * DAY, 20_000 * DAY + 2 * HOUR], 'the emptied hour is gone')
  // Everything: an empty store.
  t.equal(store.forget(all), kept.length)
  t.equal(store.size, 0)
  t.equal(store.bounds(), null)
  t.same(store.timeseries(-Infinity, Infinity, MIN), [])
  t.equal(store.aggregate(-Infinity, Infinity).totals.requests, 0)
})

t.test('the seq → ts form finds a row only in the minute of the ts given', async (t) => {
  const store = new SeriesStore()
  const row = (ts: number, seq: number): Row => ({ ts, promptTokens: 1, completionTokens: 1, totalTokens: 2, cachedTokens: 0, reasoningTokens: 0, latencyUs: 5, costNanos: 7, error: false, unpriced: false, seq })
  for (let i = 0; i < 100; i++) store.record(row(i * 20_000, i))
  t.equal(store.forget(new Map([[10, 10 * 20_000 + MIN]])), 0, 'a ts in another minute: not found')
  t.equal(store.forget(new Map([[10, 10 * 20_000 + 1]])), 1, 'a ts in the same minute: found')
  const before = store.scannedRows
  t.equal(store.forget(new Map([[50, 50 * 20_000], [51, 51 * 20_000]])), 2)
  t.equal(store.scannedRows, before, 'forget is not counted as query reads')
  t.equal(store.size, 97)
})

t.test('a removed row leaves no value readable: its words are zeroed', async (t) => {
  const store = new SeriesStore()
  const secret = { ts: 5 * MIN, promptTokens: 2 ** 30 + 7, completionTokens: 3, totalTokens: 2 ** 30 + 10, cachedTokens: 9, reasoningTokens: 0, latencyUs: 123_456, costNanos: 2 ** 33 + 1, error: true, unpriced: false, seq: 2 ** 35 }
  store.record({ ...secret, ts: 5 * MIN + 1, seq: 1, promptTokens: 1, totalTokens: 4 }, { user: 2, session: 3, attrs: 4 })
  store.record(secret, { user: 9, session: 9, attrs: 9 })
  t.equal(store.forget(new Set([2 ** 35])), 1)
  const snap = store.toSnapshot()
  t.equal(snap.rows, 1)
  t.same(Array.from(snap.seq), [1])
  t.same(Array.from(snap.dims ?? []), [2, 3, 4])
})

t.test('forget does not reach coarse hours; subtractCoarse takes one event out, once', async (t) => {
  const row = (ts: number, seq: number, latencyUs: number, over: Partial<Row> = {}): Row => ({ ts, promptTokens: 10, completionTokens: 2, totalTokens: 12, cachedTokens: 1, reasoningTokens: 0, latencyUs, costNanos: 1000, error: false, unpriced: false, seq, ...over })
  const store = new SeriesStore()
  const recs = [row(10 * MIN, 1, 1000), row(20 * MIN, 2, 50_000, { error: true }), row(30 * MIN, 3, 2000), row(HOUR + MIN, 4, 3000)]
  for (const r of recs) store.record(r)
  store.retain({ before: HOUR, maxRows: 0, now: 0 })
  t.equal(store.coarseHours, 1)
  t.equal(store.forget(new Set([1, 2, 3])), 0, 'rows of a coarse hour cannot be found by seq')
  const v = (r: Row) => [r.promptTokens, r.completionTokens, r.totalTokens, r.cachedTokens, r.reasoningTokens, r.latencyUs, r.costNanos]
  t.notOk(store.subtractCoarse(recs[3].ts, v(recs[3]), 0, 4), 'not a coarse hour: refused')
  t.ok(store.subtractCoarse(recs[1].ts, v(recs[1]), 1, 2))
  t.notOk(store.subtractCoarse(recs[1].ts, v(recs[1]), 1, 2), 'the same seq twice: a no-op')
  t.notOk(store.subtractCoarse(recs[1].ts, [10, 2, 12, 1, 0, 50_000, 10_000], 1, 9), 'more than the hour holds: refused')
  const want = storeOf([recs[0], recs[2], recs[3]].map((row) => ({ row, dims: { user: 0, session: 0, attrs: 0 } })))
  want.retain({ before: HOUR, maxRows: 0, now: 0 })
  for (const [s, e] of [[-Infinity, Infinity], [0, HOUR], [0, DAY]]) {
    const a = store.aggregate(s, e)
    const b = want.aggregate(s, e)
    t.same(a.totals, b.totals, 'counts and sums exact')
    t.equal(a.sketch.count, b.sketch.count)
    t.ok(Math.abs(a.sketch.quantile(1) - b.sketch.quantile(1)) <= b.sketch.quantile(1) * 0.01, 'the max within the sketch accuracy')
  }
  t.equal(store.coarseRows, 2)
  // The seqs taken out are kept in the snapshot: re-applied after a restore, still a no-op.
  t.same(store.toSnapshot().coarse.map((c) => c.forgotten), [[2]])
  const back = SeriesStore.fromSnapshot(store.toSnapshot())
  t.notOk(back.subtractCoarse(recs[1].ts, v(recs[1]), 1, 2))
  t.ok(back.subtractCoarse(recs[0].ts, v(recs[0]), 0, 1))
  t.notOk(back.subtractCoarse(recs[0].ts, v(recs[0]), 0, 1))
  t.same(store.aggregate(-Infinity, Infinity).totals.requests, back.aggregate(-Infinity, Infinity).totals.requests + 1)
  // The last events of the hour: the hour and its day go.
  t.ok(store.subtractCoarse(recs[0].ts, v(recs[0]), 0, 1))
  t.ok(store.subtractCoarse(recs[2].ts, v(recs[2]), 0, 3))
  t.equal(store.coarseHours, 0)
  t.same(store.timeseries(-Infinity, Infinity, HOUR).map((b) => b.start), [HOUR])
})

t.test('setHour and hourAggregate: a coarse-only store rebuilt hour by hour', async (t) => {
  const a = new SeriesStore()
  const b = new SeriesStore()
  const row = (ts: number, latencyUs: number, seq: number): Row => ({ ts, promptTokens: 1, completionTokens: 1, totalTokens: 2, cachedTokens: 0, reasoningTokens: 0, latencyUs, costNanos: 3, error: false, unpriced: false, seq })
  for (let i = 0; i < 100; i++) (i % 2 === 0 ? a : b).record(row(i * 17 * MIN, 100 + i, i))
  const rollup = SeriesStore.coarseOnly()
  for (const s of [a, b]) s.forEachHour((k, agg) => rollup.addHour(k, agg))
  // Forget rows of a; rebuild each of the rollup's hours as the merge of both series' hours.
  const gone = new Set([0, 2, 4, 6, 8, 40, 42, 98])
  t.equal(a.forget(gone), gone.size)
  for (let k = 0; k < 30; k++) {
    const agg = createAggregate()
    for (const s of [a, b]) {
      const h = s.hourAggregate(k)
      if (h !== undefined) mergeInto(agg, h)
    }
    rollup.setHour(k, agg)
  }
  const fresh = SeriesStore.coarseOnly()
  for (const s of [a, b]) s.forEachHour((k, agg) => fresh.addHour(k, agg))
  t.same(rollup.aggregate(-Infinity, Infinity).totals, fresh.aggregate(-Infinity, Infinity).totals)
  t.equal(rollup.coarseRows, 100 - gone.size)
  t.equal(rollup.coarseHours, fresh.coarseHours)
  for (const unit of [HOUR, DAY]) {
    t.same(
      rollup.timeseries(-Infinity, Infinity, unit).map((x) => [x.start, sketchJson(x)]),
      fresh.timeseries(-Infinity, Infinity, unit).map((x) => [x.start, sketchJson(x)])
    )
  }
  rollup.setHour(0, null)
  t.equal(rollup.hourAggregate(0), undefined)
  t.equal(rollup.aggregate(0, HOUR).totals.requests, 0)
  t.throws(() => new SeriesStore().setHour(0, null), /not a coarse hour/)
})

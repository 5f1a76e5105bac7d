/**
 * SeriesStore re-price (planReprice / applyReprice): a store whose events are re-priced answers
 * every query exactly as a fresh store fed the same rows at the new costs — totals, sketches,
 * timeseries at every unit, rows — including hours retention folded before the re-price (their
 * rows are gone: before → after by value) and rows whose cost crosses 2^32 (the EXT escape)
 * or sits in wide rows; re-applying an id changes nothing (rows are set; coarse hours keep the
 * ids they applied, through snapshots and through a fold after the re-price); rows staged into
 * chunk copies before the apply come out the same. Appends do not make a plan stale (see
 * reprice-appends.test.ts); a delete does.
 */
import t from 'tap'
import fc from 'fast-check'
import { SeriesStore } from '../../src/analytics/series.js'
import { byMinute, groupByMinute, type CostColumns } from '../../src/analytics/reprice.js'
import type { Row } from '../../src/analytics/row.js'
import { DAY, HOUR, MIN, pointSpec, resolvePoint, rowArb, type PointSpec } from './fixtures/naive.js'
import { answers, recsArb, rowsOf, storeOf, type Rec } from './fixtures/series-answers.js'

const recsGen = recsArb({ sparse: 100, dense: 150, burst: 120 })
/** New costs: small, around 2^32 (the EXT escape's edge) and large. */
const costArb = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 2 ** 32 - 3, max: 2 ** 32 + 3 }), fc.integer({ min: 0, max: 2 ** 40 }))

function same(a: SeriesStore, b: SeriesStore, rows: readonly Row[], ranges: ReadonlyArray<[PointSpec, PointSpec]>): string | null {
  if (a.size !== b.size) return `size ${a.size} vs ${b.size}`
  if (a.coarseHours !== b.coarseHours || a.coarseRows !== b.coarseRows) return `coarse ${a.coarseHours}/${a.coarseRows} vs ${b.coarseHours}/${b.coarseRows}`
  const all: Array<[number, number]> = [[-Infinity, Infinity], ...ranges.map(([x, y]): [number, number] => [resolvePoint(x, rows), resolvePoint(y, rows)])]
  for (const [s, e] of all) {
    const want = answers(b, s, e)
    const got = answers(a, s, e)
    if (got !== want) return `[${s}, ${e}): ${got.slice(0, 600)} vs ${want.slice(0, 600)}`
  }
  return null
}

/** The change list of `changed` (recs, ascending seq) from their costs now to `to`. */
function columns(changed: ReadonlyArray<{ rec: Rec; cost: number; unpriced: boolean }>, extra: ReadonlyArray<[seq: number, ts: number]> = []): CostColumns {
  const all = [...changed.map((c) => ({ seq: c.rec.row.seq as number, ts: c.rec.row.ts, before: c.rec.row.costNanos, bu: c.rec.row.unpriced, after: c.cost, au: c.unpriced })), ...extra.map(([seq, ts]) => ({ seq, ts, before: 5, bu: false, after: 9, au: false }))].sort((x, y) => x.seq - y.seq)
  return {
    seqs: Float64Array.from(all, (x) => x.seq),
    ts: Float64Array.from(all, (x) => x.ts),
    before: Float64Array.from(all, (x) => x.before),
    beforeUnpriced: Uint8Array.from(all, (x) => (x.bu ? 1 : 0)),
    after: Float64Array.from(all, (x) => x.after),
    afterUnpriced: Uint8Array.from(all, (x) => (x.au ? 1 : 0))
  }
}

const every = (c: CostColumns) => Uint32Array.from(c.seqs, (_, i) => i)

t.test('property: a re-priced store equals a fresh one at the new costs, coarse hours included; idempotent', async (t) => {
  fc.assert(
    fc.property(
      recsGen,
      fc.array(fc.option(fc.tuple(costArb, fc.boolean()), { nil: undefined, freq: 2 }), { minLength: 1, maxLength: 40 }),
      fc.option(fc.integer({ min: 0, max: 4 * DAY }), { nil: undefined }),
      fc.array(fc.tuple(pointSpec, pointSpec), { minLength: 1, maxLength: 3 }),
      fc.integer({ min: 1, max: 4 }),
      (recs, plan, foldAt, ranges, slices) => {
        // Fold everything before an hour (rows there become coarse) before the re-price.
        const policy = foldAt === undefined ? null : { before: 19_700 * DAY + foldAt, maxRows: 0, now: Infinity }
        const store = storeOf(recs)
        if (policy !== null) store.retain(policy)
        const changed = recs.flatMap((rec, i) => {
          const p = plan[i % plan.length]
          return p === undefined ? [] : [{ rec, cost: p[0], unpriced: p[1] }]
        })
        // Entries of events no row holds (a deleted event's, say) are skipped where rows are held.
        const burst = 19_700 * DAY + 5 * HOUR + 7 * MIN
        const c = columns(changed, [[1e15, 40_000 * DAY], ...(burst >= store.coarseBefore ? [[1e15 + 1, burst] as [number, number]] : [])])
        // Planned in slices (as an aggregator does between turns), applied at once.
        const idx = every(c)
        const size = Math.ceil(idx.length / slices)
        let p = store.planReprice(c, idx.subarray(0, size), 'rp_1')
        for (let lo = size; lo < idx.length; lo += size) p = store.planReprice(c, idx.subarray(lo, lo + size), 'rp_1', p)
        // Rows staged into chunk copies: none, one (the rest written at apply), in steps, at once.
        const stage = [0, 1, 7, Infinity][slices - 1]
        if (stage === 1) store.stageReprice(p, 1)
        else if (stage > 0) while (store.stageReprice(p, stage) > 0);
        const res = store.applyReprice(p)
        if (res === null) throw new Error('plan refused')
        const newRows = recs.map((rec) => {
          const ch = changed.find((x) => x.rec === rec)
          return ch === undefined ? rec : { row: { ...rec.row, costNanos: ch.cost, unpriced: ch.unpriced }, dims: rec.dims }
        })
        const fresh = storeOf(newRows)
        if (policy !== null) fresh.retain(policy)
        const rows = newRows.map((r) => r.row)
        let diff = same(store, fresh, rows, ranges)
        if (diff !== null) throw new Error(`after re-price: ${diff}`)
        // Rows set: those whose cost or flag differ, plus every entry of a coarse hour.
        const coarseBefore = store.coarseBefore
        const want = changed.filter((x) => x.rec.row.ts < coarseBefore || x.cost !== x.rec.row.costNanos || x.unpriced !== x.rec.row.unpriced).length
        if (res.changed !== want) throw new Error(`changed ${res.changed}, expected ${want}`)
        // Idempotent: again by id; and after a snapshot round trip (coarse hours keep their ids).
        if (store.reprice(c, idx, 'rp_1').changed !== 0) throw new Error('second apply changed something')
        const back = SeriesStore.fromSnapshot(store.toSnapshot())
        if (back.reprice(c, idx, 'rp_1').changed !== 0) throw new Error('apply after a restore changed something')
        diff = same(back, fresh, rows, ranges)
        if (diff !== null) throw new Error(`restored + re-applied: ${diff}`)
        // A fold after the re-price keeps the hours' ids: re-applying still changes nothing.
        store.retain({ before: Infinity, maxRows: 0, now: Infinity })
        fresh.retain({ before: Infinity, maxRows: 0, now: Infinity })
        if (store.reprice(c, idx, 'rp_1').changed !== 0) throw new Error('apply after a fold changed something')
        diff = same(store, fresh, rows, ranges)
        if (diff !== null) throw new Error(`folded after: ${diff}`)
        return true
      }
    ),
    { numRuns: 120 }
  )
  t.pass('property held')
})

const row = (seq: number, ts: number, cost: number, extra: Partial<Row> = {}): Row => ({ ts, promptTokens: 10, completionTokens: 5, totalTokens: 15, cachedTokens: 0, reasoningTokens: 0, latencyUs: 1000 + seq, costNanos: cost, error: false, unpriced: false, seq, ...extra })

t.test('row words: a cost crossing 2^32 both ways, a wide row, the unpriced flag; other values untouched', async (t) => {
  const T = 20_000 * DAY
  const recs: Rec[] = [
    { row: row(1, T + 1, 7), dims: { user: 2, session: 0, attrs: 0 } },
    { row: row(2, T + 2, 2 ** 33 + 5, { cachedTokens: 3 }), dims: { user: 0, session: 0, attrs: 0 } },
    { row: row(3, T + 3, 9, { promptTokens: 2 ** 30, totalTokens: 2 ** 30 + 5 }), dims: { user: 0, session: 0, attrs: 0 } },
    { row: row(4, T + 4, 0, { unpriced: true }), dims: { user: 0, session: 0, attrs: 0 } }
  ]
  const store = storeOf(recs)
  const changed = [
    { rec: recs[0], cost: 2 ** 35 + 1, unpriced: false },
    { rec: recs[1], cost: 4, unpriced: false },
    { rec: recs[2], cost: 2 ** 45, unpriced: false },
    { rec: recs[3], cost: 123, unpriced: false }
  ]
  const c = columns(changed)
  t.equal(store.reprice(c, every(c), 'r').changed, 4)
  const fresh = storeOf(recs.map((r, i) => ({ row: { ...r.row, costNanos: changed[i].cost, unpriced: false }, dims: r.dims })))
  t.equal(same(store, fresh, recs.map((r) => r.row), []), null)
  t.equal(store.aggregate(-Infinity, Infinity).totals.unpriced, 0)
  t.equal(store.aggregate(-Infinity, Infinity).totals.costNanos, 2 ** 35 + 1 + 4 + 2 ** 45 + 123)
  // And back to a small cost and unpriced: the EXT words keep reading exactly.
  const back = columns(changed.map((x) => ({ rec: { row: { ...x.rec.row, costNanos: x.cost }, dims: x.rec.dims }, cost: 1, unpriced: true })))
  t.equal(store.reprice(back, every(back), 'r2').changed, 4)
  const t2 = store.aggregate(-Infinity, Infinity).totals
  t.same([t2.costNanos, t2.unpriced, t2.cachedTokens, t2.totalTokens], [4, 4, 3, 15 + 15 + 2 ** 30 + 5 + 15])
})

t.test('a coarse hour applies an id once; one that cannot have counted `before` is left alone', async (t) => {
  const T = 20_000 * DAY
  const store = storeOf([0, 1, 2].map((i) => ({ row: row(i + 1, T + i * MIN, 100), dims: { user: 0, session: 0, attrs: 0 } })))
  store.retain({ before: T + HOUR, maxRows: 0, now: Infinity })
  t.equal(store.coarseHours, 1)
  const c: CostColumns = { seqs: Float64Array.of(1, 2), ts: Float64Array.of(T, T + MIN), before: Float64Array.of(100, 100), beforeUnpriced: Uint8Array.of(0, 0), after: Float64Array.of(40, 0), afterUnpriced: Uint8Array.of(0, 1) }
  const res = store.reprice(c, [0, 1], 'a')
  t.same([res.changed, [...res.shifts]], [2, [[T / HOUR, { cost: -160, unpriced: 1, n: 2 }]]])
  // The rollup's way: a store of coarse hours only takes the shifts.
  const rollup = SeriesStore.coarseOnly()
  rollup.record(row(0, T, 300))
  t.equal(rollup.shiftHours(res.shifts), 1)
  t.same([rollup.aggregate(-Infinity, Infinity).totals.costNanos, rollup.aggregate(-Infinity, Infinity).totals.unpriced], [140, 1])
  t.equal(rollup.shiftHours(new Map([[T / HOUR, { cost: -1000, unpriced: 0, n: 1 }], [T / HOUR + 5, { cost: 1, unpriced: 0, n: 1 }]])), 0, 'out of range or not held: skipped')
  t.same([store.aggregate(-Infinity, Infinity).totals.costNanos, store.aggregate(-Infinity, Infinity).totals.unpriced], [140, 1])
  t.equal(store.reprice(c, [0, 1], 'a').changed, 0, 'same id: nothing')
  // A before larger than the hour holds: refused whole, nothing changes.
  const bad: CostColumns = { ...c, before: Float64Array.of(1e9, 0) }
  t.equal(store.reprice(bad, [0, 1], 'b').changed, 0)
  t.equal(store.aggregate(-Infinity, Infinity).totals.costNanos, 140)
  // Snapshot: the ids ride along; an older snapshot (no `repriced`) still reads.
  const snap = store.toSnapshot()
  t.same(snap.coarse[0].repriced, ['a'])
  const back = SeriesStore.fromSnapshot(snap)
  t.equal(back.reprice(c, [0, 1], 'a').changed, 0)
  const older = { ...snap, coarse: snap.coarse.map(({ repriced: _r, ...h }) => h) }
  t.equal(SeriesStore.fromSnapshot(older).aggregate(-Infinity, Infinity).totals.costNanos, 140)
  t.throws(() => SeriesStore.fromSnapshot({ ...snap, coarse: [{ ...snap.coarse[0], repriced: [3] }] }), /repriced must be an array of re-price ids/)
})

t.test('a plan is refused once the store changed; slices of one plan need the same id', async (t) => {
  const T = 20_000 * DAY
  const store = storeOf([{ row: row(1, T, 5), dims: { user: 0, session: 0, attrs: 0 } }])
  const c: CostColumns = { seqs: Float64Array.of(1), ts: Float64Array.of(T), before: Float64Array.of(5), beforeUnpriced: Uint8Array.of(0), after: Float64Array.of(6), afterUnpriced: Uint8Array.of(0) }
  const plan = store.planReprice(c, [0], 'x')
  store.record(row(2, T + 5, 1))
  t.ok(store.isCurrent(plan), 'an append leaves a plan valid')
  store.record(row(3, T + 6, 1))
  t.equal(store.forget(new Set([3])), 1)
  t.notOk(store.isCurrent(plan), 'a delete makes it stale')
  t.equal(store.applyReprice(plan), null, 'stale plan: nothing applied')
  t.equal(store.aggregate(-Infinity, Infinity).totals.costNanos, 6)
  t.throws(() => store.planReprice(c, [0], 'x', plan), /another store state/)
  const ok = store.planReprice(c, [0], 'x')
  t.throws(() => store.planReprice(c, [0], 'y', ok), /another store state or id/)
  t.same(store.applyReprice(ok), { changed: 1, shifts: new Map([[T / HOUR, { cost: 1, unpriced: 0, n: 1 }]]) })
  t.equal(store.aggregate(-Infinity, Infinity).totals.costNanos, 7)
  const unordered: CostColumns = { seqs: Float64Array.of(2, 1), ts: Float64Array.of(T, T), before: Float64Array.of(0, 0), beforeUnpriced: Uint8Array.of(0, 0), after: Float64Array.of(0, 0), afterUnpriced: Uint8Array.of(0, 0) }
  t.throws(() => store.planReprice(unordered, [0, 1], 'z'), /ascending seqs/)
})

t.test('grouping entries by minute: stable, both ways (dense span: counting; sparse: sort), NaN left out, resumable', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.integer({ min: 0, max: 50 * MIN }), fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), fc.constant(NaN)), { maxLength: 200 }), fc.integer({ min: 1, max: 7 }), (times, step) => {
      const c: CostColumns = { seqs: Float64Array.from(times, (_, i) => i), ts: Float64Array.from(times), before: new Float64Array(times.length), beforeUnpriced: new Uint8Array(times.length), after: new Float64Array(times.length), afterUnpriced: new Uint8Array(times.length) }
      const idx = Uint32Array.from(times, (_, i) => i).filter((i) => i % 5 !== 1)
      // The reference: stable sort of the entries with a time by minute.
      const want = [...idx].filter((i) => !Number.isNaN(times[i])).sort((a, b) => Math.floor(times[a] / MIN) - Math.floor(times[b] / MIN) || a - b)
      const it = groupByMinute(c, idx, step)
      let r = it.next()
      while (r.done !== true) r = it.next()
      const g = r.value
      if (JSON.stringify([...g.order]) !== JSON.stringify(want)) throw new Error(`order ${[...g.order]} vs ${want}`)
      for (let k = 0; k < g.minutes.length; k++) {
        for (let j = g.starts[k]; j < g.starts[k + 1]; j++) if (Math.floor(times[g.order[j]] / MIN) !== g.minutes[k]) throw new Error('entry in the wrong group')
        if (k > 0 && !(g.minutes[k] > g.minutes[k - 1])) throw new Error('minutes not ascending')
      }
      if (JSON.stringify(byMinute(c, idx)) !== JSON.stringify(g)) throw new Error('byMinute differs')
      return true
    }),
    { numRuns: 300 }
  )
  t.pass('property held')
})

t.test('staged rows stay unseen until the apply; a stale staged plan changes nothing', async (t) => {
  const T = 20_000 * DAY
  const recs: Rec[] = Array.from({ length: 5000 }, (_, i) => ({ row: row(i + 1, T + (i % 120) * MIN, 10, i % 3 === 0 ? { promptTokens: 2 ** 30, totalTokens: 2 ** 30 + 5 } : {}), dims: { user: 0, session: 0, attrs: 0 } }))
  const store = storeOf(recs)
  const changed = recs.filter((_, i) => i % 2 === 0).map((rec) => ({ rec, cost: 2 ** 33, unpriced: false }))
  const c = columns(changed)
  const before = rowsOf(store, -Infinity, Infinity)
  const plan = store.planReprice(c, every(c), 's')
  while (store.stageReprice(plan, 1000) > 0);
  t.equal(rowsOf(store, -Infinity, Infinity), before, 'rows read the old costs while staged')
  t.equal(store.aggregate(-Infinity, Infinity).totals.costNanos, 50_000)
  t.equal(store.applyReprice(plan)?.changed, 2500)
  t.equal(store.aggregate(T, T + MIN / 2).totals.costNanos, store.timeseries(T, T + MIN, MIN)[0].totals.costNanos, 'rows and minute aggregates agree')
  t.equal(store.aggregate(-Infinity, Infinity).totals.costNanos, 2500 * 10 + 2500 * 2 ** 33)
  const fresh = storeOf(recs.map((r, i) => (i % 2 === 0 ? { row: { ...r.row, costNanos: 2 ** 33 }, dims: r.dims } : r)))
  t.equal(rowsOf(store, -Infinity, Infinity), rowsOf(fresh, -Infinity, Infinity))
  // Staged, then the store changes: the apply refuses and swaps nothing in (the new row stays).
  const back = columns(changed.map((x) => ({ rec: { row: { ...x.rec.row, costNanos: 2 ** 33 }, dims: x.rec.dims }, cost: 1, unpriced: false })))
  const stale = store.planReprice(back, every(back), 't')
  while (store.stageReprice(stale, 1000) > 0);
  store.record(row(99_999, T + 5, 3))
  store.record(row(100_000, T + 6, 4))
  t.equal(store.forget(new Set([100_000])), 1)
  t.equal(store.applyReprice(stale), null)
  t.equal(store.aggregate(-Infinity, Infinity).totals.costNanos, 2500 * 10 + 2500 * 2 ** 33 + 3, 'nothing of the stale plan, the new row kept')
})

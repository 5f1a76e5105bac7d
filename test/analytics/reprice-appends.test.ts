/**
 * A re-price planned and staged while rows keep arriving (issue 15: the plan runs outside the
 * cut, events are recorded between its slices): rows appended between plan slices, between
 * staging slices and after staging — into staged chunks, into the first chunk while it grows,
 * into new chunks, into minutes that get their own aggregate meanwhile, with the EXT and wide
 * escapes — leave the plan valid, and after the apply the store answers every query exactly
 * as a fresh store fed the old rows at their new costs, then the appended rows.
 */
import t from 'tap'
import fc from 'fast-check'
import { SeriesStore } from '../../src/analytics/series.js'
import type { CostColumns } from '../../src/analytics/reprice.js'
import type { Row } from '../../src/analytics/row.js'
import { DAY, HOUR, MIN, rowArb } from './fixtures/naive.js'
import { answers, recsArb, rowsOf, storeOf, dimsArb, type Rec } from './fixtures/series-answers.js'

const BURST = 19_700 * DAY + 5 * HOUR + 7 * MIN

/** The change list (ascending seq) of `changed`: each from its cost now to its new one. */
function columns(changed: ReadonlyArray<{ rec: Rec; cost: number; unpriced: boolean }>): CostColumns {
  const all = [...changed].sort((x, y) => (x.rec.row.seq as number) - (y.rec.row.seq as number))
  return {
    seqs: Float64Array.from(all, (x) => x.rec.row.seq as number),
    ts: Float64Array.from(all, (x) => x.rec.row.ts),
    before: Float64Array.from(all, (x) => x.rec.row.costNanos),
    beforeUnpriced: Uint8Array.from(all, (x) => (x.rec.row.unpriced ? 1 : 0)),
    after: Float64Array.from(all, (x) => x.cost),
    afterUnpriced: Uint8Array.from(all, (x) => (x.unpriced ? 1 : 0))
  }
}

function same(a: SeriesStore, b: SeriesStore): string | null {
  if (a.size !== b.size) return `size ${a.size} vs ${b.size}`
  for (const [s, e] of [[-Infinity, Infinity], [BURST, BURST + MIN], [19_700 * DAY, 19_701 * DAY]]) {
    const want = answers(b, s, e)
    const got = answers(a, s, e)
    if (got !== want) return `[${s}, ${e}): ${got.slice(0, 400)} vs ${want.slice(0, 400)}`
  }
  return null
}

const costArb = fc.oneof(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 2 ** 32 - 3, max: 2 ** 32 + 3 }), fc.integer({ min: 0, max: 2 ** 40 }))

t.test('property: rows appended while a plan is made and staged leave it valid; the apply equals a fresh store', async (t) => {
  fc.assert(
    fc.property(
      recsArb({ sparse: 60, dense: 80, burst: 70 }),
      // Appended rows: anywhere, or into the burst minute (which crosses the own-aggregate threshold).
      fc.array(fc.tuple(rowArb(), dimsArb, fc.option(fc.integer({ min: 0, max: MIN - 1 }), { nil: undefined })), { maxLength: 120 }),
      fc.array(fc.option(fc.tuple(costArb, fc.boolean()), { nil: undefined, freq: 2 }), { minLength: 1, maxLength: 30 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 9 }),
      (recs, extra, plan, slices, stageStep) => {
        const store = storeOf(recs)
        const top = recs.reduce((m, r) => Math.max(m, r.row.seq as number), 0)
        const later: Rec[] = extra.map(([row, dims, o], i) => ({ row: { ...row, ts: o === undefined ? row.ts : BURST + o, seq: top + 1 + i }, dims }))
        const changed = recs.flatMap((rec, i) => {
          const p = plan[i % plan.length]
          return p === undefined ? [] : [{ rec, cost: p[0], unpriced: p[1] }]
        })
        const c = columns(changed)
        const idx = Uint32Array.from(c.seqs, (_, i) => i)
        // Appends spread over: between plan slices, between staging steps, after staging.
        let next = 0
        const append = (n: number) => {
          for (const end = Math.min(later.length, next + n); next < end; next++) if (!store.record(later[next].row, later[next].dims)) throw new Error('row refused')
        }
        const per = Math.ceil(later.length / (slices + 3))
        const size = Math.ceil(idx.length / slices)
        let p = store.planReprice(c, idx.subarray(0, size), 'ap')
        for (let lo = size; lo < idx.length; lo += size) {
          append(per)
          p = store.planReprice(c, idx.subarray(lo, lo + size), 'ap', p)
        }
        append(per)
        while (store.stageReprice(p, stageStep) > 0) append(Math.ceil(per / 4))
        append(later.length)
        if (!store.isCurrent(p)) throw new Error('appends made the plan stale')
        const res = store.applyReprice(p)
        if (res === null) throw new Error('plan refused')
        const repriced = recs.map((rec) => {
          const ch = changed.find((x) => x.rec === rec)
          return ch === undefined ? rec : { row: { ...rec.row, costNanos: ch.cost, unpriced: ch.unpriced }, dims: rec.dims }
        })
        const fresh = storeOf([...repriced, ...later])
        const diff = same(store, fresh)
        if (diff !== null) throw new Error(`after re-price: ${diff}`)
        const want = changed.filter((x) => x.cost !== x.rec.row.costNanos || x.unpriced !== x.rec.row.unpriced).length
        if (res.changed !== want) throw new Error(`changed ${res.changed}, expected ${want}`)
        // And it survives a snapshot round trip.
        const back = SeriesStore.fromSnapshot(store.toSnapshot())
        const d2 = same(back, fresh)
        if (d2 !== null) throw new Error(`restored: ${d2}`)
        return true
      }
    ),
    { numRuns: 150 }
  )
  t.pass('property held')
})

const row = (seq: number, ts: number, cost: number, extra: Partial<Row> = {}): Row => ({ ts, promptTokens: 10, completionTokens: 5, totalTokens: 15, cachedTokens: 0, reasoningTokens: 0, latencyUs: 1000 + seq, costNanos: cost, error: false, unpriced: false, seq, ...extra })
const none = { user: 0, session: 0, attrs: 0 }

t.test('staged first chunk grows and new chunks fill while staged: the swap brings every appended row, escapes included', async (t) => {
  const T = 20_000 * DAY
  // 20 rows: the first chunk holds 32 (it starts at 16 and doubles).
  const recs: Rec[] = Array.from({ length: 20 }, (_, i) => ({ row: row(i + 1, T + (i % 3) * MIN, 10), dims: none }))
  const store = storeOf(recs)
  const changed = recs.map((rec, i) => ({ rec, cost: i % 2 === 0 ? 2 ** 33 + i : 7, unpriced: i % 5 === 0 }))
  const c = columns(changed)
  const p = store.planReprice(c, Uint32Array.from(c.seqs, (_, i) => i), 's')
  while (store.stageReprice(p, 4) > 0);
  // 5,000 more: the first chunk doubles past 4,096 rows and a second chunk starts; some with
  // EXT words (cached tokens, a cost past 2^32), some wide, in the minutes being re-priced.
  const later: Rec[] = Array.from({ length: 5000 }, (_, i) => ({
    row: row(100 + i, T + (i % 4) * MIN + (i % 997), 3 + i, i % 7 === 0 ? { cachedTokens: 2 } : i % 11 === 0 ? { costNanos: 2 ** 32 + i } : i % 13 === 0 ? { promptTokens: 2 ** 30, totalTokens: 2 ** 30 + 5 } : {}),
    dims: { user: i % 4, session: 0, attrs: 0 }
  }))
  for (const r of later) store.record(r.row, r.dims)
  t.ok(store.isCurrent(p), 'the plan is still valid')
  t.equal(rowsOf(store, T, T + MIN).includes(`${2 ** 33}`), false, 'nothing staged is seen yet')
  t.equal(store.applyReprice(p)?.changed, 20)
  const fresh = storeOf([...recs.map((r, i) => ({ row: { ...r.row, costNanos: changed[i].cost, unpriced: changed[i].unpriced }, dims: r.dims })), ...later])
  t.equal(same(store, fresh), null, 'every answer as a fresh store')
  // Rows appended after the apply land in the swapped-in chunks (capacity kept).
  const after: Rec[] = Array.from({ length: 40 }, (_, i) => ({ row: row(10_000 + i, T + 5 * MIN, 1, { cachedTokens: 1 }), dims: none }))
  for (const r of after) {
    store.record(r.row, r.dims)
    fresh.record(r.row, r.dims)
  }
  t.equal(same(store, fresh), null, 'and after more appends')
})

/**
 * Snapshot parts: SeriesStore.toSnapshotRows (rows by row range, copied in slices) and the
 * ModelAggregator's choice between a delta and a rewrite. What they pin: parts of a series
 * restore exactly the series, a delta holds only the rows recorded since the previous cut,
 * and a retention fold (which renumbers rows) forces a rewrite and makes stale parts throw.
 */
import t from 'tap'
import fc from 'fast-check'
import { isPacked, SeriesStore, type SeriesPart, type SeriesSnapshot } from '../../src/analytics/series.js'
import { ModelAggregator, PART_ROWS, type AggregatorSnapshot, type AggregatorState } from '../../src/actors/model-aggregator.js'
import type { PricedEvent } from '../../src/events.js'
import { HOUR, MIN, rowArb } from '../analytics/fixtures/naive.js'

/**
 * Everything a query can see of a store. `bounds` only with `exactBounds`: a restored coarse
 * hour reports its first and last millisecond (documented on SeriesStore.bounds).
 */
function answers(store: SeriesStore, exactBounds = true): string {
  return JSON.stringify({
    agg: store.aggregate(-Infinity, Infinity),
    m: store.timeseries(-Infinity, Infinity, MIN),
    h: store.timeseries(-Infinity, Infinity, HOUR),
    bounds: exactBounds ? store.bounds() : null,
    size: store.size,
    coarse: [store.coarseHours, store.coarseRows]
  })
}

/** Copies rows [from, to) newest first in slices of `slice`, sharing one cursor, as the writer does. */
function sliced(store: SeriesStore, from: number, to: number, slice: number): SeriesSnapshot[] {
  const cursor = { at: null as Int32Array | null }
  const out: SeriesSnapshot[] = []
  for (let hi = to; hi > from; hi -= slice) out.push(store.toSnapshotRows(Math.max(from, hi - slice), hi, { cursor }))
  return out
}

t.test('rows copied by row ranges in slices, cut after cut, restore the series exactly', async (t) => {
  fc.assert(
    fc.property(
      fc.array(rowArb(), { minLength: 1, maxLength: 200 }),
      fc.array(rowArb({ dense: true }), { maxLength: 200 }),
      fc.array(fc.nat(), { maxLength: 4 }),
      fc.integer({ min: 1, max: 40 }),
      (sparse, dense, cutSeeds, slice) => {
        const rows = [...sparse, ...dense]
        // Recorded in rounds: after each round a cut, and the rows since the previous cut copied.
        const cuts = [...new Set(cutSeeds.map((c) => c % rows.length))].sort((a, b) => a - b)
        const store = new SeriesStore()
        const parts: SeriesSnapshot[] = []
        let copied = 0
        let i = 0
        for (const end of [...cuts, rows.length]) {
          for (; i < end; i++) store.record(rows[i])
          parts.push(...sliced(store, copied, store.size, slice))
          copied = store.size
        }
        if (parts.reduce((n, p) => n + p.rows, 0) !== store.size) throw new Error('parts do not hold every row once')
        const back = SeriesStore.fromSnapshots(parts, store.rejected)
        if (answers(back) !== answers(store)) throw new Error('restored from parts differs')
        t.equal(back.rejected, store.rejected)
      }
    ),
    { numRuns: 80 }
  )
})

t.test('coarse hours come with coarse: true, and a folded series restores from coarse + rows', async (t) => {
  const store = new SeriesStore()
  for (let i = 0; i < 300; i++) {
    store.record({ ts: i * 0.2 * HOUR, promptTokens: i, completionTokens: 2, totalTokens: i + 2, cachedTokens: 0, reasoningTokens: 0, latencyUs: 1000 + 7 * i, costNanos: 5 * i, error: i % 7 === 0, unpriced: false })
  }
  store.retain({ before: 30 * HOUR, maxRows: 0, now: 0 })
  t.ok(store.coarseHours > 0)
  const coarse = store.toSnapshotRows(0, 0, { coarse: true })
  t.equal(coarse.rows, 0)
  t.equal(coarse.coarse!.length, store.coarseHours)
  t.equal(store.toSnapshotRows(0, 0).coarse!.length, 0, 'no coarse hours unless asked')
  const back = SeriesStore.fromSnapshots([coarse, ...sliced(store, 0, store.size, 17)])
  t.equal(answers(back, false), answers(store, false))
})

t.test('a row range outside the store is refused', async (t) => {
  const store = new SeriesStore()
  store.record({ ts: 1, promptTokens: 1, completionTokens: 1, totalTokens: 2, cachedTokens: 0, reasoningTokens: 0, latencyUs: 1, costNanos: 1, error: false, unpriced: false })
  t.throws(() => store.toSnapshotRows(0, 2), RangeError)
  t.throws(() => store.toSnapshotRows(1, 0), RangeError)
  t.throws(() => store.toSnapshotRows(-1, 1), RangeError)
  t.equal(store.toSnapshotRows(1, 1).rows, 0)
})

// ─────────────────────────────── ModelAggregator ───────────────────────────────

const T0 = Date.parse('2026-05-01T00:00:00.000Z')
function priced(n: number, from: number, over: Partial<PricedEvent> = {}): PricedEvent[] {
  return Array.from({ length: n }, (_, i) => ({
    seq: from + i,
    id: `evt_${from + i}`,
    ts: T0 + (from + i) * 30_000,
    recv: T0,
    model: 'm',
    provider: (from + i) % 3 === 0 ? 'p2' : 'p1',
    prompt: 10 + i,
    completion: 3,
    total: 13 + i,
    cached: 0,
    reasoning: 0,
    latency: 1 + (i % 50),
    ttft: null,
    error: false,
    cost: null,
    meta: null, project: 'default', user: null, session: null, tags: null,
    costNanos: 100 + i,
    unpriced: false,
    ...over
  }))
}

/** A snapshot reply whose parts copy on their first `data()` call and keep the copy (the writer calls each once). */
async function snapshot(agg: ModelAggregator, full = false): Promise<AggregatorSnapshot> {
  const s = await new Promise<AggregatorSnapshot>((resolve) => agg.send({ type: 'snapshot', full, reply: resolve }))
  for (const series of s.series) {
    series.write = series.write.map((p) => {
      let copy: SeriesPart | undefined
      return { id: p.id, data: () => (copy ??= p.data()) }
    })
  }
  return s
}

/** What a store would hold after the parts were written and read back (every part, in order). */
function restoreFrom(snaps: AggregatorSnapshot[], model = 'm'): AggregatorState {
  const byProvider = new Map<string, Map<number, SeriesPart>>()
  const last = snaps[snaps.length - 1]
  for (const s of snaps) {
    for (const series of s.series) {
      const parts = byProvider.get(series.provider) ?? new Map<number, SeriesPart>()
      byProvider.set(series.provider, parts)
      for (const p of series.write) parts.set(p.id, p.data())
    }
  }
  return {
    v: last.v,
    model,
    series: last.series.map((s) => {
      const parts = byProvider.get(s.provider)!
      const list: SeriesPart[] = []
      for (let id = s.first; id < s.next; id++) list.push(parts.get(id)!)
      return { provider: s.provider, rejected: s.rejected, first: s.first, next: s.next, parts: list }
    })
  }
}

const viewAnswers = (agg: ModelAggregator) => [...agg.view()].sort(([a], [b]) => a.localeCompare(b)).map(([p, s]) => [p, answers(s, s.coarseHours === 0)])

t.test('aggregator snapshots: a delta holds only the rows since the previous cut; restore is exact', async (t) => {
  const agg = new ModelAggregator('m')
  t.teardown(() => agg.close())
  agg.send({ type: 'events', events: priced(2 * PART_ROWS + 10, 0) })
  const first = await snapshot(agg)
  const rowsOf = (s: AggregatorSnapshot) => s.series.reduce((n, x) => n + x.write.reduce((m, p) => m + p.data().rows, 0), 0)
  // Parts are copied lazily: rows recorded after the cut are not in them.
  agg.send({ type: 'events', events: priced(50, 2 * PART_ROWS + 10) })
  await agg.idle()
  t.equal(rowsOf(first), 2 * PART_ROWS + 10)
  const second = await snapshot(agg)
  t.same(second.series.map((s) => s.first), first.series.map((s) => s.first), 'a delta keeps the range start')
  t.equal(rowsOf(second), 50, 'the delta holds the 50 new rows only')
  const third = await snapshot(agg)
  t.equal(third.series.reduce((n, s) => n + s.write.length, 0), 0, 'nothing new: no part')

  const restored = new ModelAggregator('m', {}, restoreFrom([first, second, third]))
  t.teardown(() => restored.close())
  t.same(viewAnswers(restored), viewAnswers(agg))
  // After a restore, deltas continue past the restored rows and part numbers.
  restored.send({ type: 'events', events: priced(7, 5000) })
  const after = await snapshot(restored)
  t.equal(rowsOf(after), 7)
  t.ok(after.series.every((s, i) => s.first === third.series[i].first && s.next >= third.series[i].next))
})

t.test('aggregator snapshots: parts in the older column form are restored, then rewritten in the row store\'s words', async (t) => {
  const agg = new ModelAggregator('m')
  t.teardown(() => agg.close())
  agg.send({ type: 'events', events: priced(PART_ROWS + 10, 0) })
  const first = await snapshot(agg)
  const state = restoreFrom([first])
  t.ok(state.series.every((s) => s.parts.every((p) => isPacked(p) || p.rows === 0)), 'written packed')
  // The same rows as an older build wrote them: column parts.
  const old: AggregatorState = { ...state, series: state.series.map((s) => ({ ...s, parts: s.parts.map((p) => (isPacked(p) ? SeriesStore.fromSnapshots([p]).toSnapshotRows(0, p.rows) : p)) })) }
  const restored = new ModelAggregator('m', {}, old)
  t.teardown(() => restored.close())
  t.same(viewAnswers(restored), viewAnswers(agg), 'column parts restore the same series')
  const next = await snapshot(restored)
  const written = next.series.flatMap((s) => s.write.map((p) => p.data()))
  t.equal(written.reduce((n, p) => n + p.rows, 0), PART_ROWS + 10, 'the next snapshot rewrites every row')
  t.ok(written.every((p) => isPacked(p) || p.rows === 0), 'in the row store\'s words')
  t.ok(next.series.every((s, i) => s.first >= state.series[i].next), 'under fresh part numbers')
  const again = await snapshot(restored)
  t.equal(again.series.reduce((n, s) => n + s.write.length, 0), 0, 'then deltas as before')
})

t.test('aggregator snapshots: a retention fold forces a rewrite under fresh part numbers, and stale parts throw', async (t) => {
  const agg = new ModelAggregator('m')
  t.teardown(() => agg.close())
  agg.send({ type: 'events', events: priced(3000, 0) })
  const first = await snapshot(agg)
  const pending = await (async () => {
    agg.send({ type: 'events', events: priced(100, 3000) })
    return snapshot(agg)
  })()
  // A fold before the pending parts were copied renumbers rows: copying them now must fail.
  agg.send({ type: 'retain', policy: { before: T0 + 5 * HOUR, maxRows: 0, now: T0 } })
  await agg.idle()
  t.throws(() => pending.series[0].write[0].data(), /folded by retention/)
  const rewrite = await snapshot(agg)
  for (const [i, s] of rewrite.series.entries()) {
    t.ok(s.first >= pending.series[i].next, 'fresh part numbers, past every one handed out')
    t.equal(s.next - s.first, s.write.length, 'every part of the range is written')
  }
  const restored = new ModelAggregator('m', {}, restoreFrom([rewrite]))
  t.teardown(() => restored.close())
  t.same(viewAnswers(restored), viewAnswers(agg))
  t.ok([...restored.view().values()].some((s) => s.coarseHours > 0), 'the folded hours came back')
  t.ok(first.series.length > 0)
})

t.test('aggregator snapshots: full rewrites everything; a late row into a folded hour rewrites that series', async (t) => {
  const agg = new ModelAggregator('m')
  t.teardown(() => agg.close())
  agg.send({ type: 'events', events: priced(400, 0) })
  agg.send({ type: 'retain', policy: { before: T0 + 2 * HOUR, maxRows: 0, now: T0 } })
  const a = await snapshot(agg)
  const b = await snapshot(agg, true)
  t.ok(b.series.every((s, i) => s.first === a.series[i].next && s.write.length > 0), 'full: a whole new range')
  // A late event in a folded hour changes that hour's totals without adding a row.
  agg.send({ type: 'events', events: priced(1, 0, { provider: 'p1' }) })
  const c = await snapshot(agg)
  const p1 = c.series.find((s) => s.provider === 'p1')!
  const p2 = c.series.find((s) => s.provider === 'p2')!
  t.equal(p1.first, b.series.find((s) => s.provider === 'p1')!.next, 'p1 rewritten')
  t.equal(p2.write.length, 0, 'p2 untouched')
  const restored = new ModelAggregator('m', {}, restoreFrom([b, c]))
  t.teardown(() => restored.close())
  t.same(viewAnswers(restored), viewAnswers(agg))
})

t.test('an aggregator state of version 2 (one part per day) is refused, never misread', async (t) => {
  t.throws(() => new ModelAggregator('m', {}, { v: 2, model: 'm', series: [] }), /state version 2 is not 3/)
  t.throws(() => new ModelAggregator('m', {}, { v: 3, model: 'm', series: [{ provider: 'p', rejected: 0, first: 2, next: 1, parts: [] }] }), /malformed part range/)
})

/**
 * ModelAggregator: events with and without dimension words, one series per provider, and the
 * snapshot protocol — a first snapshot writes everything, later ones only the rows recorded
 * since (a delta, under new part ids), and after a retention fold (or when asked `full`) the
 * series is rewritten under fresh part ids. Every check restores an aggregator from the parts
 * a store would hold and compares it with the live one.
 */
import t from 'tap'
import { ModelAggregator, toRow, type AggregatorSnapshot, type AggregatorState, type ForgetReply } from '../../src/actors/model-aggregator.js'
import { createTotals, recordTotals, type Totals } from '../../src/analytics/totals.js'
import type { SeriesPart } from '../../src/analytics/series.js'
import type { PricedEvent } from '../../src/events.js'
import { nextSeq, pricedEvent } from '../helpers/events.js'

const HOUR = 3_600_000
const T0 = Date.parse('2026-03-01T00:00:00.000Z')

/** Fields vary with the seq, so rows differ in every value. */
function ev(over: Partial<PricedEvent> = {}): PricedEvent {
  const s = nextSeq()
  return pricedEvent({
    ts: T0,
    recv: T0,
    prompt: 10 + (s % 7),
    completion: 5 + (s % 3),
    total: 15 + (s % 7) + (s % 3),
    cached: s % 2,
    latency: 100 + (s % 50) * 10,
    error: s % 5 === 0,
    costNanos: 1000 * (1 + (s % 11)),
    ...over
  })
}

/** `n` events of `provider`, one every `stepMs` from `from`. */
function events(n: number, provider: string, from: number, stepMs: number): PricedEvent[] {
  return Array.from({ length: n }, (_, i) => ev({ provider, ts: from + i * stepMs }))
}

function naive(list: readonly PricedEvent[], start = -Infinity, end = Infinity): Totals {
  const out = createTotals()
  for (const e of list) if (e.ts >= start && e.ts < end) recordTotals(out, toRow(e))
  return out
}

/** Totals per provider over [start, end), as the aggregator answers. */
function totalsOf(agg: ModelAggregator, start = -Infinity, end = Infinity): Record<string, Totals> {
  const out: Record<string, Totals> = {}
  for (const [provider, series] of agg.view()) out[provider] = series.aggregate(start, end).totals
  return out
}

function byProvider(list: readonly PricedEvent[], start = -Infinity, end = Infinity): Record<string, Totals> {
  const out: Record<string, Totals> = {}
  for (const p of new Set(list.map((e) => e.provider))) out[p] = naive(list.filter((e) => e.provider === p), start, end)
  return out
}

function snapshot(agg: ModelAggregator, full = false): Promise<AggregatorSnapshot> {
  return new Promise((resolve) => agg.send({ type: 'snapshot', full, reply: resolve }))
}

/**
 * What a snapshot store keeps: each series' parts by id. `take` copies the parts of a
 * snapshot reply (calling each `data()` once, in order) and forgets those outside its range.
 */
class Parts {
  readonly #parts = new Map<string, Map<number, SeriesPart>>()
  #last: AggregatorSnapshot | null = null

  /** Stores a snapshot's parts; returns how many rows its written parts hold, per provider. */
  take(s: AggregatorSnapshot): Record<string, number> {
    const written: AggregatorState['series'] = []
    for (const h of s.series) {
      const parts = this.#parts.get(h.provider) ?? new Map<number, SeriesPart>()
      this.#parts.set(h.provider, parts)
      const copied = h.write.map((p) => p.data())
      h.write.forEach((p, i) => parts.set(p.id, copied[i]))
      for (const id of parts.keys()) if (id < h.first || id >= h.next) parts.delete(id)
      written.push({ provider: h.provider, rejected: 0, first: h.first, next: h.next, parts: copied })
    }
    this.#last = s
    // The written parts restored alone.
    const alone = new ModelAggregator(s.model, {}, { v: s.v, model: s.model, series: written }, s.project)
    const out: Record<string, number> = {}
    for (const [provider, series] of alone.view()) out[provider] = series.aggregate(-Infinity, Infinity).totals.requests
    return out
  }

  /** The aggregator a restart would build from the parts held. */
  restore(): ModelAggregator {
    const s = this.#last!
    const state: AggregatorState = {
      v: s.v,
      model: s.model,
      series: s.series.map((h) => {
        const parts = this.#parts.get(h.provider)!
        return { provider: h.provider, rejected: h.rejected, first: h.first, next: h.next, parts: [...parts.keys()].sort((a, b) => a - b).map((id) => parts.get(id)!) }
      })
    }
    return new ModelAggregator(s.model, {}, state, s.project)
  }
}

t.test('events with and without dimension words: one series per provider, exact totals, the words kept per row', async (t) => {
  const agg = new ModelAggregator('gpt-4', {}, undefined, 'acme')
  t.teardown(() => agg.destroy())
  t.equal(agg.name, 'aggregator:acme/gpt-4')
  t.equal(agg.project, 'acme')
  const plainName = new ModelAggregator('gpt-4')
  t.teardown(() => plainName.destroy())
  t.equal(plainName.name, 'aggregator:gpt-4', 'the default project keeps the short name')

  const plain = [...events(6, 'openai', T0, 1000), ...events(4, 'azure', T0 + 500, 1000)]
  const worded = events(3, 'openai', T0 + 60_000, 1000)
  t.ok(agg.send({ type: 'events', events: plain }))
  // Words per event: user, session, attribute set.
  t.ok(agg.send({ type: 'events', events: worded, dims: Uint32Array.from([1, 2, 3, 4, 0, 5, 0, 0, 0]) }))
  await agg.idle()

  const all = [...plain, ...worded]
  t.same([...agg.view().keys()].sort(), ['azure', 'openai'])
  t.same(totalsOf(agg), byProvider(all))
  t.same(totalsOf(agg, T0 + 60_000, T0 + 61_500), { openai: naive(worded.slice(0, 2)), azure: createTotals() }, 'a range inside a minute, to the millisecond')
  t.same(agg.retentionStats, { rawRows: all.length, coarseRows: 0, folded: 0 })

  const words = (provider: string) => {
    const out: Array<[number, number, number, number]> = []
    agg.view().get(provider)!.scanRows(-Infinity, Infinity, (_v, _flags, user, session, attrs, ts) => out.push([ts, user, session, attrs]))
    return out.sort((a, b) => a[0] - b[0])
  }
  t.same(words('openai'), [
    ...plain.filter((e) => e.provider === 'openai').map((e) => [e.ts, 0, 0, 0]),
    [worded[0].ts, 1, 2, 3],
    [worded[1].ts, 4, 0, 5],
    [worded[2].ts, 0, 0, 0]
  ])
  t.same(words('azure'), plain.filter((e) => e.provider === 'azure').map((e) => [e.ts, 0, 0, 0]))
  t.equal(agg.view().get('openai')!.hasDims, true)
  t.equal(agg.view().get('azure')!.hasDims, false, 'a series never given words holds none')
})

t.test('snapshots: everything first, then only the rows recorded since, restored equal to the live aggregator', async (t) => {
  const agg = new ModelAggregator('gpt-4')
  t.teardown(() => agg.destroy())
  const store = new Parts()
  const first = [...events(300, 'openai', T0, 60_000), ...events(40, 'anthropic', T0 + 30_000, 7 * 60_000)]
  agg.send({ type: 'events', events: first })

  const s1 = await snapshot(agg)
  t.same(s1.series.map((h) => [h.provider, h.first, h.next === h.write.length]), [['openai', 0, true], ['anthropic', 0, true]])
  t.same(store.take(s1), { openai: 300, anthropic: 40 }, 'the first snapshot writes every row')
  t.same(totalsOf(store.restore()), byProvider(first))

  // Late and out-of-order rows, into hours already written, and a new provider.
  const more = [...events(5, 'openai', T0 + 90_000, 1000), ...events(3, 'openai', T0 + 10 * HOUR, 1000), ...events(2, 'mistral', T0, 1)]
  agg.send({ type: 'events', events: more })
  const s2 = await snapshot(agg)
  const openai2 = s2.series.find((h) => h.provider === 'openai')!
  const openai1 = s1.series.find((h) => h.provider === 'openai')!
  t.equal(openai2.first, openai1.first, 'a delta keeps the parts already stored')
  t.same(openai2.write.map((p) => p.id), Array.from({ length: openai2.next - openai1.next }, (_, i) => openai1.next + i), 'under new ids, after the stored ones')
  t.same(store.take(s2), { openai: 8, anthropic: 0, mistral: 2 }, 'only the rows recorded since')
  const restored = store.restore()
  t.same(totalsOf(restored), byProvider([...first, ...more]))
  t.same(totalsOf(restored, T0 + HOUR, T0 + 2 * HOUR + 1), totalsOf(agg, T0 + HOUR, T0 + 2 * HOUR + 1))

  const s3 = await snapshot(agg)
  t.same(s3.series.map((h) => [h.provider, h.write.length]), [['openai', 0], ['anthropic', 0], ['mistral', 0]], 'nothing new: nothing written')
  t.same(s3.series.map((h) => [h.first, h.next]), s2.series.map((h) => [h.first, h.next]))

  // After a failed write the caller asks for `full`: every series under fresh ids.
  const s4 = await snapshot(agg, true)
  for (const h of s4.series) t.equal(h.first, s3.series.find((x) => x.provider === h.provider)!.next, `${h.provider}: rewritten after the stored parts`)
  t.same(store.take(s4), { openai: 308, anthropic: 40, mistral: 2 })
  t.same(totalsOf(store.restore()), byProvider([...first, ...more]))
})

t.test('after retention folds hours, the next snapshot rewrites the series; parts handed out before the fold refuse to copy', async (t) => {
  const agg = new ModelAggregator('gpt-4')
  t.teardown(() => agg.destroy())
  const store = new Parts()
  const all = events(600, 'openai', T0, 30_000) // 5 hours
  agg.send({ type: 'events', events: all })
  store.take(await snapshot(agg))

  // A snapshot is cut, then a fold renumbers the rows before its parts are copied.
  agg.send({ type: 'events', events: events(2, 'openai', T0 + 4 * HOUR + 1, 1) })
  const cut = await snapshot(agg)
  agg.send({ type: 'retain', policy: { before: T0 + 2 * HOUR, maxRows: 0, now: T0 + 5 * HOUR } })
  await agg.idle()
  t.throws(() => cut.series[0].write[0].data(), /folded by retention/)
  t.same(agg.retentionStats, { rawRows: 362, coarseRows: 240, folded: 240 })

  const after = await snapshot(agg)
  const h = after.series[0]
  t.ok(h.first >= cut.series[0].next, 'rewritten under fresh ids')
  t.same(store.take(after), { openai: 602 }, 'every row again: the coarse hours and the raw rows')
  const restored = store.restore()
  t.same(restored.retentionStats, { rawRows: 362, coarseRows: 240, folded: 0 })
  const live = totalsOf(agg)
  t.same(totalsOf(restored), live)
  t.equal(live.openai.requests, 602)
  // Ranges aligned to hours stay exact across the fold.
  for (let h0 = 0; h0 < 5; h0++) {
    t.same(totalsOf(restored, T0 + h0 * HOUR, T0 + (h0 + 1) * HOUR), totalsOf(agg, T0 + h0 * HOUR, T0 + (h0 + 1) * HOUR), `hour ${h0}`)
  }
  t.same(totalsOf(agg, T0 + 2 * HOUR, T0 + 3 * HOUR).openai, naive(all, T0 + 2 * HOUR, T0 + 3 * HOUR), 'a raw hour is still exact to the row')

  // Deltas resume after the rewrite.
  agg.send({ type: 'events', events: events(4, 'openai', T0 + 4 * HOUR + 5, 1) })
  const next = await snapshot(agg)
  t.equal(next.series[0].first, h.first)
  t.same(store.take(next), { openai: 4 })
  t.same(totalsOf(store.restore()), totalsOf(agg))
})

function forget(agg: ModelAggregator, seqs: number[], coarse?: PricedEvent[], range?: { start: number; end: number }): Promise<ForgetReply> {
  return new Promise((resolve, reject) => agg.send({ type: 'forget', seqs: new Set(seqs), range, coarse, reply: (r) => (r instanceof Error ? reject(r) : resolve(r)) }))
}

t.test('forget: rows out by seq, the hours and dimension ids they held reported; the next snapshot rewrites; a copy in flight refuses', async (t) => {
  const agg = new ModelAggregator('gpt-4')
  t.teardown(() => agg.destroy())
  const store = new Parts()
  const a = events(200, 'openai', T0, 60_000)
  const b = events(20, 'azure', T0, 30 * 60_000)
  agg.send({ type: 'events', events: a, dims: Uint32Array.from(a.flatMap((e, i) => [2 + (i % 3), i % 2 === 0 ? 0 : 7, i === 5 ? 9 : 0])) })
  agg.send({ type: 'events', events: b })
  store.take(await snapshot(agg))
  const cut = await snapshot(agg, true)

  const doomed = [a[5], a[6], a[150], b[0]]
  const reply = await forget(agg, [...doomed.map((e) => e.seq), 999_999_999])
  t.equal(reply.removed, 4)
  t.same(reply.hours.sort((x, y) => x - y), [...new Set(doomed.map((e) => Math.floor(e.ts / HOUR)))].sort((x, y) => x - y))
  t.same(reply.users.sort(), [2, 3, 4].filter((u) => [5, 6, 150].some((i) => 2 + (i % 3) === u)).sort())
  t.same(reply.sessions, [7])
  t.same(reply.attrs, [9])
  t.equal(reply.empty, false)
  const kept = [...a, ...b].filter((e) => !doomed.includes(e))
  t.same(totalsOf(agg), byProvider(kept))
  t.throws(() => cut.series[0].write[0].data(), /changed by a delete/, 'parts cut before the delete refuse to copy')
  t.same((await forget(agg, doomed.map((e) => e.seq))).removed, 0, 'idempotent')

  const after = await snapshot(agg)
  for (const h of after.series) t.ok(h.first >= cut.series.find((x) => x.provider === h.provider)!.next, `${h.provider}: rewritten under fresh ids`)
  t.same(store.take(after), { openai: 197, azure: 19 }, 'every kept row again, none of the deleted')
  t.same(totalsOf(store.restore()), byProvider(kept))

  // Deltas resume after the rewrite; a series whose every row goes is dropped.
  agg.send({ type: 'events', events: events(3, 'openai', T0 + 2 * HOUR, 1) })
  t.same(store.take(await snapshot(agg)), { openai: 3, azure: 0 })
  const gone = await forget(agg, b.map((e) => e.seq))
  t.equal(gone.removed, 19)
  t.same([...agg.view().keys()], ['openai'])
  t.same(store.take(await snapshot(agg)), { openai: 0 }, 'the untouched series: an empty delta')
  t.same([...store.restore().view().keys()], ['openai'], 'no azure series in the snapshot')
  t.same(totalsOf(store.restore()), totalsOf(agg))
  const everything = [...agg.view().get('openai')!.toSnapshot().seq]
  t.equal((await forget(agg, everything)).empty, true, 'nothing left: empty')
})

t.test('forget with a range looks only there; coarse events are taken out of folded hours', async (t) => {
  const agg = new ModelAggregator('gpt-4')
  t.teardown(() => agg.destroy())
  const all = events(300, 'openai', T0, 60_000) // 5 hours
  agg.send({ type: 'events', events: all })
  const r1 = await forget(agg, [all[10].seq, all[200].seq], undefined, { start: T0 + 3 * HOUR, end: Infinity })
  t.equal(r1.removed, 1, 'only the row inside the range')
  agg.send({ type: 'retain', policy: { before: T0 + 2 * HOUR, maxRows: 0, now: T0 + 5 * HOUR } })
  const r2 = await forget(agg, [all[10].seq, all[20].seq, all[130].seq], [all[10], all[20], all[130]])
  t.equal(r2.removed, 3, 'two coarse events by value, one row by seq')
  t.same(r2.hours.sort(), [Math.floor(all[10].ts / HOUR), Math.floor(all[130].ts / HOUR)].sort())
  t.equal((await forget(agg, [all[10].seq, all[20].seq], [all[10], all[20]])).removed, 0, 'a coarse event twice: nothing')
  const kept = all.filter((_, i) => ![10, 20, 130, 200].includes(i))
  t.same(totalsOf(agg), byProvider(kept))
  for (let h = 0; h < 5; h++) t.same(totalsOf(agg, T0 + h * HOUR, T0 + (h + 1) * HOUR).openai, naive(kept, T0 + h * HOUR, T0 + (h + 1) * HOUR), `hour ${h}`)
})

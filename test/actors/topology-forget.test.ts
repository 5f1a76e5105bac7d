/**
 * Topology.forget: after deleting events by seq, every query of queries.ts (metrics, costs,
 * timeseries, breakdown by every dimension, the dimensions listing; filtered and not, through
 * the rollup and per series) answers exactly as a topology that was only ever fed the kept
 * events — live, and restored from the snapshot taken after the delete, whose bytes hold none
 * of the deleted values. Also: idempotence, ingestion during a delete, coarse hours.
 */
import t, { type Test } from 'tap'
import type { Topology } from '../../src/actors/topology.js'
import { breakdown, costs, dimensions, metrics, timeseries, type RangeQuery } from '../../src/queries.js'
import type { PendingEvent } from '../../src/events.js'
import { aggJson, compare, DAY, events, HOUR, MIN, MODELS, price, rng, roundTrip, T0, topology } from './topology-helpers.js'

const FILTERS: Array<Omit<RangeQuery, 'start' | 'end'>> = [
  {},
  { models: new Set(MODELS) },
  { models: new Set(['gpt-4o']) },
  { providers: new Set(['azure']) },
  { status: 'error' },
  { user_id: 'u3' },
  { user_id: 'victim-user' },
  { session_id: 's7' },
  { session_id: 'victim-session' },
  { tag: 'shared' },
  { tag: 'victim-tag' },
  { metadata: { feature: 'search' } },
  { metadata: { feature: 'victim-feature' } },
  { metadata: { plan: 'pro', n: '1' } },
  { user_id: 'u5', tag: 'a' }
]
const BY = ['model', 'provider', 'user_id', 'session_id', 'tag', 'metadata.feature', 'metadata.plan', 'metadata.n']

/** Every answer queries.ts gives for the project, as one JSON string per part. */
function observe(topo: Topology, project = 'default'): Record<string, string> {
  const ranges: Array<[number, number]> = [
    [-Infinity, Infinity],
    [T0, T0 + DAY],
    [T0 + 26 * HOUR, T0 + 26 * HOUR + 90_000],
    [T0 + 0.5, T0 + 30 * HOUR + 17],
    [T0 + 30 * HOUR + 17, Infinity]
  ]
  const out: Record<string, string> = {}
  for (const [start, end] of ranges) {
    for (const f of FILTERS) {
      const q: RangeQuery = { ...f, start, end, project }
      const key = `[${start},${end}) ${JSON.stringify(f, (_k, v) => (v instanceof Set ? [...v] : v))}`
      out[`metrics ${key}`] = JSON.stringify(aggJson(metrics(topo, q)))
      out[`costs ${key}`] = JSON.stringify(costs(topo, q).map((c) => [c.model, c.provider, c.agg.totals]))
      for (const interval of [MIN, HOUR, DAY]) out[`timeseries ${interval} ${key}`] = JSON.stringify(timeseries(topo, q, interval).map((b) => [b.start, ...aggJson(b)]))
    }
    for (const by of BY) {
      for (const f of [{}, { status: 'error' as const }, { tag: 'shared' }]) {
        for (const [sort, limit] of [['cost', 3], ['requests', 1000]] as const) {
          const b = breakdown(topo, { ...f, start, end, project }, by, sort, limit)
          out[`breakdown ${by} ${sort} ${limit} [${start},${end}) ${JSON.stringify(f)}`] = JSON.stringify({
            groups: b.groups.map((g) => [g.value, ...aggJson(g.agg)]),
            other: b.other === null ? null : aggJson(b.other),
            total: aggJson(b.total)
          })
        }
      }
    }
  }
  out.dimensions = JSON.stringify(dimensions(topo, project).sort((a, b) => (a.name < b.name ? -1 : 1)))
  return out
}

for (const seed of [1, 2, 3]) {
  t.test(`seed ${seed}: forget equals a fresh build of the kept events, live and restored; no deleted value in the snapshot`, async (t) => {
    const all = events(1500, seed)
    const { topo } = await topology(t)
    const stored = await topo.router.ingest(all)
    await topo.sync()
    // The victim's events, and a random tenth of the rest.
    const r = rng(seed * 7)
    const doomed = stored.filter((e) => e.user === 'victim-user' || r() < 0.1)
    const seqs = new Set(doomed.map((e) => e.seq))
    // In two chunks, with a narrowing range on the first (as the delete orchestrator sends them).
    const first = doomed.slice(0, Math.floor(doomed.length / 2))
    const span = { start: Math.min(...first.map((e) => e.ts)), end: Math.max(...first.map((e) => e.ts)) + 1 }
    const removed1 = await topo.forget('default', new Set(first.map((e) => e.seq)), span)
    // The rest as search hits give them (seq → ts): only those minutes are searched.
    const removed2 = await topo.forget('default', new Map(doomed.map((e) => [e.seq, e.ts])))
    t.equal(removed1 + removed2, seqs.size, 'every doomed row removed once')
    t.equal(await topo.forget('default', seqs), 0, 'idempotent')
    t.equal(await topo.forget('nope', seqs), 0, 'a project without state: nothing')

    const kept = all.filter((_, i) => !seqs.has(stored[i].seq))
    const fresh = (await topology(t)).topo
    await fresh.router.ingest(kept)
    await fresh.sync()
    const want = observe(fresh)
    compare(t, observe(topo), want, 'live')
    const dims = topo.project('default')!.dims
    t.equal(dims.users.find('victim-user'), undefined, 'the victim is blanked')
    t.equal(dims.sessions.find('victim-session'), undefined)
    t.equal(dims.tags.find('victim-tag'), undefined)
    t.equal(dims.metaValues(dims.metaKeyIndex('feature')).find('victim-feature'), undefined)
    t.not(dims.tags.find('shared'), undefined, 'a value other rows hold stays')

    const snap = await topo.snapshot(T0)
    const { restored, bytes } = await roundTrip(t, snap)
    for (const secret of ['victim-user', 'victim-session', 'victim-tag', 'victim-feature']) {
      t.notOk(bytes.some((b) => b.includes(secret)), `no stored snapshot byte holds ${secret}`)
    }
    t.ok(bytes.some((b) => b.includes('u3')), 'the kept values are there (the check can see strings)')
    const back = (await topology(t, { restored })).topo
    compare(t, observe(back), want, 'restored')

    // Both go on alike: the victim comes back as a new value, with a new id.
    const later = events(300, seed + 100)
    for (const x of [back, fresh]) {
      await x.router.ingest(later)
      await x.sync()
    }
    compare(t, observe(back), observe(fresh), 'restored + later events')
  })
}

t.test('events arriving during a delete are all counted; a delete holds emission only while it runs', async (t) => {
  const { topo } = await topology(t)
  const first = await topo.router.ingest(events(800, 9))
  await topo.sync()
  const doomed = new Set(first.filter((e) => e.user === 'victim-user').map((e) => e.seq))
  const more = events(400, 10)
  // Ingest and delete at once, several times.
  const [removed] = await Promise.all([topo.forget('default', doomed), topo.router.ingest(more.slice(0, 200)), topo.forget('default', doomed), topo.router.ingest(more.slice(200))])
  await topo.sync()
  t.equal(removed, doomed.size)
  const total = metrics(topo, { start: -Infinity, end: Infinity }).totals.requests
  const perSeries = metrics(topo, { start: -Infinity, end: Infinity, models: new Set(MODELS) }).totals.requests
  t.equal(total, 800 - doomed.size + 400, 'the rollup counts every kept event once')
  t.equal(perSeries, total, 'the series agree with the rollup')
  // The later events' victim rows (same strings, new ids) are counted, not deleted.
  t.equal(metrics(topo, { start: -Infinity, end: Infinity, user_id: 'victim-user' }).totals.requests, more.filter((e) => e.user === 'victim-user').length)
})

t.test('a model whose every event is deleted leaves no aggregator and no series name behind', async (t) => {
  const { topo } = await topology(t)
  const stored = await topo.router.ingest([...events(100, 4), ...events(5, 5).map((e) => ({ ...e, model: 'secret-model', provider: 'secret-provider' }))])
  await topo.sync()
  const seqs = new Set(stored.filter((e) => e.model === 'secret-model').map((e) => e.seq))
  t.equal(await topo.forget('default', seqs), 5)
  t.equal(topo.project('default')!.aggregator('secret-model'), undefined)
  t.notOk(topo.system.stats().some((s) => s.name.includes('secret-model')), 'its actor is retired')
  const { bytes } = await roundTrip(t, await topo.snapshot(T0))
  t.notOk(bytes.some((b) => b.includes('secret-model') || b.includes('secret-provider')))
  // It comes back on a new event.
  await topo.router.ingest(events(1, 6).map((e) => ({ ...e, model: 'secret-model' })))
  await topo.sync()
  t.equal(metrics(topo, { start: -Infinity, end: Infinity, models: new Set(['secret-model']) }).totals.requests, 1)
})

t.test('coarse hours: events there are taken out by value (counts and sums exact), once', async (t) => {
  const { topo } = await topology(t)
  const all = events(1000, 7)
  const stored = await topo.router.ingest(all)
  await topo.sync()
  // Fold the first day.
  topo.retain({ before: T0 + DAY, maxRows: 0, now: T0 + 3 * DAY })
  await topo.sync()
  t.ok(topo.retentionStats().coarseRows > 0)
  const doomed = stored.filter((e) => e.user === 'victim-user')
  t.ok(doomed.some((e) => e.ts < T0 + DAY) && doomed.some((e) => e.ts >= T0 + DAY), 'victim events on both sides of the fold')
  const seqs = new Set(doomed.map((e) => e.seq))
  const coarse = price(doomed.filter((e) => e.ts < T0 + DAY))
  t.equal(await topo.forget('default', seqs, undefined, coarse), doomed.length)
  t.equal(await topo.forget('default', seqs, undefined, coarse), 0, 'idempotent, coarse events included')

  const fresh = (await topology(t)).topo
  await fresh.router.ingest(all.filter((_, i) => !seqs.has(stored[i].seq)))
  await fresh.sync()
  fresh.retain({ before: T0 + DAY, maxRows: 0, now: T0 + 3 * DAY })
  await fresh.sync()
  // Hour-aligned answers: counts and sums exact, sketches within their accuracy.
  for (const q of [{ start: -Infinity, end: Infinity }, { start: T0, end: T0 + DAY }, { start: T0 + 5 * HOUR, end: T0 + 40 * HOUR }, { start: T0, end: T0 + DAY, models: new Set(MODELS) }]) {
    const a = metrics(topo, q)
    const b = metrics(fresh, q)
    t.same(a.totals, b.totals, `totals over [${q.start}, ${q.end})`)
    t.equal(a.sketch.count, b.sketch.count)
    for (const p of [0.5, 0.95]) t.ok(Math.abs(a.sketch.quantile(p) - b.sketch.quantile(p)) <= b.sketch.quantile(p) * 0.0201 + 1, `p${p * 100} within the sketch accuracy`)
    t.same(timeseries(topo, q, HOUR).map((x) => [x.start, x.totals]), timeseries(fresh, q, HOUR).map((x) => [x.start, x.totals]))
    t.same(costs(topo, q).map((c) => [c.model, c.provider, c.agg.totals]), costs(fresh, q).map((c) => [c.model, c.provider, c.agg.totals]))
  }
  // The victim is blanked: filters on it read nothing from memory where rows are held.
  t.equal(topo.project('default')!.dims.users.find('victim-user'), undefined)
  t.equal(metrics(topo, { start: T0 + DAY, end: Infinity, user_id: 'victim-user' }).totals.requests, 0)
})

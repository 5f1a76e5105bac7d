/**
 * Re-pricing while events keep coming (issue 15): the plan and the staging run outside the cut,
 * a slice per aggregator message, so events queued behind the plan are recorded between its
 * slices — into the very minutes and chunks being re-priced — and the apply still leaves
 * exactly the new costs, the events that arrived meanwhile at theirs; an entry whose event
 * reached the aggregator only after its plan began is found at the apply; a fold during the
 * plan makes it plan again. Topology level: the same with events ingested into the re-priced
 * minutes while it runs, compared with a fresh build, and readers never see a mix.
 */
import t from 'tap'
import { ModelAggregator, type RepriceReply } from '../../src/actors/model-aggregator.js'
import type { ChangeNames } from '../../src/analytics/reprice.js'
import type { PricedEvent } from '../../src/events.js'
import type { CostChanges, Topology } from '../../src/actors/topology.js'
import { metrics, costs } from '../../src/queries.js'
import { DAY, HOUR, MIN, T0, events, named, topology } from './topology-helpers.js'
import { SeriesStore } from '../../src/analytics/series.js'
import { answers } from '../analytics/fixtures/series-answers.js'

/** Event `seq` of model m/provider p at `ts`, costing `cost` nanos. */
function ev(seq: number, ts: number, cost: number): PricedEvent {
  return {
    seq, id: `e${seq}`, ts, recv: ts, model: 'm', provider: 'p', prompt: 10 + (seq % 50), completion: 5, total: 15 + (seq % 50), cached: seq % 9 === 0 ? 3 : 0, reasoning: 0,
    latency: 1 + (seq % 300), ttft: null, error: seq % 13 === 0, cost: null, meta: null, project: 'default', user: null, session: null, tags: null, clientId: null, costSource: null,
    costNanos: cost, unpriced: false
  } as unknown as PricedEvent
}

function columns(list: ReadonlyArray<{ e: PricedEvent; after: number }>): ChangeNames {
  return {
    seqs: Float64Array.from(list, (x) => x.e.seq),
    ts: Float64Array.from(list, (x) => x.e.ts),
    before: Float64Array.from(list, (x) => x.e.costNanos),
    beforeUnpriced: new Uint8Array(list.length),
    after: Float64Array.from(list, (x) => x.after),
    afterUnpriced: new Uint8Array(list.length),
    ...named([], list.map(() => 'p'))
  }
}

const ask = <R>(agg: ModelAggregator, m: (reply: (r: R) => void) => Parameters<ModelAggregator['send']>[0]) =>
  new Promise<R>((resolve, reject) => {
    if (!agg.send(m(resolve))) reject(new Error('refused'))
  })

t.test('aggregator: events sent after the plan are recorded between its slices; the apply is exact and finds a late entry', async (t) => {
  const agg = new ModelAggregator('m')
  t.teardown(() => agg.close())
  // 70,000 events in 600 minutes: grouping and planning take several slices (REPRICE_SLICE 16,384).
  const N = 70_000
  const old = Array.from({ length: N }, (_, i) => ev(i + 1, T0 + (i % 600) * MIN + (i % 997), 1000 + i))
  agg.send({ type: 'events', events: old })
  // Every old event to a new cost (some past 2^32), and one entry for an event still to come (seq N + 1).
  const list = old.map((e, i) => ({ e, after: i % 11 === 0 ? 2 ** 32 + i : 7 * i }))
  const lateEvent = ev(N + 1, T0 + 5 * MIN, 50)
  list.push({ e: lateEvent, after: 999 })
  const c = columns(list)
  const planned = ask<true | Error>(agg, (reply) => ({ type: 'reprice-plan', id: 'live', changes: c, idx: Uint32Array.from(c.seqs, (_, i) => i), through: N, reply }))
  // Sent after the plan message: the late one, then more into the same minutes.
  const more = [lateEvent, ...Array.from({ length: 3000 }, (_, i) => ev(N + 2 + i, T0 + (i % 600) * MIN + 5, 3))]
  for (let i = 0; i < more.length; i += 100) agg.send({ type: 'events', events: more.slice(i, i + 100) })
  t.equal(await planned, true)
  const store = agg.view().get('p') as SeriesStore
  t.equal(store.size, N + more.length, 'every event sent after the plan message was recorded before the plan finished')
  const oldSum = old.reduce((s, e) => s + e.costNanos, 0) + more.reduce((s, e) => s + e.costNanos, 0)
  t.equal(store.aggregate(-Infinity, Infinity).totals.costNanos, oldSum, 'nothing applied yet')
  t.ok(agg.repriceReady('live'))
  const r = await ask<RepriceReply | Error>(agg, (reply) => ({ type: 'reprice-apply', id: 'live', reply }))
  if (r instanceof Error) throw r
  t.equal(r.changed, N + 1, 'every old event and the late one')
  // The same rows, recorded fresh at their new costs, answer alike.
  const fresh = new SeriesStore()
  const to = new Map(list.map((x) => [x.e.seq, x.after]))
  const { toRow } = await import('../../src/actors/model-aggregator.js')
  for (const e of [...old, ...more]) fresh.record(toRow({ ...e, costNanos: to.get(e.seq) ?? e.costNanos }))
  for (const [s, e] of [[-Infinity, Infinity], [T0, T0 + 5 * MIN], [T0 + 90 * MIN, T0 + 3 * HOUR]]) t.equal(answers(store, s, e), answers(fresh, s, e), `[${s}, ${e}) as a fresh store`)
})

t.test('aggregator: a fold while it plans (a stale plan is made again): the apply is still exact', async (t) => {
  const agg = new ModelAggregator('m')
  t.teardown(() => agg.close())
  const N = 40_000
  const old = Array.from({ length: N }, (_, i) => ev(i + 1, T0 + (i % 3000) * MIN, 1000 + i))
  agg.send({ type: 'events', events: old })
  const list = old.filter((e) => e.ts >= T0 + DAY).map((e) => ({ e, after: e.costNanos + 5 }))
  const c = columns(list)
  const planned = ask<true | Error>(agg, (reply) => ({ type: 'reprice-plan', id: 'fold', changes: c, idx: Uint32Array.from(c.seqs, (_, i) => i), through: N, reply }))
  // Folds the first day (none of the re-priced events): the rows are renumbered, the plan is stale.
  agg.send({ type: 'retain', policy: { before: T0 + DAY, maxRows: 0, now: Infinity } })
  t.equal(await planned, true)
  t.ok(agg.repriceReady('fold'), 'its plan is current after the fold')
  const r = await ask<RepriceReply | Error>(agg, (reply) => ({ type: 'reprice-apply', id: 'fold', reply }))
  if (r instanceof Error) throw r
  t.equal(r.changed, list.length)
  const store = agg.view().get('p') as SeriesStore
  t.equal(store.aggregate(T0 + DAY, Infinity).totals.costNanos, list.reduce((s, x) => s + x.after, 0))
  t.equal(store.aggregate(-Infinity, T0 + DAY).totals.costNanos, old.filter((e) => e.ts < T0 + DAY).reduce((s, e) => s + e.costNanos, 0))
})

/** Every row's (cost, unpriced) by seq. */
function rowCosts(topo: Topology): Map<number, [number, boolean]> {
  const out = new Map<number, [number, boolean]>()
  for (const a of topo.project('default')?.aggregators() ?? []) {
    for (const store of a.view().values()) store.scanRows(store.coarseBefore, Infinity, (v, flags, _u, _s, _a, _ts, seq) => out.set(seq, [v[6], (flags & 2) !== 0]))
  }
  return out
}

t.test('topology: events ingested into the re-priced minutes while it runs; exact; readers never see a mix', async (t) => {
  const { topo } = await topology(t, { highWaterEvents: 10_000_000, mailboxCapacity: 1_000_000 })
  const all = events(120_000, 21, 'default', T0, DAY)
  const stored = []
  for (let i = 0; i < all.length; i += 10_000) stored.push(...(await topo.router.ingest(all.slice(i, i + 10_000))))
  await topo.sync()
  const now = rowCosts(topo)
  const c: CostChanges = { seqs: new Float64Array(stored.length), ts: new Float64Array(stored.length), ...named(stored.map((e) => e.model), stored.map((e) => e.provider)), before: new Float64Array(stored.length), beforeUnpriced: new Uint8Array(stored.length), after: new Float64Array(stored.length), afterUnpriced: new Uint8Array(stored.length) }
  stored.forEach((e, k) => {
    const [cost, unpriced] = now.get(e.seq) as [number, boolean]
    c.seqs[k] = e.seq
    c.ts[k] = e.ts
    c.before[k] = cost
    c.beforeUnpriced[k] = unpriced ? 1 : 0
    c.after[k] = (k % 89) * 1000 + 3000
  })
  // All time: the events' bursts lie past the day they are spread over.
  const range = { start: -Infinity, end: Infinity, project: 'default' }
  const newTotal = c.after.reduce((s, x) => s + x, 0)
  // Readers: the re-priced events' total is all old or all new (the events arriving meanwhile are
  // told apart by their own cost: every one of them costs exactly 1,000 nanos).
  const arriving = events(6000, 22, 'default', T0, DAY).map((e) => ({ ...e, cost: 1e-6 }))
  const oldTotal = c.before.reduce((s, x) => s + x, 0)
  let done = false
  const bad: string[] = []
  let reads = 0
  const reader = (async () => {
    while (!done) {
      const tot = metrics(topo, range).totals
      const base = tot.costNanos - (tot.requests - stored.length) * 1000
      if (base !== oldTotal && base !== newTotal) bad.push(`${tot.costNanos} over ${tot.requests}`)
      reads++
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  const repricing = topo.reprice('default', 'rp_live', c)
  let ingested = 0
  let duringPlan = 0
  let finished = false
  void repricing.finally(() => (finished = true))
  for (let i = 0; i < arriving.length; i += 500) {
    await topo.router.ingest(arriving.slice(i, i + 500))
    ingested += 500
    if (!finished) duringPlan += 500
  }
  const changed = await repricing
  done = true
  await reader
  await topo.sync()
  t.ok(changed > 100_000, `${changed} rows changed`)
  t.comment(`${duringPlan} of ${ingested} arriving events were accepted before the re-price resolved; ${reads} reads`)
  t.same(bad, [], 'no reader saw a mix')
  t.equal(metrics(topo, range).totals.costNanos, newTotal + arriving.length * 1000, 'exactly the new costs, the arriving events at theirs')
  t.equal(metrics(topo, { ...range, models: new Set(costs(topo, range).map((x) => x.model)) }).totals.costNanos, newTotal + arriving.length * 1000, 'series and rollup agree')
  const after = rowCosts(topo)
  let wrong = 0
  stored.forEach((e, k) => {
    if (after.get(e.seq)?.[0] !== c.after[k]) wrong++
  })
  t.equal(wrong, 0, 'every re-priced row holds its new cost')
})

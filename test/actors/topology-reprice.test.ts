/**
 * Topology.reprice: after re-pricing events, every query (metrics, costs, timeseries, breakdowns
 * by every dimension, filtered windows as alert rules read them, search by cost) answers exactly
 * as a topology fed the events at their new costs — live, restored from a snapshot, and with
 * hours retention folded before the re-price; re-applying an id changes nothing; and readers
 * racing a re-price see the old costs or the new ones, never some of each.
 */
import t, { type Test } from 'tap'
import type { CostChanges, Topology, TopologyOptions } from '../../src/actors/topology.js'
import { search } from '../../src/analytics/search.js'
import { breakdown, costs, metrics, timeseries, type RangeQuery } from '../../src/queries.js'
import type { PendingEvent, StoredEvent } from '../../src/events.js'
import { aggJson, compare, DAY, events, HOUR, MIN, MODELS, named, rng, roundTrip, T0, topology as build } from './topology-helpers.js'

/** A topology with room for the race test's events. */
async function topology(t: Test, opts: Partial<TopologyOptions> = {}): Promise<Topology> {
  return (await build(t, { highWaterEvents: 10_000_000, ...opts })).topo
}

/** Every row's (cost nanos, unpriced) by seq, read from the series. */
function rowCosts(topo: Topology, project = 'default'): Map<number, [number, boolean]> {
  const out = new Map<number, [number, boolean]>()
  for (const a of topo.project(project)?.aggregators() ?? []) {
    for (const store of a.view().values()) store.scanRows(store.coarseBefore, Infinity, (v, flags, _u, _s, _a, _ts, seq) => out.set(seq, [v[6], (flags & 2) !== 0]))
  }
  return out
}

interface Change {
  i: number
  after: number
}

/** The CostChanges of `chosen` (indexes into `stored`, ascending), before = `before(seq)`. */
function changesOf(stored: readonly StoredEvent[], chosen: readonly Change[], before: (e: StoredEvent) => [number, boolean]): CostChanges {
  const n = chosen.length
  const c: CostChanges = {
    seqs: new Float64Array(n),
    ts: new Float64Array(n),
    ...named(chosen.map(({ i }) => stored[i].model), chosen.map(({ i }) => stored[i].provider)),
    before: new Float64Array(n),
    beforeUnpriced: new Uint8Array(n),
    after: new Float64Array(n),
    afterUnpriced: new Uint8Array(n)
  }
  chosen.forEach(({ i, after }, k) => {
    const e = stored[i]
    const [cost, unpriced] = before(e)
    c.seqs[k] = e.seq
    c.ts[k] = e.ts
    c.before[k] = cost
    c.beforeUnpriced[k] = unpriced ? 1 : 0
    c.after[k] = after
  })
  return c
}

/** Whether the event is unpriced when accepted (no caller cost, a model without a price). */
const unpriced = (e: PendingEvent) => e.cost === null && e.model === 'my-model'

/**
 * A random tenth of the events (at least one unpriced one among them) to new costs in whole
 * micro-dollars (a caller cost of after/1e9 dollars is exactly `after` nanos), some past 2^32.
 */
function choose(all: readonly PendingEvent[], seed: number): Change[] {
  const r = rng(seed)
  const out: Change[] = []
  all.forEach((e, i) => {
    if (r() < 0.1 || (unpriced(e) && !out.some((c) => unpriced(all[c.i])))) out.push({ i, after: r() < 0.1 ? Math.floor(r() * 20_000) * 1_000_000 : Math.floor(r() * 90_000) * 1000 })
  })
  return out
}

/** The events as a fresh topology would have taken them at the new costs. */
function repriced(all: readonly PendingEvent[], chosen: readonly Change[]): PendingEvent[] {
  const to = new Map(chosen.map((c) => [c.i, c.after]))
  return all.map((e, i) => (to.has(i) ? { ...e, cost: (to.get(i) as number) / 1e9 } : e))
}

const FILTERS: Array<Omit<RangeQuery, 'start' | 'end'>> = [{}, { models: new Set(MODELS) }, { models: new Set(['my-model']) }, { providers: new Set(['azure']) }, { status: 'error' }, { user_id: 'u3' }, { session_id: 's7' }, { tag: 'a' }, { metadata: { feature: 'chat' } }, { metadata: { plan: 'pro' } }]
const BY = ['model', 'provider', 'user_id', 'session_id', 'tag', 'metadata.feature']

/** Every answer, as one string per query. */
function observe(topo: Topology, ranges: Array<[number, number]>, rows = true): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [start, end] of ranges) {
    for (const f of rows ? FILTERS : FILTERS.slice(0, 4)) {
      const q: RangeQuery = { ...f, start, end, project: 'default' }
      const key = `[${start},${end}) ${JSON.stringify(f, (_k, v) => (v instanceof Set ? [...v] : v))}`
      out[`metrics ${key}`] = JSON.stringify(aggJson(metrics(topo, q)))
      out[`costs ${key}`] = JSON.stringify(costs(topo, q).map((c) => [c.model, c.provider, c.agg.totals]))
      for (const interval of rows ? [MIN, HOUR, DAY] : [HOUR, DAY]) out[`timeseries ${interval} ${key}`] = JSON.stringify(timeseries(topo, q, interval).map((b) => [b.start, ...aggJson(b)]))
    }
    if (!rows) continue
    for (const by of BY) {
      for (const [sort, limit] of [['cost', 3], ['requests', 1000]] as const) {
        const b = breakdown(topo, { start, end, project: 'default' }, by, sort, limit)
        out[`breakdown ${by} ${sort} ${limit} [${start},${end})`] = JSON.stringify({ groups: b.groups.map((g) => [g.value, ...aggJson(g.agg)]), other: b.other === null ? null : aggJson(b.other), total: aggJson(b.total) })
      }
    }
    // Search by cost reads the rows' cost: the new order. Seqs are the same in both topologies.
    out[`search cost [${start},${end})`] = JSON.stringify(search({ reader: topo }, { start, end, project: 'default' }, 'cost', null, 40))
    out[`search cost user [${start},${end})`] = JSON.stringify(search({ reader: topo }, { start, end, project: 'default', user_id: 'u3' }, 'cost', null, 10))
  }
  return out
}

const RANGES: Array<[number, number]> = [
  [-Infinity, Infinity],
  [T0, T0 + DAY],
  [T0 + 26 * HOUR, T0 + 26 * HOUR + 90_000],
  [T0 + 0.5, T0 + 30 * HOUR + 17]
]

for (const seed of [1, 2]) {
  t.test(`seed ${seed}: re-price equals a fresh build at the new costs, live and restored; idempotent`, async (t) => {
    const all = events(1500, seed)
    const topo = await topology(t)
    // In two batches, so rows of one minute come from several aggregator messages.
    const stored = [...(await topo.router.ingest(all.slice(0, 700))), ...(await topo.router.ingest(all.slice(700)))]
    await topo.sync()
    const now = rowCosts(topo)
    const chosen = choose(all, seed * 11)
    t.ok(chosen.some((c) => unpriced(all[c.i])), 'an unpriced event is among them')
    const c = changesOf(stored, chosen, (e) => now.get(e.seq) as [number, boolean])
    // Totals per user exist before (kept up to date by routing): the re-price must drop them.
    breakdown(topo, { start: -Infinity, end: Infinity, project: 'default' }, 'user_id', 'cost', 5)
    const want = chosen.filter((x) => x.after !== now.get(stored[x.i].seq)![0] || now.get(stored[x.i].seq)![1]).length
    t.equal(await topo.reprice('default', 'rp_a', c), want, 'rows changed')
    t.equal(await topo.reprice('default', 'rp_a', c), 0, 'again: nothing')
    t.equal(await topo.reprice('nope', 'rp_a', c), 0, 'a project without state: nothing')

    const fresh = await topology(t)
    await fresh.router.ingest(repriced(all, chosen))
    await fresh.sync()
    const expected = observe(fresh, RANGES)
    compare(t, observe(topo, RANGES), expected, 'live')
    // A filtered window, as an alert rule reads it, moved.
    const w = { start: T0, end: T0 + 3 * DAY, project: 'default', models: new Set(['my-model']) }
    t.equal(metrics(topo, w).totals.unpriced, metrics(fresh, w).totals.unpriced)

    const back = await topology(t, { restored: (await roundTrip(t, await topo.snapshot(T0))).restored })
    compare(t, observe(back, RANGES), expected, 'restored')
    t.equal(await back.reprice('default', 'rp_a', c), 0, 'restored: again, nothing')

    // Later events land alike.
    const later = events(200, seed + 50)
    for (const x of [topo, fresh]) {
      await x.router.ingest(later)
      await x.sync()
    }
    compare(t, observe(topo, RANGES), observe(fresh, RANGES), 'after later events')
  })
}

t.test('coarse hours: before → after by value, once per id, kept across a snapshot', async (t) => {
  const all = events(1200, 7)
  const topo = await topology(t)
  const stored = await topo.router.ingest(all)
  await topo.sync()
  const before = rowCosts(topo)
  // Fold the first day, then re-price events on both sides of the fold.
  const policy = { before: T0 + DAY, maxRows: 0, now: T0 + 3 * DAY }
  topo.retain(policy)
  await topo.sync()
  t.ok(topo.retentionStats().coarseRows > 0)
  const chosen = choose(all, 3)
  t.ok(chosen.some((x) => all[x.i].ts < T0 + DAY) && chosen.some((x) => all[x.i].ts >= T0 + DAY), 'changes on both sides of the fold')
  const c = changesOf(stored, chosen, (e) => before.get(e.seq) as [number, boolean])
  t.ok((await topo.reprice('default', 'rp_c', c)) > 0)
  t.equal(await topo.reprice('default', 'rp_c', c), 0, 'again: nothing, coarse hours included')

  const fresh = await topology(t)
  await fresh.router.ingest(repriced(all, chosen))
  await fresh.sync()
  fresh.retain(policy)
  await fresh.sync()
  // Hour-aligned ranges (coarse hours count at their start): exact, sketches included.
  const ranges: Array<[number, number]> = [[-Infinity, Infinity], [T0, T0 + DAY], [T0 + 5 * HOUR, T0 + 40 * HOUR]]
  const expected = observe(fresh, ranges, false)
  compare(t, observe(topo, ranges, false), expected, 'live')
  const { restored } = await roundTrip(t, await topo.snapshot(T0))
  const back = await topology(t, { restored })
  compare(t, observe(back, ranges, false), expected, 'restored')
  t.equal(await back.reprice('default', 'rp_c', c), 0, 'restored: the coarse hours remember the id')
  compare(t, observe(back, ranges, false), expected, 'restored, applied again')
  // A second re-price of the same events (before = the first's after) moves them again.
  const again = changesOf(stored, chosen.map((x) => ({ i: x.i, after: x.after + 1000 })), (e) => [chosen.find((x) => stored[x.i].seq === e.seq)!.after, false])
  await back.reprice('default', 'rp_d', again)
  const want = metrics(fresh, { start: -Infinity, end: Infinity }).totals.costNanos + 1000 * chosen.length
  t.equal(metrics(back, { start: -Infinity, end: Infinity }).totals.costNanos, want)
  t.equal(metrics(back, { start: -Infinity, end: Infinity, models: new Set(MODELS) }).totals.costNanos, want, 'series and rollup agree')
})

t.test('readers racing a re-price see all old or all new costs; ingestion goes on; the cut holds emission', async (t) => {
  const topo = await topology(t, { mailboxCapacity: 1_000_000 })
  const all = events(150_000, 5)
  const stored: StoredEvent[] = []
  for (let i = 0; i < all.length; i += 10_000) stored.push(...(await topo.router.ingest(all.slice(i, i + 10_000))))
  await topo.sync()
  const now = rowCosts(topo)
  // Most events, so planning takes several slices (turns) in several aggregators.
  const chosen = all.map((_, i) => ({ i, after: (i % 97) * 1000 + 7000 }))
  const c = changesOf(stored, chosen, (e) => now.get(e.seq) as [number, boolean])
  const range = { start: T0, end: T0 + 3 * DAY, project: 'default' }
  // The rollup's total, every series' costs, and (for the syncing reader) the per-user totals.
  const view = (users = false) => JSON.stringify([metrics(topo, range).totals.costNanos, costs(topo, range).map((x) => [x.model, x.provider, x.agg.totals.costNanos, x.agg.totals.unpriced]), users ? breakdown(topo, range, 'user_id', 'cost', 3).groups.map((g) => [g.value, g.agg.totals.costNanos]) : null])
  const old = view()
  const oldUsers = view(true)
  let done = false
  const seen: string[] = []
  // One reader per turn, without waiting for anything (as an alert tick reads)...
  const reader = (async () => {
    while (!done) {
      seen.push(view())
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  // ...and one that syncs first (as HTTP queries do), and events arriving (later days: outside the range read).
  const synced: string[] = []
  const syncer = (async () => {
    while (!done) {
      await topo.sync()
      synced.push(view(true))
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
  })()
  const ingest = topo.router.ingest(events(5000, 6, 'default', T0 + 10 * DAY, DAY))
  const changed = await topo.reprice('default', 'rp_race', c)
  done = true
  await Promise.all([reader, syncer, ingest])
  await topo.sync()
  const fresh = view()
  const freshUsers = view(true)
  t.not(fresh, old, 'costs moved')
  t.not(freshUsers, oldUsers, 'per-user costs moved')
  t.ok(changed > 100_000, `${changed} rows changed`)
  // Every event of the range was re-priced (planned in several slices per series): exact.
  const total = metrics(topo, range).totals
  t.same([total.costNanos, total.unpriced], [chosen.reduce((sum, x) => sum + x.after, 0), 0], 'the range costs exactly the new prices')
  t.equal(metrics(topo, { ...range, models: new Set(MODELS) }).totals.costNanos, total.costNanos, 'series and rollup agree')
  t.equal(seen.filter((v) => v !== old && v !== fresh).length, 0, `no reader saw a mix (${seen.length} reads)`)
  t.equal(synced.filter((v) => v !== oldUsers && v !== freshUsers).length, 0, `no syncing reader saw a mix (${synced.length} reads)`)
  t.ok(seen.filter((v) => v === old).length > 1, `readers ran during the re-price (${seen.length} reads, ${seen.filter((v) => v === old).length} old)`)
  t.equal(metrics(topo, { start: T0 + 10 * DAY, end: Infinity }).totals.requests, 5000, 'events that arrived meanwhile are all counted')
})

/**
 * Cluster partials (DESIGN §9): random events (two projects, models, providers, users, sessions,
 * tags, metadata, errors, caller costs, late timestamps) go into ONE reference topology and into
 * k = 1, 3, 5 partition topologies split by partitionOf(project, model, k). For random queries —
 * ranges incl. unbounded, every filter, every breakdown `by` (tag, metadata.KEY), every sort,
 * limits from 1 to past the group count — the cluster answer, with `ask` doing a JSON round trip
 * through answerPartial on each partition, equals the single-node answer on the union: totals,
 * whole sketches (buckets, min, max), group order, `other` and `total`. With tiny dimension caps
 * in the partitions, filters on values past a cap take each partition's log and stay exact.
 */
import t, { type Test } from 'tap'
import fc from 'fast-check'
import { Topology } from '../../src/actors/topology.js'
import { ManualClock } from '../../src/clock.js'
import { silentLog } from '../../src/log.js'
import { createAggregate, type Aggregate } from '../../src/analytics/series.js'
import { DEFAULT_DIMENSION_LIMITS, type DimensionLimits } from '../../src/analytics/dimensions.js'
import { LatencySketch } from '../../src/analytics/sketch.js'
import { computeCost, priceInputOf } from '../../src/pricing/compute-cost.js'
import { partitionOf } from '../../src/cluster/names.js'
import { breakdown, costs, dimensions, metrics, timeseries, type Breakdown, type BreakdownSort, type QuerySource, type RangeQuery } from '../../src/queries.js'
import type { Filters, WindowQuery } from '../../src/analytics/reader.js'
import type { PricedEvent, StoredEvent } from '../../src/events.js'
import {
  answerPartial,
  chunk,
  clusterBreakdown,
  clusterCosts,
  clusterDimensions,
  clusterMetrics,
  clusterTimeseries,
  clusterWindows,
  decodeQuery,
  decodeSketch,
  encodeQuery,
  encodeSketch,
  MAX_PART_BYTES,
  partCount,
  PartitionMovedError,
  unchunk,
  type Ask,
  type PartialRequest
} from '../../src/analytics/partials.js'

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
const T0 = Date.parse('2026-03-01T00:00:00.000Z')
const PROJECTS = ['default', 'p2']
const MODELS = ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022', 'm-a', 'm-b', 'm-c']
const PROVIDERS = ['openai', 'azure', 'anthropic', 'p1']
const TAGS = ['a', 'b', 'c', 'd', 'e', 'f']
const FEATURES = ['search', 'chat', 'sum']

/** Deterministic pseudo-random numbers (mulberry32). */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

function makeEvents(n: number, seed: number, users = 40, firstSeq = 0): StoredEvent[] {
  const r = rng(seed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]
  const out: StoredEvent[] = []
  for (let i = 0; i < n; i++) {
    const u = r()
    // Mostly three days, a dense two hours, and late events far in the past.
    const ts = u < 0.7 ? T0 + Math.floor(r() * 3 * DAY) : u < 0.9 ? T0 + DAY + Math.floor(r() * 2 * HOUR) : T0 - Math.floor(r() * 30 * DAY)
    const model = pick(MODELS)
    const prompt = Math.floor(r() * 3000)
    const completion = Math.floor(r() * 900)
    const meta: Record<string, unknown> = {}
    if (r() < 0.6) meta.feature = pick(FEATURES)
    if (r() < 0.4) meta.tier = pick(['free', 'pro', 1, 2, true, false])
    if (r() < 0.2) meta.n = pick([0, 1, 1.5, { nested: 1 }, null])
    const seq = firstSeq + i
    out.push({
      seq,
      id: `evt_${seq}`,
      ts,
      recv: ts,
      model,
      provider: model.startsWith('claude') ? 'anthropic' : pick(PROVIDERS),
      prompt,
      completion,
      total: prompt + completion,
      cached: r() < 0.2 ? Math.floor(r() * prompt) : 0,
      reasoning: r() < 0.1 ? Math.floor(r() * 100) : 0,
      latency: r() < 0.05 ? 0 : Math.floor(r() * 2_000_000) / 1000,
      ttft: null,
      error: r() < 0.1,
      cost: r() < 0.3 ? Math.floor(r() * 5e6) / 1e9 : null,
      meta: Object.keys(meta).length === 0 ? null : meta,
      project: r() < 0.75 ? 'default' : 'p2',
      user: r() < 0.15 ? null : `u${Math.floor(r() * users)}`,
      session: r() < 0.4 ? null : `s${Math.floor(r() * 12)}`,
      tags: r() < 0.3 ? null : TAGS.filter(() => r() < 0.3)
    })
  }
  return out
}

const price = (e: StoredEvent): PricedEvent => {
  const p = computeCost(priceInputOf(e), {})
  return { ...e, costNanos: p.costNanos, unpriced: p.unpriced }
}

interface Node {
  topo: Topology
  events: StoredEvent[]
  source: QuerySource
  /** Events the log path visited. */
  logReads: number
}

function makeNode(t: Test, limits: DimensionLimits = DEFAULT_DIMENSION_LIMITS): Node {
  const events: StoredEvent[] = []
  const node = { events, logReads: 0 } as Node
  node.topo = new Topology({
    // Events come in through replay(): the log is never appended to nor replayed here.
    log: {
      append: () => Promise.reject(new Error('not in this test')),
      readFrom: function* () {},
      nextSeq: 0
    } as unknown as ConstructorParameters<typeof Topology>[0]['log'],
    pricer: null,
    overrides: {},
    logger: silentLog,
    clock: new ManualClock(T0 + 3 * DAY),
    highWaterEvents: 1_000_000,
    maxModels: 50,
    costChunk: 256,
    costMaxInFlight: 2,
    price,
    window: () => createAggregate(),
    dimensionLimits: limits
  })
  node.source = {
    reader: node.topo,
    log: (project, start, end, visit) => {
      for (const e of events) {
        if (e.project === project && e.ts >= start && e.ts < end) {
          node.logReads++
          visit(price(e))
        }
      }
    }
  }
  t.teardown(() => node.topo.close())
  return node
}

async function feed(node: Node, events: StoredEvent[]): Promise<void> {
  for (let i = 0; i < events.length; i += 500) node.topo.replay(events.slice(i, i + 500))
  node.events.push(...events)
  await node.topo.sync()
}

/** Partition readers for k partitions, fed their events. */
async function cluster(t: Test, events: StoredEvent[], k: number, limits?: DimensionLimits): Promise<Node[]> {
  const nodes = Array.from({ length: k }, () => makeNode(t, limits))
  const parts: StoredEvent[][] = nodes.map(() => [])
  for (const e of events) parts[partitionOf(e.project, e.model, k)].push(e)
  await Promise.all(nodes.map((n, i) => feed(n, parts[i])))
  return nodes
}

/** `ask` through JSON both ways, as over NATS; records the requests. */
function askOf(nodes: Node[], seen: PartialRequest[] = []): Ask {
  return async (req) => {
    const wire = JSON.parse(JSON.stringify(req)) as PartialRequest
    seen.push(wire)
    return nodes.map((n) => JSON.parse(JSON.stringify(answerPartial(n.source, wire))) as unknown)
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering: everything an answer holds, sketches whole (buckets, zero count, min, max).

const aggJson = (a: Aggregate) => ({ totals: { ...a.totals }, sketch: a.sketch.toJSON(), p50: a.sketch.quantile(0.5), p95: a.sketch.quantile(0.95) })
const render = (x: unknown): string =>
  JSON.stringify(x, (_k, v: unknown) => {
    if (v instanceof LatencySketch) return v.toJSON()
    if (typeof v === 'number' && Number.isNaN(v)) return 'NaN'
    return v
  })
const renderBreakdown = (b: Breakdown) => render({ by: b.by, groups: b.groups.map((g) => ({ value: g.value, agg: aggJson(g.agg) })), other: b.other === null ? null : aggJson(b.other), total: aggJson(b.total) })

// ---------------------------------------------------------------------------------------------
// Queries

const timeArb = fc.oneof(
  fc.integer({ min: -31 * DAY, max: 4 * DAY }).map((o) => T0 + o),
  fc.integer({ min: -2, max: 4 * 24 }).map((h) => T0 + h * HOUR),
  fc.integer({ min: 0, max: 2 * 60 }).map((m) => T0 + DAY + m * MINUTE)
)
const rangeArb = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ start: -Infinity, end: Infinity }) },
  { weight: 1, arbitrary: timeArb.map((x) => ({ start: -Infinity, end: x })) },
  { weight: 1, arbitrary: timeArb.map((x) => ({ start: x, end: Infinity })) },
  { weight: 4, arbitrary: fc.tuple(timeArb, timeArb).map(([a, b]) => ({ start: Math.min(a, b), end: Math.max(a, b) })) }
)
const filtersArb: fc.Arbitrary<Filters> = fc.record(
  {
    models: fc.subarray(MODELS, { minLength: 1 }).map((m) => new Set(m)),
    providers: fc.subarray(PROVIDERS, { minLength: 1 }).map((p) => new Set(p)),
    status: fc.constantFrom<'success' | 'error'>('success', 'error'),
    user_id: fc.constantFrom('u0', 'u1', 'u7', 'u39', 'nobody'),
    session_id: fc.constantFrom('s0', 's3', 's11', 'nobody'),
    tag: fc.constantFrom('a', 'c', 'f', 'zz'),
    metadata: fc.constantFrom<Record<string, string>>({ feature: 'search' }, { tier: 'pro' }, { tier: '1' }, { tier: 'true' }, { n: '1.5' }, { feature: 'chat', tier: 'free' }, { missing: 'x' })
  },
  { requiredKeys: [] }
)
/** Mostly unfiltered (the rollup and all-time totals paths), else any mix of filters. */
const queryArb: fc.Arbitrary<RangeQuery> = fc
  .tuple(fc.constantFrom('default', 'default', 'p2', 'nope'), rangeArb, fc.oneof({ weight: 2, arbitrary: fc.constant<Filters>({}) }, { weight: 3, arbitrary: filtersArb }))
  .map(([project, range, filters]) => ({ ...filters, ...range, project }))
const byArb = fc.constantFrom('model', 'provider', 'user_id', 'user_id', 'session_id', 'tag', 'metadata.feature', 'metadata.tier', 'metadata.n', 'metadata.none')
const sortArb = fc.constantFrom<BreakdownSort>('cost', 'requests', 'tokens')
const limitArb = fc.constantFrom(1, 2, 3, 5, 20, 1000)
const intervalArb = fc.constantFrom(MINUTE, 7 * MINUTE, HOUR, DAY)

const describeQ = (q: RangeQuery) => render({ ...q, start: String(q.start), end: String(q.end), models: q.models && [...q.models], providers: q.providers && [...q.providers] })

// ---------------------------------------------------------------------------------------------

t.test('wire forms: queries and sketches round trip; malformed ones are refused by name', async (t) => {
  const q: RangeQuery = { start: -Infinity, end: T0, project: 'p2', models: new Set(['b', 'a']), providers: new Set(['x']), status: 'error', user_id: 'u', session_id: 's', tag: 't', metadata: { k: 'v' } }
  const back = decodeQuery(JSON.parse(JSON.stringify(encodeQuery(q))))
  t.same({ ...back, models: [...(back.models ?? [])], providers: [...(back.providers ?? [])] }, { ...q, models: ['a', 'b'], providers: ['x'] })
  t.same(decodeQuery(encodeQuery({ start: 5, end: Infinity })), { start: 5, end: Infinity })
  t.throws(() => decodeQuery({ start: null, end: 1 }), /start/)
  t.throws(() => decodeQuery({ start: 0, end: 1, models: [1] }), /models/)
  t.throws(() => decodeQuery({ start: 0, end: 1, status: 'bad' }), /status/)
  t.throws(() => decodeQuery({ start: 0, end: 1, metadata: { k: 1 } }), /metadata/)
  t.throws(() => answerPartial({ reader: { project: () => undefined } }, { kind: 'nope' } as unknown as PartialRequest), /unknown kind/)

  const r = rng(3)
  for (const n of [0, 1, 2, 50, 5000]) {
    const s = new LatencySketch()
    for (let i = 0; i < n; i++) s.record(r() < 0.1 ? 0 : Math.floor(r() * 10 ** (1 + Math.floor(r() * 7))))
    t.same(decodeSketch(encodeSketch(s)).toJSON(), s.toJSON(), `${n} values`)
  }
  // Subtracted: min and max become bucket values (fractions).
  const whole = new LatencySketch()
  whole.recordMany([3, 700, 12_345, 999_999])
  const part = new LatencySketch()
  part.recordMany([3, 999_999])
  const diff = LatencySketch.dense().merge(whole).subtract(part)
  t.notOk(Number.isInteger(diff.max), 'a fractional max')
  t.same(decodeSketch(encodeSketch(diff)).toJSON(), diff.toJSON(), 'fractional extremes kept exactly')
  t.equal(encodeSketch(new LatencySketch()), '', 'empty is the empty string')
})

t.test('chunk/unchunk: parts under the limit, any order, missing parts refused', async (t) => {
  const reply = { xs: Array.from({ length: 5000 }, (_, i) => ({ v: `välue-${i}`, n: i })) }
  const parts = chunk(reply, 10_000)
  t.ok(parts.length > 5, `${parts.length} parts`)
  t.ok(parts.every((p) => p.length <= 10_000))
  t.equal(partCount(parts[3]), parts.length)
  t.same(unchunk([...parts].reverse()), reply)
  t.throws(() => unchunk(parts.slice(1)), /parts/)
  t.same(unchunk(chunk({ a: 1 })), { a: 1 })
  t.equal(chunk({ a: 1 }).length, 1)
})

for (const k of [1, 3, 5]) {
  t.test(`k = ${k} partitions answer exactly as one node on the union`, async (t) => {
    const events = makeEvents(2500, 7 + k)
    const reference = makeNode(t)
    await feed(reference, events)
    const nodes = await cluster(t, events, k)
    const seen: PartialRequest[] = []
    const ask = askOf(nodes, seen)
    let runs = 0
    await fc.assert(
      fc.asyncProperty(queryArb, byArb, sortArb, limitArb, intervalArb, async (q, by, sort, limit, interval) => {
        runs++
        const label = `${describeQ(q)} by=${by} sort=${sort} limit=${limit}`
        const m1 = render(aggJson(metrics(reference.source, q)))
        const m2 = render(aggJson(await clusterMetrics(ask, q)))
        if (m1 !== m2) throw new Error(`metrics ${label}\n${m1}\n${m2}`)
        const c1 = render(costs(reference.source, q).map((r) => ({ ...r, agg: aggJson(r.agg) })))
        const c2 = render((await clusterCosts(ask, q)).map((r) => ({ ...r, agg: aggJson(r.agg) })))
        if (c1 !== c2) throw new Error(`costs ${label}\n${c1}\n${c2}`)
        const s1 = render(timeseries(reference.source, q, interval).map((b) => ({ start: b.start, ...aggJson(b) })))
        const s2 = render((await clusterTimeseries(ask, q, interval)).map((b) => ({ start: b.start, ...aggJson(b) })))
        if (s1 !== s2) throw new Error(`timeseries ${interval} ${label}`)
        const b1 = renderBreakdown(breakdown(reference.source, q, by, sort, limit))
        const b2 = renderBreakdown(await clusterBreakdown(ask, q, by, sort, limit))
        if (b1 !== b2) throw new Error(`breakdown ${label}\n${b1}\n${b2}`)
      }),
      { numRuns: 150 }
    )
    t.equal(runs, 150, 'every generated query compared')
    const fromTotals = seen.filter((r) => r.kind === 'breakdown-sketches' && r.from === 'totals').length
    const fromRows = seen.filter((r) => r.kind === 'breakdown-sketches' && r.from === 'rows').length
    t.ok(fromTotals > 0 && fromRows > 0, `both breakdown paths taken (from totals ${fromTotals}, from rows ${fromRows})`)

    // Pinned: a user breakdown over everything (the all-time totals path), small limits.
    for (const limit of [1, 3]) {
      const q = { start: -Infinity, end: Infinity }
      t.equal(renderBreakdown(await clusterBreakdown(ask, q, 'user_id', 'cost', limit)), renderBreakdown(breakdown(reference.source, q, 'user_id', 'cost', limit)), `user_id over everything, limit ${limit}`)
    }
    // Pinned: tags count a row in each of its groups, in `other` possibly more than once.
    const qt = { start: T0, end: T0 + 2 * DAY }
    t.equal(renderBreakdown(await clusterBreakdown(ask, qt, 'tag', 'requests', 2)), renderBreakdown(breakdown(reference.source, qt, 'tag', 'requests', 2)), 'tag, limit 2')
    await t.rejects(clusterBreakdown(ask, qt, 'metadata.', 'cost', 5), RangeError, 'a by naming no dimension')

    // The alert evaluator's windows, many at once.
    const windows: WindowQuery[] = fc.sample(fc.tuple(fc.constantFrom('default', 'p2', 'nope'), filtersArb, rangeArb), { numRuns: 40, seed: k }).map(([project, filters, range]) => ({ project, filters, ...range }))
    const w1 = windows.map((w) => render(aggJson(metrics(reference.source, { ...w.filters, project: w.project, start: w.start, end: w.end }))))
    const w2 = (await clusterWindows(ask, windows)).map((a) => render(aggJson(a)))
    t.same(w2, w1, '40 windows in one request')
    t.same(await clusterWindows(ask, []), [])

    // Dimensions: distinct values across partitions (a user is in several).
    for (const project of ['default', 'p2', 'nope']) {
      const one = dimensions(reference.source, project)
      const many = await clusterDimensions(ask, project)
      const fixed = (xs: typeof one) => xs.filter((d) => !d.name.startsWith('metadata.'))
      const meta = (xs: typeof one) => xs.filter((d) => d.name.startsWith('metadata.')).sort((a, b) => (a.name < b.name ? -1 : 1))
      t.same(fixed(many), fixed(one), `${project}: user, session, tag counts`)
      t.same(meta(many), meta(one), `${project}: metadata keys and counts`)
      if (k === 1) t.same(many, one, `${project}: same order on one partition`)
    }
  })
}

t.test('tiny caps per partition: filters past a cap read that partition log and stay exact', async (t) => {
  const tiny: DimensionLimits = { maxValues: 3, maxMetaKeys: 1, maxMetaValues: 2, maxAttrSets: 6, notDimensions: [] }
  const events = makeEvents(1500, 99)
  const reference = makeNode(t)
  await feed(reference, events)
  const nodes = await cluster(t, events, 3, tiny)
  const ask = askOf(nodes)
  await fc.assert(
    fc.asyncProperty(queryArb, fc.constantFrom('model', 'provider'), sortArb, limitArb, intervalArb, fc.constantFrom('user_id', 'tag', 'metadata.feature', 'metadata.tier'), async (q, by, sort, limit, interval, anyBy) => {
      const label = describeQ(q)
      if (render(aggJson(metrics(reference.source, q))) !== render(aggJson(await clusterMetrics(ask, q)))) throw new Error(`metrics ${label}`)
      const c1 = render(costs(reference.source, q).map((r) => ({ ...r, agg: aggJson(r.agg) })))
      if (c1 !== render((await clusterCosts(ask, q)).map((r) => ({ ...r, agg: aggJson(r.agg) })))) throw new Error(`costs ${label}`)
      const s1 = render(timeseries(reference.source, q, interval).map((b) => ({ start: b.start, ...aggJson(b) })))
      if (s1 !== render((await clusterTimeseries(ask, q, interval)).map((b) => ({ start: b.start, ...aggJson(b) })))) throw new Error(`timeseries ${label}`)
      // By model or provider the groups do not depend on caps.
      if (renderBreakdown(breakdown(reference.source, q, by, sort, limit)) !== renderBreakdown(await clusterBreakdown(ask, q, by, sort, limit))) throw new Error(`breakdown ${by} ${label}`)
      // By a capped dimension the split is coarser per partition, but the total is exact and the groups add up.
      const b = await clusterBreakdown(ask, q, anyBy, sort, limit)
      if (render(aggJson(b.total)) !== render(aggJson(breakdown(reference.source, q, anyBy, sort, limit).total))) throw new Error(`breakdown total ${anyBy} ${label}`)
      if (anyBy !== 'tag') {
        const sum = b.groups.reduce((n, g) => n + g.agg.totals.requests, 0) + (b.other?.totals.requests ?? 0)
        if (sum !== b.total.totals.requests) throw new Error(`groups add up ${anyBy} ${label}`)
      }
    }),
    { numRuns: 120 }
  )
  t.ok(nodes.every((n) => n.logReads > 0), `each partition read its own log (${nodes.map((n) => n.logReads).join(', ')} events)`)
  t.ok(nodes.some((n) => n.topo.project('default')?.dims.users.capped === true), 'the caps were reached')
  // A filter on a value past every partition's cap: exact, from the logs.
  const late = { start: -Infinity, end: Infinity, user_id: 'u39' }
  t.ok(metrics(reference.source, late).totals.requests > 0)
  t.same(render(aggJson(await clusterMetrics(ask, late))), render(aggJson(metrics(reference.source, late))), 'u39 past the cap')
})

t.test('a partition that moves between the two rounds fails the breakdown, never a mixed answer', async (t) => {
  const events = makeEvents(600, 5)
  const nodes = await cluster(t, events, 2)
  const inner = askOf(nodes)
  let extra = makeEvents(50, 6, 40, 10_000)
  const ask: Ask = async (req) => {
    if (req.kind === 'breakdown-sketches' && extra.length > 0) {
      // Events in range applied to both partitions after round 1.
      const more = extra.map((e) => ({ ...e, ts: T0 + HOUR }))
      extra = []
      await Promise.all(nodes.map((n, i) => feed(n, more.filter((e) => partitionOf(e.project, e.model, 2) === i))))
    }
    return inner(req)
  }
  await t.rejects(clusterBreakdown(ask, { start: T0, end: T0 + DAY }, 'user_id', 'cost', 1000), PartitionMovedError)
  // Once still, the same query answers.
  const b = await clusterBreakdown(ask, { start: T0, end: T0 + DAY }, 'user_id', 'cost', 1000)
  t.ok(b.groups.length > 0)
})

t.test('reply sizes: a breakdown by user with 10,000 users', async (t) => {
  const events = makeEvents(60_000, 11, 12_000)
  const nodes = await cluster(t, events, 3)
  const sizes: Record<string, string> = {}
  let largest = 0
  const ask: Ask = async (req) => {
    const replies = nodes.map((n) => answerPartial(n.source, JSON.parse(JSON.stringify(req)) as PartialRequest))
    const bytes = replies.map((r) => JSON.stringify(r).length)
    largest = Math.max(largest, ...bytes)
    const key = req.kind === 'breakdown-sketches' ? `${req.kind} (from ${req.from}, ${req.shown.length} shown)` : req.kind
    const groups = req.kind === 'breakdown' ? replies.map((r) => (r as { values: unknown[] }).values.length) : null
    sizes[key] = bytes.map((n, i) => `${(n / 1024).toFixed(0)} KiB` + (groups === null ? '' : ` (${groups[i]} groups, ${(n / groups[i]).toFixed(0)} B each)`)).join(', ')
    return replies.map((r) => JSON.parse(JSON.stringify(r)) as unknown)
  }
  const users = new Set(events.filter((e) => e.project === 'default' && e.user !== null).map((e) => e.user)).size
  t.ok(users >= 10_000, `${users} users in the project`)
  // A day (under half the events: the rows path), then everything (the all-time totals path).
  let b = await clusterBreakdown(ask, { start: T0, end: T0 + DAY }, 'user_id', 'cost', 1000)
  t.equal(b.groups.length, 1000)
  b = await clusterBreakdown(ask, { start: -Infinity, end: Infinity }, 'user_id', 'cost', 1000)
  t.equal(b.groups.length, 1000)
  t.ok(Object.keys(sizes).some((k) => k.includes('from rows')) && Object.keys(sizes).some((k) => k.includes('from totals')), 'both paths measured')
  await clusterTimeseries(ask, { start: T0, end: T0 + 3 * DAY }, MINUTE)
  await clusterDimensions(ask, 'default')
  for (const [kind, line] of Object.entries(sizes)) t.comment(`${kind}: ${line}`)
  t.ok(largest < MAX_PART_BYTES, `every reply fits one NATS message (largest ${(largest / 1024).toFixed(0)} KiB)`)
})

t.test('after a delete blanks values, partitions still answer dimensions and breakdowns exactly as one node', async (t) => {
  const events = makeEvents(1200, 91)
  const reference = makeNode(t)
  await feed(reference, events)
  const nodes = await cluster(t, events, 3)
  const ask = askOf(nodes)
  // Forget every event of two users (their ids blank in each dictionary that held them).
  const gone = new Set(events.filter((e) => e.user === 'u1' || e.user === 'u2').map((e) => e.seq))
  t.ok(gone.size > 0, `${gone.size} events of u1 and u2 to forget`)
  await reference.topo.forget('default', gone)
  await reference.topo.forget('p2', gone)
  for (const n of nodes) {
    await n.topo.forget('default', gone)
    await n.topo.forget('p2', gone)
  }
  for (const project of ['default', 'p2']) {
    const one = dimensions(reference.source, project)
    const many = await clusterDimensions(ask, project)
    const byName = (xs: typeof one) => [...xs].sort((a, b) => (a.name < b.name ? -1 : 1))
    t.same(byName(many), byName(one), `${project}: dimension counts after the delete`)
    const q = { project, start: -Infinity, end: Infinity }
    const b = await clusterBreakdown(ask, q, 'user_id', 'requests', 100)
    t.same(renderBreakdown(b), renderBreakdown(breakdown(reference.source, q, 'user_id', 'requests', 100)), `${project}: breakdown by user after the delete`)
    t.notOk(b.groups.some((g) => g.value === 'u1' || g.value === 'u2'), `${project}: the deleted users are in no group`)
  }
})

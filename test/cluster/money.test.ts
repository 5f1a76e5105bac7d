/**
 * Money on a cluster, in one process (src/cluster/prices.ts, price-log.ts, reprice.ts, the
 * runner's side in partition.ts): two nodes on one nats-server and a single-node reference given
 * the same price versions and events.
 * - a version PUT on one node is in the other's book; events accepted after it are priced with
 *   it wherever they land; costs, metrics and breakdowns equal the reference's;
 * - a reprice dry run answers the reference's diff and changes nothing; applied, it answers the
 *   reference's diff and every figure moves to the reference's, GET /events/:id too;
 * - a query during the apply never mixes (partials of one epoch only);
 * - a budget fires once per threshold for the cluster; a grouped rule fires once per group for
 *   the cluster, at the value merged from every partition;
 * - a node taking partitions over (its peer stopped) keeps the new prices;
 * - a node configured with other overrides adds them as a layer: events accepted afterwards are
 *   priced with it on every node, older ones keep their prices (on the new node too);
 * - a reprice record no partition applied (its coordinator died) is applied by the next owner
 *   before it serves;
 * - an event accepted at a revision its owner has not received yet waits for it (a query answers
 *   503 meanwhile), then is priced with it.
 */
import t, { type Test } from 'tap'
import { startNats } from '../helpers/nats.js'
import { makeApp, adminHeaders, type TestApp } from '../helpers/app.js'
import { connect } from '@nats-io/transport-node'
import { openStores } from '../../src/store/db.js'
import { ProjectStore } from '../../src/store/projects.js'
import { ApiKeyStore } from '../../src/store/api-keys.js'
import { RuleStore } from '../../src/store/rules.js'
import { AlertEventStore } from '../../src/store/alert-events.js'
import { ClusterMeta } from '../../src/cluster/meta.js'
import { ClusterPriceLog, PRICE_PREFIX } from '../../src/cluster/price-log.js'
import { silentLog } from '../../src/log.js'
import { connectCluster } from '../../src/cluster/nats.js'
import { JetStreamLog } from '../../src/cluster/js-log.js'
import { liveKeys } from '../../src/cluster/kv-leader.js'
import { loadConfig } from '../../src/config.js'

t.setTimeout(300_000)
/** The file's root test (a node that outlives the subtest that starts it is closed by this one's teardown). */
const root = t

const nats = await startNats({ servers: 1 })
t.teardown(() => nats.stop())

const clusterEnv = (node: string) => ({
  LLMSCOPE_NATS_URL: nats.urls.join(','),
  LLMSCOPE_QUERY_TIMEOUT_MS: '2000',
  LLMSCOPE_NODE_ID: node,
  LLMSCOPE_LEASE_S: '2',
  LLMSCOPE_PARTITIONS: '4',
  LLMSCOPE_CLUSTER_NAME: 'moneytest'
})

async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

type Ready = { cluster?: { owned: number[] } }
const owned = async (x: TestApp) => ((await x.app.inject({ url: '/ready' })).json() as Ready).cluster?.owned ?? []

const a = await makeApp(t, { env: clusterEnv('a') })
const b = await makeApp(t, { env: clusterEnv('b') })
const ref = await makeApp(t)
await waitFor('every partition owned, two each', async () => (await owned(a)).length === 2 && (await owned(b)).length === 2)

const MODELS = ['gpt-4o', 'gpt-4o-2024-08-06', 'claude-3-5-sonnet-20241022', 'my-llm']
const DAY = Date.UTC(2026, 0, 1)
function makeEvents(n: number, seed: number): Record<string, unknown>[] {
  let s = seed
  const rnd = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
  return Array.from({ length: n }, () => ({
    timestamp: new Date(DAY + Math.floor(rnd() * 2 * 86_400_000)).toISOString(),
    model: MODELS[Math.floor(rnd() * MODELS.length)],
    prompt_tokens: Math.floor(rnd() * 3000),
    completion_tokens: Math.floor(rnd() * 900),
    cached_tokens: Math.floor(rnd() * 100),
    latency_ms: Math.floor(rnd() * 3000) + 1,
    user_id: `u${Math.floor(rnd() * 5)}`,
    ...(rnd() < 0.05 ? { cost: 0.5 } : {})
  }))
}

async function ingest(nodes: TestApp[], events: Record<string, unknown>[]): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < events.length; i += 25) {
    const payload = events.slice(i, i + 25)
    const r = await nodes[(i / 25) % nodes.length]!.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload })
    if (r.statusCode !== 202) throw new Error(r.body)
    ids.push(...(r.json().event_ids as string[]))
    const rr = await ref.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload })
    if (rr.statusCode !== 202) throw new Error(rr.body)
  }
  return ids
}

const URLS = ['/analytics/metrics', '/analytics/costs', '/analytics/breakdown?by=user_id', '/analytics/breakdown?by=model', '/analytics/timeseries?interval=1h&start_time=2026-01-01T00:00:00Z&end_time=2026-01-03T00:00:00Z']

async function sameAsRef(t: Test, when: string): Promise<void> {
  for (const url of URLS) {
    const want = await ref.app.inject({ url, headers: adminHeaders })
    t.equal(want.statusCode, 200, `reference ${url}`)
    for (const node of [a, b]) {
      const got = await node.app.inject({ url, headers: adminHeaders })
      t.same(got.json(), want.json(), `${when}: ${(node.engine.clusterStatus() as { node: string }).node} ${url}`)
    }
  }
}

/** An event without what differs between the cluster and the reference (ids, seqs, receive times). */
const key = (e: Record<string, unknown>) => JSON.stringify([e.timestamp, e.model, e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.user_id, e.latency_ms])

/** GET /events/:id of every cluster event (on both nodes) has the reference's cost for the same event. */
async function sameEvents(t: Test, when: string): Promise<void> {
  const want = new Map<string, number[]>()
  const r = await ref.app.inject({ url: '/events?limit=1000', headers: adminHeaders })
  for (const e of r.json().events as Array<Record<string, unknown>>) want.set(key(e), [...(want.get(key(e)) ?? []), e.cost as number])
  let checked = 0
  for (const [i, id] of ids.entries()) {
    const node = i % 2 === 0 ? a : b
    const got = (await node.app.inject({ url: `/events/${id}`, headers: adminHeaders })).json() as Record<string, unknown>
    const costs = want.get(key(got))
    if (costs === undefined || !costs.includes(got.cost as number)) {
      t.fail(`${when}: ${id} costs ${String(got.cost)}, the reference ${JSON.stringify(costs)}`)
      return
    }
    checked++
  }
  t.equal(checked, ids.length, `${when}: GET /events/:id of all ${ids.length} events: the reference's cost`)
}

const totalCost = async (x: TestApp) => (await x.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_cost as number

const V1 = { provider: 'openai', model: 'gpt-4o', input: 2, output: 8, effective_from: DAY }
const V2 = { provider: 'openai', model: 'gpt-4o', input: 1, output: 4, cached_input: 0.5, effective_from: DAY }
const MY = { provider: '*', model: 'my-llm', input: 0.3, output: 0.6, effective_from: DAY + 86_400_000 }

let ids: string[] = []
t.test('a version PUT on one node prices events on every node as on one node', async (t) => {
  await a.engine.prices.put('default', V1 as never)
  await ref.engine.prices.put('default', V1 as never)
  await b.engine.prices.put('default', MY as never)
  await ref.engine.prices.put('default', MY as never)
  await waitFor('both nodes hold both versions', () => a.engine.book.versions('default').length === 2 && b.engine.book.versions('default').length === 2)
  t.equal(a.engine.book.rev, b.engine.book.rev, 'one revision on both nodes')
  ids = await ingest([a, b], makeEvents(400, 7))
  await sameAsRef(t, 'after ingest')
  t.not(await totalCost(a), 0)
  await sameEvents(t, 'after ingest')
  const listed = await b.engine.prices.list('default')
  const gpt = listed.prices.find((p) => p.model === 'gpt-4o' && p.source === 'override')
  t.same(gpt?.models, ['gpt-4o', 'gpt-4o-2024-08-06'], 'GET /prices: the entry priced the dated name too (from the cluster\'s analytics)')
  const plain = (x: unknown) => JSON.parse(JSON.stringify(x, (k, v) => (k === 'id' || k === 'created_at' ? undefined : v)))
  t.same(plain(listed), plain(await ref.engine.prices.list('default')), 'GET /prices: the reference\'s answer (ids and creation times aside)')
})

t.test('reprice: dry run and apply answer the reference\'s diff; figures move to the reference\'s', async (t) => {
  await a.engine.prices.put('default', V2 as never)
  await ref.engine.prices.put('default', V2 as never)
  await waitFor('b holds V2', () => b.engine.book.versions('default').length === 3)
  const body = { start_time: DAY, end_time: DAY + 2 * 86_400_000, dry_run: true }
  const before = await totalCost(a)
  const dryWant = await ref.engine.prices.reprice('default', body)
  const dryGot = await b.engine.prices.reprice('default', body)
  t.same(dryGot, dryWant, 'dry run: the reference\'s diff')
  t.ok(dryWant.total.difference < 0, `prices went down (${dryWant.total.difference})`)
  t.equal(await totalCost(a), before, 'a dry run changes nothing')

  // Queries while the apply runs: each total is the old one or the new one, never between.
  const seen = new Set<number>()
  let applying = true
  const poll = (async () => {
    while (applying) {
      const r = await b.app.inject({ url: '/analytics/metrics', headers: adminHeaders })
      if (r.statusCode === 200) seen.add(r.json().total_cost as number)
    }
  })()
  const want = await ref.engine.prices.reprice('default', { ...body, dry_run: false })
  const got = await a.engine.prices.reprice('default', { ...body, dry_run: false })
  applying = false
  await poll
  t.match(got.reprice_id, /^rp_/)
  t.same({ ...got, reprice_id: null }, { ...want, reprice_id: null }, 'applied: the reference\'s diff')
  await sameAsRef(t, 'after the reprice')
  await sameEvents(t, 'after the reprice')
  const after = await totalCost(a)
  t.ok([...seen].every((c) => c === before || c === after), `queries during the apply saw old or new totals only (${[...seen].join(', ')})`)
  // The node that did not coordinate also prices single events the new way.
  const e = (await b.app.inject({ url: `/events/${ids[0]}`, headers: adminHeaders })).json()
  t.equal(e.id, ids[0])
  const again = await a.engine.prices.reprice('default', { ...body, dry_run: false })
  t.equal(again.changed, 0, 'a second apply changes nothing')
  t.equal(again.reprice_id, null, 'and records nothing')
})

t.test('a budget fires once per threshold across the cluster, listed on every node', async (t) => {
  const created = await b.app.inject({ method: 'POST', url: '/budgets', headers: adminHeaders, payload: { name: 'daily', amount: 2, period: 'day', thresholds: [0.5, 1] } })
  t.equal(created.statusCode, 201, created.body)
  const id = created.json().id as string
  // Spend now: three events of a caller-supplied $1 each, one node after the other.
  const now = new Date().toISOString()
  for (const node of [a, b, a]) {
    const r = await node.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [{ timestamp: now, model: 'my-llm', prompt_tokens: 1, completion_tokens: 1, cost: 1 }] })
    t.equal(r.statusCode, 202, r.body)
    t.equal((await ref.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [{ timestamp: now, model: 'my-llm', prompt_tokens: 1, completion_tokens: 1, cost: 1 }] })).statusCode, 202)
  }
  const budgetEvents = async (x: TestApp) => ((await x.app.inject({ url: '/alerts/events', headers: adminHeaders })).json().events as Array<{ type?: string; budget_id?: string; threshold?: number }>).filter((e) => e.type === 'budget' && e.budget_id === id)
  await waitFor('both thresholds recorded', async () => (await budgetEvents(a)).length >= 2 && (await budgetEvents(b)).length >= 2, 30_000)
  const spent = (await a.app.inject({ url: `/budgets/${id}`, headers: adminHeaders })).json().spent
  t.equal(spent, 3, 'spent: the cluster\'s merged figure')
  // Later evaluations (a second budget fires after its creation, so the evaluator ran since): nothing fires again.
  const later = await a.app.inject({ method: 'POST', url: '/budgets', headers: adminHeaders, payload: { name: 'later', amount: 1, period: 'day', thresholds: [1] } })
  t.equal(later.statusCode, 201)
  await waitFor('the later budget fired', async () => ((await b.app.inject({ url: '/alerts/events', headers: adminHeaders })).json().events as Array<{ budget_id?: string }>).some((e) => e.budget_id === later.json().id), 30_000)
  for (const node of [a, b]) t.same((await budgetEvents(node)).map((e) => e.threshold).sort(), [0.5, 1], 'one event per threshold, not one per node')
})

t.test('a grouped rule fires per group, once for the cluster, from the partitions\' merged groups', async (t) => {
  const r = await a.app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: { name: 'spend per user', condition: 'cost_per_hour', threshold: 10, window_seconds: 300, cooldown_seconds: 0, group_by: 'user_id' } })
  t.equal(r.statusCode, 201, r.body)
  const rule = r.json().id as string
  const now = new Date().toISOString()
  // g1: two events ($1 each, on different nodes and models: several partitions) → $24/h; g2: $1.2/h.
  const batches = [[{ timestamp: now, model: 'my-llm', user_id: 'g1', cost: 1 }], [{ timestamp: now, model: 'gpt-4o', user_id: 'g1', cost: 1 }, { timestamp: now, model: 'my-llm', user_id: 'g2', cost: 0.1 }]]
  for (const [i, payload] of batches.entries()) {
    t.equal((await (i === 0 ? a : b).app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload })).statusCode, 202)
    t.equal((await ref.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload })).statusCode, 202)
  }
  const fired = async (x: TestApp) => ((await x.app.inject({ url: `/alerts/events?rule_id=${rule}`, headers: adminHeaders })).json().events as Array<{ group?: string | null; state?: string; value?: number }>)
  await waitFor('g1 fired', async () => (await fired(a)).length > 0 && (await fired(b)).length > 0, 30_000)
  // Later evaluations (a budget created now fires on a later tick): still one firing, of g1 only, at the merged value.
  const later = await b.app.inject({ method: 'POST', url: '/budgets', headers: adminHeaders, payload: { name: 'later2', amount: 1, period: 'day', thresholds: [1] } })
  await waitFor('a later tick', async () => ((await a.app.inject({ url: '/alerts/events', headers: adminHeaders })).json().events as Array<{ budget_id?: string }>).some((e) => e.budget_id === later.json().id), 30_000)
  // The null group: the budget test's three $1 events without a user, in the same 5 minutes.
  for (const node of [a, b]) t.same((await fired(node)).map((e) => [e.group, e.state, e.value]).sort(), [['g1', 'firing', 24], [null, 'firing', 36]].sort(), 'one firing per group for the cluster, at the merged values (g2 below the threshold)')
  t.equal((await a.app.inject({ method: 'DELETE', url: `/alerts/rules/${rule}`, headers: adminHeaders })).statusCode, 204)
})

t.test('a node taking partitions over keeps the new prices', async (t) => {
  await a.close()
  await waitFor('b owns every partition', async () => (await owned(b)).length === 4, 30_000)
  for (const url of URLS) {
    const want = await ref.app.inject({ url, headers: adminHeaders })
    const got = await b.app.inject({ url, headers: adminHeaders })
    t.same(got.json(), want.json(), `after the takeover: ${url}`)
  }
})

t.test('a node configured with other overrides adds them as a layer: new events priced with it everywhere, old ones keep theirs', async (t) => {
  const before = (await b.app.inject({ url: '/analytics/costs', headers: adminHeaders })).json()
  const OVERRIDES = JSON.stringify({ 'claude-3-5-sonnet-20241022': { input_mtok: 100, output_mtok: 200 } })
  const dir = t.testdir()
  const c = await makeApp(t, { env: { ...clusterEnv('c'), LLMSCOPE_PRICE_OVERRIDES: OVERRIDES }, dir })
  await waitFor('b holds the layer', () => b.engine.book.overrideLayer()?.overrides['claude-3-5-sonnet-20241022']?.input_mtok === 100)
  const rev = b.engine.book.rev
  // c joining moves partitions: answers are 503 meanwhile.
  await waitFor('both own partitions', async () => (await owned(b)).length + (await owned(c)).length === 4 && (await owned(c)).length > 0)
  await waitFor('answers again', async () => (await b.app.inject({ url: '/analytics/costs', headers: adminHeaders })).statusCode === 200)
  t.same((await b.app.inject({ url: '/analytics/costs', headers: adminHeaders })).json(), before, 'events accepted before it keep their prices')
  const r = await b.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [{ timestamp: '2026-01-01T12:00:00Z', model: 'claude-3-5-sonnet-20241022', provider: 'anthropic', prompt_tokens: 1000, completion_tokens: 500 }] })
  t.equal(r.statusCode, 202)
  const id = r.json().event_ids[0] as string
  for (const node of [b, c]) {
    const e = (await node.app.inject({ url: `/events/${id}`, headers: adminHeaders })).json()
    t.equal(e.cost, (1000 * 100 + 500 * 200) / 1e6, 'an event accepted after it: the layer\'s price (by hand)')
  }
  // An old claude event read through c (whose own data dir recorded its configured set first): the price it was counted at.
  for (const x of ids) {
    const e = (await b.app.inject({ url: `/events/${x}`, headers: adminHeaders })).json()
    if (e.model !== 'claude-3-5-sonnet-20241022') continue
    t.same((await c.app.inject({ url: `/events/${x}`, headers: adminHeaders })).json(), e, 'an event accepted before the layer: the same on the new node')
    break
  }
  await waitFor('the cluster counts it at that price', async () => {
    const m = (await c.app.inject({ url: '/analytics/costs', headers: adminHeaders })).json() as { total_cost?: number }
    return m.total_cost !== undefined && Math.abs(m.total_cost - (before.total_cost + 0.2)) < 1e-9
  }, 30_000)
  await c.close()
  // The same configuration again: no new layer.
  const c2 = await makeApp(t, { env: { ...clusterEnv('c'), LLMSCOPE_PRICE_OVERRIDES: OVERRIDES }, dir })
  t.equal(c2.engine.book.rev, rev, 'a restart with the same overrides adds nothing')
  await c2.close()
})

let d!: TestApp
t.test('a reprice recorded while no node runs (its coordinator died) is applied by the next owner before it serves', async (t) => {
  const V4 = { provider: 'openai', model: 'gpt-4o', input: 3, output: 12, effective_from: DAY }
  await b.engine.prices.put('default', V4 as never)
  await ref.engine.prices.put('default', V4 as never)
  await b.close()
  // What a coordinator that died right after recording leaves: the record in the price log, applied nowhere.
  const nc = await connect({ servers: nats.urls[0]! })
  t.teardown(() => nc.close())
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new ClusterPriceLog({ log: silentLog })
  const meta = new ClusterMeta({ nc, metaBucket: 'moneytest-meta', alertsBucket: 'moneytest-alerts', log: silentLog })
  await meta.attach({ projects: new ProjectStore(stores.projects, 0), apiKeys: new ApiKeyStore(stores.apiKeys), rules: new RuleStore(stores.rules), alertEvents: new AlertEventStore(stores.alertEvents), more: [{ prefix: PRICE_PREFIX, store: log }] })
  t.teardown(() => meta.stop())
  let rev = 0
  for (const r of log.records()) if (r.op === 'put' && ((r.value as { kind: string }).kind === 'version' || (r.value as { kind: string }).kind === 'layer')) rev = Math.max(rev, (r.value as { rev: number }).rev)
  await log.append((pos) => ({ pos, op: 'put', id: 'rp_deadcoordinator1', value: { v: 1, kind: 'reprice', id: 'rp_deadcoordinator1', project: 'default', start: DAY, end: DAY + 2 * 86_400_000, model: 'gpt-4o', rev, created_at: Date.now() } }))
  // The cluster also holds c's override layer and one event priced by it, which the reference lacks: only gpt-4o figures compare.
  const want = await ref.engine.prices.reprice('default', { start_time: DAY, end_time: DAY + 2 * 86_400_000, model: 'gpt-4o', dry_run: false } as never)
  t.ok(want.changed > 0, 'the reference changed events')
  d = await makeApp(root, { env: clusterEnv('d') })
  await waitFor('d owns every partition', async () => (await owned(d)).length === 4, 30_000)
  for (const url of ['/analytics/metrics?model=gpt-4o,gpt-4o-2024-08-06', '/analytics/breakdown?by=user_id&model=gpt-4o,gpt-4o-2024-08-06', '/analytics/timeseries?interval=1h&start_time=2026-01-01T00:00:00Z&end_time=2026-01-03T00:00:00Z&model=gpt-4o,gpt-4o-2024-08-06']) {
    const w = await ref.app.inject({ url, headers: adminHeaders })
    t.equal(w.statusCode, 200, w.body)
    t.same((await d.app.inject({ url, headers: adminHeaders })).json(), w.json(), `the new owner applied it: ${url}`)
  }
})

t.test('an event accepted at a revision the owner has not received waits for it, then is priced with it', async (t) => {
  const h = await connectCluster(loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), ...clusterEnv('tester') }).cluster!, { log: silentLog, name: 'tester' })
  t.teardown(() => h.close())
  // What a node that already holds the next record publishes: the event's header names the price log's next position.
  const kv = await h.kvm.open(h.names.metaBucket)
  let pos = 0
  for (const k of await liveKeys(kv, 'price.>')) pos = Math.max(pos, Number(k.slice('price.'.length)))
  const next = pos + 1
  const early = new JetStreamLog(h, { priceRev: () => next })
  const ts = DAY + 5 * 86_400_000
  const { events, committed } = early.append([{ ts, recv: ts, model: 'my-llm', provider: 'openai', prompt: 1000, completion: 1000, total: 2000, cached: 0, reasoning: 0, latency: 10, ttft: null, error: false, cost: null, meta: null, project: 'default', user: null, session: null, tags: null }])
  await committed
  const range = `start_time=${new Date(ts).toISOString()}&end_time=${new Date(ts + 1).toISOString()}`
  // Its owner does not hand it on yet: a query waits for it, and answers 503 when it does not come in time.
  const waiting = await d.app.inject({ url: `/analytics/metrics?${range}`, headers: adminHeaders })
  t.equal(waiting.statusCode, 503, 'not counted before its revision arrives')
  // The revision arrives: the version that prices it. (A PUT answers with the models it prices,
  // from analytics: 503 while the event waits; the version is stored before.)
  await d.engine.prices.put('default', { provider: 'openai', model: 'my-llm', input: 5, output: 7, effective_from: DAY } as never).catch((err: { statusCode?: number }) => {
    if (err.statusCode !== 503) throw err
  })
  t.equal(d.engine.book.versions('default').find((v) => v.model === 'my-llm' && v.rates.input === 5)?.rev, next, 'the version took that revision')
  await waitFor('counted', async () => (await d.app.inject({ url: `/analytics/metrics?${range}`, headers: adminHeaders })).statusCode === 200, 30_000)
  const m = (await d.app.inject({ url: `/analytics/metrics?${range}`, headers: adminHeaders })).json()
  t.equal(m.total_requests, 1)
  t.equal(m.total_cost, (1000 * 5 + 1000 * 7) / 1e6, 'priced with the version of its revision (by hand)')
  t.equal((await d.app.inject({ url: `/events/${events[0]!.id}`, headers: adminHeaders })).json().cost, m.total_cost, 'GET /events/:id: the same')
})

/**
 * Money on a cluster, end to end (DESIGN §8, §9): 3 nats-server (R3 stream) and 2 LLMScope
 * nodes, and a single-node server given the same price versions, events and reprices.
 * - a version PUT through one node prices the events both nodes accept: every cost figure,
 *   search by cost and GET /prices equal the single node's;
 * - a reprice dry run through one node answers the single node's diff and changes nothing;
 *   applied through the other it answers the single node's diff, and every figure moves to the
 *   single node's; a query polling during the apply sees the old or the new total, never a mix;
 * - a node killed (kill -9) after the apply and started again answers the new prices;
 * - a budget crossing its thresholds fires once per threshold for the cluster, not once per node.
 */
import t from 'tap'
import { FILE_TIMEOUT_MS, type Server } from '../helpers/server.js'
import { get, post, send as sendAs, startCluster, until, type Cluster, startReference } from '../helpers/cluster.js'

t.setTimeout(FILE_TIMEOUT_MS)

const MODELS = ['gpt-4o', 'gpt-4o-2024-08-06', 'claude-3-5-sonnet-20241022', 'my-llm']
const DAY = Date.parse('2026-11-01T00:00:00Z')
const RANGE = 'start_time=2026-11-01T00:00:00Z&end_time=2026-11-03T00:00:00Z'

function makeEvents(n: number, seed: number): Record<string, unknown>[] {
  let s = seed
  const rnd = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
  return Array.from({ length: n }, () => {
    const e: Record<string, unknown> = {
      timestamp: new Date(DAY + Math.floor(rnd() * 2 * 86_400_000)).toISOString(),
      model: MODELS[Math.floor(rnd() * MODELS.length)],
      prompt_tokens: Math.floor(rnd() * 3000),
      completion_tokens: Math.floor(rnd() * 900),
      latency_ms: Math.floor(rnd() * 3000) + 1,
      user_id: `u${Math.floor(rnd() * 5)}`
    }
    if (rnd() < 0.3) e.cached_tokens = Math.floor((e.prompt_tokens as number) * rnd())
    if (rnd() < 0.2) e.cache_write_tokens = Math.floor(rnd() * 200)
    if (rnd() < 0.05) e.cost = 0.25
    return e
  })
}

const QUERIES = [
  `/analytics/metrics?${RANGE}`,
  `/analytics/costs?${RANGE}`,
  `/analytics/timeseries?interval=1h&${RANGE}`,
  `/analytics/breakdown?by=user_id&${RANGE}`,
  `/analytics/breakdown?by=model&sort=cost&${RANGE}`,
  `/events?${RANGE}&sort=cost&limit=50`
]

/** A write through either side, with the long timeout a re-pricing apply may need. */
const send = (method: 'PUT' | 'POST', url: string, path: string, body: unknown) => sendAs(method, url, path, body, { timeoutMs: 120_000 })

/** An answer without what differs between the cluster and the single node (ids, seqs, receive times, cursors). */
function comparable(body: unknown): unknown {
  return JSON.parse(JSON.stringify(body, (k, v) => (k === 'id' || k === 'seq' || k === 'received_at' || k === 'next_cursor' || k === 'created_at' || k === 'reprice_id' ? undefined : v)))
}

t.test('prices, reprice, restart and budgets on a cluster equal one node', async (t) => {
  const single: Server = await startReference(t)
  const cluster: Cluster = await startCluster({ nats: 3, nodes: 2, env: { LLMSCOPE_SNAPSHOT_INTERVAL_S: '2' } })
  t.teardown(() => cluster.stop())

  const both = async (path: string, body: unknown, k: number, method: 'PUT' | 'POST' = 'POST') => {
    const want = await send(method, single.url, path, body)
    let got = await send(method, cluster.url(k), path, body)
    // A 503 (a partition changing owner just after the start) asks for a retry: every step here is idempotent.
    for (let i = 0; i < 20 && got.status === 503; i++) {
      await until(async () => (await get(cluster.url(k), '/ready')).body?.cluster?.unowned?.length === 0, 'every partition owned', 30_000)
      got = await send(method, cluster.url(k), path, body)
    }
    return { want, got }
  }
  const sameAsSingle = async (when: string) => {
    for (const q of QUERIES) {
      const want = await get(single.url, q)
      t.equal(want.status, 200, `single ${q}`)
      for (let k = 0; k < 2; k++) t.strictSame(comparable((await get(cluster.url(k), q)).body), comparable(want.body), `${when}: node ${k} ${q}`)
    }
  }

  // A version PUT through node 0, events through both.
  const v1 = await both('/prices', { provider: 'openai', model: 'gpt-4o', input: 2, output: 8, effective_from: '2026-11-01T00:00:00Z' }, 0, 'PUT')
  t.equal(v1.got.status, v1.want.status, JSON.stringify(v1.got.body))
  t.strictSame(comparable(v1.got.body), comparable(v1.want.body), 'PUT /prices: the single node\'s entry')
  const v2 = await both('/prices', { provider: '*', model: 'my-llm', input: 0.3, output: 0.6, effective_from: '2026-11-02T00:00:00Z' }, 1, 'PUT')
  t.equal(v2.got.status, v2.want.status)
  const events = makeEvents(600, 3)
  for (let i = 0; i < events.length; i += 50) {
    const batch = events.slice(i, i + 50)
    t.equal((await post(single.url, '/events/batch', batch)).status, 202)
    const r = await post(cluster.url((i / 50) % 2), '/events/batch', batch)
    if (r.status !== 202) t.fail(`POST /events/batch: ${r.status} ${JSON.stringify(r.body)}`)
  }
  await sameAsSingle('after ingest')
  for (let k = 0; k < 2; k++) t.strictSame(comparable((await get(cluster.url(k), '/prices')).body), comparable((await get(single.url, '/prices')).body), `node ${k} GET /prices`)

  // A cheaper version from the same instant, then the reprice.
  const v3 = await both('/prices', { provider: 'openai', model: 'gpt-4o', input: 1, output: 4, cached_input: 0.5, effective_from: '2026-11-01T00:00:00Z' }, 1, 'PUT')
  t.equal(v3.got.status, v3.want.status)
  const body = { start_time: '2026-11-01T00:00:00Z', end_time: '2026-11-03T00:00:00Z' }
  const before = (await get(cluster.url(0), `/analytics/metrics?${RANGE}`)).body.total_cost as number
  const dry = await both('/prices/reprice', { ...body, dry_run: true }, 1)
  t.equal(dry.got.status, 200, JSON.stringify(dry.got.body))
  t.strictSame(comparable(dry.got.body), comparable(dry.want.body), 'dry run: the single node\'s diff')
  t.ok(dry.want.body.total.difference < 0, 'the diff lowers costs')
  t.equal((await get(cluster.url(0), `/analytics/metrics?${RANGE}`)).body.total_cost, before, 'a dry run changes nothing')

  const totals = new Set<number>()
  let polling = true
  const poll = (async () => {
    while (polling) {
      const r = await get(cluster.url(1), `/analytics/metrics?${RANGE}`)
      if (r.status === 200) totals.add(r.body.total_cost as number)
    }
  })()
  const applied = await both('/prices/reprice', { ...body, dry_run: false }, 0)
  polling = false
  await poll
  t.equal(applied.got.status, 200, JSON.stringify(applied.got.body))
  t.match(applied.got.body.reprice_id, /^rp_/)
  t.strictSame(comparable(applied.got.body), comparable(applied.want.body), 'applied: the single node\'s diff')
  const after = (await get(cluster.url(1), `/analytics/metrics?${RANGE}`)).body.total_cost as number
  t.not(after, before)
  t.ok([...totals].every((c) => c === before || c === after), `queries during the apply: old or new total only (${[...totals].join(', ')})`)
  await sameAsSingle('after the reprice')

  // kill -9 node 1 and start it again: its partitions come back with the new prices.
  await cluster.killNode(1)
  await cluster.restartNode(1)
  // Settled: the restarted node took its share back (a rebalance answers 503 while partitions move).
  await until(async () => {
    const owned = await cluster.waitAllOwned()
    return [...owned.values()].every((c) => (Array.isArray(c.owned) ? c.owned.length : c.owned) === cluster.partitions / 2)
  }, 'both nodes own half the partitions')
  await sameAsSingle('after a node restart')

  // A budget: one event per threshold for the cluster.
  const created = await post(cluster.url(0), '/budgets', { name: 'today', amount: 2, period: 'day', thresholds: [0.5, 1] })
  t.equal(created.status, 201, JSON.stringify(created.body))
  const id = created.body.id as string
  const now = new Date().toISOString()
  for (let k = 0; k < 3; k++) t.equal((await post(cluster.url(k % 2), '/events/batch', [{ timestamp: now, model: 'my-llm', prompt_tokens: 1, completion_tokens: 1, cost: 1 }])).status, 202)
  const fired = async (k: number) => ((await get(cluster.url(k), '/alerts/events')).body.events as any[]).filter((e) => e.type === 'budget' && e.budget_id === id)
  await until(async () => (await fired(0)).length >= 2 && (await fired(1)).length >= 2, 'both thresholds recorded', 60_000)
  t.equal((await get(cluster.url(1), `/budgets/${id}`)).body.spent, 3, 'spent: the cluster\'s figure')
  // Later evaluations (a second budget fires after its creation, so the evaluator ran since): nothing fires again.
  const later = await post(cluster.url(1), '/budgets', { name: 'later', amount: 1, period: 'day', thresholds: [1] })
  t.equal(later.status, 201)
  await until(async () => ((await get(cluster.url(0), '/alerts/events')).body.events as any[]).some((e) => e.budget_id === later.body.id), 'the later budget fired', 60_000)
  for (let k = 0; k < 2; k++) t.strictSame((await fired(k)).map((e) => e.threshold).sort(), [0.5, 1], `node ${k}: one event per threshold for the cluster`)
})

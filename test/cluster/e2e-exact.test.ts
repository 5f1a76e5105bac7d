/**
 * Cluster mode answers exactly what one node answers (DESIGN §9, issue 12 Deliver 5): 3
 * nats-server (R3 stream) and 3 LLMScope nodes; a fixed pseudo-random set of events (three
 * projects, several models with one unpriced, users, tags, metadata, errors, cached tokens)
 * is ingested through all three nodes concurrently, as batches of varied sizes and single
 * events; a single-node server (no NATS) gets the same events. Then every analytics route asked
 * of every node answers the same JSON body as the single node, and GET /events/:id of any event
 * answers from every node.
 */
import t from 'tap'
import { FILE_TIMEOUT_MS, type Server } from '../helpers/server.js'
import { get, post, startCluster, until, type Cluster, startReference } from '../helpers/cluster.js'

t.setTimeout(FILE_TIMEOUT_MS)

/** mulberry32: the same events on every run. */
function rng(seed: number): () => number {
  return () => {
    seed |= 0
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const PROJECTS = ['default', 'alpha', 'beta']
const MODELS = ['gpt-4o', 'gpt-4o-mini', 'gpt-4', 'claude-3-5-sonnet-20241022', 'claude-3-5-haiku-20241022', 'llmscope-test-unpriced']
const TAGS = ['prod', 'chat', 'search', 'batch', 'eval']
const FEATURES = ['search', 'chat', 'report', 'summarise']
const START = Date.parse('2026-11-01T00:00:00Z')
const DAYS = 3

interface Sent {
  project: string
  event: Record<string, unknown>
}

function makeEvents(n: number): Sent[] {
  const r = rng(1234)
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!
  const out: Sent[] = []
  for (let i = 0; i < n; i++) {
    const prompt = Math.floor(r() * 4000)
    const e: Record<string, unknown> = {
      timestamp: new Date(START + Math.floor(r() * DAYS * 86_400_000)).toISOString(),
      model: pick(MODELS),
      prompt_tokens: prompt,
      completion_tokens: Math.floor(r() * 800),
      latency_ms: r() < 0.5 ? Math.floor(r() * 5000) : Math.round(r() * 50_000) / 10
    }
    if (r() < 0.8) e.user_id = `u${Math.floor(r() * 12)}`
    if (r() < 0.6) e.session_id = `s${Math.floor(r() * 30)}`
    const tags = TAGS.filter(() => r() < 0.3)
    if (tags.length > 0) e.tags = tags
    if (r() < 0.7) e.metadata = { feature: pick(FEATURES), plan: r() < 0.5 ? 'pro' : 'free', n: Math.floor(r() * 4), flag: r() < 0.5, nested: { a: 1 } }
    if (r() < 0.1) e.status = 'error'
    if (r() < 0.2) e.cached_tokens = Math.floor(prompt * r())
    out.push({ project: r() < 0.5 ? 'default' : r() < 0.5 ? 'alpha' : 'beta', event: e })
  }
  return out
}

/** Splits each project's events into sends: batches of 1..40 events, some single /events/ingest. */
function makeSends(events: Sent[]): { project: string; idx: number[]; single: boolean }[] {
  const r = rng(99)
  const sends: { project: string; idx: number[]; single: boolean }[] = []
  for (const project of PROJECTS) {
    const idx = events.map((s, i) => (s.project === project ? i : -1)).filter((i) => i >= 0)
    for (let k = 0; k < idx.length; ) {
      const single = r() < 0.15
      const n = single ? 1 : 1 + Math.floor(r() * 40)
      sends.push({ project, idx: idx.slice(k, k + n), single })
      k += n
    }
  }
  return sends
}

/** Runs `fns` with at most `limit` at a time. */
async function pool<T>(items: T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) {
        const i = next++
        await fn(items[i]!, i)
      }
    })
  )
}

/** Sends every event to the URL `urlOf(k)` picks for send k; returns the id of every event (by index). */
async function ingestAll(events: Sent[], urlOf: (k: number) => string, concurrency: number): Promise<string[]> {
  const ids: string[] = new Array(events.length)
  await pool(makeSends(events), concurrency, async (s, k) => {
    const url = urlOf(k)
    if (s.single) {
      const r = await post(url, '/events/ingest', events[s.idx[0]!]!.event, s.project)
      if (r.status !== 202) throw new Error(`POST /events/ingest to ${url} (${s.project}): ${r.status} ${JSON.stringify(r.body)}`)
      ids[s.idx[0]!] = r.body.event_id
    } else {
      const r = await post(url, '/events/batch', s.idx.map((i) => events[i]!.event), s.project)
      if (r.status !== 202) throw new Error(`POST /events/batch to ${url} (${s.project}): ${r.status} ${JSON.stringify(r.body)}`)
      s.idx.forEach((i, j) => (ids[i] = r.body.event_ids[j]))
    }
  })
  return ids
}

const RANGE = 'start_time=2026-11-01T00:00:00Z&end_time=2026-11-04T00:00:00Z'
const QUERIES = [
  `/analytics/metrics?${RANGE}`,
  '/analytics/metrics?start_time=2026-11-01T05:17:03.123Z&end_time=2026-11-02T19:43:00Z',
  `/analytics/metrics?${RANGE}&model=gpt-4o,claude-3-5-sonnet-20241022`,
  `/analytics/metrics?${RANGE}&provider=anthropic`,
  `/analytics/metrics?${RANGE}&user_id=u3`,
  `/analytics/metrics?${RANGE}&status=error`,
  `/analytics/costs?${RANGE}`,
  '/analytics/costs?start_time=2026-11-02T10:30:00Z&end_time=2026-11-03T02:00:00Z',
  `/analytics/costs?${RANGE}&metadata.feature=search`,
  `/analytics/timeseries?interval=1h&${RANGE}`,
  '/analytics/timeseries?interval=5m&start_time=2026-11-02T00:00:00Z&end_time=2026-11-02T06:00:00Z',
  '/analytics/timeseries?interval=1m&start_time=2026-11-02T12:00:00Z&end_time=2026-11-02T13:00:00Z&model=gpt-4o-mini',
  `/analytics/timeseries?interval=1h&${RANGE}&tag=prod`,
  `/analytics/breakdown?by=user_id&${RANGE}`,
  `/analytics/breakdown?by=user_id&sort=requests&limit=3&${RANGE}`,
  `/analytics/breakdown?by=session_id&limit=5&${RANGE}`,
  `/analytics/breakdown?by=tag&${RANGE}`,
  `/analytics/breakdown?by=tag&sort=tokens&limit=2&${RANGE}&metadata.plan=pro`,
  `/analytics/breakdown?by=model&${RANGE}`,
  `/analytics/breakdown?by=provider&${RANGE}`,
  `/analytics/breakdown?by=metadata.feature&${RANGE}&user_id=u1`,
  '/analytics/breakdown?by=model&start_time=2026-11-02T07:00:00Z&end_time=2026-11-02T08:30:00Z'
]

/** The stored event without what differs between the two logs (position and arrival). */
function comparable(e: any): any {
  const { id: _id, seq: _seq, received_at: _r, ...rest } = e
  return rest
}

t.test('3 nats + 3 nodes answer exactly what one node answers for the same events', async (t) => {
  const events = makeEvents(1500)
  const single: Server = await startReference(t)
  const cluster: Cluster = await startCluster({ nats: 3, nodes: 3 })
  t.teardown(() => cluster.stop())

  // Projects: made through one node (single: the server itself); every node must see them.
  for (const p of PROJECTS.slice(1)) {
    t.equal((await post(single.url, '/projects', { id: p })).status, 201, `single: POST /projects ${p}`)
    t.equal((await post(cluster.url(1), '/projects', { id: p })).status, 201, `cluster: POST /projects ${p} through node 1`)
  }
  for (let i = 0; i < 3; i++) {
    for (const p of PROJECTS.slice(1)) {
      await until(async () => (await get(cluster.url(i), `/projects/${p}`)).status === 200, `node ${i} to see project ${p}`)
    }
  }
  const dup = await post(cluster.url(2), '/projects', { id: 'alpha' })
  t.equal(dup.status, 409, 'a project made on node 1 exists for node 2 too (409)')

  const singleIds = await ingestAll(events, () => single.url, 4)
  const clusterIds = await ingestAll(events, (k) => cluster.url(k % 3), 6)
  t.equal(new Set(clusterIds).size, events.length, 'every event acknowledged by the cluster, each with its own id')
  t.ok(clusterIds.every((id) => /^evt_[0-9a-z]+_[A-Za-z0-9_-]{12}$/.test(id)), 'cluster ids have the single-node shape')

  for (const project of PROJECTS) {
    for (const q of QUERIES) {
      const want = await get(single.url, q, project)
      t.equal(want.status, 200, `single ${project} ${q}`)
      for (let i = 0; i < 3; i++) {
        const got = await get(cluster.url(i), q, project)
        t.equal(got.status, 200, `node ${i} ${project} ${q}: 200`)
        t.strictSame(got.body, want.body, `node ${i} ${project} ${q}: the single-node answer`)
      }
    }
  }

  // Sanity: the data set is not trivial (several projects, unpriced events, errors, all counted).
  const totals = await Promise.all(PROJECTS.map((p) => get(single.url, `/analytics/metrics?${RANGE}`, p)))
  t.equal(totals.reduce((s, r) => s + r.body.total_requests, 0), events.length, 'the single node counted every event')
  t.ok(totals.every((r) => r.body.total_requests > 100 && r.body.unpriced_requests > 0 && r.body.error_count > 0), 'every project has priced, unpriced and error events')

  // GET /events/:id: any event from any node, the same stored event as the single node's.
  const r = rng(7)
  for (let k = 0; k < 40; k++) {
    const i = Math.floor(r() * events.length)
    const project = events[i]!.project
    const want = await get(single.url, `/events/${singleIds[i]}`, project)
    t.equal(want.status, 200)
    for (let n = 0; n < 3; n++) {
      const got = await get(cluster.url(n), `/events/${clusterIds[i]}`, project)
      t.equal(got.status, 200, `node ${n} GET /events/${clusterIds[i]}`)
      t.equal(got.body.id, clusterIds[i])
      t.strictSame(comparable(got.body), comparable(want.body), `node ${n}: event ${i} as stored by the single node`)
    }
    // Another project's event id answers 404 in cluster mode too.
    const other = PROJECTS.find((p) => p !== project)!
    t.equal((await get(cluster.url(k % 3), `/events/${clusterIds[i]}`, other)).status, 404, 'another project: 404')
  }
})

/**
 * Search and export in cluster mode (DESIGN §7, §9): 3 nats-server (R3 stream) and 2 LLMScope
 * nodes, and a single-node server given the same events in the same order. Pages of
 * `GET /events` — every sort, filters, cursor paging across both nodes — list the same events
 * in the same order as the single node (ties by seq: both logs number the events in the order
 * they were sent, so "newer id first" means the same event on both); paging with events
 * ingested between pages skips and repeats nothing that existed at the first page and still
 * equals the single node; the NDJSON export equals the single node's line for line.
 */
import t from 'tap'
import { FILE_TIMEOUT_MS, type Server } from '../helpers/server.js'
import { get, ownerHeaders, post, startCluster, type Cluster, startReference } from '../helpers/cluster.js'

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

const MODELS = ['gpt-4o', 'gpt-4o-mini', 'gpt-4', 'claude-3-5-sonnet-20241022', 'claude-3-5-haiku-20241022', 'llmscope-test-unpriced']
const FEATURES = ['search', 'chat', 'report']
const START = Date.parse('2026-11-01T00:00:00Z')
const RANGE = 'start_time=2026-11-01T00:00:00Z&end_time=2026-11-04T00:00:00Z'

/**
 * Events over two days on whole seconds out of 3000 (so times tie), integer latencies (ties),
 * few token counts per model (costs tie), several users, errors and metadata.
 */
function makeEvents(n: number, seed: number, startMs = START, spanS = 3000, stepS = 57): Record<string, unknown>[] {
  const r = rng(seed)
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!
  return Array.from({ length: n }, () => {
    const e: Record<string, unknown> = {
      timestamp: new Date(startMs + Math.floor(r() * spanS) * stepS * 1000).toISOString(),
      model: pick(MODELS),
      prompt_tokens: 100 * (1 + Math.floor(r() * 5)),
      completion_tokens: 10 * Math.floor(r() * 4),
      latency_ms: 1 + Math.floor(r() * 400)
    }
    if (r() < 0.85) e.user_id = `u${Math.floor(r() * 8)}`
    if (r() < 0.5) e.session_id = `s${Math.floor(r() * 20)}`
    if (r() < 0.6) e.metadata = { feature: pick(FEATURES), n: Math.floor(r() * 3) }
    if (r() < 0.12) e.status = 'error'
    if (r() < 0.3) e.tags = ['prod']
    return e
  })
}

/** The stored event without what differs between the two logs (position, id and arrival). */
function comparable(e: any): string {
  const { id: _id, seq: _seq, received_at: _r, ...rest } = e
  return JSON.stringify(rest)
}

/** Sends `events` in batches of `size`, one batch at a time (so both logs number them in this order). */
async function ingest(urlOf: (k: number) => string, events: Record<string, unknown>[], size = 40): Promise<string[]> {
  const ids: string[] = []
  for (let k = 0; k * size < events.length; k++) {
    const url = urlOf(k)
    const r = await post(url, '/events/batch', events.slice(k * size, (k + 1) * size))
    if (r.status !== 202) throw new Error(`POST /events/batch to ${url}: ${r.status} ${JSON.stringify(r.body)}`)
    ids.push(...(r.body.event_ids as string[]))
  }
  return ids
}

interface Paged {
  events: any[]
  pages: number
}

/** Every page of `query` from the URLs `urlOf(page)` picks, following next_cursor to the end. */
async function pageAll(urlOf: (page: number) => string, query: string, limit: number, between?: (page: number) => Promise<void>): Promise<Paged> {
  const events: any[] = []
  let cursor: string | null = null
  for (let page = 0; ; page++) {
    const url = urlOf(page)
    const path = `/events?${query}&limit=${limit}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`
    const r = await get(url, path)
    if (r.status !== 200) throw new Error(`GET ${path} from ${url}: ${r.status} ${JSON.stringify(r.body)}`)
    events.push(...r.body.events)
    cursor = r.body.next_cursor
    if (cursor === null) return { events, pages: page + 1 }
    if (page > 10_000) throw new Error('too many pages')
    await between?.(page)
  }
}

async function exportNdjson(url: string, query: string): Promise<string[]> {
  const r = await fetch(`${url}/events?${query}&format=ndjson`, { headers: ownerHeaders(), signal: AbortSignal.timeout(60_000) })
  const text = await r.text()
  if (r.status !== 200) throw new Error(`export ${query} from ${url}: ${r.status} ${text.slice(0, 300)}`)
  if (!/attachment; filename="llmscope-events-default-\d{8}T\d{6}\.ndjson"/.test(r.headers.get('content-disposition') ?? '')) throw new Error(`export ${query}: content-disposition ${r.headers.get('content-disposition')}`)
  return text.split('\n').filter((l) => l !== '')
}

t.test('search pages and exports from every node equal the single node for the same events', async (t) => {
  const single: Server = await startReference(t)
  const t0 = Date.now()
  const cluster: Cluster = await startCluster({ nats: 3, nodes: 2 })
  t.teardown(() => cluster.stop())
  t.comment(`cluster up in ${Date.now() - t0} ms`)
  const node = (k: number) => cluster.url(k % 2)

  const events = makeEvents(700, 42)
  await ingest(() => single.url, events)
  const clusterIds = new Set(await ingest(node, events))
  t.equal(clusterIds.size, events.length, 'the cluster acknowledged every event')

  const QUERIES = [
    RANGE,
    `${RANGE}&sort=latency`,
    `${RANGE}&sort=cost`,
    `${RANGE}&user_id=u3`,
    `${RANGE}&sort=latency&status=error&model=gpt-4o,claude-3-5-sonnet-20241022`,
    `${RANGE}&sort=cost&metadata.feature=search`,
    'start_time=2026-11-01T10:00:00Z&end_time=2026-11-02T03:30:00Z&sort=time&tag=prod',
    `${RANGE}&session_id=s7&sort=latency`
  ]
  const t1 = Date.now()
  for (const q of QUERIES) {
    const want = await pageAll(() => single.url, q, 37)
    const got = await pageAll(node, q, 37)
    t.ok(want.events.length > 0, `${q}: the single node finds events (${want.events.length})`)
    t.equal(got.events.length, want.events.length, `${q}: as many events from the cluster`)
    t.equal(got.pages, want.pages, `${q}: as many pages`)
    t.strictSame(got.events.map(comparable), want.events.map(comparable), `${q}: the same events in the same order, pages alternating between nodes`)
    t.ok(got.events.every((e) => clusterIds.has(e.id)), `${q}: every event found is one the cluster acknowledged, by its cluster id`)
    t.equal(new Set(got.events.map((e) => e.id)).size, got.events.length, `${q}: no event twice`)
  }
  // The last page's event by id from either node: the same event.
  const one = (await get(node(1), `/events?${RANGE}&limit=1&sort=cost`)).body.events[0]
  for (let k = 0; k < 2; k++) t.strictSame((await get(node(k), `/events/${one.id}`)).body, one, `node ${k}: GET /events/:id of a search hit is the hit`)
  t.comment(`${QUERIES.length} queries paged on both in ${Date.now() - t1} ms`)

  // Cursor paging with events ingested between pages: newer ones and ones older than the cursor.
  for (const sort of ['time', 'latency'] as const) {
    const q = `${RANGE}&sort=${sort}`
    const existed = [await pageAll(() => single.url, q, 1000), await pageAll(node, q, 1000)]
    const extra = [makeEvents(30, 7 + sort.length, START + 2 * 86_400_000, 600, 60), makeEvents(30, 9 + sort.length, START, 3000, 57)]
    let round = 0
    const between = (target: 'single' | 'cluster') => async (page: number) => {
      if (page !== 1 && page !== 3) return
      const batch = extra[page === 1 ? 0 : 1]!
      if (target === 'single') await ingest(() => single.url, batch)
      else await ingest(node, batch)
      round++
    }
    const want = await pageAll(() => single.url, q, 50, between('single'))
    const got = await pageAll(node, q, 50, between('cluster'))
    t.equal(round, 4, `sort=${sort}: events were ingested between pages on both`)
    t.strictSame(got.events.map(comparable), want.events.map(comparable), `sort=${sort}: pages with ingestion in between equal the single node's`)
    for (const [k, paged] of [want, got].entries()) {
      const ids = paged.events.map((e) => e.id)
      const found = new Set(ids)
      t.equal(found.size, ids.length, `sort=${sort} ${k === 0 ? 'single' : 'cluster'}: no event repeated across pages`)
      t.ok(existed[k]!.events.every((e) => found.has(e.id)), `sort=${sort} ${k === 0 ? 'single' : 'cluster'}: no event that existed at the first page skipped`)
    }
  }

  // Export: every match, line for line the single node's (and the same from both nodes).
  for (const q of [RANGE, `${RANGE}&sort=latency&user_id=u1`, `${RANGE}&sort=cost&status=error`]) {
    const t2 = Date.now()
    const want = await exportNdjson(single.url, q)
    const ms = Date.now() - t2
    for (let k = 0; k < 2; k++) {
      const t3 = Date.now()
      const got = await exportNdjson(node(k), q)
      t.comment(`export ${q}: ${want.length} events, single ${ms} ms, node ${k} ${Date.now() - t3} ms`)
      t.equal(got.length, want.length, `node ${k} export ${q}: as many lines`)
      t.strictSame(got.map((l) => comparable(JSON.parse(l))), want.map((l) => comparable(JSON.parse(l))), `node ${k} export ${q}: the single node's events in its order`)
    }
  }
})

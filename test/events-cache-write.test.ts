/**
 * `cache_write_tokens` end to end (issue 14, "what a new user found wrong": Anthropic cache
 * writes had no field and were priced as input): validated like the other token counts, stored
 * in the log (rows and columns), shown by GET /events/:id, search and export (NDJSON and CSV),
 * taken back by import, kept across a restart and in since_seq replays, and priced at the
 * cache-write rate.
 */
import t, { type Test } from 'tap'
import type { AddressInfo } from 'node:net'
import { WebSocket } from 'ws'
import { makeApp, adminHeaders, readHeaders, ingestHeaders, event, type TestApp } from './helpers/app.js'
import { COLUMNS_FROM, EventLog } from '../src/store/event-log.js'
import { openStores } from '../src/store/db.js'

const CLAUDE = 'claude-3-5-sonnet-20241022'
/** An Anthropic-shaped call: 12 uncached input tokens, 2,000 read from the cache, `cw` written to it. */
const claude = (cw: number | undefined, over: Record<string, unknown> = {}) =>
  event({ model: CLAUDE, provider: 'anthropic', prompt_tokens: 12, cached_tokens: 2000, completion_tokens: 300, ...(cw === undefined ? {} : { cache_write_tokens: cw }), ...over })

async function post(app: TestApp, url: string, payload: unknown, headers: Record<string, string> = ingestHeaders) {
  return app.app.inject({ method: 'POST', url, headers, payload: payload as Record<string, unknown> })
}

async function getEvent(app: TestApp, id: string) {
  const r = await app.app.inject({ url: `/events/${id}`, headers: readHeaders })
  if (r.statusCode !== 200) throw new Error(`GET /events/${id}: ${r.statusCode} ${r.body}`)
  return r.json() as Record<string, unknown>
}

/** Ingests: one event with cache writes (a row record), one without, and a batch written as columns. */
async function ingestMix(t: Test, app: TestApp): Promise<{ ids: string[]; want: number[] }> {
  const ids: string[] = []
  const want: number[] = []
  const one = await post(app, '/events/ingest', claude(500))
  t.equal(one.statusCode, 202, 'one event with cache writes')
  ids.push(one.json().event_id)
  want.push(500)
  const none = await post(app, '/events/ingest', claude(undefined))
  ids.push(none.json().event_id)
  want.push(0)
  const batch = Array.from({ length: COLUMNS_FROM + 6 }, (_, i) => claude(i % 3 === 0 ? 0 : 1000 + i, { timestamp: new Date(Date.parse('2026-01-01T00:00:00Z') + i * 1000).toISOString() }))
  const b = await post(app, '/events/batch', batch)
  t.equal(b.statusCode, 202, 'a batch stored as columns')
  ids.push(...(b.json().event_ids as string[]))
  want.push(...batch.map((e) => (e.cache_write_tokens as number)))
  return { ids, want }
}

t.test('a bad cache_write_tokens is a 400 naming the field; a batch names the index and stores nothing', async (t) => {
  const app = await makeApp(t)
  for (const bad of [-1, 1.5, '12', null, 1e13, true]) {
    const r = await post(app, '/events/ingest', claude(undefined, { cache_write_tokens: bad }))
    t.equal(r.statusCode, 400, `${JSON.stringify(bad)}: 400`)
    t.equal(r.json().code, 'LLMS_ERR_VALIDATION')
    t.match(r.json().details, [{ path: 'cache_write_tokens' }], `${JSON.stringify(bad)}: names the field`)
  }
  const r = await post(app, '/events/batch', [claude(1), claude(2), claude(-5)])
  t.equal(r.statusCode, 400)
  t.match(r.json().details, [{ path: '[2].cache_write_tokens' }])
  t.equal(app.engine.log.nextSeq, 0, 'nothing was ingested')
  // 0 and the largest count are fine.
  t.equal((await post(app, '/events/ingest', claude(0))).statusCode, 202)
  t.equal((await post(app, '/events/ingest', claude(1e12))).statusCode, 202)
})

t.test('GET /events/:id, search and export show it; a restart keeps it and its cost', async (t) => {
  const dir = t.testdir()
  let app = await makeApp(t, { dir })
  const { ids, want } = await ingestMix(t, app)
  const before: Array<Record<string, unknown>> = []
  for (const [i, id] of ids.entries()) {
    const e = await getEvent(app, id)
    t.equal(e.cache_write_tokens, want[i], `event ${i}`)
    before.push(e)
  }
  // Search: the page objects are the same EVENTs.
  const page = (await app.app.inject({ url: `/events?limit=1000&model=${CLAUDE}`, headers: readHeaders })).json()
  t.equal(page.events.length, ids.length)
  const byId = new Map(page.events.map((e: Record<string, unknown>) => [e.id, e]))
  for (const [i, id] of ids.entries()) t.equal((byId.get(id) as Record<string, unknown>).cache_write_tokens, want[i])
  // NDJSON export: each line is the EVENT.
  const nd = (await app.app.inject({ url: '/events?format=ndjson', headers: readHeaders })).body
  const lines = nd.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l))
  t.equal(lines.length, ids.length)
  for (const l of lines) t.equal(l.cache_write_tokens, want[ids.indexOf(l.id)])
  // CSV export: a cache_write_tokens column right after cached_tokens.
  const csv = (await app.app.inject({ url: '/events?format=csv', headers: readHeaders })).body.split('\r\n').filter((l) => l !== '')
  const header = csv[0].split(',')
  const col = header.indexOf('cache_write_tokens')
  t.equal(col, header.indexOf('cached_tokens') + 1, 'the column follows cached_tokens')
  const idCol = header.indexOf('id')
  for (const row of csv.slice(1)) {
    // These events carry no metadata or tags: no quoted fields, a plain split is exact.
    const cells = row.split(',')
    t.equal(Number(cells[col]), want[ids.indexOf(cells[idCol])])
  }
  // Restart: the log gives back the counts (rows and columns) and the same costs.
  await app.close()
  app = await makeApp(t, { dir })
  for (const [i, id] of ids.entries()) {
    const e = await getEvent(app, id)
    t.equal(e.cache_write_tokens, want[i], `after the restart, event ${i}`)
    t.equal(e.cost, before[i].cost, `after the restart, event ${i} costs the same`)
  }
})

t.test('cache writes are priced at the cache-write rate, not as input', async (t) => {
  const app = await makeApp(t, { inlinePricing: true })
  const a = await getEvent(app, (await post(app, '/events/ingest', claude(500))).json().event_id)
  const b = await getEvent(app, (await post(app, '/events/ingest', claude(undefined))).json().event_id)
  t.equal(a.unpriced, false)
  // genai-prices' Claude 3.5 Sonnet: input $3, cache write $3.75 per million tokens. The
  // Anthropic shape keeps writes out of prompt_tokens, so they add 500 × $3.75 / 1M.
  t.equal(Math.round(((a.cost as number) - (b.cost as number)) * 1e9), 1_875_000, 'the 500 writes cost $0.001875 (1.25 × input)')
  // A caller-supplied cost stays the caller's, cache writes or not.
  const c = await getEvent(app, (await post(app, '/events/ingest', claude(500, { cost: 0.25 }))).json().event_id)
  t.same([c.cost, c.cost_source, c.cache_write_tokens], [0.25, 'caller', 500])
})

t.test('import: an export posted to another server keeps cache_write_tokens and the cost', async (t) => {
  const a = await makeApp(t)
  const b = await makeApp(t)
  const { ids, want } = await ingestMix(t, a)
  const nd = (await a.app.inject({ url: '/events?format=ndjson', headers: readHeaders })).body
  const r = await b.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/x-ndjson' }, payload: nd })
  t.equal(r.statusCode, 202, r.body)
  const page = (await b.app.inject({ url: '/events?limit=1000', headers: readHeaders })).json()
  t.equal(page.events.length, ids.length)
  for (const e of page.events as Array<Record<string, unknown>>) {
    const i = ids.indexOf(e.client_id as string)
    t.ok(i >= 0, 'keyed by the exported id')
    t.equal(e.cache_write_tokens, want[i])
    t.equal(e.cost, (await getEvent(a, ids[i])).cost, 'the cost it had')
  }
})

t.test('since_seq replay prices events with cache writes as the live stream and GET /events/:id do', async (t) => {
  const dir = t.testdir()
  let app = await makeApp(t, { dir })
  const { ids } = await ingestMix(t, app)
  const costs = new Map<string, unknown>()
  for (const id of ids) costs.set(id, (await getEvent(app, id)).cost)
  await app.close()
  app = await makeApp(t, { dir })
  await app.app.listen({ port: 0, host: '127.0.0.1' })
  const url = `ws://127.0.0.1:${(app.app.server.address() as AddressInfo).port}/ws?since_seq=-1`
  const ws = new WebSocket(url, { headers: adminHeaders })
  t.teardown(() => ws.terminate())
  const frames: Array<Record<string, unknown>> = []
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString())
    if (m.type === 'event') frames.push(m)
  })
  const end = Date.now() + 60_000
  while (frames.length < ids.length) {
    if (Date.now() > end) throw new Error(`timed out: ${frames.length} of ${ids.length} replayed`)
    await new Promise((r) => setTimeout(r, 10))
  }
  t.equal(frames.length, ids.length)
  for (const f of frames) t.equal(f.cost, costs.get(f.id as string), `${f.id as string}: the replayed cost`)
})

t.test('the OpenAPI document shows the field on the ingested event and on the stored EVENT', async (t) => {
  const app = await makeApp(t)
  const paths = (await app.app.inject({ url: '/docs/json' })).json().paths as Record<string, Record<string, unknown>>
  const text = (p: string, m: string) => JSON.stringify(paths[p]?.[m] ?? null)
  t.match(text('/events/ingest', 'post'), /cache_write_tokens/, 'POST /events/ingest body')
  t.match(text('/events/{id}', 'get'), /cache_write_tokens/, 'GET /events/:id answer')
})

t.test('the log: `cw` only in appends with a cache write; holes keep the others\' counts; records without it read as 0', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  const p = (i: number, cw?: number) => ({ ts: 1000 + i, recv: 1, model: 'm', provider: 'anthropic', prompt: 1, completion: 1, total: 2, cached: 0, reasoning: 0, latency: 1, ttft: null, error: false, cost: null, meta: null, project: 'default', user: null, session: null, tags: null, ...(cw === undefined ? {} : { cacheWrite: cw }) })
  const plain = log.append([p(0), p(1)])
  const rows = log.append([p(2, 7), p(3), p(4, 9)])
  const cols = log.append(Array.from({ length: COLUMNS_FROM }, (_, i) => p(5 + i, i % 2 === 0 ? i + 1 : undefined)))
  await Promise.all([plain.committed, rows.committed, cols.committed])
  const rec = (seq: number) => stores.events.get(seq) as unknown as { v: number; cw?: number[] }
  t.equal(rec(0).v, 1, 'no cache write: the old format, no `cw`')
  t.same([rec(2).v, rec(2).cw], [5, [7, 0, 9]], 'rows: format 5 with `cw`')
  t.equal(rec(5).v, 7, 'columns: format 7')
  t.equal(log.get(0)!.cacheWrite, undefined, 'absent reads as absent (0)')
  t.same([log.get(2)!.cacheWrite, log.get(3)!.cacheWrite, log.get(4)!.cacheWrite], [7, undefined, 9])
  t.equal(log.get(5)!.cacheWrite, 1)
  t.equal(log.get(6)!.cacheWrite, undefined)
  t.equal(await log.purge((e) => e.seq === 2), 1)
  t.same(rec(2).cw, [0, 0, 9], 'a purge rewrites the record with a hole; the others keep theirs')
  t.equal(log.get(4)!.cacheWrite, 9)
})

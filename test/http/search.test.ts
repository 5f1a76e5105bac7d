/**
 * GET /events (DESIGN §7): every §6 filter, the range, each sort with its ties, limit bounds,
 * the cursor (paging, and every way a cursor is refused), and project isolation — each answer
 * checked against a reference computed from the events as sent.
 */
import t from 'tap'
import { makeApp, adminHeaders, readHeaders, ingestHeaders, ADMIN_KEY, type TestApp } from '../helpers/app.js'
import { seqOfEventId } from '../../src/events.js'

const BASE = Date.parse('2026-03-01T00:00:00.000Z')
const HOUR = 3_600_000

/** What a sent event is, as the reference needs it. */
interface Sent {
  id: string
  seq: number
  ts: number
  model: string
  provider: string
  status: 'success' | 'error'
  user: string | null
  session: string | null
  tags: string[] | null
  meta: Record<string, unknown> | null
  latencyUs: number
  costNanos: number
}

/** The fixture: 120 events over four days with repeated times, latencies and costs (ties). */
function fixture(): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = []
  for (let i = 0; i < 120; i++) {
    // Every third event shares its timestamp with the previous one.
    const ts = BASE + Math.floor(i / 3) * 37 * 60_000 + (i % 3 === 2 ? 0 : (i % 3) * 1000)
    const e: Record<string, unknown> = {
      timestamp: new Date(ts).toISOString(),
      model: ['gpt-4o', 'claude-3-5-sonnet', 'gpt-4o-mini'][i % 3],
      provider: ['openai', 'anthropic', 'openai'][i % 3],
      prompt_tokens: 100 + i,
      completion_tokens: 10,
      latency_ms: [120, 250.5, 120, 900][i % 4],
      cost: [0.001, 0.002, 0.001, 0.0035, 0.002][i % 5]
    }
    if (i % 7 === 0) e.status = 'error'
    if (i % 2 === 0) e.user_id = `u${i % 5}`
    if (i % 4 === 1) e.session_id = `s${i % 3}`
    if (i % 3 !== 1) e.tags = i % 2 === 0 ? ['alpha', 'beta'] : ['beta']
    if (i % 5 !== 4) e.metadata = { feature: ['search', 'chat'][i % 2], n: i % 3, flag: i % 4 === 0, nested: { x: 1 } }
    out.push(e)
  }
  return out
}

async function ingest(app: TestApp, events: Array<Record<string, unknown>>, headers: Record<string, string> = ingestHeaders): Promise<Sent[]> {
  const res = await app.app.inject({ method: 'POST', url: '/events/batch', headers, payload: events })
  if (res.statusCode !== 202) throw new Error(`batch: ${res.statusCode} ${res.body}`)
  const ids = res.json().event_ids as string[]
  return events.map((e, i) => ({
    id: ids[i],
    seq: seqOfEventId(ids[i]) as number,
    ts: Date.parse(e.timestamp as string),
    model: e.model as string,
    provider: e.provider as string,
    status: (e.status as 'error' | undefined) ?? 'success',
    user: (e.user_id as string | undefined) ?? null,
    session: (e.session_id as string | undefined) ?? null,
    tags: (e.tags as string[] | undefined) ?? null,
    meta: (e.metadata as Record<string, unknown> | undefined) ?? null,
    latencyUs: Math.round((e.latency_ms as number) * 1000),
    costNanos: Math.round((e.cost as number) * 1e9)
  }))
}

type Params = Record<string, string>

/** The reference: the sent events the query selects, in its order. */
function expected(sent: Sent[], p: Params): string[] {
  const start = p.start_time === undefined ? -Infinity : Date.parse(p.start_time)
  const end = p.end_time === undefined ? Infinity : Date.parse(p.end_time)
  const sort = p.sort ?? 'time'
  const key = (e: Sent) => (sort === 'time' ? e.ts : sort === 'latency' ? e.latencyUs : e.costNanos)
  return sent
    .filter((e) => {
      if (e.ts < start || e.ts >= end) return false
      if (p.model !== undefined && !p.model.split(',').includes(e.model)) return false
      if (p.provider !== undefined && !p.provider.split(',').includes(e.provider)) return false
      if (p.status !== undefined && e.status !== p.status) return false
      if (p.user_id !== undefined && e.user !== p.user_id) return false
      if (p.session_id !== undefined && e.session !== p.session_id) return false
      if (p.tag !== undefined && !(e.tags ?? []).includes(p.tag)) return false
      for (const [k, v] of Object.entries(p)) {
        if (!k.startsWith('metadata.')) continue
        const m = e.meta?.[k.slice(9)]
        if (m === undefined || m === null || typeof m === 'object' || String(m) !== v) return false
      }
      return true
    })
    .sort((a, b) => key(b) - key(a) || b.seq - a.seq)
    .map((e) => e.id)
}

const qs = (p: Params) => new URLSearchParams(p).toString()

async function page(app: TestApp, p: Params, headers: Record<string, string> = readHeaders) {
  const res = await app.app.inject({ url: `/events?${qs(p)}`, headers })
  return res
}

/** Every page of the query, following next_cursor; the ids in order. */
async function all(app: TestApp, p: Params, headers: Record<string, string> = readHeaders): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = []
  let cursor: string | null = null
  let pages = 0
  do {
    const res = await page(app, cursor === null ? p : { ...p, cursor }, headers)
    if (res.statusCode !== 200) throw new Error(`GET /events: ${res.statusCode} ${res.body}`)
    const body = res.json() as { events: Array<{ id: string }>; next_cursor: string | null }
    ids.push(...body.events.map((e) => e.id))
    cursor = body.next_cursor
    if (++pages > 500) throw new Error('no end of pages')
  } while (cursor !== null)
  return { ids, pages }
}

t.test('GET /events: each filter, the range and each sort against the reference, one page and paged', async (t) => {
  const app = await makeApp(t)
  const sent = await ingest(app, fixture())
  const end = new Date(BASE + 2 * 24 * HOUR).toISOString()
  const cases: Params[] = [
    {},
    { model: 'gpt-4o' },
    { model: 'gpt-4o,gpt-4o-mini' },
    { provider: 'anthropic' },
    { status: 'error' },
    { status: 'success' },
    { user_id: 'u2' },
    { session_id: 's1' },
    { tag: 'alpha' },
    { 'metadata.feature': 'search' },
    { 'metadata.n': '2' },
    { 'metadata.flag': 'true' },
    { 'metadata.feature': 'chat', tag: 'beta', status: 'success' },
    { user_id: 'u4', 'metadata.feature': 'search' },
    { user_id: 'nobody' },
    { 'metadata.nested': '{"x":1}' },
    { start_time: new Date(BASE + 5 * HOUR).toISOString(), end_time: new Date(BASE + 20 * HOUR + 1000).toISOString() },
    { start_time: new Date(BASE + 30 * HOUR).toISOString(), model: 'claude-3-5-sonnet' },
    { end_time: end, tag: 'beta' }
  ]
  for (const c of cases) {
    for (const sort of ['time', 'latency', 'cost']) {
      const p = { ...c, sort }
      const want = expected(sent, p)
      const one = await page(app, { ...p, limit: '1000' })
      t.equal(one.statusCode, 200, `${qs(p)}: 200`)
      t.same(one.json().events.map((e: { id: string }) => e.id), want, `${qs(p)}: one page equals the reference`)
      t.equal(one.json().next_cursor, null, `${qs(p)}: one page holds all`)
      const paged = await all(app, { ...p, limit: '7' })
      t.same(paged.ids, want, `${qs(p)}: pages of 7 equal the reference`)
      t.equal(paged.pages, Math.max(1, Math.ceil(want.length / 7)), `${qs(p)}: no empty last page`)
    }
  }
})

t.test('GET /events: EVENT is exactly GET /events/:id; default limit 50, newest first; ties by newer id', async (t) => {
  const app = await makeApp(t)
  const sent = await ingest(app, fixture())
  const res = await page(app, {})
  t.equal(res.statusCode, 200)
  const body = res.json() as { events: Array<Record<string, unknown>>; next_cursor: string }
  t.equal(body.events.length, 50, 'default limit 50')
  t.type(body.next_cursor, 'string')
  t.same(body.events.map((e) => e.id), expected(sent, {}).slice(0, 50))
  for (const e of body.events.slice(0, 5)) {
    const one = await app.app.inject({ url: `/events/${e.id as string}`, headers: readHeaders })
    t.same(e, one.json(), `${e.id as string} as GET /events/:id answers it`)
    t.same(Object.keys(e), Object.keys(one.json()), 'same fields in the same order')
  }
  // Ties: events 2 and 1 of the fixture share a timestamp... the later-sent (larger seq) comes first.
  const tied = sent.filter((e) => e.ts === sent[2].ts).sort((a, b) => b.seq - a.seq)
  t.ok(tied.length >= 2, 'the fixture has equal timestamps')
  const ids = (await all(app, { limit: '1000' })).ids
  t.ok(ids.indexOf(tied[0].id) < ids.indexOf(tied[1].id), 'equal times: larger seq first')
  const slow = (await page(app, { sort: 'latency', limit: '3' })).json().events as Array<{ latency_ms: number; seq: number }>
  t.same(slow.map((e) => e.latency_ms), [900, 900, 900], 'slowest first')
  t.ok(slow[0].seq > slow[1].seq && slow[1].seq > slow[2].seq, 'equal latencies: larger seq first')
  const dear = (await page(app, { sort: 'cost', limit: '2' })).json().events as Array<{ cost: number; seq: number }>
  t.same(dear.map((e) => e.cost), [0.0035, 0.0035], 'costliest first')
  t.ok(dear[0].seq > dear[1].seq)
})

t.test('GET /events: limit, sort, format, time and filter parameters are checked, each 400 naming its parameter', async (t) => {
  const app = await makeApp(t)
  await ingest(app, fixture().slice(0, 3))
  const cases: Array<[string, string]> = [
    ['limit=0', '(query) limit'],
    ['limit=1001', '(query) limit'],
    ['limit=abc', '(query) limit'],
    ['limit=1.5', '(query) limit'],
    ['sort=tokens', '(query) sort'],
    ['format=xml', '(query) format'],
    ['start_time=yesterday', '(query) start_time'],
    ['end_time=2026-01-01', '(query) end_time'],
    ['start_time=2026-03-02T00:00:00Z&end_time=2026-03-01T00:00:00Z', '(query) end_time'],
    ['status=maybe', '(query) status'],
    ['colour=red', '(query) colour'],
    ['cursor=', '(query) cursor']
  ]
  for (const [query, path] of cases) {
    const res = await app.app.inject({ url: `/events?${query}`, headers: readHeaders })
    t.equal(res.statusCode, 400, `${query}: 400`)
    t.equal(res.json().code, 'LLMS_ERR_BAD_QUERY', `${query}: code`)
    t.ok((res.json().details as Array<{ path: string }>).some((d) => d.path === path), `${query}: details name ${path} (${res.body})`)
  }
  t.equal((await page(app, { limit: '1' })).json().events.length, 1, 'limit 1')
  t.equal((await page(app, { limit: '1000' })).json().events.length, 3, 'limit 1000')
  t.equal((await app.app.inject({ url: '/events', headers: ingestHeaders })).statusCode, 403, 'an ingest key may not search')
  t.equal((await app.app.inject({ url: '/events' })).statusCode, 401, 'no key')
  const empty = await page(app, { start_time: '2020-01-01T00:00:00Z', end_time: '2020-01-02T00:00:00Z' })
  t.same(empty.json(), { events: [], next_cursor: null }, 'no match: an empty page, no cursor')
})

t.test('GET /events: a cursor continues only its own query', async (t) => {
  const app = await makeApp(t)
  await ingest(app, fixture())
  const first = (await page(app, { tag: 'beta', limit: '5', sort: 'latency' })).json()
  const cursor = first.next_cursor as string
  t.type(cursor, 'string')
  t.match(cursor, /^[A-Za-z0-9_-]+$/, 'base64url')
  t.equal((await page(app, { tag: 'beta', limit: '5', sort: 'latency', cursor })).statusCode, 200, 'same query: accepted')
  t.equal((await page(app, { tag: 'beta', limit: '9', sort: 'latency', cursor })).statusCode, 200, 'another limit is the same query')
  const refused: Array<[string, Params]> = [
    ['another filter', { tag: 'alpha', sort: 'latency', cursor }],
    ['a filter more', { tag: 'beta', model: 'gpt-4o', sort: 'latency', cursor }],
    ['another sort', { tag: 'beta', sort: 'cost', cursor }],
    ['the default sort', { tag: 'beta', cursor }],
    ['another range', { tag: 'beta', sort: 'latency', start_time: '2026-01-01T00:00:00Z', cursor }],
    ['malformed', { tag: 'beta', sort: 'latency', cursor: 'not-a-cursor' }],
    ['bad characters', { tag: 'beta', sort: 'latency', cursor: 'ab$cd' }],
    ['JSON of another shape', { tag: 'beta', sort: 'latency', cursor: Buffer.from('{"v":2}').toString('base64url') }],
    ['too long', { tag: 'beta', sort: 'latency', cursor: 'a'.repeat(600) }],
    ['a forged seq', { tag: 'beta', sort: 'latency', cursor: Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(cursor, 'base64url').toString()), seq: -1 })).toString('base64url') }]
  ]
  for (const [what, p] of refused) {
    const res = await page(app, p)
    t.equal(res.statusCode, 400, `${what}: 400`)
    t.same(res.json().details.map((d: { path: string }) => d.path), ['(query) cursor'], `${what}: names cursor`)
  }
  // Another project's cursor: its hash holds the project.
  await app.app.inject({ method: 'POST', url: '/projects', headers: adminHeaders, payload: { id: 'other' } })
  const res = await page(app, { tag: 'beta', sort: 'latency', cursor }, { 'x-api-key': ADMIN_KEY, 'x-llmscope-project': 'other' })
  t.equal(res.statusCode, 400, 'a cursor from another project: 400')
  t.notMatch(res.body, /beta|latency=/, 'the error shows nothing of the other query')
})

t.test('GET /events: project isolation, both ways', async (t) => {
  const app = await makeApp(t)
  const owner = (project: string) => ({ 'x-api-key': ADMIN_KEY, 'x-llmscope-project': project })
  t.equal((await app.app.inject({ method: 'POST', url: '/projects', headers: adminHeaders, payload: { id: 'team-b' } })).statusCode, 201)
  const keyRes = await app.app.inject({ method: 'POST', url: '/keys', headers: adminHeaders, payload: { scope: 'read', project: 'team-b' } })
  const bKey = { 'x-api-key': keyRes.json().key as string }
  const mine = await ingest(app, fixture().slice(0, 40))
  const theirs = await ingest(app, fixture().slice(40, 80).map((e) => ({ ...e, user_id: 'u1' })), owner('team-b'))
  for (const sort of ['time', 'latency', 'cost']) {
    const a = await all(app, { sort, limit: '13' })
    t.same(a.ids, expected(mine, { sort }), `default sees its own events only (${sort})`)
    const b = await all(app, { sort, limit: '13' }, bKey)
    t.same(b.ids, expected(theirs, { sort }), `team-b sees its own events only (${sort})`)
    const bUser = await all(app, { sort, user_id: 'u1' }, bKey)
    t.same(bUser.ids, expected(theirs, { sort, user_id: 'u1' }))
    t.notOk(bUser.ids.some((id) => mine.some((e) => e.id === id)), 'no event of default under a team-b key')
  }
  const res = await app.app.inject({ url: '/events?project=default', headers: bKey })
  t.equal(res.statusCode, 403, 'a project-bound key naming another project: 403')
})

t.test('GET /events: values past a dimension cap are answered from the log, exactly', async (t) => {
  const app = await makeApp(t, { env: { LLMSCOPE_MAX_DIMENSION_VALUES: '2', LLMSCOPE_MAX_METADATA_VALUES: '1' } })
  const sent = await ingest(app, fixture())
  // u0..u4 with a cap of 2: some users are past it; metadata.feature=chat past its cap of 1.
  const dims = (await app.app.inject({ url: '/analytics/dimensions', headers: readHeaders })).json().dimensions as Array<{ name: string; capped: boolean }>
  t.ok(dims.find((d) => d.name === 'user_id')?.capped && dims.find((d) => d.name === 'metadata.feature')?.capped, 'the caps were reached')
  const cases: Params[] = [{ user_id: 'u4' }, { user_id: 'u0' }, { 'metadata.feature': 'chat' }, { 'metadata.feature': 'search', sort: 'latency' }, { session_id: 's2', sort: 'cost' }]
  for (const p of cases) {
    t.same((await all(app, { ...p, limit: '6' })).ids, expected(sent, p), `${qs(p)}: exact`)
  }
})

t.test('GET /events: hours folded by retention are answered from the log, exactly', async (t) => {
  // Retention by count folds the oldest hours (those before the hour of now).
  const app = await makeApp(t, { env: { LLMSCOPE_RETENTION_EVENTS: '20' } })
  const sent = await ingest(app, fixture())
  // Retention folds what the aggregators hold: every accepted event first.
  await app.engine.sync()
  app.engine.retain()
  await app.engine.sync()
  t.ok(app.engine.topology.retentionStats().coarseRows >= 30, `rows were folded (${app.engine.topology.retentionStats().coarseRows})`)
  const cases: Params[] = [{}, { tag: 'alpha' }, { user_id: 'u1', sort: 'latency' }, { sort: 'cost' }, { 'metadata.feature': 'chat' }]
  for (const p of cases) {
    t.same((await all(app, { ...p, limit: '9' })).ids, expected(sent, p), `${qs(p)}: exact`)
  }
})

/**
 * The price book over HTTP (DESIGN §8): PUT /prices versions priced by hand at their
 * boundaries (an event exactly at `effective_from`, one a millisecond before), a PUT never
 * changing an accepted event, a second version at the same instant replacing the first, names
 * matched by family, GET /prices (sources, versions, models priced, unpriced models, filters),
 * bad input (400 naming the field, nothing changed), scopes, project isolation, and DELETE
 * /projects dropping the project's prices.
 */
import t from 'tap'
import { ADMIN_KEY, READ_KEY, adminHeaders, makeApp, readHeaders, type TestApp } from '../helpers/app.js'

const T1 = Date.parse('2026-03-01T00:00:00.000Z')
const T2 = Date.parse('2026-04-01T00:00:00.000Z')
const iso = (ms: number) => new Date(ms).toISOString()

interface R {
  input: number
  output: number
  cached_input?: number
  cache_write?: number
  reasoning?: number
}
interface Ev {
  timestamp: string
  model: string
  provider: string
  prompt_tokens: number
  completion_tokens: number
  cached_tokens?: number
  cache_write_tokens?: number
  reasoning_tokens?: number
  cost?: number
}

/** The hand computation (ISSUE14.md, the formula): OpenAI-shaped usage (prompt includes cache reads and writes). */
function byHand(e: Ev, r: R): number {
  const ci = r.cached_input ?? r.input
  const cw = r.cache_write ?? r.input
  const rr = r.reasoning ?? r.output
  const cached = e.cached_tokens ?? 0
  const writes = e.cache_write_tokens ?? 0
  const reasoning = e.reasoning_tokens ?? 0
  const uncached = Math.max(0, e.prompt_tokens - cached - writes)
  const dollars = (uncached * r.input + cached * ci + writes * cw + (e.completion_tokens - reasoning) * r.output + reasoning * rr) / 1e6
  return Math.round(dollars * 1e9) / 1e9
}

const ev = (ts: number, over: Partial<Ev> = {}): Ev => ({ timestamp: iso(ts), model: 'my-llm', provider: 'selfhost', prompt_tokens: 1200, completion_tokens: 300, latency_ms: 5, ...over }) as Ev

async function put(a: TestApp, body: Record<string, unknown>, headers: Record<string, string> = adminHeaders) {
  return a.app.inject({ method: 'PUT', url: '/prices', headers, payload: body })
}
async function ingest(a: TestApp, events: Ev[], headers: Record<string, string> = adminHeaders): Promise<string[]> {
  const r = await a.app.inject({ method: 'POST', url: '/events/batch', headers, payload: events })
  if (r.statusCode !== 202) throw new Error(`batch: ${r.statusCode} ${r.body}`)
  return r.json().event_ids
}
async function costOf(a: TestApp, id: string, headers: Record<string, string> = adminHeaders): Promise<{ cost: number; unpriced: boolean }> {
  const r = (await a.app.inject({ url: `/events/${id}`, headers })).json()
  return { cost: r.cost, unpriced: r.unpriced }
}
async function totals(a: TestApp, headers: Record<string, string> = adminHeaders): Promise<number> {
  return (await a.app.inject({ url: '/analytics/metrics', headers })).json().total_cost
}

const V1: R = { input: 1, output: 2, cached_input: 0.5, cache_write: 1.25 }
const V2: R = { input: 3, output: 4, reasoning: 6 }

t.test('versions price events by their own time; an event exactly at effective_from takes that version', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const p1 = await put(a, { provider: 'selfhost', model: 'my-llm', ...V1, effective_from: iso(T1) })
  t.equal(p1.statusCode, 201)
  t.match(p1.json(), { provider: 'selfhost', model: 'my-llm', source: 'override', input: 1, output: 2, cached_input: 0.5, cache_write: 1.25, reasoning: 2, effective_from: iso(T1) })
  t.equal(p1.json().versions.length, 1)
  const p2 = await put(a, { provider: 'selfhost', model: 'my-llm', ...V2, effective_from: T2 })
  t.equal(p2.statusCode, 201, 'effective_from as epoch ms')
  t.match(p2.json(), { cached_input: 3, cache_write: 3, reasoning: 6 }, 'defaults: cached_input and cache_write = input')

  const events = [
    ev(T1 - 1),
    ev(T1),
    ev(T2 - 1, { cached_tokens: 200, cache_write_tokens: 100 }),
    ev(T2),
    ev(T2 + 1, { cached_tokens: 1000, reasoning_tokens: 100 }),
    ev(T2 + 2, { model: 'my-llm-2026-02-01' }),
    ev(T2 + 3, { cost: 0.123 })
  ]
  const ids = await ingest(a, events)
  const want = [
    { cost: 0, unpriced: true },
    { cost: byHand(events[1], V1), unpriced: false },
    { cost: byHand(events[2], V1), unpriced: false },
    { cost: byHand(events[3], V2), unpriced: false },
    { cost: byHand(events[4], V2), unpriced: false },
    { cost: byHand(events[5], V2), unpriced: false },
    { cost: 0.123, unpriced: false }
  ]
  t.same(await Promise.all(ids.map((id) => costOf(a, id))), want, 'GET /events/:id: each by hand')
  t.equal(want[1].cost, 0.0018, 'the hand figure itself: 1200 × $1 + 300 × $2 per 1M')
  const sum = want.reduce((s, w) => s + w.cost, 0)
  t.equal(await totals(a), Math.round(sum * 1e9) / 1e9, '/analytics/metrics counts the same')

  // A PUT never changes an accepted event; a second version at the same instant replaces the first for later events.
  const V1b: R = { input: 10, output: 20 }
  t.equal((await put(a, { provider: 'selfhost', model: 'my-llm', ...V1b, effective_from: iso(T1) })).statusCode, 201)
  t.same(await Promise.all(ids.map((id) => costOf(a, id))), want, 'accepted events keep their cost')
  t.equal(await totals(a), Math.round(sum * 1e9) / 1e9)
  const [late] = await ingest(a, [ev(T1 + 5)])
  t.same(await costOf(a, late), { cost: byHand(ev(T1 + 5), V1b), unpriced: false }, 'a later event at that time takes the replacement')

  const list = (await a.app.inject({ url: '/prices', headers: readHeaders })).json()
  const entry = list.prices.find((p: { model: string }) => p.model === 'my-llm')
  t.same(entry.versions.map((v: { effective_from: string; input: number }) => [v.effective_from, v.input]), [[iso(T1), 10], [iso(T2), 3]], 'versions: the replaced one is gone')
  t.match(entry, { source: 'override', effective_from: iso(T2), input: 3 }, 'the version in force now')
  t.same(entry.models, ['my-llm', 'my-llm-2026-02-01'], 'models: the names it priced, the dated one included')
})

t.test('GET /prices: sources, models seen, unpriced models with their counts, filters', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_PRICE_OVERRIDES: JSON.stringify({ 'cfg-model': { input_mtok: 7, output_mtok: 9 } }) } })
  await ingest(a, [ev(T1, { model: 'gpt-4o', provider: 'openai' }), ev(T1, { model: 'nobody-knows', provider: 'nowhere' }), ev(T1 + 1, { model: 'nobody-knows', provider: 'nowhere' }), ev(T1, { model: 'cfg-model', provider: 'x' })])
  const r = await a.app.inject({ url: '/prices', headers: readHeaders })
  t.equal(r.statusCode, 200)
  const body = r.json()
  const gpt = body.prices.find((p: { model: string }) => p.model === 'gpt-4o')
  t.match(gpt, { provider: 'openai', source: /^genai-prices@\d/, models: ['gpt-4o'], versions: [] })
  t.ok(gpt.input > 0 && gpt.output > 0, 'genai-prices rates shown')
  const cfg = body.prices.find((p: { model: string }) => p.model === 'cfg-model')
  t.match(cfg, { provider: '*', source: 'override', input: 7, output: 9, cached_input: 7, effective_from: null, models: ['cfg-model'] })
  t.same(body.unpriced, [{ provider: 'nowhere', model: 'nobody-knows', requests: 2 }])
  const only = (await a.app.inject({ url: '/prices?model=gpt-4o', headers: readHeaders })).json()
  t.same(only.prices.map((p: { model: string }) => p.model), ['gpt-4o'])
  t.same(only.unpriced, [])
  const byProvider = (await a.app.inject({ url: '/prices?provider=nowhere', headers: readHeaders })).json()
  t.same(byProvider.unpriced.length, 1)
  t.notOk(byProvider.prices.some((p: { provider: string }) => p.provider === 'openai'))
})

t.test('bad input: 400 naming the field, nothing changed; scopes', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const bad: Array<[Record<string, unknown>, string]> = [
    [{ provider: 'p', model: 'm', input: -1, output: 1 }, 'input'],
    [{ provider: 'p', input: 1, output: 1 }, 'model'],
    [{ provider: 'p', model: 'm', input: 1 }, 'output'],
    [{ provider: 'p', model: 'm', input: 1, output: 1, cached_input: 'x' }, 'cached_input'],
    [{ provider: 'p', model: 'm', input: 1, output: 1, effective_from: '2026-01-01' }, 'effective_from'],
    [{ provider: 'p', model: 'm', input: 1, output: 1, extra: 1 }, ''],
    [{ provider: '', model: 'm', input: 1, output: 1 }, 'provider']
  ]
  for (const [body, field] of bad) {
    const r = await put(a, body)
    t.equal(r.statusCode, 400, JSON.stringify(body))
    t.ok(r.json().details.some((d: { path: string }) => d.path.includes(field)), `names ${field || 'the unknown key'}`)
  }
  const badReprice: Array<[Record<string, unknown>, string]> = [
    [{ end_time: iso(T2) }, 'start_time'],
    [{ start_time: iso(T1) }, 'end_time'],
    [{ start_time: iso(T2), end_time: iso(T1) }, 'end_time'],
    [{ start_time: iso(T1), end_time: iso(T2), dry_run: 'no' }, 'dry_run'],
    [{ start_time: iso(T1), end_time: iso(T2), model: '' }, 'model']
  ]
  for (const [body, field] of badReprice) {
    const r = await a.app.inject({ method: 'POST', url: '/prices/reprice', headers: adminHeaders, payload: body })
    t.equal(r.statusCode, 400, JSON.stringify(body))
    t.ok(r.json().details.some((d: { path: string }) => d.path.includes(field)), `reprice names ${field}`)
  }
  t.equal((await put(a, { provider: 'p', model: 'm', input: 1, output: 1 }, readHeaders)).statusCode, 403, 'read key cannot PUT')
  t.equal((await a.app.inject({ method: 'POST', url: '/prices/reprice', headers: readHeaders, payload: { start_time: iso(T1), end_time: iso(T2) } })).statusCode, 403)
  t.equal(a.engine.book.rev, 0, 'nothing was added')
  t.same((await a.app.inject({ url: '/prices', headers: readHeaders })).json(), { prices: [], unpriced: [] })
})

t.test('projects: a key of one project never sees another\'s prices; DELETE /projects drops them', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const owner = (project: string) => ({ 'x-api-key': ADMIN_KEY, 'x-llmscope-project': project })
  t.equal((await a.app.inject({ method: 'POST', url: '/projects', headers: owner('default'), payload: { id: 'team-a' } })).statusCode, 201)
  const key = (await a.app.inject({ method: 'POST', url: '/keys', headers: owner('default'), payload: { scope: 'admin', project: 'team-a' } })).json().key
  const teamA = { 'x-api-key': key }
  t.equal((await put(a, { provider: 'selfhost', model: 'my-llm', ...V1, effective_from: iso(T1) }, teamA)).statusCode, 201)
  const [ida] = await ingest(a, [ev(T1 + 10)], teamA)
  const [idd] = await ingest(a, [ev(T1 + 10)])
  t.same(await costOf(a, ida, teamA), { cost: byHand(ev(T1), V1), unpriced: false }, 'team-a prices with its version')
  t.same(await costOf(a, idd), { cost: 0, unpriced: true }, 'default does not see team-a\'s version')
  const seen = (await a.app.inject({ url: '/prices', headers: { 'x-api-key': READ_KEY } })).json()
  t.same(seen.prices, [], 'default lists none of team-a\'s entries')
  t.same(seen.unpriced, [{ provider: 'selfhost', model: 'my-llm', requests: 1 }])
  t.equal((await a.app.inject({ url: '/prices', headers: teamA })).json().prices.length, 1)

  t.equal((await a.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner('default') })).statusCode, 204)
  t.same(a.engine.book.versions('team-a'), [], 'the book forgot them')
  t.same(a.engine.priceStore.versions('team-a'), [], 'and the store')
  t.equal((await a.app.inject({ method: 'POST', url: '/projects', headers: owner('default'), payload: { id: 'team-a' } })).statusCode, 201)
  t.same((await a.app.inject({ url: '/prices', headers: owner('team-a') })).json().prices, [], 'a re-created project starts with no prices')
})

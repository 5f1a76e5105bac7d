import t from 'tap'
import { makeApp, adminHeaders, event } from '../helpers/app.js'

t.test('POST /events/ingest answers 202 with an evt_ id, then GET /events/:id returns it with its cost', async (t) => {
  const { app } = await makeApp(t)
  const res = await app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event({ metadata: { user: 'u1' } }) })
  t.equal(res.statusCode, 202)
  const body = res.json()
  t.equal(body.status, 'accepted')
  t.match(body.event_id, /^evt_[0-9a-z]+_[A-Za-z0-9_-]{12}$/)

  const got = await app.inject({ method: 'GET', url: `/events/${body.event_id}`, headers: adminHeaders })
  t.equal(got.statusCode, 200)
  const e = got.json()
  t.equal(e.id, body.event_id)
  t.equal(e.model, 'gpt-4')
  t.equal(e.provider, 'openai')
  t.equal(e.prompt_tokens, 1000)
  t.equal(e.completion_tokens, 500)
  t.equal(e.total_tokens, 1500, 'total defaults to the sum')
  t.equal(e.timestamp, '2026-01-01T00:00:00.000Z')
  // gpt-4: $30 / $60 per 1M tokens → 1000 × 30e-6 + 500 × 60e-6 = 0.03 + 0.03
  t.equal(e.cost, 0.06)
  t.equal(e.cost_source, 'computed')
  t.equal(e.unpriced, false)
  t.same(e.metadata, { user: 'u1' })
  t.equal(e.status, 'success')
})

t.test('provider is inferred from the pricing data when absent, else "unknown"', async (t) => {
  const { app } = await makeApp(t)
  const a = await app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event({ provider: undefined, model: 'claude-3-5-sonnet-20241022' }) })
  const b = await app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event({ provider: undefined, model: 'my-inhouse-model' }) })
  t.equal((await app.inject({ url: `/events/${a.json().event_id}`, headers: adminHeaders })).json().provider, 'anthropic')
  const eb = (await app.inject({ url: `/events/${b.json().event_id}`, headers: adminHeaders })).json()
  t.equal(eb.provider, 'unknown')
  t.equal(eb.cost, 0)
  t.equal(eb.unpriced, true)
  t.equal(eb.cost_source, 'unpriced')
})

t.test('a caller-supplied cost wins over the computed one', async (t) => {
  const { app } = await makeApp(t)
  const r = await app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event({ cost: 1.25 }) })
  const e = (await app.inject({ url: `/events/${r.json().event_id}`, headers: adminHeaders })).json()
  t.equal(e.cost, 1.25)
  t.equal(e.cost_source, 'caller')
})

t.test('POST /events/batch accepts a JSON array and NDJSON', async (t) => {
  const { app } = await makeApp(t)
  const arr = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [event(), event({ model: 'gpt-4o' })] })
  t.equal(arr.statusCode, 202)
  t.equal(arr.json().status, 'accepted')
  t.equal(arr.json().accepted, 2)
  t.equal(arr.json().event_ids.length, 2)
  const nd = [event(), event(), event()].map((e) => JSON.stringify(e)).join('\n') + '\n'
  const res = await app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/x-ndjson' }, payload: nd })
  t.equal(res.statusCode, 202)
  t.equal(res.json().accepted, 3)
  const m = await app.inject({ url: '/analytics/metrics', headers: adminHeaders })
  t.equal(m.json().total_requests, 5)
})

t.test('a batch is all or nothing: one bad event → 400 naming its index, nothing stored', async (t) => {
  const { app } = await makeApp(t)
  const res = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [event(), event(), event({ prompt_tokens: -1 })] })
  t.equal(res.statusCode, 400)
  const body = res.json()
  t.equal(body.code, 'LLMS_ERR_VALIDATION')
  t.match(body.message, /index 2/)
  t.same(body.details, [{ path: '[2].prompt_tokens', message: body.details[0].message }])
  const m = await app.inject({ url: '/analytics/metrics', headers: adminHeaders })
  t.equal(m.json().total_requests, 0, 'nothing ingested')
})

t.test('an NDJSON batch with a bad line → 400 naming the line', async (t) => {
  const { app } = await makeApp(t)
  const nd = `${JSON.stringify(event())}\n\n{oops\n`
  const res = await app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/x-ndjson' }, payload: nd })
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'LLMS_ERR_BAD_JSON')
  t.match(res.json().message, /line 3/)
})

t.test('batch size limits', async (t) => {
  const { app } = await makeApp(t, { env: { LLMSCOPE_MAX_BATCH: '3' } })
  const big = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [event(), event(), event(), event()] })
  t.equal(big.statusCode, 413)
  t.equal(big.json().code, 'LLMS_ERR_BATCH_TOO_LARGE')
  const empty = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [] })
  t.equal(empty.statusCode, 400)
  const obj = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: event() })
  t.equal(obj.statusCode, 400)
  t.match(obj.json().message, /array/)
})

t.test('field validation names the field', async (t) => {
  const { app } = await makeApp(t)
  const cases: Array<[Record<string, unknown>, string]> = [
    [event({ model: '' }), 'model'],
    [event({ model: 'x'.repeat(257) }), 'model'],
    [event({ model: undefined }), 'model'],
    [event({ prompt_tokens: 1.5 }), 'prompt_tokens'],
    [event({ completion_tokens: '3' }), 'completion_tokens'],
    [event({ total_tokens: 10 }), 'total_tokens'],
    [event({ latency_ms: -1 }), 'latency_ms'],
    [event({ timestamp: '2026-02-30T00:00:00Z' }), 'timestamp'],
    [event({ timestamp: '2026-01-01T00:00:00' }), 'timestamp'],
    [event({ status: 'maybe' }), 'status'],
    [event({ cost: -0.1 }), 'cost'],
    [event({ metadata: [1, 2] }), 'metadata'],
    [event({ metadata: { a: { b: { c: { d: { e: { f: { g: { h: { i: 1 } } } } } } } } } }), 'metadata'],
    [event({ metadata: { big: 'x'.repeat(20_000) } }), 'metadata'],
    [event({ promt_tokens: 5 }), '(body)']
  ]
  for (const [payload, field] of cases) {
    const res = await app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload })
    t.equal(res.statusCode, 400, `${field}: 400`)
    const body = res.json()
    t.equal(body.code, 'LLMS_ERR_VALIDATION')
    t.ok(body.details.some((d: { path: string }) => d.path === field), `${field} named in ${JSON.stringify(body.details)}`)
    t.notMatch(res.body, /at .*\.ts:\d+/, 'no stack trace')
  }
  const m = await app.inject({ url: '/analytics/metrics', headers: adminHeaders })
  t.equal(m.json().total_requests, 0, 'nothing ingested')
})

t.test('malformed JSON, empty body and wrong content type', async (t) => {
  const { app } = await makeApp(t)
  const bad = await app.inject({ method: 'POST', url: '/events/ingest', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload: '{"model": ' })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json().statusCode, 400)
  t.ok(bad.json().code)
  const empty = await app.inject({ method: 'POST', url: '/events/ingest', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload: '' })
  t.equal(empty.statusCode, 400)
  const text = await app.inject({ method: 'POST', url: '/events/ingest', headers: { ...adminHeaders, 'content-type': 'text/plain' }, payload: 'hello' })
  t.equal(text.statusCode, 415)
  t.equal(text.json().error, 'Unsupported Media Type')
  const arr = await app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: [event()] })
  t.equal(arr.statusCode, 400)
})

t.test('an oversize body → 413', async (t) => {
  const { app } = await makeApp(t, { env: { LLMSCOPE_BODY_LIMIT_BYTES: '2048' } })
  const res = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: Array.from({ length: 50 }, () => event()) })
  t.equal(res.statusCode, 413)
  t.equal(res.json().statusCode, 413)
})

t.test('GET /events/:id → 404 for unknown or forged ids', async (t) => {
  const { app } = await makeApp(t)
  const r = await app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event() })
  const id: string = r.json().event_id
  for (const bad of ['evt_nope', 'nothing', id.slice(0, -1) + (id.endsWith('A') ? 'B' : 'A'), 'evt_zzzzz_AAAAAAAAAAAA']) {
    const res = await app.inject({ url: `/events/${bad}`, headers: adminHeaders })
    t.equal(res.statusCode, 404, bad)
    t.equal(res.json().code, 'LLMS_ERR_NOT_FOUND')
  }
})

t.test('unknown routes → 404 JSON', async (t) => {
  const { app } = await makeApp(t)
  const res = await app.inject({ url: '/nope?x=1', headers: adminHeaders })
  t.equal(res.statusCode, 404)
  t.same(res.json(), { statusCode: 404, error: 'Not Found', code: 'LLMS_ERR_NOT_FOUND', message: 'route GET /nope not found', details: [] })
})

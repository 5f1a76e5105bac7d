/**
 * Real attribute sets from OpenLLMetry and OpenLIT spans (test/otlp/fixtures/*.json, each naming
 * its source) become the events their `expected` block says — over OTLP/JSON and protobuf alike.
 */
import t from 'tap'
import { makeApp, ingestHeaders, adminHeaders } from '../helpers/app.js'
import { fixture, fixtures, protobufOf, requestOf, storedEvents } from './helpers.js'
import { otlpStats } from '../../src/otlp/stats.js'

const genai = fixtures().filter((f) => f.expected !== undefined)

t.test('fixtures cover both instrumentations and the OTel spelling', async (t) => {
  const names = genai.map((f) => f.file)
  t.ok(names.some((n) => n.startsWith('openllmetry-')), 'OpenLLMetry')
  t.ok(names.some((n) => n.startsWith('openlit-')), 'OpenLIT')
  t.ok(names.some((n) => n.startsWith('otel-')), 'OTel semantic conventions')
  t.ok(names.some((n) => n.startsWith('openinference-')), 'Arize OpenInference')
  t.ok(names.some((n) => n.startsWith('langfuse-')), 'Langfuse trace attributes')
  t.ok(names.some((n) => n.startsWith('vercel-ai-sdk-')), 'Vercel AI SDK')
  for (const f of fixtures()) t.ok(f.source.length > 40, `${f.file} names its source`)
})

for (const fx of genai) {
  for (const encoding of ['json', 'protobuf'] as const) {
    t.test(`${fx.file} over OTLP/${encoding} becomes the expected event`, async (t) => {
      const { app, engine } = await makeApp(t, { inlinePricing: true })
      const request = requestOf(fx)
      const res =
        encoding === 'json'
          ? await app.inject({ method: 'POST', url: '/v1/traces', headers: ingestHeaders, payload: request })
          : await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...ingestHeaders, 'content-type': 'application/x-protobuf' }, payload: protobufOf(request) })
      t.equal(res.statusCode, 200, res.body)
      if (encoding === 'json') t.same(res.json(), {}, 'full success: no partialSuccess')
      else t.equal(res.rawPayload.length, 0, 'full success: an empty ExportTraceServiceResponse')
      const events = storedEvents(engine)
      t.equal(events.length, 1, 'one span, one event')
      const { metadata, ...expected } = fx.expected!
      const e = events[0]
      t.match(e, expected)
      t.match(e.metadata, metadata ?? {})
      for (const key of fx.absent_metadata ?? []) t.notOk(Object.hasOwn(e.metadata ?? {}, key), `${key} not in metadata (read as a dimension or ignored)`)
      const span = fx.span as { traceId: string; spanId: string; name: string }
      t.equal(e.metadata?.trace_id, span.traceId)
      t.equal(e.metadata?.span_id, span.spanId)
      t.equal(e.metadata?.span_name, span.name)
      t.notOk(JSON.stringify(e.metadata).includes('Where is my order'), 'prompt content never copied into metadata')
      t.same(otlpStats(engine), { requests: 1, spans: 1, ingested: 1, ignored: 0, rejected: 0, badRequests: 0 })
    })
  }
}

t.test('the same Anthropic call traced by OpenLLMetry and by OpenLIT is one identical event (tokens and cost)', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const res = await app.inject({
    method: 'POST',
    url: '/v1/traces',
    headers: ingestHeaders,
    payload: requestOf(fixture('openllmetry-anthropic-cache.json'), fixture('openlit-anthropic-cache.json'))
  })
  t.equal(res.statusCode, 200)
  const [a, b] = storedEvents(engine)
  for (const k of ['model', 'provider', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cached_tokens', 'cache_write_tokens', 'cost'] as const) t.equal(a[k], b[k], k)
  // And what a caller following the README's Anthropic convention sends directly costs the same.
  const direct = await app.inject({
    method: 'POST',
    url: '/events/ingest',
    headers: adminHeaders,
    payload: { timestamp: a.timestamp, model: a.model, provider: 'anthropic', prompt_tokens: 12, completion_tokens: 300, cached_tokens: 2000, cache_write_tokens: 500 }
  })
  const c = (await app.inject({ url: `/events/${direct.json().event_id}`, headers: adminHeaders })).json()
  t.equal(a.cost, c.cost)
  t.ok(a.cost > 0, 'priced')
})

t.test('non-GenAI spans are ignored and counted, never stored', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const fx = fixture('non-genai.json')
  const res = await app.inject({ method: 'POST', url: '/v1/traces', headers: ingestHeaders, payload: requestOf(fx) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), {}, 'ignoring is not rejecting: no partialSuccess')
  t.equal(engine.log.nextSeq, 0, 'nothing stored')
  t.same(otlpStats(engine), { requests: 1, spans: fx.spans!.length, ingested: 0, ignored: fx.spans!.length, rejected: 0, badRequests: 0 })
})

t.test('a trace mixing LLM calls with their agent, workflow and HTTP spans counts each call once', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const all = [fixture('non-genai.json'), fixture('openllmetry-openai-chat.json'), fixture('openlit-openai-cache.json')]
  const res = await app.inject({ method: 'POST', url: '/v1/traces', headers: ingestHeaders, payload: requestOf(...all) })
  t.equal(res.statusCode, 200)
  const m = (await app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json()
  t.equal(m.total_requests, 2)
  t.equal(m.prompt_tokens, 1700 + 2006, 'the agent span repeating its children totals (5000) is not added')
  t.equal(m.cached_tokens, 1024 + 1920)
})

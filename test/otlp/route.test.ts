/** POST /v1/traces: auth, encodings, malformed requests, partial success, bounds. */
import t from 'tap'
import { makeApp, ingestHeaders, readHeaders } from '../helpers/app.js'
import { gzip, protobufOf, storedEvents, type Json } from './helpers.js'
import { decodeTraceResponse } from '../../src/otlp/proto.js'
import { otlpStats } from '../../src/otlp/stats.js'

const START = '1767225600000000000'
const END = '1767225600500000000'

let nextId = 1
/** A minimal valid GenAI span; `attrs` are added (or replace) by key. */
function span(attrs: Record<string, Json> = {}, over: Json = {}): Json {
  const base: Record<string, Json> = {
    'gen_ai.system': { stringValue: 'openai' },
    'gen_ai.request.model': { stringValue: 'gpt-4o' },
    'gen_ai.usage.input_tokens': { intValue: '100' },
    'gen_ai.usage.output_tokens': { intValue: 20 }
  }
  const merged = { ...base, ...attrs }
  const id = (nextId++).toString(16).padStart(16, '0')
  return {
    traceId: 'f'.repeat(16) + id,
    spanId: id,
    name: 'openai.chat',
    startTimeUnixNano: START,
    endTimeUnixNano: END,
    attributes: Object.entries(merged).map(([key, value]) => ({ key, value })),
    ...over
  }
}

const request = (...spans: unknown[]): Json => ({ resourceSpans: [{ resource: { attributes: [] }, scopeSpans: [{ scope: { name: 'test' }, spans }] }] })

const post = (app: Awaited<ReturnType<typeof makeApp>>['app'], payload: unknown, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/v1/traces', headers: { ...ingestHeaders, 'content-type': 'application/json', ...headers }, payload: payload as string })

t.test('needs a key with the ingest scope', async (t) => {
  const { app } = await makeApp(t, { inlinePricing: true })
  const none = await app.inject({ method: 'POST', url: '/v1/traces', headers: { 'content-type': 'application/json' }, payload: request(span()) })
  t.equal(none.statusCode, 401)
  t.equal(none.json().code, 'LLMS_ERR_UNAUTHORIZED')
  const read = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...readHeaders, 'content-type': 'application/json' }, payload: request(span()) })
  t.equal(read.statusCode, 403)
  t.equal(read.json().code, 'LLMS_ERR_FORBIDDEN')
})

t.test('malformed requests are a 400 and store nothing', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const cases: Array<[string, unknown, Record<string, string>, string, RegExp]> = [
    ['not JSON', '{"resourceSpans": [', {}, 'LLMS_ERR_BAD_JSON', /not valid JSON/],
    ['empty JSON body', '', {}, 'LLMS_ERR_BAD_JSON', /empty/],
    ['a JSON array', '[]', {}, 'LLMS_ERR_VALIDATION', /ExportTraceServiceRequest object/],
    ['resourceSpans not an array', '{"resourceSpans": {"a": 1}}', {}, 'LLMS_ERR_VALIDATION', /resourceSpans must be an array/],
    ['scopeSpans not an array', '{"resourceSpans": [{"scopeSpans": 3}]}', {}, 'LLMS_ERR_VALIDATION', /resourceSpans\[0\]\.scopeSpans must be an array/],
    ['not protobuf', Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), { 'content-type': 'application/x-protobuf' }, 'LLMS_ERR_VALIDATION', /not a protobuf ExportTraceServiceRequest/],
    ['not gzip', 'plainly not gzip', { 'content-encoding': 'gzip' }, 'LLMS_ERR_VALIDATION', /not valid gzip/]
  ]
  for (const [what, payload, headers, code, message] of cases) {
    const res = await post(app, payload, headers)
    t.equal(res.statusCode, 400, what)
    t.equal(res.json().code, code, what)
    t.match(res.json().message, message, what)
    t.notMatch(res.body, /at .*\.ts:\d+/, 'no stack trace')
  }
  t.equal(engine.log.nextSeq, 0)
  t.equal(otlpStats(engine).badRequests, cases.length)
  t.equal(otlpStats(engine).requests, 0)
})

t.test('content types and encodings: 415 for what OTLP/HTTP does not define', async (t) => {
  const { app } = await makeApp(t, { inlinePricing: true })
  const text = await post(app, 'hello', { 'content-type': 'text/plain' })
  t.equal(text.statusCode, 415)
  const br = await post(app, JSON.stringify(request(span())), { 'content-encoding': 'br' })
  t.equal(br.statusCode, 415)
  t.equal(br.json().code, 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
  t.match(br.json().message, /only gzip/)
  const withCharset = await post(app, JSON.stringify(request(span())), { 'content-type': 'application/json; charset=utf-8' })
  t.equal(withCharset.statusCode, 200)
  const empty = await post(app, Buffer.alloc(0), { 'content-type': 'application/x-protobuf' })
  t.equal(empty.statusCode, 200, 'an empty protobuf message is an empty, valid request')
  t.equal(empty.rawPayload.length, 0)
})

t.test('bodies are bounded before and after gunzip (413)', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_BODY_LIMIT_BYTES: '4096' } })
  const big = JSON.stringify(request(span({ pad: { stringValue: 'x'.repeat(8000) } })))
  const raw = await post(app, big)
  t.equal(raw.statusCode, 413)
  // ~8 KB of JSON gzips to a few hundred bytes: under the limit on the wire, over it inflated.
  const bomb = gzip(big)
  t.ok(bomb.length < 4096)
  const inflated = await post(app, bomb, { 'content-encoding': 'gzip' })
  t.equal(inflated.statusCode, 413)
  t.equal(inflated.json().code, 'FST_ERR_CTP_BODY_TOO_LARGE')
  const small = await post(app, gzip(JSON.stringify(request(span()))), { 'content-encoding': 'gzip' })
  t.equal(small.statusCode, 200)
  t.equal(engine.log.nextSeq, 1)
})

t.test('invalid GenAI spans are rejected one by one (partialSuccess); the rest are committed together', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const spans = [
    span(),
    span({}, { startTimeUnixNano: undefined }),
    span({}, { endTimeUnixNano: '1767225599000000000' }),
    span({ 'gen_ai.usage.input_tokens': { doubleValue: 1.5 } }),
    span({ 'gen_ai.usage.output_tokens': { stringValue: 'many' } }),
    span({ 'gen_ai.request.model': { stringValue: 'm'.repeat(300) } }),
    span({ 'gen_ai.usage.input_tokens': { intValue: '99999999999999' } }),
    'not a span',
    span({ 'gen_ai.request.model': { stringValue: 'gpt-4o-mini' } })
  ]
  const appendsBefore = engine.log.stats.appends
  const res = await post(app, JSON.stringify(request(...spans)))
  t.equal(res.statusCode, 200)
  const ps = res.json().partialSuccess
  t.equal(ps.rejectedSpans, '7', 'int64 as a decimal string (proto3 JSON)')
  t.match(ps.errorMessage, /^7 of 9 spans rejected: /)
  t.match(ps.errorMessage, /startTimeUnixNano is missing/)
  t.match(ps.errorMessage, /endTimeUnixNano is missing or before the start/)
  t.match(ps.errorMessage, /gen_ai.usage.input_tokens is not a non-negative integer/)
  t.match(ps.errorMessage, /gen_ai.usage.output_tokens is not a non-negative integer/)
  t.match(ps.errorMessage, /; …$/, 'reasons are bounded, the count is exact')
  const events = storedEvents(engine)
  t.same(events.map((e) => e.model), ['gpt-4o', 'gpt-4o-mini'])
  t.equal(engine.log.stats.appends - appendsBefore, 1, 'one commit for the request')
  t.match(otlpStats(engine), { spans: 9, ingested: 2, rejected: 7, ignored: 0 })
})

t.test('a rejected span over protobuf: the answer is a protobuf partial success', async (t) => {
  const { app } = await makeApp(t, { inlinePricing: true })
  const res = await post(app, protobufOf(request(span(), span({ 'gen_ai.usage.input_tokens': { intValue: '-1' } }))), { 'content-type': 'application/x-protobuf' })
  t.equal(res.statusCode, 200)
  const answer = decodeTraceResponse(res.rawPayload)
  t.equal(answer.partialSuccess?.rejectedSpans, '1')
  t.match(answer.partialSuccess?.errorMessage, /input_tokens is not a non-negative integer/)
})

t.test('a span sent twice in one request counts once', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const s = span()
  const res = await post(app, JSON.stringify(request(s, s)))
  t.equal(res.statusCode, 200)
  t.equal(storedEvents(engine).length, 1)
  t.match(otlpStats(engine), { spans: 2, ingested: 1, ignored: 1 })
})

t.test('an LLM span wrapping another LLM span of the same call counts once: the inner one', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const inner = span({ 'gen_ai.usage.input_tokens': { intValue: '1700' }, 'gen_ai.usage.cache_read_input_tokens': { intValue: '1024' } })
  const wrapper = span(
    { 'gen_ai.operation.name': { stringValue: 'chat' }, 'gen_ai.system': { stringValue: 'langchain' }, 'gen_ai.usage.input_tokens': { intValue: '1700' } },
    { name: 'ChatOpenAI.chat', traceId: inner.traceId }
  )
  inner.parentSpanId = wrapper.spanId
  const res = await post(app, JSON.stringify(request(wrapper, inner)))
  t.equal(res.statusCode, 200)
  t.match(storedEvents(engine), [{ prompt_tokens: 1700, cached_tokens: 1024, provider: 'openai' }])
  t.equal(storedEvents(engine).length, 1)
  t.match(otlpStats(engine), { spans: 2, ingested: 1, ignored: 1 })
})

t.test('time to first token (OpenLIT, seconds) becomes ttft_ms; an unusable one is left out', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const res = await post(
    app,
    JSON.stringify(request(span({ 'gen_ai.response.time_to_first_chunk': { doubleValue: 0.42 } }), span({ 'gen_ai.server.time_to_first_token': { doubleValue: 1e12 } })))
  )
  t.same(res.json(), {})
  const [a, b] = storedEvents(engine)
  t.equal(a.ttft_ms, 420)
  t.equal(b.ttft_ms, null)
})

t.test('proto field names (snake_case) and enum names are read as the proto3 JSON mapping allows', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const body = {
    resource_spans: [
      {
        resource: { attributes: [{ key: 'service.name', value: { string_value: 'py' } }] },
        scope_spans: [
          {
            scope: { name: 'x' },
            spans: [
              {
                trace_id: '0123456789abcdef0123456789abcdef',
                span_id: '0123456789abcdef',
                name: 'chat',
                start_time_unix_nano: START,
                end_time_unix_nano: END,
                status: { code: 'STATUS_CODE_ERROR' },
                attributes: [
                  { key: 'gen_ai.request.model', value: { string_value: 'gpt-4o' } },
                  { key: 'gen_ai.usage.input_tokens', value: { int_value: '7' } }
                ]
              }
            ]
          }
        ]
      }
    ]
  }
  t.equal((await post(app, JSON.stringify(body))).statusCode, 200)
  t.match(storedEvents(engine), [{ model: 'gpt-4o', prompt_tokens: 7, status: 'error', latency_ms: 500, metadata: { service_name: 'py' } }])
})

t.test('more GenAI spans than LLMSCOPE_MAX_BATCH in one request → 413, nothing stored', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_MAX_BATCH: '2' } })
  const res = await post(app, JSON.stringify(request(span(), span(), span())))
  t.equal(res.statusCode, 413)
  t.equal(res.json().code, 'LLMS_ERR_BATCH_TOO_LARGE')
  t.equal(engine.log.nextSeq, 0)
})

t.test('metadata stays inside the configured limits instead of failing the span', async (t) => {
  for (const [env, check] of [
    [{ LLMSCOPE_METADATA_MAX_KEYS: '3' }, (m: Record<string, unknown>) => t.same(Object.keys(m), ['trace_id', 'span_id', 'span_name'])],
    [{ LLMSCOPE_METADATA_MAX_BYTES: '40' }, (m: Record<string, unknown>) => t.ok(Buffer.byteLength(JSON.stringify(m)) <= 40, JSON.stringify(m))]
  ] as const) {
    const { app, engine, close } = await makeApp(t, { inlinePricing: true, env })
    const res = await post(app, JSON.stringify(request(span({ 'gen_ai.request.temperature': { doubleValue: 0.3 }, 'gen_ai.response.id': { stringValue: 'r'.repeat(200) } }))))
    t.equal(res.statusCode, 200)
    t.same(res.json(), {}, 'accepted')
    const [e] = storedEvents(engine)
    check((e.metadata ?? {}) as Record<string, unknown>)
    await close()
  }
})

/**
 * Requests byte-for-byte as the OpenTelemetry JS exporters send them: spans made with
 * sdk-trace-base, serialised by @opentelemetry/otlp-transformer's own JsonTraceSerializer and
 * ProtobufTraceSerializer (what exporter-trace-otlp-http / -proto POST), answers read back with
 * the same serializers' deserializeResponse.
 */
import t, { type Test } from 'tap'
import { gzipSync } from 'node:zlib'
import { SpanKind, SpanStatusCode, type HrTime } from '@opentelemetry/api'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer'
import { makeApp, ingestHeaders, adminHeaders } from '../helpers/app.js'
import { storedEvents } from './helpers.js'
import { otlpStats } from '../../src/otlp/stats.js'

const T0 = 1_767_225_600 // 2026-01-01T00:00:00Z, seconds
const at = (sec: number, nanos = 0): HrTime => [T0 + sec, nanos]

/** Four spans as an app instrumented with the OTel JS SDK would export them. */
async function exportedSpans(): Promise<ReadableSpan[]> {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'node-app', 'deployment.environment.name': 'test' }),
    spanProcessors: [new SimpleSpanProcessor(exporter)]
  })
  const tracer = provider.getTracer('@traceloop/instrumentation-openai', '0.12.0')

  // 1. An OpenAI chat call (OpenLLMetry JS spelling): JS numbers → intValue / doubleValue.
  const chat = tracer.startSpan('openai.chat', {
    kind: SpanKind.CLIENT,
    startTime: at(0, 250_000_000),
    attributes: {
      'gen_ai.system': 'OpenAI',
      'llm.request.type': 'chat',
      'gen_ai.request.model': 'gpt-4o',
      'gen_ai.request.temperature': 0.5,
      'gen_ai.response.model': 'gpt-4o-2024-08-06',
      'gen_ai.usage.prompt_tokens': 1200,
      'gen_ai.usage.completion_tokens': 300,
      'gen_ai.usage.cache_read_input_tokens': 1000,
      'llm.usage.total_tokens': 1500
    }
  })
  chat.setStatus({ code: SpanStatusCode.OK })
  chat.end(at(1, 750_000_000)) // 1.5 s

  // 2. A failed Anthropic call.
  const failed = tracer.startSpan('anthropic.chat', {
    kind: SpanKind.CLIENT,
    startTime: at(10),
    attributes: { 'gen_ai.provider.name': 'anthropic', 'gen_ai.request.model': 'claude-3-5-haiku-20241022', 'gen_ai.usage.input_tokens': 40, 'gen_ai.usage.output_tokens': 0 }
  })
  failed.setStatus({ code: SpanStatusCode.ERROR, message: 'overloaded_error' })
  failed.end(at(10, 80_000_000))

  // 3. Not an LLM call.
  const http = tracer.startSpan('GET /health', { kind: SpanKind.SERVER, startTime: at(20), attributes: { 'http.request.method': 'GET' } })
  http.end(at(20, 1_000_000))

  // 4. A GenAI span with an impossible count: rejected, reported in partialSuccess.
  const bad = tracer.startSpan('openai.chat', { kind: SpanKind.CLIENT, startTime: at(30), attributes: { 'gen_ai.request.model': 'gpt-4o', 'gen_ai.usage.input_tokens': -5 } })
  bad.end(at(30, 5_000_000))

  await provider.forceFlush()
  const spans = exporter.getFinishedSpans()
  await provider.shutdown()
  return spans
}

function checkEvents(t: Test, events: ReturnType<typeof storedEvents>) {
  t.equal(events.length, 2, 'two LLM calls stored; the HTTP span ignored, the bad span rejected')
  const [chat, failed] = events
  t.match(chat, {
    timestamp: '2026-01-01T00:00:00.250Z',
    model: 'gpt-4o-2024-08-06',
    provider: 'openai',
    prompt_tokens: 1200,
    completion_tokens: 300,
    total_tokens: 1500,
    cached_tokens: 1000,
    latency_ms: 1500,
    status: 'success',
    unpriced: false
  })
  t.match(chat.metadata, { service_name: 'node-app', environment: 'test', instrumentation: '@traceloop/instrumentation-openai', temperature: 0.5, span_name: 'openai.chat' })
  t.match(chat.metadata?.trace_id, /^[0-9a-f]{32}$/)
  t.match(chat.metadata?.span_id, /^[0-9a-f]{16}$/)
  t.match(failed, { model: 'claude-3-5-haiku-20241022', provider: 'anthropic', prompt_tokens: 40, status: 'error', latency_ms: 80, timestamp: '2026-01-01T00:00:10.000Z' })
  t.equal(failed.metadata?.status_message, 'overloaded_error')
}

t.test('an OTLP/JSON request from the OTel JS SDK serializer is ingested; partial success read back by the SDK', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const body = JsonTraceSerializer.serializeRequest(await exportedSpans())!
  const res = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...ingestHeaders, 'content-type': 'application/json' }, payload: Buffer.from(body) })
  t.equal(res.statusCode, 200, res.body)
  t.match(res.headers['content-type'], /^application\/json/)
  const answer = JsonTraceSerializer.deserializeResponse(res.rawPayload)
  t.equal(String(answer.partialSuccess?.rejectedSpans), '1')
  t.match(answer.partialSuccess?.errorMessage, /1 of 4 spans rejected: span [0-9a-f]{16} "openai.chat": gen_ai.usage.input_tokens is not a non-negative integer/)
  checkEvents(t, storedEvents(engine))
  t.same(otlpStats(engine), { requests: 1, spans: 4, ingested: 2, ignored: 1, rejected: 1, badRequests: 0 })
  t.equal(engine.log.stats.appends, 1, 'both events in one commit')
})

t.test('an OTLP/protobuf request from the OTel JS SDK serializer is ingested, gzip or not; protobuf answer', async (t) => {
  for (const gzip of [false, true]) {
    const { app, engine, close } = await makeApp(t, { inlinePricing: true })
    const raw = Buffer.from(ProtobufTraceSerializer.serializeRequest(await exportedSpans())!)
    const headers: Record<string, string> = { ...ingestHeaders, 'content-type': 'application/x-protobuf' }
    if (gzip) headers['content-encoding'] = 'gzip'
    const res = await app.inject({ method: 'POST', url: '/v1/traces', headers, payload: gzip ? gzipSync(raw) : raw })
    t.equal(res.statusCode, 200, `gzip=${gzip}`)
    t.equal(res.headers['content-type'], 'application/x-protobuf')
    const answer = ProtobufTraceSerializer.deserializeResponse(res.rawPayload)
    t.equal(Number(answer.partialSuccess?.rejectedSpans), 1)
    t.match(answer.partialSuccess?.errorMessage, /gen_ai.usage.input_tokens is not a non-negative integer/)
    checkEvents(t, storedEvents(engine))
    await close()
  }
})

t.test('over real HTTP: a gzipped OTLP/JSON export to a listening server, then analytics see it', async (t) => {
  const { app } = await makeApp(t, { inlinePricing: true })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const body = gzipSync(Buffer.from(JsonTraceSerializer.serializeRequest(await exportedSpans())!))
  const res = await fetch(`${url}/v1/traces`, { method: 'POST', headers: { ...ingestHeaders, 'content-type': 'application/json', 'content-encoding': 'gzip' }, body })
  t.equal(res.status, 200)
  t.equal(((await res.json()) as { partialSuccess: { rejectedSpans: string } }).partialSuccess.rejectedSpans, '1')
  const m = (await (await fetch(`${url}/analytics/metrics`, { headers: adminHeaders })).json()) as Record<string, number>
  t.equal(m.total_requests, 2)
  t.equal(m.error_count, 1)
  t.equal(m.cached_tokens, 1000)
})

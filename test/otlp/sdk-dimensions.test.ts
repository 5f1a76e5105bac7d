/**
 * Dimensions as the OTel JS SDK really serialises them: string arrays (`langfuse.trace.tags`)
 * become `arrayValue`, JS integers `intValue`, and resource attributes ride on the resource —
 * over OTLP/JSON and protobuf alike.
 */
import t from 'tap'
import { SpanKind, type HrTime } from '@opentelemetry/api'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer'
import { makeApp, ingestHeaders } from '../helpers/app.js'
import { storedEvents } from './helpers.js'

const T0 = 1_767_225_600
const at = (sec: number): HrTime => [T0 + sec, 0]

async function exportedSpans(): Promise<ReadableSpan[]> {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({
    // A session id set once for the process, on the resource.
    resource: resourceFromAttributes({ 'service.name': 'node-app', 'session.id': 'resource-session' }),
    spanProcessors: [new SimpleSpanProcessor(exporter)]
  })
  const tracer = provider.getTracer('@opentelemetry/instrumentation-openai', '0.1.0')
  const attrs = { 'gen_ai.operation.name': 'chat', 'gen_ai.provider.name': 'openai', 'gen_ai.request.model': 'gpt-4o', 'gen_ai.usage.input_tokens': 100, 'gen_ai.usage.output_tokens': 10 }
  tracer
    .startSpan('chat gpt-4o', {
      kind: SpanKind.CLIENT,
      startTime: at(0),
      attributes: { ...attrs, 'user.id': 'u_js', 'session.id': 'span-session', 'langfuse.trace.tags': ['alpha', 'beta', 'alpha'], 'langfuse.trace.metadata.feature': 'search' }
    })
    .end(at(1))
  tracer
    .startSpan('chat gpt-4o', { kind: SpanKind.CLIENT, startTime: at(5), attributes: { ...attrs, 'enduser.id': 4242, 'tag.tags': ['solo'] } })
    .end(at(6))
  await provider.forceFlush()
  const spans = exporter.getFinishedSpans()
  await provider.shutdown()
  return spans
}

for (const encoding of ['json', 'protobuf'] as const) {
  t.test(`OTLP/${encoding} from the OTel JS SDK: user_id, session_id (span, then resource), tags`, async (t) => {
    const { app, engine } = await makeApp(t, { inlinePricing: true })
    const spans = await exportedSpans()
    const payload = Buffer.from(encoding === 'json' ? JsonTraceSerializer.serializeRequest(spans)! : ProtobufTraceSerializer.serializeRequest(spans)!)
    const res = await app.inject({
      method: 'POST',
      url: '/v1/traces',
      headers: { ...ingestHeaders, 'content-type': encoding === 'json' ? 'application/json' : 'application/x-protobuf' },
      payload
    })
    t.equal(res.statusCode, 200)
    const [a, b] = storedEvents(engine)
    t.match(a, { user_id: 'u_js', session_id: 'span-session', tags: ['alpha', 'beta'], metadata: { feature: 'search' } })
    t.match(b, { user_id: '4242', session_id: 'resource-session', tags: ['solo'] })
  })
}

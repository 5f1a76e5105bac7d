/**
 * OTLP exactly once (DESIGN §7, Idempotency): a span's event id is `${traceId}-${spanId}`, so
 * an exporter that sends a batch again (its retry after a lost answer) stores nothing new —
 * JSON or protobuf alike — while spans without ids are stored each time.
 */
import t from 'tap'
import { makeApp, ingestHeaders } from '../helpers/app.js'
import { protobufOf, storedEvents, type Json } from './helpers.js'
import { otlpStats } from '../../src/otlp/stats.js'
import { spanEventId } from '../../src/otlp/ingest.js'

const TRACE = '5b8efff798038103d269b633813fc60c'

function span(spanId: string, traceId = TRACE, model = 'gpt-4o'): Json {
  return {
    traceId,
    spanId,
    name: 'chat',
    startTimeUnixNano: '1767225600000000000',
    endTimeUnixNano: '1767225600500000000',
    attributes: [
      { key: 'gen_ai.system', value: { stringValue: 'openai' } },
      { key: 'gen_ai.request.model', value: { stringValue: model } },
      { key: 'gen_ai.usage.input_tokens', value: { intValue: '100' } },
      { key: 'gen_ai.usage.output_tokens', value: { intValue: 20 } }
    ]
  }
}
const request = (...spans: Json[]): Json => ({ resourceSpans: [{ resource: { attributes: [] }, scopeSpans: [{ scope: { name: 'test' }, spans }] }] })

t.test('a span sent again is a no-op: same event, nothing stored twice (JSON and protobuf)', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const body = request(span('eee19b7ec3c1b174'), span('eee19b7ec3c1b175'))
  const json = () => a.app.inject({ method: 'POST', url: '/v1/traces', headers: { ...ingestHeaders, 'content-type': 'application/json' }, payload: body as object })
  const proto = () => a.app.inject({ method: 'POST', url: '/v1/traces', headers: { ...ingestHeaders, 'content-type': 'application/x-protobuf' }, payload: protobufOf(body) })
  t.equal((await json()).statusCode, 200)
  t.equal((await json()).statusCode, 200, 'the retry is answered as a success')
  t.equal((await proto()).statusCode, 200, 'the same spans in protobuf (binary ids → the same hex)')
  const events = storedEvents(a.engine)
  t.equal(events.length, 2)
  t.same(events.map((e) => e.client_id), [`${TRACE}-eee19b7ec3c1b174`, `${TRACE}-eee19b7ec3c1b175`])
  t.match(otlpStats(a.engine), { requests: 3, spans: 6, ingested: 2, ignored: 4 }, 'the copies counted as ignored')
  // A new span of the same trace is a new event.
  await a.app.inject({ method: 'POST', url: '/v1/traces', headers: { ...ingestHeaders, 'content-type': 'application/json' }, payload: request(span('eee19b7ec3c1b176')) as object })
  t.equal(storedEvents(a.engine).length, 3)
})

t.test('a span without ids cannot be recognised: stored each time it is sent', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const body = request(span('', ''))
  for (let i = 0; i < 2; i++) await a.app.inject({ method: 'POST', url: '/v1/traces', headers: { ...ingestHeaders, 'content-type': 'application/json' }, payload: body as object })
  t.same(storedEvents(a.engine).map((e) => e.client_id), [null, null])
})

t.test('spanEventId: hex ids as they are, others made valid and at most 64 characters', async (t) => {
  t.equal(spanEventId(TRACE, 'eee19b7ec3c1b174'), `${TRACE}-eee19b7ec3c1b174`)
  t.equal(spanEventId('', 'eee19b7ec3c1b174'), null)
  t.equal(spanEventId(TRACE, ''), null)
  t.equal(spanEventId('W47/95gDgQPSabYzgT/GDA==', '7uGbfsPBsXQ='), 'W47_95gDgQPSabYzgT_GDA__-7uGbfsPBsXQ_', 'base64 from a non-conforming sender')
  const long = spanEventId('a'.repeat(64), 'b'.repeat(16))!
  t.equal(long.length, 64)
  t.match(long, /^[A-Za-z0-9_-]{1,64}$/)
})

/**
 * Per-route body limits (src/http/body-limits.ts): a single event is refused past what one
 * valid event can be — with a 413, before its body is read — while the batch and OTLP routes
 * still take large valid bodies, and the admin routes take small ones only.
 */
import { connect } from 'node:net'
import t from 'tap'
import { makeApp, adminHeaders, event } from '../helpers/app.js'
import { ADMIN_BODY_LIMIT, bodyLimits, eventBodyLimit } from '../../src/http/body-limits.js'
import { loadConfig } from '../../src/config.js'

const MiB = 1024 * 1024

/** `s` with every character written as a `\uXXXX` escape (still the same JSON string). */
const escaped = (s: string) => [...s].map((c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')).join('')
/** A JSON string literal of `s`, fully escaped. */
const lit = (s: string) => `"${escaped(s)}"`

t.test('the limits: one event, maxBatch events, OTLP and admin under the configured ceiling', async (t) => {
  const d = bodyLimits(loadConfig({}))
  t.equal(d.event, 6 * (16 * 1024 + 2560) + 16 * 1024, 'one event at the default metadata limit: 130,048 bytes')
  t.equal(d.event, eventBodyLimit({ maxBytes: 16 * 1024, maxDepth: 8, maxKeys: 256 }))
  t.equal(d.batch, 32 * MiB, '10,000 such events need more than the 32 MiB ceiling')
  t.equal(d.otlp, 32 * MiB)
  t.equal(d.other, ADMIN_BODY_LIMIT)

  const small = bodyLimits(loadConfig({ LLMSCOPE_MAX_BATCH: '5', LLMSCOPE_METADATA_MAX_BYTES: '1024' }))
  t.equal(small.event, 6 * (1024 + 2560) + 16 * 1024)
  t.equal(small.batch, 5 * (small.event + 1) + 2, 'a batch: maxBatch events, commas and brackets')

  const capped = bodyLimits(loadConfig({ LLMSCOPE_BODY_LIMIT_BYTES: '2048' }))
  t.same(capped, { event: 2048, batch: 2048, otlp: 2048, other: 2048 }, 'LLMSCOPE_BODY_LIMIT_BYTES is every route\'s ceiling')
})

t.test('a 6 MB single event → 413 in the error shape, nothing stored', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const before = engine.stats().log.nextSeq
  const res = await app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event({ metadata: { pad: 'x'.repeat(6 * MiB) } }) })
  t.equal(res.statusCode, 413)
  t.same(res.json(), {
    statusCode: 413,
    error: 'Payload Too Large',
    code: 'FST_ERR_CTP_BODY_TOO_LARGE',
    message: 'Request body is too large',
    details: [{ path: '(body)', message: 'Request body is too large' }]
  })
  t.equal(engine.stats().log.nextSeq, before, 'no event stored')
})

t.test('an oversized single event is refused unread: the 413 arrives before any byte of its body is sent', async (t) => {
  const { app } = await makeApp(t, { inlinePricing: true })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let got = ''
    socket.setEncoding('utf8')
    socket.on('error', reject)
    socket.on('data', (d: string) => {
      got += d
      const head = got.indexOf('\r\n\r\n')
      const length = /content-length: (\d+)/i.exec(got)
      // A whole answer: its headers and as many body bytes as they announce.
      if (head !== -1 && length !== null && Buffer.byteLength(got.slice(head + 4)) >= Number(length[1])) {
        socket.destroy()
        resolve(got)
      }
    })
    // Headers only: the announced 6 MB never follow. A server that read the body would wait for them.
    socket.write(`POST /events/ingest HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: ${adminHeaders['x-api-key']}\r\ncontent-type: application/json\r\ncontent-length: ${6 * MiB}\r\n\r\n`)
  })
  t.match(answer, /^HTTP\/1\.1 413 /)
  const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))
  t.equal(body.code, 'FST_ERR_CTP_BODY_TOO_LARGE')
})

t.test('the largest valid event — every string at its longest, every character escaped — is accepted', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const maxBytes = 16 * 1024
  const name = (n: number, c = 'a') => c.repeat(n)
  const tags = Array.from({ length: 16 }, (_, i) => String(i).padStart(64, 't'))
  // {"p":"…"}: braces, the key with its quotes and colon, the value's quotes: 8 bytes + the value.
  const pad = name(maxBytes - 8, 'm')
  const body = '{' + [
    `"id":${lit(name(64, 'i'))}`,
    `"client_id":${lit(name(64, 'c'))}`,
    `"timestamp":${lit('2026-01-01T00:00:00.000Z')}`,
    `"received_at":${lit('2026-01-01T00:00:00.000Z')}`,
    `"model":${lit(name(256))}`,
    `"provider":${lit(name(64, 'p'))}`,
    `"user_id":${lit(name(256, 'u'))}`,
    `"session_id":${lit(name(256, 's'))}`,
    `"tags":[${tags.map(lit).join(',')}]`,
    `"prompt_tokens":500000000000,"completion_tokens":500000000000,"total_tokens":1000000000000`,
    `"cached_tokens":1000000000000,"cache_write_tokens":1000000000000,"reasoning_tokens":1000000000000`,
    `"latency_ms":604800000,"ttft_ms":604800000,"status":${lit('success')},"cost":1000000`,
    `"metadata":{"p":${lit(pad)}}`
  ].join(',') + '}'
  const limit = bodyLimits(engine.config).event
  t.ok(Buffer.byteLength(body) <= limit, `${Buffer.byteLength(body)} bytes fit the limit of ${limit}`)
  t.ok(Buffer.byteLength(body) > 0.75 * limit, 'and it is close to it (the limit is not loose)')
  const res = await app.inject({ method: 'POST', url: '/events/ingest', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload: body })
  t.equal(res.statusCode, 202, res.body)
  const got = await app.inject({ url: `/events/${res.json().event_id}`, headers: adminHeaders })
  t.equal(got.json().metadata.p.length, maxBytes - 8, 'its metadata is at the metadata limit')
})

t.test('the batch route still takes a valid batch far larger than one event may be (JSON and NDJSON)', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const events = Array.from({ length: 400 }, (_, i) => event({ metadata: { i, pad: 'x'.repeat(15_000) } }))
  const json = JSON.stringify(events)
  t.ok(json.length > 40 * bodyLimits(engine.config).event, `${json.length} bytes`)
  const a = await app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload: json })
  t.equal(a.statusCode, 202, a.body.slice(0, 300))
  t.equal(a.json().accepted, 400)
  const nd = events.map((e) => JSON.stringify(e)).join('\n')
  const b = await app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/x-ndjson' }, payload: nd })
  t.equal(b.statusCode, 202, b.body.slice(0, 300))
  t.equal(b.json().accepted, 400)
})

t.test('a batch over maxBatch events\' worth of bytes → 413 unread (small LLMSCOPE_MAX_BATCH)', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_MAX_BATCH: '2' } })
  const before = engine.stats().log.nextSeq
  const limit = bodyLimits(engine.config).batch
  const res = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [event({ metadata: { pad: 'x'.repeat(limit) } })] })
  t.equal(res.statusCode, 413)
  t.equal(res.json().code, 'FST_ERR_CTP_BODY_TOO_LARGE')
  t.equal(engine.stats().log.nextSeq, before)
})

t.test('OTLP keeps its own limit: a 1 MB export request is taken', async (t) => {
  const { app, engine } = await makeApp(t, { inlinePricing: true })
  const span = {
    traceId: 'f'.repeat(32),
    spanId: '1'.repeat(16),
    name: 'openai.chat',
    startTimeUnixNano: '1767225600000000000',
    endTimeUnixNano: '1767225600500000000',
    attributes: [
      { key: 'gen_ai.system', value: { stringValue: 'openai' } },
      { key: 'gen_ai.request.model', value: { stringValue: 'gpt-4o' } },
      { key: 'gen_ai.usage.input_tokens', value: { intValue: '100' } },
      { key: 'gen_ai.usage.output_tokens', value: { intValue: 20 } }
    ]
  }
  // A non-GenAI span with a large attribute: counted and dropped, but part of a valid request.
  const other = { traceId: 'e'.repeat(32), spanId: '2'.repeat(16), name: 'http', startTimeUnixNano: '1767225600000000000', endTimeUnixNano: '1767225600500000000', attributes: [{ key: 'http.body', value: { stringValue: 'y'.repeat(MiB) } }] }
  const payload = JSON.stringify({ resourceSpans: [{ resource: { attributes: [] }, scopeSpans: [{ scope: { name: 't' }, spans: [span, other] }] }] })
  t.ok(payload.length > bodyLimits(engine.config).event)
  const res = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload })
  t.equal(res.statusCode, 200, res.body.slice(0, 300))
  t.same(res.json(), {})
})

t.test('admin routes take small bodies only: a 300 KiB rule → 413, a normal one → 201', async (t) => {
  const { app } = await makeApp(t, { inlinePricing: true })
  const rule = { name: 'cost', condition: 'cost_per_hour', threshold: 10 }
  const big = await app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: { ...rule, name: 'x'.repeat(300 * 1024) } })
  t.equal(big.statusCode, 413)
  t.equal(big.json().code, 'FST_ERR_CTP_BODY_TOO_LARGE')
  const ok = await app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: rule })
  t.equal(ok.statusCode, 201, ok.body)
})

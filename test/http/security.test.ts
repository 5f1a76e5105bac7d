/**
 * Rate limits (per key; per address for missing or wrong keys), overload (503 + Retry-After,
 * recovering by itself), CORS, security headers, error bodies without stacks or paths, and
 * keys kept out of the logs.
 */
import t from 'tap'
import { Writable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import { WebSocket } from 'ws'
import { loadConfig } from '../../src/config.js'
import { buildApp, loggerOptions } from '../../src/app.js'
import { clientAddress } from '../../src/http/security.js'
import { makeApp, adminHeaders, readHeaders, ingestHeaders, event, ADMIN_KEY, INGEST_KEY, READ_KEY } from '../helpers/app.js'
import type { FastifyRequest } from 'fastify'
import { llmsError } from '../../src/errors.js'

t.test('rate limit per key: 429 + Retry-After in our error shape past the limit; other keys unaffected', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_RATE_LIMIT_MAX: '5', LLMSCOPE_RATE_LIMIT_WINDOW_S: '30' } })
  for (let i = 0; i < 5; i++) t.equal((await a.app.inject({ url: '/analytics/metrics', headers: readHeaders })).statusCode, 200)
  const res = await a.app.inject({ url: '/analytics/metrics', headers: readHeaders })
  t.equal(res.statusCode, 429)
  const b = res.json()
  t.same(Object.keys(b).sort(), ['code', 'details', 'error', 'message', 'statusCode'])
  t.equal(b.code, 'LLMS_ERR_RATE_LIMITED')
  t.equal(b.error, 'Too Many Requests')
  const retry = Number(res.headers['retry-after'])
  t.ok(retry >= 1 && retry <= 30, `Retry-After ${retry} within the window`)
  t.equal((await a.app.inject({ method: 'POST', url: '/events/ingest', headers: ingestHeaders, payload: event() })).statusCode, 202, 'another key has its own bucket')
  t.equal((await a.app.inject({ url: '/health' })).statusCode, 200, 'public routes are not limited')
  // A limited request is refused before it does anything: its events are not stored.
  for (let i = 0; i < 4; i++) await a.app.inject({ method: 'POST', url: '/events/ingest', headers: ingestHeaders, payload: event() })
  const over = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: ingestHeaders, payload: event() })
  t.equal(over.statusCode, 429)
  t.equal((await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_requests, 5)
})

t.test('refusals come before the body is read: a wrong key or a spent limit wins over a bad body', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_RATE_LIMIT_MAX: '1', LLMSCOPE_BODY_LIMIT_BYTES: '2048' } })
  const huge = JSON.stringify({ model: 'x'.repeat(10_000) })
  const wrong = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { 'x-api-key': 'wrong-key-123456', 'content-type': 'application/json' }, payload: huge })
  t.equal(wrong.statusCode, 401, 'not 413: the body was never read')
  const forbidden = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { ...readHeaders, 'content-type': 'application/json' }, payload: '{not json' })
  t.equal(forbidden.statusCode, 403, 'not 400')
  t.equal((await a.app.inject({ method: 'POST', url: '/events/ingest', headers: ingestHeaders, payload: event() })).statusCode, 202)
  const limited = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { ...ingestHeaders, 'content-type': 'application/json' }, payload: huge })
  t.equal(limited.statusCode, 429, 'not 413')
})

t.test('defaults and configuration: per-key limit off, failure limit 120 a minute, no CORS', async (t) => {
  const c = loadConfig({})
  t.same(c.rateLimit, { max: 0, windowMs: 60_000, authFailureMax: 120 })
  t.same(c.corsOrigins, [])
  t.same(loadConfig({ LLMSCOPE_RATE_LIMIT_MAX: '600', LLMSCOPE_RATE_LIMIT_WINDOW_S: '10', LLMSCOPE_AUTH_FAILURE_MAX: '0' }).rateLimit, { max: 600, windowMs: 10_000, authFailureMax: 0 })
  t.same(loadConfig({ LLMSCOPE_CORS_ORIGINS: ' https://a.example , http://localhost:5173/ ' }).corsOrigins, ['https://a.example', 'http://localhost:5173'])
  for (const [name, value] of [['LLMSCOPE_RATE_LIMIT_MAX', '-1'], ['LLMSCOPE_RATE_LIMIT_MAX', 'lots'], ['LLMSCOPE_RATE_LIMIT_WINDOW_S', '0'], ['LLMSCOPE_AUTH_FAILURE_MAX', '1.5']]) {
    t.throws(() => loadConfig({ [name]: value }), new RegExp(`^invalid configuration: ${name} `), `${name}=${value}`)
  }
  const a = await makeApp(t, { inlinePricing: true })
  const codes = new Set<number>()
  for (let i = 0; i < 300; i++) codes.add((await a.app.inject({ url: '/analytics/metrics', headers: readHeaders })).statusCode)
  t.same([...codes], [200])
})

t.test('a burst of wrong keys is limited by address and does not starve real clients', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_AUTH_FAILURE_MAX: '20', LLMSCOPE_RATE_LIMIT_MAX: '1000' } })
  const wrong = Array.from({ length: 400 }, (_, i) => a.app.inject({ url: '/analytics/metrics', headers: { 'x-api-key': `wrong-key-${i}-xxxxxxxx` } }))
  const none = Array.from({ length: 50 }, () => a.app.inject({ method: 'POST', url: '/events/ingest', payload: event() }))
  const real = Array.from({ length: 100 }, (_, i) =>
    i % 2 === 0
      ? a.app.inject({ url: '/analytics/metrics', headers: readHeaders })
      : a.app.inject({ method: 'POST', url: '/events/ingest', headers: ingestHeaders, payload: event() })
  )
  const [w, n, r] = await Promise.all([Promise.all(wrong), Promise.all(none), Promise.all(real)])
  const bad = [...w, ...n]
  t.equal(bad.filter((x) => x.statusCode === 401).length, 20, 'the first 20 failures are 401')
  t.equal(bad.filter((x) => x.statusCode === 429).length, bad.length - 20, 'the rest 429')
  t.ok(bad.filter((x) => x.statusCode === 429).every((x) => x.json().code === 'LLMS_ERR_RATE_LIMITED' && Number(x.headers['retry-after']) >= 1))
  t.same(r.map((x) => x.statusCode).sort(), [...Array(50).fill(200), ...Array(50).fill(202)], 'every real request succeeded')
  // The same address with a valid key is still served after the burst.
  t.equal((await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).statusCode, 200)
  t.equal((await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_requests, 50)
})

t.test('the client address copes without a socket address (injectWS has none)', async (t) => {
  t.equal(clientAddress({ ip: '10.0.0.1' } as FastifyRequest), '10.0.0.1')
  t.equal(clientAddress({ ip: undefined, socket: { remoteAddress: '10.0.0.2' } } as unknown as FastifyRequest), '10.0.0.2')
  t.equal(clientAddress({ ip: undefined, socket: undefined } as unknown as FastifyRequest), 'unknown')
  const a = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_AUTH_FAILURE_MAX: '2' } })
  await a.app.ready()
  const statuses: string[] = []
  for (let i = 0; i < 4; i++) {
    await a.app.injectWS('/ws?api_key=wrong-key-123456').then(
      (ws) => {
        ws.terminate()
        statuses.push('open')
      },
      (err: Error) => statuses.push(err.message)
    )
  }
  t.same(statuses, ['Unexpected server response: 401', 'Unexpected server response: 401', 'Unexpected server response: 429', 'Unexpected server response: 429'])
})

t.test('overload: 503 + Retry-After past the high-water mark, nothing stored, recovers by itself', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_HIGH_WATER_EVENTS: '10' } })
  const batch = (n: number) => Array.from({ length: n }, () => event())
  const res = await a.app.inject({ method: 'POST', url: '/events/batch', headers: ingestHeaders, payload: batch(11) })
  t.equal(res.statusCode, 503)
  t.equal(res.json().code, 'LLMS_ERR_OVERLOADED')
  t.ok(Number(res.headers['retry-after']) >= 1)
  // Many concurrent requests: some are refused, every accepted one is stored, none is lost.
  const all = await Promise.all(Array.from({ length: 40 }, () => a.app.inject({ method: 'POST', url: '/events/batch', headers: ingestHeaders, payload: batch(4) })))
  const accepted = all.filter((x) => x.statusCode === 202)
  t.ok(all.every((x) => x.statusCode === 202 || (x.statusCode === 503 && x.headers['retry-after'] !== undefined)), 'only 202 or 503 + Retry-After')
  t.ok(accepted.length > 0, `${accepted.length} of 40 accepted`)
  await a.engine.sync()
  t.equal((await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_requests, accepted.length * 4, 'exactly the accepted events are counted')
  t.equal((await a.app.inject({ method: 'POST', url: '/events/batch', headers: ingestHeaders, payload: batch(10) })).statusCode, 202, 'recovers once drained')
})

t.test('CORS: none by default; configured origins get headers, Retry-After exposed, preflight answered', async (t) => {
  const none = await makeApp(t, { inlinePricing: true })
  const r0 = await none.app.inject({ url: '/analytics/metrics', headers: { ...readHeaders, origin: 'https://evil.example' } })
  t.equal(r0.statusCode, 200)
  t.equal(r0.headers['access-control-allow-origin'], undefined, 'same-origin only by default')

  const a = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_CORS_ORIGINS: 'https://dash.example.com, http://localhost:5173' } })
  const ok = await a.app.inject({ url: '/analytics/metrics', headers: { ...readHeaders, origin: 'https://dash.example.com' } })
  t.equal(ok.headers['access-control-allow-origin'], 'https://dash.example.com')
  t.match(String(ok.headers['access-control-expose-headers']), /retry-after/i)
  const evil = await a.app.inject({ url: '/analytics/metrics', headers: { ...readHeaders, origin: 'https://evil.example' } })
  t.equal(evil.headers['access-control-allow-origin'], undefined)
  const pre = await a.app.inject({ method: 'OPTIONS', url: '/events/ingest', headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-api-key' } })
  t.equal(pre.statusCode, 204)
  t.equal(pre.headers['access-control-allow-origin'], 'http://localhost:5173')
  t.match(String(pre.headers['access-control-allow-headers']), /x-api-key/)
  t.match(String(pre.headers['access-control-allow-methods']), /PATCH/)
  const denied = await a.app.inject({ url: '/analytics/metrics', headers: { origin: 'https://dash.example.com' } })
  t.equal(denied.statusCode, 401)
  t.equal(denied.headers['access-control-allow-origin'], 'https://dash.example.com', 'errors carry CORS headers, so the browser can read them')

  const star = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_CORS_ORIGINS: '*' } })
  t.equal((await star.app.inject({ url: '/health', headers: { origin: 'https://any.example' } })).headers['access-control-allow-origin'], '*')

  for (const bad of ['https://x.example/path', 'ftp://x.example', 'not a url']) {
    t.throws(() => loadConfig({ LLMSCOPE_CORS_ORIGINS: bad }), /LLMSCOPE_CORS_ORIGINS/, bad)
  }
})

t.test('security headers on answers and errors; the CSP lets the dashboard talk to its own origin only', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  for (const res of [await a.app.inject({ url: '/health' }), await a.app.inject({ url: '/analytics/metrics' }), await a.app.inject({ url: '/nope' })]) {
    t.equal(res.headers['x-content-type-options'], 'nosniff')
    t.equal(res.headers['x-frame-options'], 'SAMEORIGIN')
    t.equal(res.headers['referrer-policy'], 'no-referrer')
    t.equal(res.headers['cross-origin-opener-policy'], 'same-origin')
    t.equal(res.headers['cross-origin-resource-policy'], 'same-origin')
    t.equal(res.headers['strict-transport-security'], undefined, 'no HSTS from a plain-HTTP server')
    const csp = String(res.headers['content-security-policy'])
    t.match(csp, /default-src 'self'/)
    t.match(csp, /script-src 'self'(;|$)/)
    t.match(csp, /style-src 'self'(;|$)/)
    t.match(csp, /connect-src 'self' ws: wss:/)
    t.match(csp, /object-src 'none'/)
    t.notMatch(csp, /unsafe-inline|unsafe-eval|upgrade-insecure-requests/)
    t.equal(res.headers['x-powered-by'], undefined)
  }
})

t.test('no error body carries a stack trace or an internal path, 500s included', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  a.app.get('/test-only/throws', async () => {
    throw new Error(`boom at ${process.cwd()}/src/secret.ts:12:3 in node_modules/x`)
  })
  a.app.get('/test-only/throws-typed', async () => {
    const err = new TypeError("Cannot read properties of undefined (reading 'x')") as Error & { statusCode?: number }
    err.statusCode = 502
    throw err
  })
  a.app.get('/test-only/storage', async () => {
    throw llmsError('LLMS_ERR_STORAGE', `could not write the event log: ENOSPC: no space left on device, write '${process.cwd()}/data/llmscope.lmdb'`, { retryAfter: 1 })
  })
  const storage = await a.app.inject({ url: '/test-only/storage' })
  t.equal(storage.statusCode, 503)
  t.equal(storage.json().code, 'LLMS_ERR_STORAGE')
  t.equal(storage.headers['retry-after'], '1')
  const answers = [
    storage,
    await a.app.inject({ url: '/test-only/throws' }),
    await a.app.inject({ url: '/test-only/throws-typed' }),
    await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload: '{"model":' }),
    await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload: '' }),
    await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { ...adminHeaders, 'content-type': 'text/xml' }, payload: '<a/>' }),
    await a.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/x-ndjson' }, payload: '{"model":"a"}\n{bad' }),
    await a.app.inject({ url: '/analytics/metrics?start_time=yesterday', headers: adminHeaders }),
    await a.app.inject({ url: '/events/evt_x', headers: adminHeaders }),
    await a.app.inject({ url: '/analytics/metrics' }),
    await a.app.inject({ url: '/../../etc/passwd' })
  ]
  t.equal(answers[1].statusCode, 500)
  t.same(answers[1].json(), { statusCode: 500, error: 'Internal Server Error', code: 'LLMS_ERR_INTERNAL', message: 'internal error', details: [] })
  t.equal(answers[2].statusCode, 500)
  for (const res of answers) {
    t.ok(res.statusCode >= 400, `${res.statusCode}`)
    t.match(res.headers['content-type'], /application\/json/)
    const body = res.json()
    t.equal(body.statusCode, res.statusCode)
    t.notMatch(res.body, /\bat .+:\d+:\d+/, 'no stack frame')
    t.notMatch(res.body, /"stack"/)
    t.notMatch(res.body, process.cwd())
    t.notMatch(res.body, /node_modules|\/work\/|\.ts:\d|\.js:\d/)
  }
})

t.test('keys never reach the log: headers, ?api_key=, POST /keys answers, wrong keys', async (t) => {
  let log = ''
  const stream = new Writable({
    write(chunk, _enc, cb) {
      log += chunk.toString()
      cb()
    }
  })
  const config = loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), LLMSCOPE_API_KEYS: `${ADMIN_KEY},${INGEST_KEY}:ingest,${READ_KEY}:read` })
  // trace: the most the server ever logs.
  const built = await buildApp(config, { logger: { ...(loggerOptions('trace') as object), stream }, inlinePricing: true })
  t.teardown(() => built.app.close())
  await built.engine.recover()
  const { app } = built
  const made = await app.inject({ method: 'POST', url: '/keys', headers: adminHeaders, payload: { name: 'logged?', scope: 'read' } })
  t.equal(made.statusCode, 201)
  const newKey: string = made.json().key
  await app.inject({ url: '/analytics/metrics', headers: { 'x-api-key': newKey } })
  await app.inject({ url: '/keys', headers: adminHeaders })
  await app.inject({ method: 'POST', url: '/events/ingest', headers: ingestHeaders, payload: event() })
  await app.inject({ url: '/analytics/metrics', headers: { 'x-api-key': 'wrong-secret-0123456789' } })
  await app.inject({ url: `/analytics/metrics?api_key=${READ_KEY}`, headers: readHeaders })
  await app.inject({ method: 'POST', url: '/events/ingest', headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' }, payload: `{"model":"${ADMIN_KEY}` })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const ws = new WebSocket(`ws://127.0.0.1:${(app.server.address() as AddressInfo).port}/ws?api_key=${newKey}`)
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  ws.close()
  await new Promise<void>((resolve) => ws.once('close', () => resolve()))
  await app.close()
  t.match(log, /incoming request/, 'requests were logged')
  t.match(log, /api_key=\[REDACTED\]/, 'the URL is logged, redacted')
  for (const secret of [ADMIN_KEY, INGEST_KEY, READ_KEY, newKey, 'wrong-secret-0123456789']) {
    t.notOk(log.includes(secret), `${secret.slice(0, 8)}… is not in the log`)
  }
})

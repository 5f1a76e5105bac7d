/**
 * The client against a running server (the in-process app listening on a free port), and
 * against small fake servers for what a healthy server never does: 503/429 with Retry-After,
 * dropped connections, 413, 401.
 */
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { LLMScope, type LLMScopeClientError } from '../../src/client/index.js'
import { makeApp, INGEST_KEY, adminHeaders } from '../helpers/app.js'
import { storedEvents } from '../otlp/helpers.js'

/** An app listening on 127.0.0.1:<free port>. */
async function liveServer(t: Test) {
  const built = await makeApp(t, { inlinePricing: true })
  const url = await built.app.listen({ port: 0, host: '127.0.0.1' })
  return { ...built, url }
}

interface Hit {
  at: number
  body: unknown[]
}

/** A fake server whose answers are scripted per request; records what it received. */
async function fakeServer(t: Test, answer: (n: number, body: unknown[], res: ServerResponse) => void) {
  const hits: Hit[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let data = ''
    req.on('data', (c: Buffer) => (data += c.toString()))
    req.on('end', () => {
      const body = JSON.parse(data) as unknown[]
      hits.push({ at: Date.now(), body })
      answer(hits.length, body, res)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const { port } = server.address() as { port: number }
  return { url: `http://127.0.0.1:${port}`, hits }
}

const accepted = (res: ServerResponse, n: number) => {
  res.writeHead(202, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ status: 'accepted', accepted: n, event_ids: [] }))
}

function client(t: Test, url: string, extra: Partial<ConstructorParameters<typeof LLMScope>[0]> = {}) {
  const errors: LLMScopeClientError[] = []
  const scope = new LLMScope({ url, apiKey: INGEST_KEY, flushIntervalMs: 60_000, onError: (e) => errors.push(e), ...extra })
  t.teardown(() => scope.close())
  return { scope, errors }
}

t.test('options are checked with the option named', async (t) => {
  t.throws(() => new LLMScope({ url: 'not a url', apiKey: 'k' }), /options\.url must be an absolute URL/)
  t.throws(() => new LLMScope({ url: 'http://x', apiKey: '' }), /options\.apiKey/)
  t.throws(() => new LLMScope({ url: 'http://x', apiKey: 'k', batchSize: 0 }), /options\.batchSize must be an integer >= 1, got 0/)
  t.throws(() => new LLMScope({ url: 'http://x', apiKey: 'k', maxBuffer: 1.5 }), /options\.maxBuffer/)
  t.throws(() => new LLMScope({ url: 'http://x', apiKey: 'k', maxRetries: -1 }), /options\.maxRetries must be an integer >= 0/)
})

t.test('batches by size, and flush() sends the rest; the server stores every event', async (t) => {
  const { url, engine } = await liveServer(t)
  const { scope, errors } = client(t, url, { batchSize: 2 })
  for (let i = 0; i < 5; i++) t.equal(scope.record({ model: 'gpt-4o', provider: 'openai', prompt_tokens: 10 + i, completion_tokens: 1, latency_ms: 100 }), true)
  await scope.flush()
  t.match(scope.stats(), { recorded: 5, sent: 5, buffered: 0, inFlight: 0, dropped: 0, failed: 0 })
  const events = storedEvents(engine)
  t.same(events.map((e) => e.prompt_tokens), [10, 11, 12, 13, 14], 'in record order')
  t.equal(engine.log.stats.appends, 3, 'three requests: 2 + 2 + 1')
  t.ok(events.every((e) => e.timestamp.endsWith('Z')), 'stamped at record time')
  t.same(errors, [])
})

t.test('the interval sends a partial batch without flush()', async (t) => {
  const { url, engine } = await liveServer(t)
  const { scope } = client(t, url, { batchSize: 100, flushIntervalMs: 30 })
  scope.record({ model: 'gpt-4o-mini', prompt_tokens: 3 })
  const end = Date.now() + 60_000 // generous: a busy CI machine
  while (scope.stats().sent === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
  t.equal(engine.log.nextSeq, 1)
  t.equal(scope.stats().sent, 1)
})

t.test('recordOpenAI / recordAnthropic read usage with cached and reasoning tokens', async (t) => {
  const { url, engine, app } = await liveServer(t)
  const { scope } = client(t, url)
  // Chat Completions: prompt_tokens includes the cached ones; completion includes reasoning.
  scope.recordOpenAI(
    {
      id: 'chatcmpl-1',
      object: 'chat.completion',
      model: 'o3-mini-2025-01-31',
      usage: { prompt_tokens: 2000, completion_tokens: 900, total_tokens: 2900, prompt_tokens_details: { cached_tokens: 1536 }, completion_tokens_details: { reasoning_tokens: 640 } }
    },
    { latencyMs: 1234.5, metadata: { user: 'u_1' } }
  )
  // Responses API.
  scope.recordOpenAI(
    { id: 'resp_1', object: 'response', model: 'gpt-4o-2024-08-06', usage: { input_tokens: 300, output_tokens: 50, total_tokens: 350, input_tokens_details: { cached_tokens: 128 }, output_tokens_details: { reasoning_tokens: 0 } } },
    { latencyMs: 400 }
  )
  // Anthropic: input_tokens excludes cache reads and writes.
  scope.recordAnthropic(
    { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-3-5-sonnet-20241022', usage: { input_tokens: 12, cache_creation_input_tokens: 500, cache_read_input_tokens: 2000, output_tokens: 300 } },
    { latencyMs: 2500, timestamp: '2026-01-01T00:00:00.000Z' }
  )
  t.equal(scope.recordOpenAI({ usage: { prompt_tokens: 1 } }, { latencyMs: 1 }), false, 'no model: refused, not thrown')
  await scope.flush()
  const [chat, resp, claude] = storedEvents(engine)
  t.match(chat, { model: 'o3-mini-2025-01-31', provider: 'openai', prompt_tokens: 2000, completion_tokens: 900, cached_tokens: 1536, reasoning_tokens: 640, latency_ms: 1234.5, metadata: { user: 'u_1' } })
  t.match(resp, { model: 'gpt-4o-2024-08-06', provider: 'openai', prompt_tokens: 300, completion_tokens: 50, cached_tokens: 128, reasoning_tokens: 0, latency_ms: 400 })
  t.match(claude, { model: 'claude-3-5-sonnet-20241022', provider: 'anthropic', prompt_tokens: 12, cache_write_tokens: 500, completion_tokens: 300, cached_tokens: 2000, latency_ms: 2500, timestamp: '2026-01-01T00:00:00.000Z' })
  t.equal(chat.cache_write_tokens, 0, 'no cache writes reported: 0')
  t.ok(Date.parse(chat.timestamp) <= Date.now() - 1234, 'timestamp is the call start (now − latency)')
  const m = (await app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json()
  t.equal(m.cached_tokens, 1536 + 128 + 2000)
  t.equal(scope.stats().rejected, 1)
})

t.test('track() measures latency, detects the shape, and records a failing call as an error', async (t) => {
  const { url, engine } = await liveServer(t)
  const { scope } = client(t, url)
  const message = { type: 'message', model: 'claude-3-5-haiku-20241022', usage: { input_tokens: 20, output_tokens: 5 } }
  const out = await scope.track(async () => {
    await new Promise((r) => setTimeout(r, 60))
    return message
  })
  t.equal(out, message, 'the response is returned untouched')
  await t.rejects(
    scope.track(
      async () => {
        throw new Error('upstream 500')
      },
      { model: 'gpt-4o', provider: 'openai' }
    ),
    /upstream 500/
  )
  await scope.flush()
  const [ok, failed] = storedEvents(engine)
  t.match(ok, { model: 'claude-3-5-haiku-20241022', provider: 'anthropic', prompt_tokens: 20, completion_tokens: 5, status: 'success' })
  t.ok(ok.latency_ms >= 55 && ok.latency_ms < 2000, `latency measured: ${ok.latency_ms}`)
  t.match(failed, { model: 'gpt-4o', status: 'error', prompt_tokens: 0 })
})

t.test('dimensions: record, the helpers and track() send user_id, session_id, tags and metadata as the wire names them', async (t) => {
  const { url, hits } = await fakeServer(t, (_n, body, res) => accepted(res, body.length))
  const { scope, errors } = client(t, url)
  const dims = { userId: 'u_1', sessionId: 'sess_1', tags: ['support', 'beta'], metadata: { feature: 'triage', tier: 2 } }
  const wire = { user_id: 'u_1', session_id: 'sess_1', tags: ['support', 'beta'], metadata: { feature: 'triage', tier: 2 } }
  const at = '2026-01-01T00:00:00.000Z'
  scope.record({ model: 'my-model', timestamp: at, prompt_tokens: 1, user_id: 'u_0', session_id: 's_0', tags: ['raw'], metadata: { k: 'v' } })
  scope.recordOpenAI({ object: 'chat.completion', model: 'gpt-4o', usage: { prompt_tokens: 10, completion_tokens: 2 } }, { latencyMs: 100, timestamp: at, ...dims })
  scope.recordAnthropic({ type: 'message', model: 'claude-3-5-haiku-20241022', usage: { input_tokens: 3, output_tokens: 1 } }, { latencyMs: 50, timestamp: at, userId: 'u_2' })
  await scope.track(async () => ({ object: 'chat.completion', model: 'gpt-4o-mini', usage: { prompt_tokens: 4, completion_tokens: 1 } }), { sessionId: 'sess_9', tags: ['tracked'] })
  await t.rejects(
    scope.track(
      async () => {
        throw new Error('boom')
      },
      { model: 'gpt-4o', ...dims }
    )
  )
  await scope.flush()
  const sent = hits.flatMap((h) => h.body) as Array<Record<string, unknown>>
  t.equal(sent.length, 5)
  t.same(sent[0], { model: 'my-model', timestamp: at, prompt_tokens: 1, user_id: 'u_0', session_id: 's_0', tags: ['raw'], metadata: { k: 'v' }, id: sent[0].id }, 'record() sends the event as given, plus its id')
  t.ok(sent.every((e) => typeof e.id === 'string' && /^[A-Za-z0-9_-]{21}$/.test(e.id)), 'every event gets a nanoid id')
  t.equal(new Set(sent.map((e) => e.id)).size, sent.length, 'one each')
  t.match(sent[1], { model: 'gpt-4o', prompt_tokens: 10, ...wire })
  t.match(sent[2], { model: 'claude-3-5-haiku-20241022', user_id: 'u_2' })
  for (const k of ['session_id', 'tags', 'metadata', 'userId']) t.notOk(k in sent[2], `no ${k} when not given`)
  t.match(sent[3], { model: 'gpt-4o-mini', session_id: 'sess_9', tags: ['tracked'] })
  t.notOk('user_id' in sent[3])
  t.match(sent[4], { model: 'gpt-4o', status: 'error', ...wire }, 'a failing call keeps its dimensions')
  for (const e of sent) for (const k of ['userId', 'sessionId']) t.notOk(k in e, `never the option spelling ${k} on the wire`)
  t.same(errors, [])
})

t.test('dimensions reach the server; one it refuses is dropped and reported, the rest delivered', async (t) => {
  const { url, engine } = await liveServer(t)
  const { scope, errors } = client(t, url)
  scope.recordOpenAI({ object: 'chat.completion', model: 'gpt-4o', usage: { prompt_tokens: 10, completion_tokens: 2 } }, { latencyMs: 100, userId: 'u_1', sessionId: 's_1', tags: ['a', 'b'], metadata: { feature: 'search' } })
  scope.record({ model: 'gpt-4o', prompt_tokens: 5, tags: ['x'.repeat(65)] })
  scope.record({ model: 'gpt-4o', prompt_tokens: 7, user_id: 'u_2' })
  await scope.flush()
  const events = storedEvents(engine)
  t.equal(events.length, 2)
  t.match(events[0], { user_id: 'u_1', session_id: 's_1', tags: ['a', 'b'], metadata: { feature: 'search' } })
  t.match(events[1], { prompt_tokens: 7, user_id: 'u_2', session_id: null, tags: null })
  t.match(scope.stats(), { sent: 2, rejected: 1, failed: 0 })
  t.match(errors[0]?.message, /\[1\]\.tags/, 'the refused event is named by its field')
})

t.test('a 400 naming one event drops that event and delivers the rest', async (t) => {
  const { url, engine } = await liveServer(t)
  const { scope, errors } = client(t, url)
  scope.record({ model: 'gpt-4o', prompt_tokens: 1 })
  scope.record({ model: 'gpt-4o', prompt_tokens: -1 })
  scope.record({ model: 'gpt-4o', prompt_tokens: 3 })
  t.equal(scope.record({ model: '' }), false, 'no model: refused before sending')
  await scope.flush()
  t.same(storedEvents(engine).map((e) => e.prompt_tokens), [1, 3])
  t.match(scope.stats(), { sent: 2, rejected: 2, failed: 0 })
  t.same(errors.map((e) => e.kind).sort(), ['invalid', 'rejected'])
  t.match(errors.find((e) => e.kind === 'rejected')?.message, /\[1\]\.prompt_tokens/)
})

t.test('503 and 429 with Retry-After are retried after the time asked, then delivered once', async (t) => {
  const fake = await fakeServer(t, (n, body, res) => {
    if (n === 1) {
      res.writeHead(503, { 'retry-after': '1', 'content-type': 'application/json' })
      return res.end(JSON.stringify({ statusCode: 503, code: 'LLMS_ERR_OVERLOADED', message: 'overloaded' }))
    }
    if (n === 2) {
      res.writeHead(429, { 'retry-after': '0' })
      return res.end()
    }
    accepted(res, body.length)
  })
  const { scope, errors } = client(t, fake.url, { retryBaseMs: 5 })
  scope.record({ model: 'gpt-4o', prompt_tokens: 1 })
  scope.record({ model: 'gpt-4o', prompt_tokens: 2 })
  await scope.flush()
  t.equal(fake.hits.length, 3)
  t.ok(fake.hits[1].at - fake.hits[0].at >= 950, `waited ${fake.hits[1].at - fake.hits[0].at} ms for Retry-After: 1`)
  t.same(fake.hits[2].body, fake.hits[0].body, 'the same batch resent')
  t.match(scope.stats(), { sent: 2, retries: 2, failed: 0 })
  t.same(errors, [])
})

t.test('network errors are retried with backoff, then given up and reported; flush() still resolves', async (t) => {
  // A port nothing listens on: bind one, then close it.
  const probe = createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address() as { port: number }
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  const { scope, errors } = client(t, `http://127.0.0.1:${port}`, { maxRetries: 3, retryBaseMs: 10, timeoutMs: 1000 })
  // Full jitter draws each wait in [0, window]: pin the draw near the top so the waits are known
  // (windows 10, 20, 40 ms) instead of asserting their random sum.
  const random = Math.random
  Math.random = () => 0.999
  t.teardown(() => {
    Math.random = random
  })
  scope.record({ model: 'gpt-4o' })
  const t0 = Date.now()
  await scope.flush()
  t.match(scope.stats(), { sent: 0, failed: 1, retries: 3, buffered: 0 })
  t.equal(errors.length, 1)
  t.equal(errors[0].kind, 'failed')
  t.match(errors[0].message, /after 3 retries: network error/)
  t.ok(Date.now() - t0 >= 10 + 20 + 40 - 3, 'backed off between attempts')
})

t.test('401 is not retried', async (t) => {
  const fake = await fakeServer(t, (_n, _body, res) => {
    res.writeHead(401, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ statusCode: 401, code: 'LLMS_ERR_UNAUTHORIZED', message: 'invalid API key' }))
  })
  const { scope, errors } = client(t, fake.url)
  scope.record({ model: 'gpt-4o' })
  await scope.flush()
  t.equal(fake.hits.length, 1)
  t.match(errors[0], { kind: 'failed', status: 401, events: 1 })
  t.match(errors[0].message, /HTTP 401: invalid API key/)
})

t.test('413 splits the batch until it fits', async (t) => {
  const fake = await fakeServer(t, (_n, body, res) => {
    if (body.length > 2) {
      res.writeHead(413)
      return res.end()
    }
    accepted(res, body.length)
  })
  const { scope } = client(t, fake.url, { batchSize: 5 })
  for (let i = 0; i < 5; i++) scope.record({ model: 'm', prompt_tokens: i })
  await scope.flush()
  const delivered = fake.hits.filter((h) => h.body.length <= 2).flatMap((h) => h.body.map((e) => (e as { prompt_tokens: number }).prompt_tokens))
  t.same(delivered, [0, 1, 2, 3, 4], 'all delivered, in order')
  t.equal(scope.stats().sent, 5)
})

t.test('the buffer is bounded: the oldest events are dropped and counted', async (t) => {
  const fake = await fakeServer(t, (_n, body, res) => accepted(res, body.length))
  const { scope, errors } = client(t, fake.url, { maxBuffer: 3, batchSize: 100 })
  for (let i = 1; i <= 5; i++) scope.record({ model: `e${i}` })
  t.match(scope.stats(), { recorded: 5, dropped: 2, buffered: 3 })
  t.equal(errors.filter((e) => e.kind === 'dropped').length, 2)
  await scope.flush()
  t.same(fake.hits[0].body.map((e) => (e as { model: string }).model), ['e3', 'e4', 'e5'])
})

t.test('close() sends what is buffered, is safe twice, and refuses later events', async (t) => {
  const { url, engine } = await liveServer(t)
  const { scope } = client(t, url, { batchSize: 1000 })
  scope.record({ model: 'gpt-4o' })
  scope.record({ model: 'gpt-4o' })
  await Promise.all([scope.close(), scope.close()])
  t.equal(engine.log.nextSeq, 2)
  t.equal(scope.record({ model: 'gpt-4o' }), false)
  t.equal(scope.stats().dropped, 1)
})

t.test('a throwing onError never reaches the caller', async (t) => {
  const scope = new LLMScope({
    url: 'http://127.0.0.1:9',
    apiKey: 'k',
    onError: () => {
      throw new Error('boom')
    }
  })
  t.equal(scope.record({ model: '' }), false)
  t.equal(scope.record(null as never), false)
  await scope.close()
})

t.test('events left in the buffer are sent when the process runs out of work (beforeExit)', async (t) => {
  const fake = await fakeServer(t, (_n, body, res) => accepted(res, body.length))
  const script = fileURLToPath(new URL('./fixtures/exit-flush.ts', import.meta.url))
  const child = spawn(process.execPath, [...process.execArgv, script], { env: { ...process.env, LLMSCOPE_URL: fake.url }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => (output += d.toString()))
  child.stderr.on('data', (d: Buffer) => (output += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  t.equal(code, 0, output)
  t.equal(fake.hits.length, 1)
  t.same(fake.hits[0]?.body.map((e) => (e as { prompt_tokens: number }).prompt_tokens), [1, 4])
})

/**
 * A proxy in front of the real server that forwards each request and, for the requests
 * `drop` picks, throws the server's answer away by destroying the client's connection: the
 * events were stored, but the client cannot know.
 */
async function lossyProxy(t: Test, target: string, drop: (n: number) => boolean) {
  let n = 0
  let events = 0
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', async () => {
      const k = ++n
      events += (JSON.parse(Buffer.concat(chunks).toString()) as unknown[]).length
      const upstream = await fetch(new URL(req.url!, target), { method: req.method, headers: req.headers as Record<string, string>, body: Buffer.concat(chunks) })
      const text = await upstream.text()
      if (drop(k)) {
        res.socket?.destroy()
        return
      }
      res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/json' })
      res.end(text)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const { port } = server.address() as { port: number }
  return { url: `http://127.0.0.1:${port}`, requests: () => n, events: () => events }
}

t.test('a retry after a lost answer never counts an event twice (the ids the client gave)', async (t) => {
  const live = await liveServer(t)
  // The first answer and one of every three after it are lost on the way back.
  const proxy = await lossyProxy(t, live.url, (k) => k === 1 || k % 3 === 0)
  const { scope, errors } = client(t, proxy.url, { batchSize: 4, retryBaseMs: 1, retryMaxMs: 5, maxRetries: 10 })
  for (let i = 0; i < 10; i++) scope.record({ model: 'gpt-4o', prompt_tokens: 100 + i })
  scope.record({ model: 'gpt-4o', prompt_tokens: 999, id: 'caller-chosen' })
  await scope.flush()
  t.ok(proxy.requests() > 3, `requests sent: ${proxy.requests()} (some of them again)`)
  t.ok(scope.stats().retries >= 1, 'the client retried')
  const stored = storedEvents(live.engine)
  t.same(stored.map((e) => e.prompt_tokens), [100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 999], 'each once, in record order')
  t.equal(stored[10].client_id, 'caller-chosen', 'an id the caller gave is kept')
  t.equal(live.engine.log.stats.duplicates, proxy.events() - 11, 'every event sent beyond the first copy was answered as a duplicate')
  t.match(scope.stats(), { sent: 11, failed: 0 })
  t.same(errors, [])
})

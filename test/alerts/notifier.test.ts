import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebhookNotifier, splitCredentials } from '../../src/alerts/notifier.js'
import type { Log } from '../../src/log.js'

interface Hit {
  body: unknown
  headers: IncomingMessage['headers']
}

/** A webhook receiver on 127.0.0.1 answering each request with `respond(n)` (n = 1, 2, …). */
async function receiver(t: Test, respond: (n: number, res: ServerResponse) => void) {
  const hits: Hit[] = []
  const server = createServer((req, res) => {
    let data = ''
    req.on('data', (c: Buffer) => (data += c.toString()))
    req.on('end', () => {
      hits.push({ body: JSON.parse(data), headers: req.headers })
      respond(hits.length, res)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  t.teardown(() => server.closeAllConnections())
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, hits }
}

const answer = (status: number) => (_n: number, res: ServerResponse) => res.writeHead(status).end('{}')

/** Records the waits instead of waiting. */
function fakeSleep() {
  const waits: number[] = []
  return { waits, sleep: async (ms: number) => void waits.push(ms) }
}

function recordingLog(): Log & { lines: string[] } {
  const lines: string[] = []
  const at = (obj: unknown, msg?: string) => void lines.push(`${JSON.stringify(obj)} ${msg ?? ''}`)
  return { lines, error: at, warn: at, info: at, debug: at }
}

t.test('a receiver that fails twice then succeeds gets the JSON on the third attempt, after 2 backoffs', async (t) => {
  const r = await receiver(t, (n, res) => res.writeHead(n <= 2 ? 503 : 204).end())
  const { waits, sleep } = fakeSleep()
  const n = new WebhookNotifier({ attempts: 3, backoffMs: 100, sleep, random: () => 0.5 })
  const outcome = await n.deliver(r.url, { type: 'alert', state: 'firing', value: 12.5 })
  t.same(outcome, { status: 'delivered', attempts: 3, status_code: 204, error: null })
  t.same(waits, [50, 100], 'full jitter over exponential windows of 100 and 200 ms')
  t.equal(r.hits.length, 3)
  t.same(r.hits[2].body, { type: 'alert', state: 'firing', value: 12.5 })
  t.equal(r.hits[2].headers['content-type'], 'application/json')
  t.match(n.stats, { delivered: 1, failed: 0, attempts: 3, retries: 2, inFlight: 0, queued: 0 })
})

t.test('backoff: full jitter over doubling windows, capped at maxBackoffMs', async (t) => {
  const r = await receiver(t, answer(500))
  const top = fakeSleep()
  await new WebhookNotifier({ attempts: 6, backoffMs: 100, maxBackoffMs: 1000, sleep: top.sleep, random: () => 0.999_999_9 }).deliver(r.url, {})
  t.same(top.waits, [100, 200, 400, 800, 1000], 'the top of each window, then the cap')
  const low = fakeSleep()
  await new WebhookNotifier({ attempts: 3, backoffMs: 100, sleep: low.sleep, random: () => 0 }).deliver(r.url, {})
  t.same(low.waits, [0, 0], 'the bottom of each window')
})

t.test("the receiver's Retry-After (seconds or HTTP-date) replaces the window, capped", async (t) => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  const headers = ['2', 'Thu, 01 Jan 2026 00:00:05 GMT', '3600', undefined]
  const r = await receiver(t, (i, res) => {
    const after = headers[i - 1]
    res.writeHead(i <= headers.length ? 429 : 204, after === undefined ? {} : { 'retry-after': after }).end()
  })
  const { waits, sleep } = fakeSleep()
  const n = new WebhookNotifier({ attempts: 5, backoffMs: 100, maxBackoffMs: 60_000, sleep, random: () => 0, now: () => now })
  t.same(await n.deliver(r.url, {}), { status: 'delivered', attempts: 5, status_code: 204, error: null })
  t.same(waits, [2000, 5000, 60_000, 0], 'seconds, a date 5 s ahead, an hour cut to the cap, then the jittered window again')
  const jittered = fakeSleep()
  const r2 = await receiver(t, (i, res) => res.writeHead(i === 1 ? 503 : 204, { 'retry-after': '2' }).end())
  await new WebhookNotifier({ attempts: 2, sleep: jittered.sleep, random: () => 0.5 }).deliver(r2.url, {})
  t.same(jittered.waits, [2100], 'plus up to 10% jitter, so receivers are not hit in lockstep')
})

t.test('gives up after the last attempt and says why', async (t) => {
  const r = await receiver(t, answer(500))
  const n = new WebhookNotifier({ attempts: 3, sleep: fakeSleep().sleep })
  t.same(await n.deliver(r.url, {}), { status: 'failed', attempts: 3, status_code: 500, error: 'HTTP 500' })
  t.match(n.stats, { delivered: 0, failed: 1, attempts: 3 })
})

t.test('a 4xx (other than 408/425/429) is not retried; 429 is', async (t) => {
  const r = await receiver(t, (n, res) => res.writeHead(n === 1 ? 429 : 404).end())
  const n = new WebhookNotifier({ attempts: 5, sleep: fakeSleep().sleep })
  t.same(await n.deliver(r.url, {}), { status: 'failed', attempts: 2, status_code: 404, error: 'HTTP 404' })
})

t.test('redirects are not followed', async (t) => {
  const r = await receiver(t, (_n, res) => res.writeHead(302, { location: 'http://127.0.0.1:9/elsewhere' }).end())
  const n = new WebhookNotifier({ attempts: 3, sleep: fakeSleep().sleep })
  t.same(await n.deliver(r.url, {}), { status: 'failed', attempts: 1, status_code: 302, error: 'HTTP 302' })
  t.equal(r.hits.length, 1)
})

t.test('a refused connection is a network error, retried, and the URL never appears', async (t) => {
  // Listen, note the port, close: nothing listens there any more.
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  const log = recordingLog()
  const n = new WebhookNotifier({ attempts: 2, sleep: fakeSleep().sleep, log })
  const outcome = await n.deliver(`http://alice:s3cret@127.0.0.1:${port}/hook/tok_abcdef?sig=xyz`, {})
  t.same(outcome, { status: 'failed', attempts: 2, status_code: null, error: 'network error: ECONNREFUSED' })
  t.equal(log.lines.length, 2, 'each failed attempt is logged')
  for (const line of log.lines) {
    t.notMatch(line, /s3cret|alice|tok_abcdef|sig=/, 'logs name the host only')
    t.match(line, `127.0.0.1:${port}`)
  }
})

t.test('credentials in the URL become a Basic Authorization header', async (t) => {
  const r = await receiver(t, answer(200))
  const n = new WebhookNotifier()
  const url = r.url.replace('http://', 'http://bob:p%40ss@')
  t.equal((await n.deliver(url, { a: 1 })).status, 'delivered')
  t.equal(r.hits[0].headers.authorization, `Basic ${Buffer.from('bob:p@ss').toString('base64')}`)
  t.same(splitCredentials('https://x.example/h?q=1'), { url: 'https://x.example/h?q=1', authorization: null })
})

t.test('an attempt that takes longer than timeoutMs fails as a timeout', async (t) => {
  const r = await receiver(t, () => {}) // never answers
  const n = new WebhookNotifier({ attempts: 1, timeoutMs: 50 })
  t.same(await n.deliver(r.url, {}), { status: 'failed', attempts: 1, status_code: null, error: 'timed out after 50 ms' })
})

t.test('a per-delivery attempts override cannot exceed the configured count', async (t) => {
  const r = await receiver(t, answer(503))
  const n = new WebhookNotifier({ attempts: 2, sleep: fakeSleep().sleep })
  t.equal((await n.deliver(r.url, {}, { attempts: 1 })).attempts, 1)
  t.equal((await n.deliver(r.url, {}, { attempts: 9 })).attempts, 2)
})

t.test('bounded: past concurrency + maxQueue a delivery fails at once, counted as dropped', async (t) => {
  const held: ServerResponse[] = []
  const r = await receiver(t, (_n, res) => void held.push(res))
  const n = new WebhookNotifier({ concurrency: 1, maxQueue: 1, attempts: 1 })
  const first = n.deliver(r.url, { i: 1 })
  const second = n.deliver(r.url, { i: 2 })
  t.same(await n.deliver(r.url, { i: 3 }), { status: 'failed', attempts: 0, status_code: null, error: 'delivery queue full' })
  t.match(n.stats, { dropped: 1, inFlight: 1, queued: 1 })
  while (held.length < 1) await new Promise((resolve) => setTimeout(resolve, 5))
  held[0].writeHead(200).end()
  t.equal((await first).status, 'delivered')
  while (held.length < 2) await new Promise((resolve) => setTimeout(resolve, 5))
  held[1].writeHead(200).end()
  t.equal((await second).status, 'delivered')
  await n.idle()
  t.same(r.hits.map((h) => h.body), [{ i: 1 }, { i: 2 }], 'in order, one at a time')
})

t.test('close() aborts a delivery waiting to retry; later deliveries fail at once; safe twice', async (t) => {
  const r = await receiver(t, answer(503))
  let sleeping!: () => void
  const inBackoff = new Promise<void>((resolve) => (sleeping = resolve))
  // Waits until aborted (a backoff far longer than the test), and says when it started.
  const sleep = (_ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      sleeping()
      signal.addEventListener('abort', () => resolve(), { once: true })
    })
  const n = new WebhookNotifier({ attempts: 3, sleep })
  const pending = n.deliver(r.url, {})
  await inBackoff
  await Promise.all([n.close(), n.close()])
  t.same(await pending, { status: 'failed', attempts: 1, status_code: 503, error: 'notifier closed' })
  t.equal(r.hits.length, 1, 'no further attempt')
  t.same(await n.deliver(r.url, {}), { status: 'failed', attempts: 0, status_code: null, error: 'notifier closed' })
})

t.test('option checks name the option', async (t) => {
  t.throws(() => new WebhookNotifier({ attempts: 0 }), new RangeError('attempts must be an integer >= 1, got 0'))
  t.throws(() => new WebhookNotifier({ timeoutMs: 1.5 }), new RangeError('timeoutMs must be an integer >= 1, got 1.5'))
  t.throws(() => new WebhookNotifier({ concurrency: 0 }), /concurrency/)
})

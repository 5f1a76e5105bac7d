/**
 * WS /ws end to end: real `ws` clients against a listening server. Delivery with cost,
 * filters, alerts, refusals before the upgrade, a paused client that neither stalls others
 * nor ingestion and gets its drop notice, the 1013 deadline, and since_seq replays (across a
 * restart, and under concurrent ingestion: no gap, no duplicate at the seam).
 *
 * No timing assertions: every wait is for a condition, bounded.
 */
import t, { type Test } from 'tap'
import { Writable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import { WebSocket } from 'ws'
import { loadConfig } from '../../src/config.js'
import { buildApp, loggerOptions, type Built } from '../../src/app.js'
import { ManualClock, type Clock } from '../../src/clock.js'
import type { BroadcastLimits } from '../../src/actors/broadcaster.js'
import { ADMIN_KEY, INGEST_KEY, READ_KEY, adminHeaders, event } from '../helpers/app.js'

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Waits for `cond`, polling; fails after `ms` (generous: a busy CI machine) naming what it waited for. */
async function until(cond: () => boolean, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

class Client {
  readonly messages: any[] = []
  readonly closed: Promise<{ code: number; reason: string }>
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.messages.push(JSON.parse(data.toString())))
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  }
  events(): any[] {
    return this.messages.filter((m) => m.type === 'event')
  }
  seqs(): number[] {
    return this.events().map((m) => m.seq)
  }
}

interface Refusal extends Error {
  statusCode: number
  headers: Record<string, string | string[] | undefined>
  body: any
}

interface Server extends Built {
  url: string
  open(query?: string, headers?: Record<string, string>): Promise<Client>
  /** Opens and waits until the broadcaster has registered the subscriber. */
  subscribe(query?: string, headers?: Record<string, string>): Promise<Client>
  close(): Promise<void>
}

/** Pricing is inline (no worker pool to start) unless `workers`; the path is the same cost stage. */
async function start(t: Test, opts: { dir?: string; clock?: Clock; broadcast?: Partial<BroadcastLimits>; logger?: object; workers?: boolean; keys?: string } = {}): Promise<Server> {
  const config = loadConfig({
    LLMSCOPE_DATA_DIR: opts.dir ?? t.testdir(),
    LLMSCOPE_API_KEYS: `${ADMIN_KEY},${INGEST_KEY}:ingest,${READ_KEY}:read${opts.keys === undefined ? '' : `,${opts.keys}`}`,
    LLMSCOPE_LOG_LEVEL: 'silent'
  })
  const built = await buildApp(config, { logger: opts.logger ?? false, clock: opts.clock, broadcast: opts.broadcast, inlinePricing: opts.workers !== true })
  await built.engine.recover()
  await built.app.listen({ port: 0, host: '127.0.0.1' })
  const url = `ws://127.0.0.1:${(built.app.server.address() as AddressInfo).port}/ws`
  const clients: Client[] = []
  const open = (query = '', headers: Record<string, string> = adminHeaders) =>
    new Promise<Client>((resolve, reject) => {
      const ws = new WebSocket(url + query, { headers })
      const client = new Client(ws)
      clients.push(client)
      ws.once('open', () => resolve(client))
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d.toString()))
        res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode, headers: res.headers, body: JSON.parse(body) })))
      })
    })
  const broadcaster = built.engine.topology.broadcaster
  const subscribe = async (query?: string, headers?: Record<string, string>) => {
    const before = broadcaster.broadcastStats.subscribers
    const c = await open(query, headers)
    await until(() => broadcaster.broadcastStats.subscribers > before, 'the subscription')
    return c
  }
  let closing: Promise<void> | undefined
  const close = () =>
    (closing ??= (async () => {
      for (const c of clients) c.ws.terminate()
      await built.app.close()
    })())
  t.teardown(close)
  return { ...built, url, open, subscribe, close }
}

async function ingest(s: Built, events: Record<string, unknown>[], project?: string): Promise<string[]> {
  const headers = project === undefined ? adminHeaders : { ...adminHeaders, 'x-llmscope-project': project }
  const r = await s.app.inject({ method: 'POST', url: '/events/batch', headers, payload: events })
  if (r.statusCode !== 202) throw new Error(`ingest: ${r.statusCode} ${r.body}`)
  return r.json().event_ids
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

t.test('refusals happen before the upgrade, as HTTP errors in the usual shape', async (t) => {
  const s = await start(t)
  const refused = async (query: string, headers: Record<string, string>) => {
    const err = (await s.open(query, headers).then(() => null, (e: Refusal) => e)) as Refusal | null
    if (err === null) throw new Error('the upgrade was accepted')
    return err
  }
  const none = await refused('', {})
  t.equal(none.statusCode, 401)
  t.equal(none.body.code, 'LLMS_ERR_UNAUTHORIZED')
  t.equal((await refused('?api_key=not-a-key-at-all', {})).statusCode, 401)
  const ingestKey = await refused(`?api_key=${INGEST_KEY}`, {})
  t.equal(ingestKey.statusCode, 403)
  t.equal(ingestKey.body.code, 'LLMS_ERR_FORBIDDEN')
  t.equal((await refused('', { 'x-api-key': INGEST_KEY })).statusCode, 403)
  const bad = await refused('?since_seq=abc', adminHeaders)
  t.equal(bad.statusCode, 400)
  t.equal(bad.body.code, 'LLMS_ERR_BAD_QUERY')
  t.match(bad.body.details, [{ path: '(query) since_seq' }])
  t.equal((await refused('?nope=1', adminHeaders)).statusCode, 400, 'unknown parameters are refused like elsewhere')
  t.equal(s.engine.topology.broadcaster.broadcastStats.subscribers, 0)
})

t.test('past the subscriber cap the upgrade is refused with 503 and Retry-After', async (t) => {
  const s = await start(t, { broadcast: { maxSubscribers: 1 } })
  await s.subscribe()
  const err = (await s.open().then(() => null, (e: Refusal) => e)) as Refusal
  t.equal(err.statusCode, 503)
  t.equal(err.body.code, 'LLMS_ERR_OVERLOADED')
  t.equal(err.headers['retry-after'], '5')
  t.equal(s.engine.topology.broadcaster.broadcastStats.subscribers, 1)
})

t.test('a read key may subscribe, in the header or in ?api_key=, and the key never reaches the log', async (t) => {
  const lines: string[] = []
  const stream = new Writable({ write(chunk, _enc, cb) { lines.push(chunk.toString()); cb() } })
  const s = await start(t, { logger: { ...(loggerOptions('info') as object), stream } })
  await s.subscribe('', { 'x-api-key': READ_KEY })
  await s.subscribe(`?api_key=${READ_KEY}&model=gpt-4`, {})
  t.equal(s.engine.topology.broadcaster.broadcastStats.subscribers, 2)
  const log = lines.join('')
  t.match(log, /\/ws\?api_key=\[REDACTED\]&model=gpt-4/, 'the URL is logged, redacted')
  t.notMatch(log, READ_KEY)
})

t.test('every accepted event reaches every subscriber with its cost, in log order', async (t) => {
  const s = await start(t, { workers: true })
  const a = await s.subscribe()
  const b = await s.subscribe(`?api_key=${READ_KEY}`, {})
  const [id] = await ingest(s, [event()])
  await until(() => a.events().length === 1 && b.events().length === 1, 'the first event')
  // gpt-4: $30 / $60 per 1M tokens → 1000 × 30e-6 + 500 × 60e-6
  t.same(a.messages[0], { type: 'event', id, seq: 0, timestamp: '2026-01-01T00:00:00.000Z', model: 'gpt-4', provider: 'openai', total_tokens: 1500, latency_ms: 120, cost: 0.06, status: 'success', user_id: null, session_id: null, tags: null })
  t.same(b.messages[0], a.messages[0])

  await Promise.all(range(0, 10).map((i) => ingest(s, [event({ prompt_tokens: i }), event({ model: 'my-own-model', provider: undefined })])))
  await until(() => a.events().length === 21 && b.events().length === 21, '21 events')
  t.same(a.seqs(), range(0, 21))
  t.same(b.seqs(), range(0, 21))
  const unpriced = a.events().find((m) => m.model === 'my-own-model')
  t.match(unpriced, { provider: 'unknown', cost: 0 })
  const stats = s.engine.topology.broadcaster.broadcastStats
  t.match(stats, { subscribers: 2, messagesSent: 42, messagesDropped: 0 })
  const metrics = await s.app.inject({ url: '/metrics' })
  t.match(metrics.body, /^llmscope_ws_subscribers 2$/m)
  t.match(metrics.body, /^llmscope_ws_messages_sent_total 42$/m)
  t.match(metrics.body, /^llmscope_ws_messages_dropped_total 0$/m)
})

t.test('?model= and ?provider= filter (comma lists, both apply); alerts reach everyone in the project', async (t) => {
  const s = await start(t)
  const models = await s.subscribe('?model=gpt-4o,claude-3-5-sonnet-20241022')
  const provider = await s.subscribe('?provider=anthropic')
  const both = await s.subscribe('?model=gpt-4o,gpt-4&provider=openai')
  const all = await s.subscribe()
  await ingest(s, [
    event({ model: 'gpt-4o' }),
    event({ model: 'claude-3-5-sonnet-20241022', provider: 'anthropic' }),
    event({ model: 'gpt-4' }),
    event({ model: 'gpt-4o', provider: 'azure' })
  ])
  await until(() => all.events().length === 4, 'all four')
  s.engine.topology.broadcaster.send({ type: 'alert', alert: { type: 'alert', project: 'default', rule_id: 'rule_x', rule_name: 'High cost', state: 'firing', value: 12, threshold: 10, at: '2026-01-01T00:00:00.000Z' } })
  await until(() => [models, provider, both, all].every((c) => c.messages.some((m) => m.type === 'alert')), 'the alert everywhere')
  t.same(models.seqs(), [0, 1, 3])
  t.same(provider.seqs(), [1])
  t.same(both.seqs(), [0, 2])
  t.same(all.seqs(), [0, 1, 2, 3])
  t.same(provider.messages.at(-1), { type: 'alert', project: 'default', rule_id: 'rule_x', rule_name: 'High cost', state: 'firing', value: 12, threshold: 10, at: '2026-01-01T00:00:00.000Z' })
})

/** ~480-byte messages, so the kernel's socket buffers fill with fewer events. */
const bulky = (n: number) => Array.from({ length: n }, () => event({ model: `model-${'m'.repeat(240)}`, provider: `provider-${'p'.repeat(50)}` }))

t.test('a paused client neither stalls others nor ingestion, and gets its drop notice once it drains', async (t) => {
  const s = await start(t, { broadcast: { maxBufferedBytes: 256 * 1024 } })
  const broadcaster = s.engine.topology.broadcaster
  const paused = await s.subscribe()
  const healthy = await s.subscribe()
  paused.ws.pause()
  // Ingest until the paused socket is past its cap: first the kernel's buffers fill, then ours.
  let total = 0
  for (let i = 0; i < 200 && broadcaster.broadcastStats.messagesDropped === 0; i++) {
    await ingest(s, bulky(2000)) // throws unless 202: ingestion is never held up
    total += 2000
    await until(() => broadcaster.lastSeq === total - 1, 'the broadcaster to see the batch')
  }
  t.ok(broadcaster.broadcastStats.messagesDropped > 0, `drops after ${total} events`)
  await until(() => healthy.events().length === total, 'the healthy client to get everything')
  t.same(healthy.seqs(), range(0, total))

  paused.ws.resume()
  await until(() => paused.messages.some((m) => m.type === 'dropped'), 'the drop notice')
  await ingest(s, [event()])
  await until(() => paused.seqs().at(-1) === total, 'the next event after the notice')
  const seqs = paused.seqs()
  t.ok(seqs.every((x, i) => i === 0 || x > seqs[i - 1]), 'in log order')
  const notices = paused.messages.filter((m) => m.type === 'dropped')
  t.equal(notices.length, 1)
  const dropped = notices[0].count
  t.equal(seqs.length + dropped, total + 1, 'every event is either delivered or counted in the notice')
  t.equal(broadcaster.broadcastStats.messagesDropped, dropped)
  t.equal(paused.messages.at(-1).seq, total)
  t.equal(paused.messages.at(-2).type, 'dropped', 'the notice sits where the gap is')
  t.equal(healthy.seqs().length, total + 1)
})

t.test('a client stuck past the deadline is closed with 1013', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 0, 1))
  const s = await start(t, { clock, broadcast: { maxBufferedBytes: 64 * 1024, stuckMs: 1_000 } })
  const broadcaster = s.engine.topology.broadcaster
  const stuck = await s.subscribe()
  stuck.ws.pause()
  let total = 0
  for (let i = 0; i < 200 && broadcaster.broadcastStats.messagesDropped === 0; i++) {
    await ingest(s, bulky(2000))
    total += 2000
    await until(() => broadcaster.lastSeq === total - 1, 'the broadcaster to see the batch')
  }
  t.ok(broadcaster.broadcastStats.messagesDropped > 0)
  t.equal(broadcaster.broadcastStats.closedSlow, 0)
  clock.advance(1_000)
  await until(() => broadcaster.broadcastStats.closedSlow === 1, 'the 1013 close')
  t.equal(broadcaster.broadcastStats.subscribers, 0)
  stuck.ws.resume()
  t.match(await stuck.closed, { code: 1013 })
})

t.test('since_seq across a restart: what was missed, then live, no gap and no duplicate', async (t) => {
  const dir = t.testdir()
  const first = await start(t, { dir, workers: true })
  const before = await first.subscribe()
  const ids = await ingest(first, range(0, 10).map((i) => event({ prompt_tokens: i })))
  await until(() => before.events().length === 10, 'ten events')
  const lastSeen = 4 // the client saw more, but says it kept only up to seq 4
  await first.close()

  const second = await start(t, { dir, workers: true })
  const during = await ingest(second, range(10, 15).map((i) => event({ prompt_tokens: i })))
  // So that all ten come from the log (the replay count below is then exact).
  await until(() => second.engine.topology.broadcaster.lastSeq === 14, 'the pipeline')
  const resumed = await second.subscribe(`?since_seq=${lastSeen}`)
  await until(() => resumed.events().length === 10, 'the replay')
  const after = await ingest(second, range(15, 20).map((i) => event({ prompt_tokens: i })))
  await until(() => resumed.events().length === 15, 'live events')
  t.same(resumed.seqs(), range(5, 20))
  t.same(resumed.events().map((m) => m.id), [...ids.slice(5), ...during, ...after])
  t.same(resumed.events().map((m) => m.total_tokens), range(5, 20).map((i) => i + 500))
  // Replayed events are priced exactly as the pipeline priced them.
  t.same(resumed.events()[0], before.events()[5])
  t.equal(second.engine.topology.broadcaster.broadcastStats.replayedMessages, 10)
})

t.test('since_seq while events stream in: the seam between replay and live has no gap and no duplicate', async (t) => {
  const s = await start(t)
  const broadcaster = s.engine.topology.broadcaster
  let acked = -1
  let stop = false
  const producer = async () => {
    while (!stop) {
      const ids = await ingest(s, range(0, 3).map(() => event()))
      acked = Math.max(acked, parseInt(ids[2].split('_')[1], 36))
    }
  }
  const producers = [producer(), producer(), producer(), producer()]
  await until(() => broadcaster.lastSeq >= 60, 'some events through the pipeline')
  // One the broadcaster has handled (a replay, then live), one it may not have yet (acknowledged
  // to a producer, maybe still being priced: it waits for it, then live).
  const handled = broadcaster.lastSeq - 20
  const replayed = await s.subscribe(`?since_seq=${handled}`)
  const ahead = acked
  const waiting = await s.subscribe(`?since_seq=${ahead}`)
  await until(() => acked > ahead + 150, 'more events while both are subscribed')
  stop = true
  await Promise.all(producers)
  const last = s.engine.log.nextSeq - 1
  await until(() => replayed.seqs().at(-1) === last && waiting.seqs().at(-1) === last, 'the last event')
  t.same(replayed.seqs(), range(handled + 1, last + 1))
  t.same(waiting.seqs(), range(ahead + 1, last + 1))
})

t.test('since_seq beyond the replay bound: the skipped oldest are reported as dropped first', async (t) => {
  const s = await start(t, { broadcast: { replayMax: 5 } })
  await ingest(s, range(0, 20).map(() => event()))
  await until(() => s.engine.topology.broadcaster.lastSeq === 19, 'the batch')
  const c = await s.subscribe('?since_seq=-1')
  await until(() => c.events().length === 5, 'the bounded replay')
  t.same(c.messages[0], { type: 'dropped', count: 15 })
  t.same(c.seqs(), [15, 16, 17, 18, 19])
})

t.test('closing the server closes subscribers with 1001', async (t) => {
  const s = await start(t)
  const c = await s.subscribe()
  await s.app.close()
  t.match(await c.closed, { code: 1001, reason: 'server shutting down' })
})

const A_READ = 'test-read-key-proj-a'
const B_READ = 'test-read-key-proj-b'
const projectKeys = `${A_READ}:read:proj-a,${B_READ}:read:proj-b`

t.test('projects: the key\'s project (or the owner\'s ?project=) decides what a socket sees; other projects are refused before the upgrade', async (t) => {
  const s = await start(t, { keys: projectKeys })
  const refused = async (query: string, headers: Record<string, string>) => (await s.open(query, headers).then(() => null, (e: Refusal) => e)) as Refusal
  const forbidden = await refused('?project=proj-b', { 'x-api-key': A_READ })
  t.equal(forbidden.statusCode, 403, 'a project key naming another project')
  t.equal((await refused('?project=nowhere', adminHeaders)).statusCode, 404, 'an owner naming a project that does not exist')
  t.equal((await refused('?project=Bad_Id', adminHeaders)).statusCode, 400)

  const a = await s.subscribe('', { 'x-api-key': A_READ })
  const ownerA = await s.subscribe(`?project=proj-a&api_key=${ADMIN_KEY}`, {})
  const b = await s.subscribe(`?api_key=${B_READ}`, {})
  const def = await s.subscribe()
  // Interleaved batches of the three projects.
  const sent: Record<string, string[]> = { 'proj-a': [], 'proj-b': [], default: [] }
  for (let i = 0; i < 6; i++) {
    for (const p of ['proj-a', 'proj-b', 'default'] as const) sent[p].push(...(await ingest(s, [event({ prompt_tokens: i }), event({ model: 'gpt-4o' })], p === 'default' ? undefined : p)))
  }
  await until(() => a.events().length === 12 && ownerA.events().length === 12 && b.events().length === 12 && def.events().length === 12, 'twelve events each')
  t.same(a.events().map((m) => m.id), sent['proj-a'])
  t.same(ownerA.events().map((m) => m.id), sent['proj-a'])
  t.same(b.events().map((m) => m.id), sent['proj-b'])
  t.same(def.events().map((m) => m.id), sent.default)
})

t.test('projects: a rule\'s alert frames reach its own project\'s subscribers only', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 0, 0, 30))
  const s = await start(t, { clock, keys: projectKeys })
  const a = await s.subscribe('', { 'x-api-key': A_READ })
  const b = await s.subscribe('', { 'x-api-key': B_READ })
  const def = await s.subscribe('?model=no-such-model')
  const ruleIds: Record<string, string> = {}
  for (const p of ['proj-a', 'proj-b']) {
    const r = await s.app.inject({ method: 'POST', url: '/alerts/rules', headers: { ...adminHeaders, 'x-llmscope-project': p }, payload: { name: `busy ${p}`, condition: 'requests_per_minute', threshold: 0, window_seconds: 60, enabled: true } })
    t.equal(r.statusCode, 201, r.body)
    ruleIds[p] = r.json().id
    await ingest(s, [event()], p)
  }
  const alerts = (c: Client) => c.messages.filter((m) => m.type === 'alert')
  await until(() => alerts(a).length > 0 && alerts(b).length > 0, 'both rules to fire')
  t.match(alerts(a)[0], { type: 'alert', project: 'proj-a', rule_id: ruleIds['proj-a'], rule_name: 'busy proj-a', state: 'firing' })
  t.ok(alerts(a).every((m) => m.rule_id === ruleIds['proj-a']), 'proj-a sees its rule only')
  t.ok(alerts(b).every((m) => m.rule_id === ruleIds['proj-b']), 'proj-b sees its rule only')
  t.same(alerts(def), [], 'default sees neither (its filter does not hide alerts: it has no rule)')
  t.same(a.seqs().length + b.seqs().length, 2)
})

t.test('§6 filters: status, user_id, session_id, tag, metadata.KEY; unknown or bad parameters are a 400 naming them', async (t) => {
  const s = await start(t)
  const refused = async (query: string) => (await s.open(query, adminHeaders).then(() => null, (e: Refusal) => e)) as Refusal
  const unknown = await refused('?model=gpt-4&colour=red')
  t.equal(unknown.statusCode, 400)
  t.equal(unknown.body.code, 'LLMS_ERR_BAD_QUERY')
  t.match(unknown.body.details, [{ path: '(query) colour' }])
  t.match(unknown.body.message, /colour/)
  t.match((await refused('?status=failed')).body.details, [{ path: '(query) status', message: 'must be success or error' }])
  t.match((await refused('?metadata.feature=')).body.details, [{ path: '(query) metadata.feature' }])
  t.equal(s.engine.topology.broadcaster.broadcastStats.subscribers, 0)

  const search = await s.subscribe('?metadata.feature=search')
  const tagged = await s.subscribe('?tag=beta&status=error')
  const user = await s.subscribe('?user_id=u1&session_id=s1')
  const numeric = await s.subscribe('?metadata.tier=2&metadata.paid=true&model=gpt-4')
  const all = await s.subscribe()
  const ids = await ingest(s, [
    event({ metadata: { feature: 'search', tier: 2, paid: true }, user_id: 'u1', session_id: 's1', tags: ['beta'] }),
    event({ metadata: { feature: 'chat' }, status: 'error', tags: ['beta', 'x'], user_id: 'u1', session_id: 's2' }),
    event({ metadata: { feature: 'search', tier: '2', paid: 'true' }, status: 'error', tags: ['x'], model: 'gpt-4o' }),
    event({ metadata: { tier: 2, paid: true }, status: 'error', tags: ['beta'], user_id: 'u1', session_id: 's1' })
  ])
  await until(() => all.events().length === 4, 'all four')
  const got = (c: Client) => c.events().map((m) => ids.indexOf(m.id))
  t.same(got(search), [0, 2])
  t.same(got(tagged), [1, 3])
  t.same(got(user), [0, 3])
  t.same(got(numeric), [0, 3], 'numbers and booleans match as their JSON text')
  t.match(all.events()[1], { status: 'error', user_id: 'u1', session_id: 's2', tags: ['beta', 'x'] })
})

t.test('since_seq with a project and filters: the replay holds only the project\'s matching events, then live', async (t) => {
  const s = await start(t, { keys: projectKeys })
  const ids: Record<string, string[]> = { 'proj-a': [], default: [] }
  for (let i = 0; i < 10; i++) {
    ids['proj-a'].push(...(await ingest(s, [event({ tags: i % 2 === 0 ? ['even'] : ['odd'] })], 'proj-a')))
    ids.default.push(...(await ingest(s, [event({ tags: ['even'] })])))
  }
  await until(() => s.engine.topology.broadcaster.lastSeq === 19, 'the pipeline')
  const c = await s.subscribe(`?since_seq=3&tag=even&api_key=${A_READ}`, {})
  const d = await s.subscribe('?since_seq=-1&tag=odd')
  await until(() => c.events().length === 4, 'the replay')
  // Seqs: proj-a events are 0, 2, 4… (tagged even at 0, 4, 8, 12, 16); after 3 that is 4 … 16.
  t.same(c.seqs(), [4, 8, 12, 16])
  t.same(c.events().map((m) => m.id), [ids['proj-a'][2], ids['proj-a'][4], ids['proj-a'][6], ids['proj-a'][8]])
  const live = await ingest(s, [event({ tags: ['even'] }), event({ tags: ['odd'] })], 'proj-a')
  const other = await ingest(s, [event({ tags: ['even'] })])
  await until(() => c.events().length === 5, 'the live event')
  t.same(c.events().at(-1).id, live[0])
  t.same(d.events(), [], 'default has no odd-tagged event, replayed or live')
  t.notOk(c.events().some((m) => m.id === other[0]))
})

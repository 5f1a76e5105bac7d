import t from 'tap'
import { makeApp, adminHeaders, type TestApp } from './helpers/app.js'
import { encodeSnapshot, SnapshotStore } from '../src/store/snapshots.js'
import { openStores } from '../src/store/db.js'
import { FILE_TIMEOUT_MS } from './helpers/server.js'

/** Edits the stored snapshot of a closed data dir, as a crash or a disk fault would leave it. */
async function withSnapshot(dir: string, fn: (raw: Buffer | undefined) => Buffer): Promise<void> {
  const stores = openStores(dir)
  const cur = stores.meta.get('snapshot')
  await new SnapshotStore(stores.meta).writeRaw(fn(cur === undefined ? undefined : Buffer.from(cur)))
  await stores.close()
}

// Heavy recovery work: on a busy 2-core CI machine this file took 160 s of the suite's 180 s
// per-file default (.taprc); give it the limit of the files that start real processes.
t.setTimeout(FILE_TIMEOUT_MS)

const T0 = Date.parse('2026-05-01T00:00:00.000Z')
const MODELS = ['gpt-4', 'gpt-4o', 'claude-3-5-sonnet-20241022', 'my-own-model']

/** Deterministic varied events: several models, providers, spread over two days, out of order. */
function events(n: number, salt: number) {
  const out = []
  for (let i = 0; i < n; i++) {
    const k = (i * 7919 + salt * 104729) % 1_000_003
    out.push({
      timestamp: new Date(T0 + ((k * 1_234_567) % (2 * 86_400_000))).toISOString(),
      model: MODELS[k % MODELS.length],
      prompt_tokens: k % 5000,
      completion_tokens: (k * 3) % 2000,
      cached_tokens: k % 3 === 0 ? (k % 5000) >> 1 : undefined,
      latency_ms: (k % 4000) + 0.5,
      status: k % 11 === 0 ? 'error' : 'success'
    })
  }
  return out
}

async function ingest(app: TestApp['app'], list: object[]) {
  const res = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: list })
  if (res.statusCode !== 202) throw new Error(res.body)
}

/** Everything a user can read about the state. */
async function observe(app: TestApp['app']) {
  const get = async (url: string) => (await app.inject({ url, headers: adminHeaders })).json()
  const s = new Date(T0 + 3_333_333).toISOString()
  const e = new Date(T0 + 86_400_000 + 7_777).toISOString()
  return {
    all: await get('/analytics/metrics'),
    range: await get(`/analytics/metrics?start_time=${s}&end_time=${e}`),
    model: await get('/analytics/metrics?model=gpt-4o'),
    costs: await get('/analytics/costs'),
    costsRange: await get(`/analytics/costs?start_time=${s}&end_time=${e}`),
    ts: await get(`/analytics/timeseries?interval=1h&start_time=${new Date(T0).toISOString()}&end_time=${new Date(T0 + 2 * 86_400_000).toISOString()}`),
    rules: await get('/alerts/rules')
  }
}

t.test('a graceful restart restores every metric, cost and rule exactly, replaying nothing', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(500, 1))
  await ingest(a.app, events(300, 2))
  await a.app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: { name: 'r', condition: 'avg_latency', threshold: 5 } })
  const before = await observe(a.app)
  t.equal(before.all.total_requests, 800)
  await a.close()

  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'loaded')
  t.equal(b.engine.recovery?.replayed, 0)
  t.same(await observe(b.app), before)
})

t.test('after a crash (snapshot + log tail) the state equals the uncrashed one', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(400, 3))
  await a.engine.snapshotNow()
  await ingest(a.app, events(250, 4))
  const before = await observe(a.app)
  // A crash after the mid snapshot: no final snapshot.
  await a.engine.destroy()
  await a.close()

  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'loaded')
  t.equal(b.engine.recovery?.replayed, 250, 'only the tail after the snapshot is replayed')
  t.same(await observe(b.app), before)
})

t.test('a damaged snapshot is detected and the state rebuilt from the whole log', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(300, 5))
  const before = await observe(a.app)
  await a.close()
  await withSnapshot(a.dir, (raw) => {
    raw![raw!.length - 10] ^= 0xff
    return raw!
  })

  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'rejected')
  t.match(b.engine.recovery?.reason, /checksum/)
  t.equal(b.engine.recovery?.replayed, 300)
  t.same(await observe(b.app), before)
})

t.test('a snapshot of an unknown format version is rebuilt from the log, never misread', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(120, 6))
  const before = await observe(a.app)
  await a.close()
  await withSnapshot(a.dir, () => encodeSnapshot({ seq: 999_999, createdAt: 0, aggregators: [], alerts: null }, 99))
  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'rejected')
  t.match(b.engine.recovery?.reason, /version 99/)
  t.same(await observe(b.app), before)
})

t.test('an aggregator state that no longer restores falls back to a full rebuild', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(60, 7))
  const before = await observe(a.app)
  await a.close()
  await withSnapshot(a.dir, () => encodeSnapshot({ seq: 60, createdAt: 0, aggregators: [{ project: 'default', model: 'gpt-4', state: { v: 42, model: 'gpt-4', series: [] } }], alerts: null }))
  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'rejected')
  t.same(await observe(b.app), before)
})

t.test('/ready is 503 and data routes refuse until recovery is done', async (t) => {
  const { loadConfig } = await import('../src/config.js')
  const { buildApp } = await import('../src/app.js')
  const dir = t.testdir()
  const built = await buildApp(loadConfig({ LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: 'abcdefgh12' }), { logger: false })
  t.teardown(() => built.app.close())
  const ready = await built.app.inject({ url: '/ready' })
  t.equal(ready.statusCode, 503)
  t.equal(ready.headers['retry-after'], '1')
  t.same(ready.json(), { statusCode: 503, error: 'Service Unavailable', code: 'LLMS_ERR_NOT_READY', message: 'recovering state from the event log', details: [] }, 'the errors module shape')
  t.equal((await built.app.inject({ url: '/health' })).statusCode, 200)
  const q = await built.app.inject({ url: '/analytics/metrics', headers: { 'x-api-key': 'abcdefgh12' } })
  t.equal(q.statusCode, 503)
  t.equal(q.json().code, 'LLMS_ERR_NOT_READY')
  await built.engine.recover()
  t.equal((await built.app.inject({ url: '/ready' })).statusCode, 200)
})

t.test('past the high-water mark ingestion answers 503 with Retry-After and stores nothing', async (t) => {
  const a = await makeApp(t, { env: { LLMSCOPE_HIGH_WATER_EVENTS: '5' } })
  const big = await a.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: events(6, 8) })
  t.equal(big.statusCode, 503)
  t.equal(big.json().code, 'LLMS_ERR_OVERLOADED')
  t.ok(Number(big.headers['retry-after']) >= 1)
  const ok = await a.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: events(5, 8) })
  t.equal(ok.statusCode, 202, 'recovers by itself once the pipeline drained')
  const m = (await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json()
  t.equal(m.total_requests, 5)
})

t.test('models past the cap are counted under the overflow aggregator', async (t) => {
  const a = await makeApp(t, { env: { LLMSCOPE_MAX_MODELS: '2' } })
  await ingest(a.app, [{ model: 'm1', latency_ms: 1 }, { model: 'm2', latency_ms: 1 }, { model: 'm3', latency_ms: 1 }, { model: 'm4', latency_ms: 1 }])
  const c = (await a.app.inject({ url: '/analytics/costs', headers: adminHeaders })).json()
  t.same(c.breakdown.map((r: { model: string; requests: number }) => [r.model, r.requests]).sort(), [['(other models)', 2], ['m1', 1], ['m2', 1]])
  t.equal((await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_requests, 4)
})

t.test('incremental snapshots: several rounds write only changed days, and a restart restores them all', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(200, 9))
  await a.engine.snapshotNow()
  const first = a.engine.lastSnapshot!.bytes
  // Events on one new day only: the next snapshot writes that day, not the two before.
  const late = Array.from({ length: 50 }, (_, i) => ({ timestamp: new Date(T0 + 5 * 86_400_000 + i).toISOString(), model: 'gpt-4', prompt_tokens: 10, latency_ms: 1 }))
  await ingest(a.app, late)
  await a.engine.snapshotNow()
  const second = a.engine.lastSnapshot!.bytes
  t.ok(second < first / 2, `second snapshot (${second} B) is much smaller than the first (${first} B)`)
  await ingest(a.app, events(100, 10))
  const before = await observe(a.app)
  await a.close()
  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'loaded')
  t.equal(b.engine.recovery?.replayed, 0)
  t.same(await observe(b.app), before)
  t.equal((await b.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_requests, 350)
})

t.test('a damaged or missing snapshot segment makes the snapshot unusable: full rebuild, same state', async (t) => {
  for (const damage of ['flip', 'remove'] as const) {
    const a = await makeApp(t)
    await ingest(a.app, events(150, 11))
    const before = await observe(a.app)
    await a.close()
    const stores = openStores(a.dir)
    const keys = [...stores.meta.getKeys({})].filter((k) => Array.isArray(k))
    t.ok(keys.length > 1, 'segments are stored under their own keys')
    const key = keys[Math.floor(keys.length / 2)] as unknown as string
    if (damage === 'remove') await stores.meta.remove(key)
    else {
      const raw = Buffer.from(stores.meta.get(key)!)
      raw[raw.length - 1] ^= 0x55
      await stores.meta.put(key, raw)
    }
    await stores.close()
    const b = await makeApp(t, { dir: a.dir })
    t.equal(b.engine.recovery?.snapshot, 'rejected', damage)
    t.match(b.engine.recovery?.reason, damage === 'remove' ? /no snapshot segment/ : /segment .* checksum/)
    t.same(await observe(b.app), before)
    await b.close()
  }
})

t.test('eachEventBySeq: every asked position once, in log order, the same events eventsBySeq answers; absent seqs not visited', async (t) => {
  const a = await makeApp(t)
  // Three appends: records of several sizes (a 700-event append is three records of at most 256).
  await ingest(a.app, events(700, 3))
  await ingest(a.app, events(10, 4))
  await ingest(a.app, [events(1, 5)[0]])
  const next = (await a.engine.log.lastSeq()) + 1
  t.equal(next, 711)
  // Out of order, one seq asked twice, two past the log's end.
  const seqs = [650, 3, 709, 255, 256, 3, 710, 10_000, 100, 699, 711]
  const visits: Array<[number, number]> = []
  await a.engine.eachEventBySeq(seqs, (i, e) => visits.push([i, e.seq]))
  const visited = visits.map(([i]) => i)
  t.same([...visited].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 8, 9], 'each position holding an event, once')
  for (const [i, seq] of visits) t.equal(seq, seqs[i], `position ${i} is seq ${seqs[i]}`)
  const order = visits.map(([, seq]) => seq)
  t.same(order, [...order].sort((x, y) => x - y), 'in log order')
  const bySeq = await a.engine.eventsBySeq(seqs)
  t.same(bySeq.map((e) => e?.seq), [650, 3, 709, 255, 256, 3, 710, undefined, 100, 699, undefined])
  const again: Array<unknown> = new Array(seqs.length).fill(undefined)
  await a.engine.eachEventBySeq(seqs, (i, e) => (again[i] = e))
  t.same(again, bySeq, 'the same priced events')
  await a.close()
})

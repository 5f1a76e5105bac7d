/**
 * Append-only snapshots end to end (engine + LMDB): a snapshot under sustained load writes
 * what arrived since the previous one, restarts and crashes restore exactly, retention
 * rewrites leave no stale part behind, and old-format, damaged or half-written snapshots are
 * never misread.
 */
import t from 'tap'
import { makeApp, adminHeaders, type TestApp } from '../helpers/app.js'
import { openStores } from '../../src/store/db.js'
import { SnapshotStore, encodeSnapshot, SNAPSHOT_VERSION, type SnapshotPayload } from '../../src/store/snapshots.js'

const T0 = Date.parse('2026-05-01T00:00:00.000Z')
const MODELS = ['gpt-4', 'gpt-4o', 'claude-3-5-sonnet-20241022']

/** `n` events from index `from`, one second apart (so all on one day unless `spacingMs` says otherwise). */
function events(n: number, from: number, spacingMs = 1000) {
  return Array.from({ length: n }, (_, j) => {
    const i = from + j
    return { timestamp: new Date(T0 + i * spacingMs).toISOString(), model: MODELS[i % 3], prompt_tokens: (i * 7) % 5000, completion_tokens: (i * 3) % 900, latency_ms: (i % 4000) + 0.25, status: i % 13 === 0 ? 'error' : 'success' }
  })
}

async function ingest(app: TestApp['app'], list: object[]) {
  for (let i = 0; i < list.length; i += 5000) {
    const res = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: list.slice(i, i + 5000) })
    if (res.statusCode !== 202) throw new Error(res.body)
  }
}

async function observe(app: TestApp['app']) {
  const get = async (url: string) => (await app.inject({ url, headers: adminHeaders })).json()
  const s = new Date(T0 + 1_234_567).toISOString()
  const e = new Date(T0 + 20 * 3_600_000 + 7_777).toISOString()
  return {
    all: await get('/analytics/metrics'),
    range: await get(`/analytics/metrics?start_time=${s}&end_time=${e}`),
    model: await get('/analytics/metrics?model=gpt-4o'),
    costs: await get('/analytics/costs'),
    ts: await get(`/analytics/timeseries?interval=1m&start_time=${new Date(T0).toISOString()}&end_time=${new Date(T0 + 3_600_000).toISOString()}`),
    tsh: await get(`/analytics/timeseries?interval=1h&start_time=${new Date(T0).toISOString()}&end_time=${new Date(T0 + 48 * 3_600_000).toISOString()}`)
  }
}

/** Keys of stored parts (and of version-2 segments) in a closed data dir. */
async function partKeys(dir: string): Promise<Array<[string, string, string, number]>> {
  const stores = openStores(dir)
  const keys = [...stores.meta.getKeys({})].filter((k) => Array.isArray(k)) as unknown as Array<[string, string, string, number]>
  await stores.close()
  return keys
}

/** Part ranges the stored manifest names, as [model, provider, first, next]. */
async function named(dir: string): Promise<Array<[string, string, number, number]>> {
  const stores = openStores(dir)
  const read = new SnapshotStore(stores.meta).read()
  await stores.close()
  if (!read.ok) throw new Error(read.reason)
  return read.payload.aggregators.flatMap((a) => (a.state as { series: Array<{ provider: string; first: number; next: number }> }).series.map((s) => [a.model, s.provider, s.first, s.next] as [string, string, number, number]))
}

t.test('under sustained load on one day, a snapshot writes only what arrived since the previous one', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(6000, 0))
  await a.engine.snapshotNow()
  const first = a.engine.lastSnapshot!.bytes
  await ingest(a.app, events(600, 6000))
  await a.engine.snapshotNow()
  const second = a.engine.lastSnapshot!.bytes
  await ingest(a.app, events(600, 6600))
  await a.engine.snapshotNow()
  const third = a.engine.lastSnapshot!.bytes
  t.ok(second < first / 5, `600 new events (${second} B) cost a tenth of 6,000 (${first} B), not a rewrite of the day`)
  t.ok(third < second * 1.5, `the next 600 cost the same again (${third} B), not more`)
  // A crash after the third snapshot: restart = snapshot (three rounds of parts) + log tail.
  await ingest(a.app, events(100, 7200))
  const before = await observe(a.app)
  await a.engine.destroy()
  await a.close()
  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'loaded')
  t.equal(b.engine.recovery?.replayed, 100)
  t.same(await observe(b.app), before)
  t.equal(before.all.total_requests, 7300)
  // Deltas continue after the restart, and a second restart is exact too.
  await ingest(b.app, events(300, 7300))
  await b.engine.snapshotNow()
  t.ok(b.engine.lastSnapshot!.bytes < first / 5, 'after a restart the next snapshot is a delta again')
  const again = await observe(b.app)
  await b.close()
  const c = await makeApp(t, { dir: a.dir })
  t.equal(c.engine.recovery?.replayed, 0)
  t.same(await observe(c.app), again)
  await c.close()
  const parts = (await partKeys(a.dir))
  const ranges = (await named(a.dir))
  t.equal(parts.length, ranges.reduce((n, [, , f, e]) => n + e - f, 0), 'exactly the named parts are stored')
})

t.test('retention folds rewrite a series under fresh parts; the old ones are removed; restart is exact', async (t) => {
  const env = { LLMSCOPE_RETENTION_EVENTS: '200' }
  const a = await makeApp(t, { env })
  // 3 rounds of events 60 s apart: hours fill up and fold past 250 rows per series.
  for (let round = 0; round < 3; round++) {
    await ingest(a.app, events(900, round * 900, 60_000))
    await a.engine.snapshotNow()
  }
  t.ok(a.engine.stats().retention.folded > 0, 'retention folded rows')
  // The close runs retention before its final snapshot: run it now, so `before` is what is kept.
  await a.engine.sync()
  a.engine.retain()
  await a.engine.sync()
  const before = await observe(a.app)
  await a.close()
  const parts = (await partKeys(a.dir))
  const ranges = (await named(a.dir))
  t.equal(parts.length, ranges.reduce((n, [, , f, e]) => n + e - f, 0), 'no part of an older range is left')
  t.ok(ranges.some(([, , f]) => f > 0), 'some series were rewritten under fresh part numbers')
  const b = await makeApp(t, { dir: a.dir, env })
  t.equal(b.engine.recovery?.snapshot, 'loaded')
  t.same(await observe(b.app), before)
})

t.test('an old-format snapshot (version 2, per-day segments) is rebuilt from the log; its segments go with the next snapshot', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(500, 0))
  const before = await observe(a.app)
  await a.engine.destroy()
  await a.close()
  // What version 2 left: a manifest and one segment per (model, provider, day).
  const stores = openStores(a.dir)
  const v2: SnapshotPayload = { seq: 500, createdAt: 0, aggregators: [{ project: 'default', model: 'gpt-4', state: { v: 2, model: 'gpt-4', series: [{ provider: 'openai', rejected: 0, days: [20574], parts: [] }] } }], alerts: null }
  await stores.meta.put('snapshot', encodeSnapshot(v2, 2))
  await stores.meta.put(['seg', 'gpt-4', 'openai', 20574] as unknown as string, Buffer.from('LSEG-old-segment-bytes'))
  await stores.close()
  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'rejected')
  t.match(b.engine.recovery?.reason, new RegExp(`version 2 is not ${SNAPSHOT_VERSION}`))
  t.equal(b.engine.recovery?.replayed, 500)
  t.same(await observe(b.app), before)
  await b.close()
  t.notOk((await partKeys(a.dir)).some(([prefix]) => prefix === 'seg'), 'version-2 segments removed')
  const c = await makeApp(t, { dir: a.dir })
  t.equal(c.engine.recovery?.snapshot, 'loaded')
  t.same(await observe(c.app), before)
})

t.test('after a damaged part, the rebuilt state is snapshotted cleanly and restarts exactly', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(3000, 0))
  await a.engine.snapshotNow()
  await ingest(a.app, events(200, 3000))
  const before = await observe(a.app)
  await a.close()
  const stores = openStores(a.dir)
  const key = [...stores.meta.getKeys({})].find((k) => Array.isArray(k)) as unknown as string
  const raw = Buffer.from(stores.meta.get(key)!)
  raw[raw.length - 3] ^= 0x10
  await stores.meta.put(key, raw)
  await stores.close()
  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'rejected')
  t.match(b.engine.recovery?.reason, /segment .* checksum/)
  t.same(await observe(b.app), before)
  await b.close()
  const ranges = (await named(a.dir))
  t.equal((await partKeys(a.dir)).length, ranges.reduce((n, [, , f, e]) => n + e - f, 0), 'the damaged generation is gone')
  const c = await makeApp(t, { dir: a.dir })
  t.equal(c.engine.recovery?.snapshot, 'loaded')
  t.equal(c.engine.recovery?.replayed, 0)
  t.same(await observe(c.app), before)
})

// ───────────────────── SnapshotStore: half-written snapshots ─────────────────────

const part = (rows: number) => ({ version: 2, rows, rejected: 0, marker: rows })
const payloadOf = (seq: number, first: number, next: number, write: Array<{ id: number; data: () => unknown }>): SnapshotPayload => ({
  seq,
  createdAt: 0,
  aggregators: [{ project: 'default', model: 'm', state: { v: 3, model: 'm', series: [{ provider: 'p', rejected: 0, first, next, write }] } }],
  alerts: null
})
const partsRead = (snaps: SnapshotStore) => {
  const r = snaps.read()
  if (!r.ok) return r.reason
  return (r.payload.aggregators[0].state as { series: Array<{ parts: unknown[] }> }).series[0].parts
}

t.test('a write that fails after some new parts leaves the previous snapshot whole; the next write removes the leftovers', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const snaps = new SnapshotStore(stores.meta)
  await snaps.write(payloadOf(10, 0, 2, [{ id: 0, data: () => part(1) }, { id: 1, data: () => part(2) }]))
  // A delta: part 2 is put, then copying part 3 fails (as a crash would stop it).
  const failing = payloadOf(20, 0, 4, [{ id: 2, data: () => part(3) }, { id: 3, data: () => { throw new Error('copy failed') } }])
  await t.rejects(snaps.write(failing), /copy failed/)
  t.same(partsRead(snaps), [part(1), part(2)], 'the stored manifest still names parts 0 and 1 only')
  const stored = snaps.read()
  t.equal(stored.ok && stored.payload.seq, 10)
  // The engine then asks for a full rewrite: parts from 4 on, everything older removed.
  await snaps.write(payloadOf(30, 4, 6, [{ id: 4, data: () => part(5) }, { id: 5, data: () => part(6) }]))
  t.same(partsRead(snaps), [part(5), part(6)])
  const ids = [...stores.meta.getKeys({})].filter((k) => Array.isArray(k)).map((k) => (k as unknown as unknown[])[4])
  t.same(ids, [4, 5])
})

t.test('a rebuilt state never overwrites parts a stored (rejected) manifest names: that manifest goes first', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  await new SnapshotStore(stores.meta).write(payloadOf(10, 0, 2, [{ id: 0, data: () => part(1) }, { id: 1, data: () => part(2) }]))
  // Next start: the manifest is read (say the restore then failed), the state is rebuilt and
  // numbers its parts from 0 again. Its write stops halfway, after overwriting part 0.
  const snaps = new SnapshotStore(stores.meta)
  t.ok(snaps.read().ok)
  await t.rejects(snaps.write(payloadOf(20, 0, 2, [{ id: 0, data: () => part(7) }, { id: 1, data: () => { throw new Error('stopped') } }])), /stopped/)
  // Never a mix of old and new parts under the old manifest: no snapshot, so a full replay.
  t.equal(partsRead(snaps), 'no snapshot')
})

t.test('a read checks every part but decodes a series\' parts only when they are asked for, and keeps none', async (t) => {
  const a = await makeApp(t)
  await ingest(a.app, events(3000, 0))
  await a.engine.snapshotNow()
  const before = await observe(a.app)
  await a.engine.destroy()
  await a.close()
  const stores = openStores(a.dir)
  const read = new SnapshotStore(stores.meta).read()
  if (!read.ok) throw new Error(read.reason)
  const series = read.payload.aggregators.flatMap((x) => (x.state as { series: Array<{ provider: string; first: number; next: number; parts: unknown[] }> }).series.map((s) => ({ model: x.model, project: x.project, s })))
  t.equal(series.length, 3, 'one series per model')
  const { model, project, s } = series[0]
  t.ok(s.next > s.first, 'the series has parts')
  const one = s.parts
  const two = s.parts
  t.equal(one.length, s.next - s.first, 'every part of the range')
  t.not(one, two, 'each read decodes again: the payload does not hold the parts')
  t.same(one, two, 'the same data each time')
  // A part removed after the check (never by LLMScope: a stored manifest's parts are not
  // overwritten or removed while it stands) fails the restore of its series, with its name.
  await stores.meta.remove(['part', project, model, s.provider, s.first] as unknown as string)
  t.throws(() => s.parts, new RegExp(`no snapshot segment ${project}/${model}/${s.provider}/part ${s.first}`))
  await stores.close()
  // The engine rebuilds such a state from the log: exact, as before the restart.
  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'rejected')
  t.match(b.engine.recovery?.reason, /no snapshot segment/)
  t.same(await observe(b.app), before)
  await b.close()
})

/**
 * Exactly once by event `id` (DESIGN §7, Idempotency) on a single node: a copy of an accepted
 * id inside the window is answered 202 with the original event_id and counted once — sent again
 * later, twice in one batch, or in concurrent requests; per project; across a restart; the
 * window by receive time with a manual clock, and the sweep that removes expired entries.
 */
import t, { type Test } from 'tap'
import { open } from 'lmdb'
import { makeApp, adminHeaders, event, type TestApp } from './helpers/app.js'
import { ManualClock } from '../src/clock.js'
import { DedupeIndex, type DedupeEntry, type DedupeJournalRecord } from '../src/store/dedupe.js'
import type { StoredEvent } from '../src/events.js'
import { RECORD_MAX } from '../src/store/event-log.js'

const HOUR = 3600_000
const T0 = Date.parse('2026-03-01T00:00:00Z')

async function post(a: TestApp, url: string, payload: unknown, headers: Record<string, string> = adminHeaders) {
  const r = await a.app.inject({ method: 'POST', url, headers, payload: payload as object })
  return { status: r.statusCode, body: r.json() }
}

async function requests(a: TestApp, headers: Record<string, string> = adminHeaders): Promise<number> {
  const r = await a.app.inject({ url: '/analytics/metrics?start_time=2000-01-01T00:00:00Z&end_time=2100-01-01T00:00:00Z', headers })
  return r.json().total_requests
}

t.test('a copy of an accepted id is answered with the original event_id and counted once', async (t) => {
  const a = await makeApp(t)
  const first = await post(a, '/events/ingest', event({ id: 'call-1' }))
  t.equal(first.status, 202)
  const again = await post(a, '/events/ingest', event({ id: 'call-1', prompt_tokens: 7 }))
  t.equal(again.status, 202)
  t.same(again.body, { status: 'accepted', event_id: first.body.event_id }, 'the original id, whatever the copy carries')
  const viaBatch = await post(a, '/events/batch', [event({ id: 'call-1' }), event({ id: 'call-2' })])
  t.same(viaBatch.body, { status: 'accepted', accepted: 1, event_ids: [first.body.event_id, viaBatch.body.event_ids[1]], duplicates: 1 })
  t.not(viaBatch.body.event_ids[1], first.body.event_id)
  t.equal(await requests(a), 2, 'call-1 and call-2, once each')
  t.equal(a.engine.log.nextSeq, 2, 'the copies were never written to the log')
  const stored = (await a.app.inject({ url: `/events/${first.body.event_id}`, headers: adminHeaders })).json()
  t.equal(stored.client_id, 'call-1')
  t.equal(stored.prompt_tokens, 1000, 'the first one is what is kept')
  const plain = await post(a, '/events/ingest', event())
  t.equal((await a.app.inject({ url: `/events/${plain.body.event_id}`, headers: adminHeaders })).json().client_id, null, 'no id: client_id null')
})

t.test('two copies in one batch: one stored, both answered with its id', async (t) => {
  const a = await makeApp(t)
  const res = await post(a, '/events/batch', [event({ id: 'x' }), event(), event({ id: 'x' }), event({ id: 'y' }), event({ id: 'x' })])
  t.equal(res.status, 202)
  const ids: string[] = res.body.event_ids
  t.equal(res.body.accepted, 3)
  t.equal(res.body.duplicates, 2)
  t.equal(ids.length, 5, 'one id per item')
  t.equal(ids[2], ids[0])
  t.equal(ids[4], ids[0])
  t.equal(new Set(ids).size, 3)
  t.equal(await requests(a), 3)
  // NDJSON goes the same way.
  const nd = [event({ id: 'z' }), event({ id: 'z' })].map((e) => JSON.stringify(e)).join('\n')
  const r = await a.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/x-ndjson' }, payload: nd })
  t.match(r.json(), { accepted: 1, duplicates: 1 })
  t.equal(r.json().event_ids[0], r.json().event_ids[1])
})

t.test('copies in concurrent requests: exactly one is stored', async (t) => {
  const a = await makeApp(t)
  // Same turn (one group commit) and following turns (appends in flight) alike.
  const sends = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? post(a, '/events/ingest', event({ id: 'same' })) : post(a, '/events/batch', [event({ id: 'same' }), event({ id: `other-${i}` })])))
  const answers = await Promise.all(sends)
  const ids = new Set(answers.map((r) => r.body.event_id ?? r.body.event_ids[0]))
  t.equal(ids.size, 1, 'every copy answered with one event_id')
  t.ok(answers.every((r) => r.status === 202))
  t.equal(await requests(a), 1 + 20, 'one `same` and the twenty others')
  const stats = a.engine.log.stats
  t.equal(stats.duplicates, 39)
})

t.test('ids are per project', async (t) => {
  const a = await makeApp(t)
  t.equal((await post(a, '/projects', { id: 'team-b' })).status, 201)
  const b = { ...adminHeaders, 'x-llmscope-project': 'team-b' }
  const inDefault = await post(a, '/events/ingest', event({ id: 'shared' }))
  const inB = await post(a, '/events/ingest', event({ id: 'shared' }), b)
  t.not(inB.body.event_id, inDefault.body.event_id, 'the same id in another project is another event')
  const againB = await post(a, '/events/ingest', event({ id: 'shared' }), b)
  t.equal(againB.body.event_id, inB.body.event_id)
  t.equal(await requests(a), 1)
  t.equal(await requests(a, b), 1)
})

t.test('a bad id is a 400 naming it (in a batch, with its index), and nothing is stored', async (t) => {
  const a = await makeApp(t)
  for (const bad of ['', 'x'.repeat(65), 'has space', 'slash/no', 'é', 12, null]) {
    const one = await post(a, '/events/ingest', event({ id: bad }))
    t.equal(one.status, 400, `id ${JSON.stringify(bad)}`)
    t.match(one.body.details, [{ path: 'id' }])
  }
  const batch = await post(a, '/events/batch', [event({ id: 'fine' }), event({ id: 'not fine' })])
  t.equal(batch.status, 400)
  t.match(batch.body.details, [{ path: '[1].id' }])
  const cid = await post(a, '/events/batch', [event({ client_id: 'bad id' })])
  t.match(cid.body.details, [{ path: '[0].client_id' }])
  t.equal(a.engine.log.nextSeq, 0)
  t.equal((await post(a, '/events/ingest', event({ id: 'x'.repeat(64) }))).status, 202, '64 characters is fine')
  t.equal((await post(a, '/events/ingest', event({ id: 'A-z_0' }))).status, 202)
})

t.test('the window is by receive time: a copy inside it is a duplicate, one after it is new', async (t) => {
  const clock = new ManualClock(T0)
  const a = await makeApp(t, { clock, env: { LLMSCOPE_DEDUPE_WINDOW_HOURS: '2' } })
  const first = await post(a, '/events/ingest', event({ id: 'w' }))
  clock.advance(2 * HOUR - 1)
  t.equal((await post(a, '/events/ingest', event({ id: 'w' }))).body.event_id, first.body.event_id, '1 ms before the end: duplicate')
  clock.advance(1)
  const later = await post(a, '/events/ingest', event({ id: 'w' }))
  t.not(later.body.event_id, first.body.event_id, 'at the end of the window: a new event')
  t.equal(await requests(a), 2)
  // The new one starts a window of its own.
  clock.advance(HOUR)
  t.equal((await post(a, '/events/ingest', event({ id: 'w' }))).body.event_id, later.body.event_id)
  // The event's own timestamp plays no part: an old event time is still a duplicate.
  t.equal((await post(a, '/events/ingest', event({ id: 'w', timestamp: '2001-01-01T00:00:00Z' }))).body.event_id, later.body.event_id)
})

t.test('it survives a restart (and the entries are in the log store, not memory)', async (t) => {
  const dir = t.testdir()
  const a = await makeApp(t, { dir })
  const first = await post(a, '/events/batch', [event({ id: 'r1' }), event({ id: 'r2' })])
  await a.close()
  const b = await makeApp(t, { dir })
  const again = await post(b, '/events/batch', [event({ id: 'r2' }), event({ id: 'r1' }), event({ id: 'r3' })])
  t.same(again.body.event_ids.slice(0, 2), [first.body.event_ids[1], first.body.event_ids[0]])
  t.equal(again.body.accepted, 1)
  t.equal(await requests(b), 3)
  t.equal(b.engine.log.dedupe!.stats.inflight, 0, 'memory holds no entry once commits resolved')
})

t.test('deleting a project drops its ids: a re-created project takes them as new', async (t) => {
  const a = await makeApp(t)
  await post(a, '/projects', { id: 'gone' })
  const h = { ...adminHeaders, 'x-llmscope-project': 'gone' }
  const first = await post(a, '/events/ingest', event({ id: 'p1' }), h)
  t.equal((await a.app.inject({ method: 'DELETE', url: '/projects/gone', headers: adminHeaders })).statusCode, 204)
  await post(a, '/projects', { id: 'gone' })
  const again = await post(a, '/events/ingest', event({ id: 'p1' }), h)
  t.equal(again.status, 202)
  t.not(again.body.event_id, first.body.event_id, 'a new event, not an answer naming a purged one')
  t.equal(await requests(a, h), 1)
})

t.test('forget: a deleted event\'s id is taken as new afterwards; only the entry naming that seq goes', async (t) => {
  const a = await makeApp(t)
  const first = await post(a, '/events/ingest', event({ id: 'f' }))
  const seq = a.engine.log.nextSeq - 1
  const d = a.engine.log.dedupe!
  t.equal(await d.forget('default', 'f', seq + 1), false, 'another seq: kept')
  t.equal(await d.forget('other', 'f', seq), false, 'another project: kept')
  t.equal(await d.forget('default', 'f', seq), true)
  t.equal(await d.forget('default', 'f', seq), false, 'idempotent')
  const again = await post(a, '/events/ingest', event({ id: 'f' }))
  t.not(again.body.event_id, first.body.event_id)
  const e = a.engine.log.get(a.engine.log.nextSeq - 1)!
  t.equal(await d.forgetEvents([e, { ...e, clientId: null }]), 1)
})

/**
 * A DedupeIndex on its own LMDB, as openStores makes it, with a manual clock; `record` also
 * keeps the events as the log would (the sweep reads an append's keys from its record).
 */
function index(t: Test, clock: ManualClock, windowMs: number, dir = t.testdir(), sweepEveryMs = 0) {
  const root = open({ path: `${dir}/d.lmdb`, maxDbs: 4 })
  const d = new DedupeIndex(root.openDB<DedupeEntry, string>('dedupe', { encoding: 'ordered-binary' }), root.openDB<DedupeJournalRecord, number>('dedupe-exp', {}), { windowMs, now: () => clock.now(), sweepEveryMs })
  const records = new Map<number, StoredEvent[]>()
  d.attach((seq) => records.get(seq) ?? [])
  const record = (events: StoredEvent[], committed: Promise<void>) => {
    records.set(events[0].seq, events)
    d.record(events, committed)
  }
  return { d, root, dir, record }
}

const stored = (seq: number, clientId: string, recv: number, project = 'default'): StoredEvent => ({
  seq, id: `evt_${seq.toString(36)}_abcdefghijkl`, ts: recv, recv, model: 'm', provider: 'p', prompt: 0, completion: 0, total: 0, cached: 0, reasoning: 0,
  latency: 0, ttft: null, error: false, cost: null, meta: null, project, user: null, session: null, tags: null, clientId
})

t.test('sweep: removes exactly the expired entries, reading only expired journal records', async (t) => {
  const clock = new ManualClock(T0)
  const { d, root, record } = index(t, clock, HOUR)
  t.teardown(async () => {
    await d.close()
    await root.close()
  })
  // Three appends an half hour apart, then one key rewritten late (its entry must survive).
  for (let k = 0; k < 3; k++) {
    const evs = Array.from({ length: 100 }, (_, i) => stored(k * 100 + i, `k${k}-${i}`, clock.now()))
    const committed = root.flushed.then(() => {})
    record(evs, committed)
    await committed
    clock.advance(HOUR / 2)
  }
  // Now T0+1.5h: append 0 (T0) expired, 1 (T0+0.5h) at its very end, 2 (T0+1h) alive.
  const rewritten = stored(300, 'k0-5', clock.now())
  t.ok(d.lookup('default', 'k0-5', clock.now()) === undefined, 'expired: not found before the sweep')
  record([rewritten], root.flushed.then(() => {}))
  await root.flushed
  t.equal(await d.sweep(), 99 + 100, 'append 0 but its rewritten key, and append 1 (recv + window <= now)')
  t.equal(d.lookup('default', 'k0-5', clock.now())?.seq, 300, 'the rewritten key kept')
  t.equal(d.lookup('default', 'k2-7', clock.now())?.seq, 207)
  t.equal(d.lookup('default', 'k1-7', clock.now()), undefined)
  let journal = 0
  for (const _ of root.openDB('dedupe-exp', {}).getKeys()) journal++
  t.equal(journal, 2, 'journal records of appends 2 and 3 remain')
  t.equal(await d.sweep(), 0, 'nothing more expired')
  clock.advance(10 * HOUR)
  t.equal(await d.sweep(), 101)
  let left = 0
  for (const _ of root.openDB('dedupe', {}).getKeys()) left++
  t.equal(left, 0, 'every entry gone once expired')
  t.equal(d.stats.swept, 300)
})

t.test('an entry in flight is found from memory and never swept', async (t) => {
  const clock = new ManualClock(T0)
  const { d, root, record } = index(t, clock, HOUR)
  t.teardown(async () => {
    await d.close()
    await root.close()
  })
  record([stored(0, 'a', T0)], root.flushed.then(() => {}))
  await root.flushed
  clock.advance(2 * HOUR)
  // A new append of `a`, its commit held back: the old, expired entry is all LMDB shows.
  let release!: () => void
  const held = new Promise<void>((r) => (release = r))
  record([stored(1, 'a', clock.now())], held)
  t.equal(d.lookup('default', 'a', clock.now())?.committed, held, 'found in memory, with the commit to wait for')
  await root.flushed
  t.equal(await d.sweep(), 0, 'the key of an append in flight is left alone')
  release()
  await held
  await new Promise((r) => setImmediate(r))
  t.equal(d.stats.inflight, 0)
  t.equal(d.lookup('default', 'a', clock.now())?.seq, 1)
})

t.test('the sweep timer runs on its own and close() stops it', async (t) => {
  const clock = new ManualClock(T0)
  const { d, root, record } = index(t, clock, HOUR, t.testdir(), 5)
  record([stored(0, 'a', T0)], root.flushed.then(() => {}))
  await root.flushed
  clock.advance(HOUR)
  const end = Date.now() + 30_000
  while (d.stats.swept === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 5))
  t.equal(d.stats.swept, 1, 'swept without being asked')
  await d.close()
  await d.close()
  await root.close()
})

t.test('a sweep through the real log: the keys come from the append\'s records; after a restart too', async (t) => {
  const clock = new ManualClock(T0)
  const dir = t.testdir()
  const a = await makeApp(t, { dir, clock, env: { LLMSCOPE_DEDUPE_WINDOW_HOURS: '1' } })
  // More than two records' worth (RECORD_MAX events each): every record's keys are swept.
  const N = 2 * RECORD_MAX + 70
  await post(a, '/events/batch', Array.from({ length: N }, (_, i) => event({ id: `s-${i}` })))
  clock.advance(HOUR / 2)
  await post(a, '/events/batch', [event({ id: 'late' }), event()])
  await a.close()
  clock.advance(HOUR / 2)
  const b = await makeApp(t, { dir, clock, env: { LLMSCOPE_DEDUPE_WINDOW_HOURS: '1' } })
  t.equal(await b.engine.log.dedupe!.sweep(), N, 'the first append\'s keys (three records), not the later one')
  t.equal((await post(b, '/events/ingest', event({ id: 'late' }))).body.event_id, b.engine.log.get(N)!.id, 'the later key still taken')
  t.equal((await post(b, '/events/batch', [event({ id: `s-${N - 1}` })])).body.accepted, 1, 'an expired one of the last record is new')
  t.equal((await post(b, '/events/batch', [event({ id: 's-3' })])).body.accepted, 1, 'an expired one is new')
})

t.test('LLMSCOPE_DEDUPE_WINDOW_HOURS: hours (fractions allowed), default 24, a bad value names the variable; cluster mode gets it too', async (t) => {
  const { loadConfig } = await import('../src/config.js')
  t.equal(loadConfig({}).dedupeWindowMs, 24 * HOUR)
  t.equal(loadConfig({ LLMSCOPE_DEDUPE_WINDOW_HOURS: '0.5' }).dedupeWindowMs, HOUR / 2)
  t.equal(loadConfig({ LLMSCOPE_DEDUPE_WINDOW_HOURS: '168', LLMSCOPE_NATS_URL: 'nats://127.0.0.1:4222' }).cluster?.dedupeWindowMs, 168 * HOUR)
  for (const bad of ['0', '-1', 'day', '8761']) t.throws(() => loadConfig({ LLMSCOPE_DEDUPE_WINDOW_HOURS: bad }), /invalid configuration: LLMSCOPE_DEDUPE_WINDOW_HOURS/, bad)
})

import t from 'tap'
import fc from 'fast-check'
import { unpackMultiple } from 'msgpackr'
import type { EventRecordV4, EventRecordV6, EventRecordV7 } from '../../src/store/db.js'
import { openStores } from '../../src/store/db.js'
import { COLUMNS_FROM, EventLog, RECORD_MAX, sortedPositions } from '../../src/store/event-log.js'
import { seqOfEventId, type PendingEvent, type StoredEvent } from '../../src/events.js'

const pending = (i: number): PendingEvent => ({ ts: 1000 + i, recv: 5, model: `m${i % 3}`, provider: 'p', prompt: i, completion: 2 * i, total: 3 * i, cached: 0, reasoning: 1, latency: 1.5, ttft: i % 2 ? 0.5 : null, error: i % 5 === 0, cost: i % 4 === 0 ? 0.25 : null, meta: i % 3 ? { i } : null, project: i % 2 ? 'default' : 'p2', user: i % 3 === 1 ? `u${i}` : null, session: null, tags: i % 4 === 1 ? ['a', 'b'] : null })
/** Project `default` without dimensions: what releases before projects wrote (formats 1 and 2). */
const plain = (i: number): PendingEvent => ({ ...pending(i), project: 'default', user: null, session: null, tags: null })

t.test('append assigns consecutive seqs and ids; get and readFrom return what was written', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  const a = log.append([pending(0), pending(1), pending(2)])
  const b = log.append([pending(3)])
  t.same(a.events.map((e) => e.seq), [0, 1, 2])
  t.equal(b.events[0].seq, 3)
  t.equal(seqOfEventId(a.events[1].id), 1)
  await Promise.all([a.committed, b.committed])
  t.equal(log.nextSeq, 4)
  t.same(log.get(1), a.events[1])
  t.same(log.get(3), b.events[0])
  t.equal(log.get(4), undefined)
  t.same([...log.readFrom(2)].flat().map((e) => e.seq), [2, 3], 'reads from inside an append')
  t.same([...log.readFrom(0)].flat(), [...a.events, ...b.events])
  t.equal([...log.readFrom(1)].flat().length, 3)
  t.same(log.stats, { appends: 2, appendedEvents: 4, duplicates: 0, nextSeq: 4 })
})

t.test('a reopened log continues after the last stored seq', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let log = new EventLog(stores.events)
  await log.append([pending(0), pending(1)]).committed
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  log = new EventLog(stores.events)
  t.equal(log.nextSeq, 2)
  t.equal(log.append([pending(2)]).events[0].seq, 2)
})

t.test('concurrent appends in one turn share one commit and all land (property)', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 15 }), async (sizes) => {
      const start = log.nextSeq
      const all = sizes.map((n) => log.append(Array.from({ length: n }, (_, i) => pending(i))))
      await Promise.all(all.map((a) => a.committed))
      const total = sizes.reduce((x, y) => x + y, 0)
      const read = [...log.readFrom(start)].flat()
      return read.length === total && read.every((e, i) => e.seq === start + i)
    }),
    { numRuns: 30 }
  )
})

t.test('an unusable data dir is a clear error', async (t) => {
  const { writeFileSync } = await import('node:fs')
  const dir = t.testdir()
  writeFileSync(`${dir}/file`, 'x')
  t.throws(() => openStores(`${dir}/file`), /data dir .*file is not usable/)
})

t.test('usedBytes (read by the log every few ms) equals the highest page in use from LMDB\'s full stats', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const fromStats = () => {
    const s = stores.root.getStats() as { pageSize: number; lastPageNumber: number }
    return (s.lastPageNumber + 1) * s.pageSize
  }
  t.equal(stores.usedBytes(), fromStats())
  const log = new EventLog(stores.events)
  const before = stores.usedBytes()
  for (let i = 0; i < 5; i++) {
    await log.append(Array.from({ length: 500 }, () => ({ ts: 1, recv: 1, model: 'gpt-4', provider: 'openai', prompt: 1, completion: 1, total: 2, cached: 0, reasoning: 0, latency: 1, ttft: null, error: false, cost: null, meta: { pad: 'x'.repeat(200) }, project: 'default', user: null, session: null, tags: null }))).committed
  }
  t.ok(stores.usedBytes() > before, 'it grows as the log grows')
  t.equal(stores.usedBytes(), fromStats())
})

/** A v1 record as releases before the columnar format wrote it (one row per event). */
function v1Record(first: number, events: PendingEvent[], rnd: string[]) {
  return {
    v: 1 as const,
    ev: events.map((e, i) => [`evt_${(first + i).toString(36)}_${rnd[i]}`, e.ts, e.recv, e.model, e.provider, e.prompt, e.completion, e.total, e.cached, e.reasoning, e.latency, e.ttft, e.error ? 1 : 0, e.cost, e.meta])
  }
}

t.test('old v1 (row) records stay readable next to new v2 (columnar) ones: get, readFrom, nextSeq, after a reopen', async (t) => {
  const dir = t.testdir()
  const old = [plain(0), plain(1), plain(2)]
  const rnd = ['AAAAAAAAAAAA', 'BBBBBBBBBBBB', 'C_C-C_C-C_C-']
  {
    const stores = openStores(dir)
    await stores.events.put(0, v1Record(0, old, rnd))
    await stores.close()
  }
  const stores = openStores(dir)
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  t.equal(log.nextSeq, 3, 'the position after a v1 record')
  const a = log.append(Array.from({ length: COLUMNS_FROM }, (_, i) => plain(3 + i)))
  const b = log.append([plain(99)])
  await Promise.all([a.committed, b.committed])
  t.equal((stores.events.get(3) as { v: number }).v, 7, 'an append of COLUMNS_FROM events with metadata is written in format 7')
  t.equal((stores.events.get(3 + COLUMNS_FROM) as { v: number }).v, 1, 'a small one in format 1')
  const want = [...old.map((e, i) => ({ ...e, seq: i, id: `evt_${i.toString(36)}_${rnd[i]}` })), ...a.events, ...b.events]
  t.same([...log.readFrom(0)].flat(), want)
  t.same([...log.readFrom(1)].flat(), want.slice(1), 'from inside a v1 record')
  t.same([...log.readFrom(10)].flat(), want.slice(10), 'from inside a v2 record')
  for (const e of want) t.same(log.get(e.seq), e)
  t.equal(log.get(want.length), undefined)
  t.equal(seqOfEventId(log.get(10)!.id), 10)
})

t.test('v1 and v2 records round-trip every field (property): nulls, errors, large tokens, unicode names, metadata', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  const name = fc.oneof(fc.constantFrom('gpt-4o', 'claude-3-5-sonnet-20241022', 'ünïcødé-😀', 'x'.repeat(256)), fc.string({ minLength: 1, maxLength: 12 }))
  const event = fc.record({
    ts: fc.integer({ min: -8.64e15, max: 8.64e15 }),
    recv: fc.integer({ min: 0, max: 4e12 }),
    model: name,
    provider: name,
    prompt: fc.nat({ max: 1e12 }),
    completion: fc.nat({ max: 1e12 }),
    total: fc.nat({ max: 1e12 }),
    cached: fc.nat({ max: 1e12 }),
    reasoning: fc.nat({ max: 1e12 }),
    latency: fc.double({ min: 0, max: 6.048e8, noNaN: true }),
    ttft: fc.option(fc.double({ min: 0, max: 6.048e8, noNaN: true }), { nil: null }),
    error: fc.boolean(),
    cost: fc.option(fc.double({ min: 0, max: 1e6, noNaN: true }), { nil: null }),
    // No "__proto__" key: the HTTP parsers refuse it (400), so it never reaches the log (and
    // msgpackr, guarding against prototype pollution, would read it back renamed).
    meta: fc.option(fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }).filter((m) => !JSON.stringify(m).includes('"__proto__"')), { nil: null }),
    project: fc.constantFrom('default', 'default', 'team-a'),
    user: fc.option(fc.string({ minLength: 1, maxLength: 8 }), { nil: null }),
    session: fc.option(fc.string({ minLength: 1, maxLength: 8 }), { nil: null }),
    tags: fc.option(fc.uniqueArray(fc.string({ minLength: 1, maxLength: 4 }), { maxLength: 3 }), { nil: null }),
    // Absent (most events: their records keep formats 1–4) or a positive count (formats 5/6, `cw`).
    cacheWrite: fc.integer({ min: 1, max: 1e12 })
  }, { requiredKeys: ['ts', 'recv', 'model', 'provider', 'prompt', 'completion', 'total', 'cached', 'reasoning', 'latency', 'ttft', 'error', 'cost', 'meta', 'project', 'user', 'session', 'tags'] })
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.array(event, { minLength: 1, maxLength: 8 }), fc.array(event, { minLength: COLUMNS_FROM, maxLength: COLUMNS_FROM + 20 })), async (events) => {
      const input = events.map((e) => structuredClone(e) as PendingEvent)
      const a = log.append(events as PendingEvent[])
      await a.committed
      const read = [...log.readFrom(a.events[0].seq)].flat()
      t.same(read.map(({ seq, id, ...rest }) => rest), input, 'fields as given')
      t.same(read, a.events, 'and as the append returned them')
      return true
    }),
    { numRuns: 60 }
  )
})

t.test('a record of an unknown format is refused with its position, never misread', async (t) => {
  const dir = t.testdir()
  {
    const stores = openStores(dir)
    await stores.events.put(0, { v: 9, whatever: true } as never)
    await stores.close()
  }
  const stores = openStores(dir)
  t.teardown(() => stores.close())
  t.throws(() => new EventLog(stores.events), /record at seq 0 has format v9, which this release cannot read/)
})

t.test('an append of more than RECORD_MAX events is stored as records of at most RECORD_MAX, in one commit; more distinct names than a v2 index holds', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  const many = Array.from({ length: 65_537 }, (_, i) => ({ ...plain(i), model: `model-${i}` }))
  const a = log.append(many)
  await a.committed
  const keys = [...stores.events.getKeys({})]
  t.equal(keys.length, Math.ceil(65_537 / RECORD_MAX), 'one record per RECORD_MAX events')
  t.same(keys, keys.map((_, i) => i * RECORD_MAX), 'each keyed by its first seq')
  t.same([...log.readFrom(0)].map((b) => b.length), keys.map((k) => Math.min(RECORD_MAX, 65_537 - k)))
  t.equal((stores.events.get(0) as { v: number }).v, 7, 'full records in columns')
  t.equal((stores.events.get(keys.at(-1)!) as { v: number }).v, 1, 'the last, of one event, in rows')
  t.equal(log.get(65_536)!.model, 'model-65536')
  t.same(log.get(12_345), a.events[12_345])
  t.same([...log.readFrom(0)].flat(), a.events)
  t.same([...log.readFrom(1000)].flat(), a.events.slice(1000), 'from inside a record')
  const b = log.append(Array.from({ length: COLUMNS_FROM }, (_, i) => ({ ...plain(i), meta: null })))
  await b.committed
  t.equal((stores.events.get(65_537) as { v: number }).v, 2, 'the next large append, without metadata, is format 2')
  t.same([...log.readFrom(65_537)].flat(), b.events)
  t.equal(new EventLog(stores.events).nextSeq, 65_537 + COLUMNS_FROM)
})

t.test('purge leaves holes: the other events keep their seqs and ids, the log end never moves back', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let log = new EventLog(stores.events)
  const small = log.append([pending(0), pending(1), pending(2)])
  const big = log.append(Array.from({ length: COLUMNS_FROM + 6 }, (_, i) => pending(3 + i)))
  const last = log.append([pending(2)])
  await Promise.all([small.committed, big.committed, last.committed])
  t.equal((stores.events.get(3) as { v: number }).v, 7, 'columns with projects and dimensions are format 7')
  t.equal((stores.events.get(0) as { v: number }).v, 3, 'rows with them format 3')
  const all = [...log.readFrom(0)].flat()
  const gone = all.filter((e) => e.project === 'p2')
  t.ok(gone.length > 10, 'the fixture puts events in project p2')
  t.equal(await log.purge((e) => e.project === 'p2'), gone.length, 'counts what it removed')
  const kept = [...log.readFrom(0)].flat()
  t.same(kept, all.filter((e) => e.project !== 'p2'), 'every other event as it was, in order')
  for (const e of gone) t.equal(log.get(e.seq), undefined, `seq ${e.seq} reads as absent`)
  t.equal(await log.purge((e) => e.project === 'p2'), 0, 'running it again finds nothing')
  const end = log.nextSeq
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  log = new EventLog(stores.events)
  t.equal(log.nextSeq, end, 'the end is kept even when the last record is all holes')
  t.same([...log.readFrom(0)].flat(), kept, 'the purge is durable')
})

/** An event with a client id (and, every third, an imported cost), as DESIGN §7 stores them. */
const withId = (i: number): PendingEvent => ({ ...pending(i), clientId: `c-${i}`, ...(i % 3 === 0 ? { costSource: i % 2 ? 'computed' : 'unpriced', cost: i % 2 ? 0.5 : null } : {}) })

t.test('client ids and imported costs: formats 5 (rows) and 7 (columns) round-trip them, mixed with events without', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let log = new EventLog(stores.events)
  const rows = log.append([withId(0), plain(1), withId(2)])
  const cols = log.append(Array.from({ length: COLUMNS_FROM }, (_, i) => (i % 5 === 0 ? plain(3 + i) : withId(3 + i))))
  const colsDefault = log.append(Array.from({ length: COLUMNS_FROM }, (_, i) => ({ ...plain(i), clientId: `d-${i}` })))
  const none = log.append([plain(7)])
  await Promise.all([rows.committed, cols.committed, colsDefault.committed, none.committed])
  t.equal((stores.events.get(0) as { v: number }).v, 5)
  t.equal((stores.events.get(3) as { v: number }).v, 7)
  t.equal((stores.events.get(3 + COLUMNS_FROM) as { v: number; dx?: unknown }).v, 7)
  t.equal((stores.events.get(3 + 2 * COLUMNS_FROM) as { v: number }).v, 1, 'an append without ids writes the old format')
  const want = [...rows.events, ...cols.events, ...colsDefault.events, ...none.events]
  t.same([...log.readFrom(0)].flat(), want)
  t.equal(log.get(2)!.clientId, 'c-2')
  t.equal(log.get(0)!.costSource, 'unpriced')
  t.equal(log.get(0)!.cost, null)
  t.equal(log.get(1)!.clientId, undefined, 'an event without id has no clientId field at all')
  t.equal(log.get(9)!.costSource, 'computed')
  t.equal(log.get(9)!.cost, 0.5)
  // A purge rewrites a record with holes and keeps the others' ids (format 5).
  t.equal(await log.purge((e) => e.seq === 2 || e.seq === 4), 2)
  t.equal((stores.events.get(0) as { v: number }).v, 5)
  t.same(log.get(0), rows.events[0])
  t.same(log.get(5), cols.events[2])
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  log = new EventLog(stores.events)
  t.same([...log.readFrom(0)].flat(), want.filter((e) => e.seq !== 2 && e.seq !== 4), 'after a reopen')
})

t.test('dedupe: entries commit with the log record; duplicates are marked, not stored; a purge drops their entries', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events, undefined, stores.dedupe)
  const entries = stores.root.openDB<unknown, string>('dedupe', { encoding: 'ordered-binary' })
  const a = log.append([withId(0), withId(1), { ...withId(2), clientId: 'c-0' }])
  t.equal(entries.get('p2/c-0'), undefined, 'nothing visible before the commit')
  // In flight: a copy in the next append is a duplicate already, waiting for the first commit.
  const copy = { ...withId(0), recv: 6 }
  const b = log.append([copy, withId(9)])
  t.equal(a.events.length, 2, 'the copy inside the append was not stored')
  t.same(b.events.map((e) => e.clientId), ['c-9'])
  t.equal((copy as StoredEvent).seq, 0)
  await Promise.all([a.committed, b.committed])
  t.same(entries.get('p2/c-0'), [a.events[0].id, 5], 'committed together: [event id, recv]')
  t.same(entries.get('default/c-1'), [a.events[1].id, 5])
  t.equal(log.nextSeq, 3, 'seqs 0, 1 and 9\'s one')
  t.equal(log.stats.duplicates, 2)
  // All duplicates: nothing is written, the answer comes at once.
  const c = log.append([{ ...withId(1) }])
  t.equal(c.events.length, 0)
  await c.committed
  t.equal(log.nextSeq, 3)
  t.equal(await log.purge((e) => e.clientId === 'c-1'), 1)
  t.equal(entries.get('default/c-1'), undefined, 'the purged event\'s entry went with it')
  t.not(entries.get('p2/c-0'), undefined, 'the others stay')
  const d = log.append([withId(1)])
  await d.committed
  t.equal(d.events.length, 1, 'a copy of a purged event is new')
})

t.test('dedupe: a failed commit takes its duplicates down with it and leaves no entry', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const full = { used: () => 1, max: 0 }
  const log = new EventLog(stores.events, full, stores.dedupe)
  const a = log.append([withId(0), { ...withId(1), clientId: 'c-0' }])
  await t.rejects(a.committed, /database is full/)
  t.equal(stores.dedupe.stats.inflight, 0)
  const ok = new EventLog(stores.events, undefined, stores.dedupe)
  const b = ok.append([withId(0)])
  await b.committed
  t.equal(b.events.length, 1, 'stored now: the refused one left nothing behind')
})

t.test('atSeqs: asked positions across row and column records, holes, repeats and positions past the log', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  const small = log.append([pending(0), pending(1), pending(2)])
  const big = log.append(Array.from({ length: COLUMNS_FROM + 5 }, (_, i) => pending(3 + i)))
  const last = log.append([pending(100)])
  await Promise.all([small.committed, big.committed, last.committed])
  const all = [...small.events, ...big.events, ...last.events]
  t.equal(await log.purge((e) => e.seq === 1 || e.seq === 5), 2)
  const end = log.nextSeq
  const asked = [0, 1, 2, 2, 4, 5, 6, end - 2, end - 1, end, end + 7]
  const got = [...log.atSeqs(asked)]
  const want = asked.flatMap((s, k) => (s === 1 || s === 5 || s >= end ? [] : [[k, all[s]] as const]))
  t.same(got, want, 'each stored asked event once per ask, in order; holes and positions past the end skipped')
  t.same([...log.atSeqs([])], [])
})

/** The v4/v6 record releases before format 7 wrote for the events of `r` (metadata and dimension tuples as columns). */
function olderColumns(r: EventRecordV7): EventRecordV4 | EventRecordV6 {
  const parts = unpackMultiple(r.px) as Array<unknown[] | null>
  const meta = parts.map((p) => (p === null ? null : (p[0] as Record<string, unknown> | null)))
  const dx = parts.map((p) => (p === null || p.length === 1 || (p[1] === 'default' && (p[2] ?? null) === null && (p[3] ?? null) === null && (p[4] ?? null) === null) ? null : ([p[1], p[2] ?? null, p[3] ?? null, p[4] ?? null] as [string, string | null, string | null, string[] | null])))
  const ids = parts.map((p) => (p?.[5] as string | null | undefined) ?? '')
  const cid = ids.some((id) => id !== '') ? ids.join('\n') : undefined
  const { px, po, v, cs, cw, rnd: bytes, ...rest } = r
  const cols = { ...rest, rnd: Buffer.from(bytes).toString('latin1') }
  if (cid === undefined && cs === undefined && cw === undefined) return { ...cols, v: 4, meta, dx }
  return { ...cols, v: 6, meta, ...(dx.some((d) => d !== null) ? { dx } : {}), cid: cid ?? ids.join('\n'), ...(cs !== undefined ? { cs } : {}), ...(cw !== undefined ? { cw } : {}) }
}

t.test('format 7 reads an event from its own part; v4/v6 records of earlier releases read the same (get, atSeqs, readFrom, purge)', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let log = new EventLog(stores.events)
  const a = log.append(Array.from({ length: COLUMNS_FROM + 10 }, (_, i) => pending(i)))
  const b = log.append(Array.from({ length: COLUMNS_FROM }, (_, i) => (i % 5 === 0 ? plain(i) : { ...withId(i), ...(i % 2 ? { cacheWrite: 7 } : {}) })))
  await Promise.all([a.committed, b.committed])
  const want = [...a.events, ...b.events]
  const ra = stores.events.get(0) as EventRecordV7
  const rb = stores.events.get(a.events.length) as EventRecordV7
  t.equal(ra.v, 7)
  t.equal(rb.v, 7)
  t.equal(new Uint32Array(new Uint8Array(ra.po).buffer).at(-1), ra.px.length, 'the last part ends where the parts do')
  const ends = new Uint32Array(new Uint8Array(ra.po).buffer)
  t.same([ends[3] - ends[2], ra.px[ends[2]]], [1, 0xc0], 'an event without metadata or dimensions (pending(3)) is one nil byte')
  for (const e of want) t.same(log.get(e.seq), e, `get ${e.seq}`)
  const asked = [1, 5, 6, 70, 80, 81, 120]
  t.same([...log.atSeqs(asked)].map(([k, e]) => [k, e]), asked.map((s, k) => [k, want[s]]), 'atSeqs reads the asked parts')
  t.same([...log.readFrom(0)].flat(), want)

  // The same events as an earlier release stored them.
  await stores.events.put(0, olderColumns(ra))
  await stores.events.put(a.events.length, olderColumns(rb))
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  log = new EventLog(stores.events)
  t.equal((stores.events.get(0) as { v: number }).v, 4)
  t.equal((stores.events.get(a.events.length) as { v: number }).v, 6)
  t.equal(log.nextSeq, want.length)
  t.same([...log.readFrom(0)].flat(), want, 'v4/v6 read back the same events')
  for (const e of want) t.same(log.get(e.seq), e, `v4/v6 get ${e.seq}`)
  t.same([...log.atSeqs(asked)].map(([k, e]) => [k, e]), asked.map((s, k) => [k, want[s]]))
  const gone = want.filter((e) => e.user !== null)
  t.ok(gone.length > 5)
  t.equal(await log.purge((e) => e.user !== null), gone.length)
  t.same([...log.readFrom(0)].flat(), want.filter((e) => e.user === null), 'a purge of v4/v6 records keeps the others as they were')
})

t.test('reads by seq find records appended after the first read (the record index is kept by appends), and after a reopen', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let log = new EventLog(stores.events)
  t.equal(log.get(0), undefined, 'an empty log')
  const a = log.append([pending(0), pending(1)])
  await a.committed
  t.same(log.get(1), a.events[1], 'the first read builds the index')
  const b = log.append(Array.from({ length: 2 * RECORD_MAX + 3 }, (_, i) => pending(2 + i)))
  const c = log.append([pending(9)])
  await Promise.all([b.committed, c.committed])
  const all = [...a.events, ...b.events, ...c.events]
  for (const e of all) t.same(log.get(e.seq), e, `get ${e.seq}`)
  t.same([...log.atSeqs(all.map((e) => e.seq))].map(([, e]) => e), all)
  t.equal(log.get(all.length), undefined, 'past the end')
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  log = new EventLog(stores.events)
  t.same([...log.atSeqs(all.map((e) => e.seq))].map(([, e]) => e), all, 'after a reopen')
  const d = log.append([pending(10)])
  await d.committed
  t.same(log.get(all.length), d.events[0])
})

t.test('sortedPositions: seqs ascending with where each stood (property), repeats and huge seqs included', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.nat({ max: 2000 }), fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER - 1)), { maxLength: 300 }), (seqs) => {
      const { order, sorted } = sortedPositions(seqs)
      const want = [...seqs].sort((a, b) => a - b)
      return JSON.stringify(sorted) === JSON.stringify(want) && order.every((i, k) => seqs[i] === sorted[k]) && new Set(order).size === seqs.length
    }),
    { numRuns: 300 }
  )
})

t.test('a purge rewrites a columns record in columns (format 7 with `gone`): holes read as absent, nothing of a removed event stays in its bytes', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let log = new EventLog(stores.events)
  const secret = (i: number) => `secret-user-${i}-zq`
  const a = log.append(Array.from({ length: 100 }, (_, i) => ({ ...withId(i), user: i % 10 === 3 ? secret(i) : `u${i}`, model: i % 10 === 3 ? `gone-model-${i}` : 'kept-model', clientId: i % 10 === 3 ? `gone-cid-${i}-x` : `c-${i}` })))
  await a.committed
  const drop = (e: StoredEvent) => e.user !== null && e.user.startsWith('secret-user-')
  const gone = a.events.filter(drop)
  t.equal(gone.length, 10)
  t.equal(await log.purgeSeqs(gone.map((e) => e.seq)), 10)
  const r = stores.events.get(0) as EventRecordV7
  t.equal(r.v, 7, 'still columns')
  t.same([...r.gone!].flatMap((g, i) => (g === 1 ? [i] : [])), gone.map((e) => e.seq), 'gone marks exactly the removed events')
  const bytes = Buffer.from(stores.events.getBinaryFast(0)!.subarray(0, stores.events.getBinaryFast(0)!.length)).toString('latin1')
  for (const e of gone) {
    t.notOk(bytes.includes(e.user!), `${e.user} is not in the record`)
    t.notOk(bytes.includes(e.model), `${e.model} is not in the record`)
    t.notOk(bytes.includes(e.clientId!), `${e.clientId} is not in the record`)
    t.notOk(bytes.includes(e.id.slice(-12)), 'nor its id')
    t.equal(log.get(e.seq), undefined)
  }
  const kept = a.events.filter((e) => !drop(e))
  t.same([...log.readFrom(0)].flat(), kept, 'every other event as it was')
  t.same([...log.atSeqs(a.events.map((e) => e.seq))].map(([, e]) => e), kept)
  t.equal(await log.purge(drop), 0, 'a second purge finds nothing')
  t.equal(await log.purge((e) => e.seq === 5), 1, 'a purge of a record with holes keeps them')
  t.same([...log.readFrom(0)].flat(), kept.filter((e) => e.seq !== 5))
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  log = new EventLog(stores.events)
  t.same([...log.readFrom(0)].flat(), kept.filter((e) => e.seq !== 5), 'after a reopen')
})

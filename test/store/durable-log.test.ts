/**
 * The one log interface, two implementations (DESIGN §9): the same appends, read back through
 * DurableLog from LMDB (EventLog) and from a JetStream stream (JetStreamLog), give the same
 * events in the same order with the same filters, positions that increase and never move, ids
 * that carry them, and `positions()` per partition.
 */
import t, { type Test } from 'tap'
import { openStores } from '../../src/store/db.js'
import { EventLog } from '../../src/store/event-log.js'
import { JetStreamLog } from '../../src/cluster/js-log.js'
import { connectCluster } from '../../src/cluster/nats.js'
import { partitionOf } from '../../src/cluster/names.js'
import { seqOfEventId, type PendingEvent, type StoredEvent } from '../../src/events.js'
import type { DurableLog } from '../../src/store/durable-log.js'
import { loadConfig } from '../../src/config.js'
import { silentLog } from '../../src/log.js'
import { startNats } from '../helpers/nats.js'

t.setTimeout(120_000)

const nats = await startNats({ servers: 1 })
t.teardown(() => nats.stop())

const pending = (i: number): PendingEvent =>
  ({
    ts: Date.UTC(2026, 0, 1) + i * 1000,
    recv: Date.UTC(2026, 0, 1) + i * 1000 + 5,
    model: ['gpt-4o', 'claude-3-5-sonnet-20241022', 'my-llm'][i % 3],
    provider: ['openai', 'anthropic', 'self'][i % 3],
    prompt: 100 + i,
    completion: 50,
    total: 150 + i,
    cached: i % 7,
    reasoning: 0,
    latency: 10 + i,
    ttft: i % 2 === 0 ? null : 3,
    error: i % 5 === 0,
    cost: i % 11 === 0 ? 0.25 : null,
    meta: i % 4 === 0 ? { feature: 'chat', n: i } : null,
    project: ['default', 'checkout'][i % 2],
    user: i % 3 === 0 ? null : `u${i % 4}`,
    session: null,
    tags: i % 2 === 0 ? ['a', 'b'] : null
  }) as unknown as PendingEvent

const strip = (e: StoredEvent) => {
  const { seq: _s, id: _i, ...rest } = e
  return rest
}

async function collect(it: AsyncIterable<StoredEvent[]>): Promise<StoredEvent[]> {
  const out: StoredEvent[] = []
  for await (const batch of it) out.push(...batch)
  return out
}

async function exercise(t: Test, log: DurableLog, partitions: number, partitionOfEvent: (e: StoredEvent) => number): Promise<StoredEvent[]> {
  t.equal(await log.lastSeq(), (await log.lastSeq()), 'lastSeq is stable with no append')
  const before = await log.lastSeq()
  const appends = [log.append(Array.from({ length: 40 }, (_, i) => pending(i))), log.append(Array.from({ length: 30 }, (_, i) => pending(40 + i)))]
  await Promise.all(appends.map((a) => a.committed))
  const stored = appends.flatMap((a) => a.events)
  const seqs = stored.map((e) => e.seq)
  t.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'positions increase in append order')
  t.ok(stored.every((e) => seqOfEventId(e.id) === e.seq), 'ids carry their positions')
  t.equal(await log.lastSeq(), seqs[seqs.length - 1], 'lastSeq is the last position written')
  t.ok(seqs[0] > before, 'after what was there')

  const all = await collect(log.read(seqs[0]))
  t.same(all.map((e) => e.id), stored.map((e) => e.id), 'read gives every event in order')
  t.same(all.map(strip), stored.map(strip), 'with every field')
  const checkout = await collect(log.read(seqs[0], { project: 'checkout' }))
  t.same(checkout.map((e) => e.id), stored.filter((e) => e.project === 'checkout').map((e) => e.id), 'filtered by project')
  const some = await collect(log.read(seqs[10], { to: seqs[20] }))
  t.same(some.map((e) => e.seq), seqs.slice(10, 21), 'from and to')
  for (const e of [stored[0], stored[33], stored[69]]) t.same(await log.get(e.seq), all.find((x) => x.seq === e.seq), `get(${e.seq})`)
  t.equal(await log.get(seqs[seqs.length - 1] + 1000), undefined, 'get past the end')

  const positions = await log.positions()
  t.equal(positions.length, partitions, 'one position per partition')
  for (const { partition, last } of positions) {
    const mine = stored.filter((e) => partitionOfEvent(e) === partition)
    if (mine.length > 0) t.equal(last, mine[mine.length - 1].seq, `partition ${partition} ends at its newest event`)
    const read = await collect(log.read(seqs[0], { partition }))
    t.same(read.map((e) => e.seq), mine.map((e) => e.seq), `partition ${partition} read`)
  }
  return all
}

t.test('LMDB and JetStream give the same log through one interface', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const lmdb = new EventLog(stores.events)
  const fromLmdb = await exercise(t, lmdb, 1, () => 0)

  const cfg = loadConfig({ LLMSCOPE_NATS_URL: nats.urls.join(','), LLMSCOPE_PARTITIONS: '4', LLMSCOPE_CLUSTER_NAME: 'durablelog' }).cluster!
  const h = await connectCluster(cfg, { log: silentLog })
  t.teardown(() => h.close())
  const js = new JetStreamLog(h)
  const fromJs = await exercise(t, js, 4, (e) => partitionOf(e.project, e.model, 4))
  t.same(fromJs.map(strip), fromLmdb.map(strip), 'the same events, field for field')
})

/**
 * PartitionFollower (src/cluster/follower.ts) on real nats-servers: delivery from a seq, in
 * order and batched; caughtUp with other partitions' events interleaved; timeouts and stop; and
 * no loss or repeat across a kill -9 of the stream leader in a 3-server R3 cluster.
 */
import t from 'tap'
import { startNats, streamLeader } from '../helpers/nats.js'
import { partitionOf } from '../../src/cluster/names.js'
import { connectCluster, type NatsHandles } from '../../src/cluster/nats.js'
import { JetStreamLog } from '../../src/cluster/js-log.js'
import { PartitionFollower } from '../../src/cluster/follower.js'
import type { ClusterConfig } from '../../src/config.js'
import type { PendingEvent, StoredEvent } from '../../src/events.js'
import { silentLog } from '../../src/log.js'

t.setTimeout(300_000)

const PARTITIONS = 4
const cfg = (servers: string[], over: Partial<ClusterConfig> = {}): ClusterConfig => ({
  servers, nodeId: null, leaseMs: 10_000, partitions: PARTITIONS, replicas: 0, queryTimeoutMs: 5_000, name: 'fl', ...over
})

/** A model name whose (project 'acme', model) pair lands in partition `p` of `parts`. */
function modelFor(p: number, parts = PARTITIONS): string {
  for (let i = 0; ; i++) if (partitionOf('acme', `m${i}`, parts) === p) return `m${i}`
}

let n = 0
const pending = (partition: number, parts = PARTITIONS): PendingEvent => ({
  ts: 1_700_000_000_000 + n, recv: 1_700_000_000_000 + n++, model: modelFor(partition, parts), provider: 'openai',
  prompt: 1, completion: 1, total: 2, cached: 0, reasoning: 0, latency: 10, ttft: null, error: false, cost: null,
  meta: null, project: 'acme', user: null, session: null, tags: null
})

async function append(log: JetStreamLog, partitions: number[], parts = PARTITIONS): Promise<StoredEvent[]> {
  const a = log.append(partitions.map((p) => pending(p, parts)))
  await a.committed
  return a.events
}

/** Resolves once `cond()` holds (checked every 20 ms), rejects after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

t.test('one server', async (t) => {
  const nats = await startNats()
  t.teardown(() => nats.stop())
  const h = await connectCluster(cfg(nats.urls), { log: silentLog })
  t.teardown(() => h.close())
  const log = new JetStreamLog(h)

  // Interleaved partitions: 0,1,2,3,0,1,...
  const first = await append(log, Array.from({ length: 400 }, (_, i) => i % PARTITIONS))
  const ofP = (events: StoredEvent[], p: number) => events.filter((e) => partitionOf(e.project, e.model, PARTITIONS) === p)

  t.test('delivers the partition from a seq, in order, batched; caughtUp with other partitions interleaved', async (t) => {
    const got: StoredEvent[] = []
    const batches: number[] = []
    const from = first[101]!.seq // partition 1's event
    const f = new PartitionFollower(h, { partition: 1, from, onEvents: (es) => { batches.push(es.length); got.push(...es) }, log: silentLog })
    t.teardown(() => f.stop())
    t.equal(f.processedThrough, from - 1)
    t.equal(f.partition, 1)
    await f.start()
    await f.start()
    const last = await log.lastSeq()
    await f.caughtUp(last, 30_000)
    const want = ofP(first, 1).filter((e) => e.seq >= from)
    t.same(got, want, 'every event of partition 1 from `from` on, in order, each once')
    t.ok(batches.length < want.length, `batched (${batches.length} batches for ${want.length} events)`)
    t.equal(f.processedThrough, want.at(-1)!.seq)
    t.equal(f.lag, 0)

    // Only other partitions get events: caughtUp(newLast) resolves though processedThrough stays below it.
    const others = await append(log, [0, 2, 3, 0, 2, 3])
    const newLast = others.at(-1)!.seq
    const before = f.processedThrough
    await f.caughtUp(newLast, 10_000)
    t.ok(f.processedThrough < newLast)
    t.equal(f.processedThrough, before)
    t.equal(got.length, want.length, 'nothing new handed over')
    await f.caughtUp(newLast, 10_000) // answered from what it learnt

    // Mixed: partition 1 events between others; caughtUp waits for them.
    const mixed = await append(log, [0, 1, 2, 1, 3, 1, 0])
    await f.caughtUp(mixed.at(-1)!.seq, 30_000)
    t.same(got.slice(want.length), ofP(mixed, 1))
    t.equal(f.processedThrough, ofP(mixed, 1).at(-1)!.seq)
    // A caughtUp to a seq it already passed resolves at once.
    await f.caughtUp(from, 1)
  })

  t.test('live: events appended later arrive on their own', async (t) => {
    const got: StoredEvent[] = []
    const f = new PartitionFollower(h, { partition: 2, from: (await log.lastSeq()) + 1, onEvents: (es) => got.push(...es), log: silentLog })
    t.teardown(() => f.stop())
    await f.start()
    const later = await append(log, [2, 3, 2, 2])
    await until(() => got.length === 3, 30_000, 'three live events')
    t.same(got, ofP(later, 2))
  })

  t.test('caughtUp rejects after its timeout; stop rejects waiting calls; stop twice', async (t) => {
    const f = new PartitionFollower(h, { partition: 3, from: 1, onEvents: () => {}, log: silentLog })
    // Never started: partition 3's events exist at or below last, so it cannot catch up.
    const last = await log.lastSeq()
    await t.rejects(f.caughtUp(last, 300), /partition 3: not caught up to seq \d+ within 300 ms/)
    // A query waits for a partition that is not there yet: 503, never an internal error.
    const err = await f.caughtUp(last, 50).catch((e: unknown) => e as { code?: string; statusCode?: number; retryAfter?: number })
    t.match(err, { code: 'LLMS_ERR_UNAVAILABLE', statusCode: 503, retryAfter: 1 })
    // Not delivering, and it knows the stream holds more of the partition: lag is not 0.
    t.ok(f.lag >= 1, `lag ${f.lag} while no consumer delivers`)
    const waiting = f.caughtUp(last, 30_000)
    await f.stop()
    await t.rejects(waiting, { code: 'LLMS_ERR_UNAVAILABLE', message: /stopped/ })
    await f.stop()
    await t.rejects(f.caughtUp(last, 1000), /stopped/)
  })

  t.test('a consumer deleted from under it: a new one from the next seq, nothing lost or repeated; stop is prompt', async (t) => {
    const got: StoredEvent[] = []
    const from = (await log.lastSeq()) + 1
    const f = new PartitionFollower(h, { partition: 2, from, onEvents: (es) => got.push(...es), log: silentLog })
    await f.start()
    const before = await append(log, [2, 0, 2])
    await f.caughtUp(before.at(-1)!.seq, 30_000)
    // Every consumer of the stream deleted (this follower's among them), then more events.
    for await (const c of h.jsm.consumers.list(h.names.stream)) await h.jsm.consumers.delete(h.names.stream, c.name)
    const after = await append(log, [2, 2, 1, 2])
    await until(() => got.length === 5, 30_000, 'the events appended after the delete')
    t.same(got, ofP([...before, ...after], 2), 'each once, in order')
    t.ok(f.reopens >= 1, `a new consumer (${f.reopens})`)
    t.equal(f.lag, 0)
    // Stop while a fetch waits for messages: resolves well before the fetch would expire.
    const t0 = Date.now()
    await f.stop()
    t.ok(Date.now() - t0 < 1_000, `stopped in ${Date.now() - t0} ms`)
    const [extra] = await append(log, [2])
    // Another follower has it: the stopped one would have had it by now, too.
    const seen: StoredEvent[] = []
    const g = new PartitionFollower(h, { partition: 2, from: extra!.seq, onEvents: (es) => seen.push(...es), log: silentLog })
    t.teardown(() => g.stop())
    await g.start()
    await g.caughtUp(extra!.seq, 30_000)
    t.same(seen, [extra])
    t.equal(got.length, 5, 'nothing handed over after stop')
  })

  t.test('a message it cannot read is skipped and logged; an onEvents that throws is logged; both carry on', async (t) => {
    const errors: string[] = []
    const log2 = { ...silentLog, error: (_o: unknown, msg?: string) => errors.push(msg ?? '') }
    const got: number[] = []
    let throwOnce = true
    const from = (await log.lastSeq()) + 1
    const f = new PartitionFollower(h, {
      partition: 3, from,
      onEvents: (es) => {
        got.push(...es.map((e) => e.seq))
        if (throwOnce) {
          throwOnce = false
          throw new Error('boom')
        }
      },
      log: log2
    })
    t.teardown(() => f.stop())
    await f.start()
    const a = await append(log, [3])
    const bad = await h.js.publish(h.names.subject(3, 'acme'), new TextEncoder().encode('[9]'))
    await until(() => f.processedThrough >= bad.seq, 30_000, 'the bad message passed')
    const b = await append(log, [3])
    await f.caughtUp(b[0]!.seq, 30_000)
    t.same(got, [a[0]!.seq, b[0]!.seq])
    t.same([...errors].sort(), ['cluster: an event message cannot be read; skipped', 'cluster: onEvents threw'])
  })

  t.test('backpressure: no fetch while the receiver is behind; everything after it catches up', async (t) => {
    const got: StoredEvent[] = []
    let release: (() => void) | null = null
    let asked = 0
    let behind = true
    const f = new PartitionFollower(h, {
      partition: 3,
      from: 1,
      onEvents: (es) => { got.push(...es) },
      // Behind after the first batch, until the test releases it.
      backpressure: () => {
        asked++
        if (got.length === 0 || !behind) return null
        return new Promise<void>((resolve) => { release = resolve })
      },
      log: silentLog
    })
    t.teardown(() => f.stop())
    await f.start()
    await until(() => release !== null, 10_000, 'the follower to ask while behind')
    const held = got.length
    await append(log, [3, 3, 3])
    // A few turns: the follower must not fetch while it waits.
    await new Promise((r) => setTimeout(r, 300))
    t.equal(got.length, held, 'nothing more handed over while the receiver is behind')
    behind = false
    release!()
    const last = await log.lastSeq()
    await f.caughtUp(last, 30_000)
    const all = [...new Set(got.map((e) => e.seq))]
    t.equal(all.length, got.length, 'nothing handed over twice')
    t.ok(got.length > held, `the rest arrived after (${held} → ${got.length})`)
    t.ok(asked >= 2, 'asked before each fetch')
  })

  t.test('a stalled consumer: a waiting caughtUp takes the missing messages by get, in order, nothing twice; a backlog past a round still waits', async (t) => {
    const got: StoredEvent[] = []
    let release: (() => void) | null = null
    let stall = false
    // Backpressure that never lets go stands in for a fetch that hangs: the loop fetches nothing.
    const f = new PartitionFollower(h, {
      partition: 2,
      from: 1,
      onEvents: (es) => { got.push(...es) },
      backpressure: () => (stall ? new Promise<void>((resolve) => { release = resolve }) : null),
      log: silentLog
    })
    t.teardown(() => {
      release?.()
      return f.stop()
    })
    await f.start()
    await f.caughtUp(await log.lastSeq(), 30_000)
    const held = got.length
    t.equal(f.takenByGet, 0, 'nothing taken by get while the consumer delivers')
    stall = true
    await until(() => release !== null, 10_000, 'the follower to stop fetching')

    const added = await append(log, [2, 0, 2, 1, 2])
    // Without taking them by get this would wait out its whole timeout and reject.
    await f.caughtUp(await log.lastSeq(), 20_000)
    const mine = ofP(added, 2).map((e) => e.seq)
    t.same(got.slice(held).map((e) => e.seq), mine, 'the stalled partition\'s new messages, in order, and no other')
    t.equal(f.takenByGet, mine.length, 'each taken by get once')

    // A backlog longer than a round is not a stall: a round is taken, then it waits for the consumer.
    const backlog = await append(log, Array.from({ length: 230 }, () => 2))
    await t.rejects(f.caughtUp(await log.lastSeq(), 4_000), { code: 'LLMS_ERR_UNAVAILABLE' }, 'a 503 after its timeout')
    t.equal(f.takenByGet, mine.length + 200, 'one round (200) taken by get')

    // The consumer comes back: it delivers the rest; what was taken by get is not handed over twice.
    stall = false
    release!()
    await f.caughtUp(await log.lastSeq(), 30_000)
    const seqs = got.map((e) => e.seq)
    t.equal(new Set(seqs).size, seqs.length, 'nothing handed over twice')
    t.same(seqs, [...seqs].sort((a, b) => a - b), 'in stream order')
    t.same(seqs.slice(-backlog.length), backlog.map((e) => e.seq), 'the whole backlog arrived')
  })

  t.test('lag counts what the server has not handed over yet', async (t) => {
    const seen: number[] = []
    const f = new PartitionFollower(h, { partition: 0, from: 1, onEvents: (es) => seen.push(...es.map((e) => e.seq)), log: silentLog })
    t.teardown(() => f.stop())
    t.equal(f.lag, 0)
    await f.start()
    await f.caughtUp(await log.lastSeq(), 30_000)
    t.equal(f.lag, 0)
    t.equal(new Set(seen).size, seen.length)
    t.same(seen, [...seen].sort((a, b) => a - b))
  })
})

// The follower's client on a server that is not the stream leader: it stays connected through
// the kill, and only the consumer (if it was on the leader) is lost — the case the client library
// alone does not recover from. On the leader itself: the connection goes too (it reconnects to
// another server given in its list).
for (const via of ['another server', 'the leader itself'] as const)
t.test(`three servers: kill -9 of the stream leader loses and repeats nothing (the follower connected to ${via})`, async (t) => {
  const nats = await startNats({ servers: 3 })
  t.teardown(() => nats.stop())
  const parts = 2
  const c = cfg(nats.urls, { partitions: parts, name: 'fo' })
  const producerH = await connectCluster(c, { log: silentLog })
  t.teardown(() => producerH.close())
  t.equal(producerH.replicas, 3)
  const leader = await streamLeader(nats.urls[0]!, 'fo-events')
  const victim = nats.servers.find((s) => s.name === leader)!
  t.ok(victim, `stream leader ${leader}`)
  const other = nats.servers.find((s) => s !== victim)!
  const servers = via === 'another server' ? [other.url] : [victim.url, ...nats.servers.filter((s) => s !== victim).map((s) => s.url)]
  const h: NatsHandles = await connectCluster({ ...c, servers }, { log: silentLog })
  t.teardown(() => h.close())
  const producer = new JetStreamLog(producerH, { ackTimeoutMs: 2_000 })

  const got: StoredEvent[] = []
  const f = new PartitionFollower(h, { partition: 0, from: 1, onEvents: (es) => got.push(...es), log: silentLog })
  t.teardown(() => f.stop())
  await f.start()

  // The producer appends batches of 10 (both partitions) until told to stop; failed appends are counted.
  const acked: StoredEvent[] = []
  let failed = 0
  let producing = true
  const produced = (async () => {
    while (producing) {
      const a = producer.append(Array.from({ length: 10 }, (_, i) => pending(i % parts, parts)))
      try {
        await a.committed
        acked.push(...a.events)
      } catch {
        failed++
        await new Promise((r) => setTimeout(r, 50))
      }
    }
  })()

  await until(() => acked.length >= 300 && got.length > 0, 60_000, 'events before the kill')
  t.equal(await streamLeader(other.url, 'fo-events'), leader, 'the leader has not moved meanwhile')
  await victim.kill('SIGKILL')
  const killedAt = Date.now()
  const ackedAtKill = acked.length
  const seqAtKill = Math.max(...acked.map((e) => e.seq))
  // Back within seconds of the election (generous bound: the machine is shared).
  let storedAt = 0
  await until(() => {
    if (storedAt === 0 && acked.some((e) => e.seq > seqAtKill)) storedAt = Date.now()
    return got.some((e) => e.seq > seqAtKill)
  }, 30_000, 'the follower handing over an event stored after the kill')
  t.comment(`after the kill: the first event stored ${storedAt === 0 ? '(none acknowledged yet)' : `${storedAt - killedAt} ms`}, handed over by the follower ${Date.now() - killedAt} ms`)
  await until(() => acked.length >= ackedAtKill + 300, 90_000, 'events acknowledged after the kill')
  producing = false
  await produced
  t.ok(acked.length >= ackedAtKill + 300, `acked ${acked.length} (${failed} failed appends during the failover)`)

  // Caught up to the stream's end: exactly the stream's partition-0 messages, each once, in order.
  // (A request the client sent while it was reconnecting is lost: ask again until one answers.)
  const reader = new JetStreamLog(h)
  let last = -1
  const askUntil = Date.now() + 60_000
  while (last < 0 && Date.now() < askUntil) last = await reader.lastSeq().catch(() => -1)
  t.ok(last > 0, 'the stream answers after the failover')
  await f.caughtUp(last, 60_000)
  const stream: StoredEvent[] = []
  for await (const b of reader.read(1, { partition: 0, to: last })) stream.push(...b)
  t.same(got.map((e) => e.seq), stream.map((e) => e.seq), 'follower = stream (no loss, no repeat)')
  t.same(got, stream)
  const gotSeqs = new Set(got.map((e) => e.seq))
  const lost = acked.filter((e) => partitionOf(e.project, e.model, parts) === 0 && !gotSeqs.has(e.seq))
  t.same(lost, [], 'every acknowledged event of the partition handed over')
  t.equal(f.processedThrough, stream.at(-1)!.seq)
  t.comment(`follower consumer reopened ${f.reopens} time(s)`)
})

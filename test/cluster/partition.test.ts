/**
 * One owned partition (src/cluster/partition.ts) and its snapshots (src/cluster/snapshots.ts),
 * against one real nats-server: each partition's runner aggregates exactly that partition's
 * events (equal to a reference Topology fed them, and to hand sums), ready(upTo) sees later
 * publishes, a snapshot restores on a node with an empty data dir from the object store and
 * replays only the tail, the local copy wins when it is as new, and the log path of a query reads
 * the partition's events from the stream.
 */
import t from 'tap'
import { join } from 'node:path'
import { startNats } from '../helpers/nats.js'
import { connectCluster, type NatsHandles } from '../../src/cluster/nats.js'
import { JetStreamLog } from '../../src/cluster/js-log.js'
import { partitionOf } from '../../src/cluster/names.js'
import { PartitionRunner } from '../../src/cluster/partition.js'
import { PartitionSnapshots, localKey } from '../../src/cluster/snapshots.js'
import { Topology } from '../../src/actors/topology.js'
import { openStores, type Stores } from '../../src/store/db.js'
import { loadConfig, type Config } from '../../src/config.js'
import { computeCost, priceInputOf } from '../../src/pricing/compute-cost.js'
import { breakdown, metrics, quantileMs, totalsJson, type Breakdown, type LogScan } from '../../src/queries.js'
import type { Aggregate } from '../../src/analytics/series.js'
import type { AnalyticsReader } from '../../src/analytics/reader.js'
import type { PendingEvent, PricedEvent, StoredEvent } from '../../src/events.js'
import { silentLog } from '../../src/log.js'
import { systemClock } from '../../src/clock.js'

t.setTimeout(180_000)

const PARTITIONS = 4
const NAME = 'ptest'
const BASE = Date.UTC(2024, 0, 1)
const PROJECTS = ['default', 'alpha', 'beta']
const MODELS = ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet', 'm-1', 'm-2', 'm-3']
const TEAMS = ['red', 'green', 'blue']
const READY_MS = 20_000

let n = 0
/** Events varied by a counter over projects, models, users, errors and two metadata keys. */
function pending(): PendingEvent {
  const i = n++
  return {
    ts: BASE + i * 37_000, recv: BASE + i * 37_000, model: MODELS[Math.floor(i / 3) % MODELS.length]!, provider: Math.floor(i / 3) % MODELS.length === 2 ? 'anthropic' : 'openai',
    prompt: 100 + (i % 13) * 11, completion: 20 + (i % 5), total: 120 + (i % 13) * 11 + (i % 5), cached: i % 3, reasoning: 0,
    latency: 50 + ((i * 31) % 900), ttft: null, error: i % 9 === 0, cost: null,
    // Only the first metadata key is a dimension (LLMSCOPE_MAX_METADATA_DIMENSIONS=1): `team` is past the cap, so its breakdown reads the log.
    meta: { region: i % 2 === 0 ? 'eu' : 'us', team: TEAMS[i % TEAMS.length]! },
    project: PROJECTS[i % PROJECTS.length]!, user: `u${i % 5}`, session: null, tags: null
  }
}

const config: Config = loadConfig({
  LLMSCOPE_DATA_DIR: t.testdir(),
  LLMSCOPE_LOG_LEVEL: 'silent',
  LLMSCOPE_NATS_URL: 'nats://127.0.0.1:4222',
  LLMSCOPE_PARTITIONS: String(PARTITIONS),
  LLMSCOPE_CLUSTER_NAME: NAME,
  LLMSCOPE_MAX_METADATA_DIMENSIONS: '1'
})

const price = (e: StoredEvent): PricedEvent => {
  const p = computeCost(priceInputOf(e), config.priceOverrides)
  return { ...e, costNanos: p.costNanos, unpriced: p.unpriced }
}

/** A topology fed by hand (the reference), as the runner builds its own. */
function reference(events: StoredEvent[]): Topology {
  const topo = new Topology({
    log: { append: () => { throw new Error('no ingest') }, readFrom: function* () {}, nextSeq: 0 },
    pricer: null,
    overrides: { ...config.priceOverrides },
    logger: silentLog,
    clock: systemClock,
    highWaterEvents: config.highWaterEvents,
    maxModels: config.maxModels,
    costChunk: config.costBatch,
    costMaxInFlight: 2,
    price,
    dimensionLimits: config.dimensionLimits,
    window: (reader, q) => metrics(reader, { ...q.filters, project: q.project, start: q.start, end: q.end })
  })
  if (events.length > 0) topo.replay([...events].sort((a, b) => a.seq - b.seq))
  return topo
}

/** An aggregate as the API shows it: totals and percentiles. */
const agg = (a: Aggregate | null) => (a === null ? null : { totals: totalsJson(a.totals), p50: quantileMs(a, 0.5), p95: quantileMs(a, 0.95), p99: quantileMs(a, 0.99) })
const plain = (b: Breakdown) => ({ by: b.by, groups: b.groups.map((g) => ({ value: g.value, ...agg(g.agg) })), other: agg(b.other), total: agg(b.total) })

const RANGE = { start: BASE - 3_600_000, end: BASE + 400 * 86_400_000 }
/** Metrics and a breakdown by model and by user of every project: what the two readers must agree on. */
function answers(reader: AnalyticsReader) {
  const out: Record<string, unknown> = {}
  for (const project of PROJECTS) {
    const q = { ...RANGE, project }
    const m = metrics(reader, q)
    out[project] = {
      totals: totalsJson(m.totals),
      p50: quantileMs(m, 0.5),
      p95: quantileMs(m, 0.95),
      // A range of partial hours too (rows, not the rollup).
      part: totalsJson(metrics(reader, { project, start: BASE + 1_234_567, end: BASE + 7_654_321 }).totals),
      byModel: plain(breakdown(reader, q, 'model', 'cost', 10)),
      byUser: plain(breakdown(reader, q, 'user_id', 'requests', 3)),
      errors: totalsJson(metrics(reader, { ...q, status: 'error' }).totals)
    }
  }
  return out
}

/** Hand sums of one project's events: requests, prompt tokens, cost. */
function sums(events: StoredEvent[], project: string) {
  let requests = 0
  let prompt = 0
  let costNanos = 0
  for (const e of events) {
    if (e.project !== project) continue
    requests++
    prompt += e.prompt
    costNanos += price(e).costNanos
  }
  return { requests, prompt, costNanos }
}

t.test('partition runners aggregate their partition, follow it, snapshot and restore from the object store', async (t) => {
  const nats = await startNats({ servers: 1 })
  t.teardown(() => nats.stop())
  const h: NatsHandles = await connectCluster({ ...config.cluster!, servers: nats.urls, replicas: 1 }, { log: silentLog })
  t.teardown(() => h.close())
  const log = new JetStreamLog(h)
  const dirs: Stores[] = []
  const stores = () => {
    const s = openStores(join(config.dataDir, `node${dirs.length}`))
    dirs.push(s)
    return s
  }
  t.teardown(async () => {
    for (const s of dirs) await s.close()
  })
  const nodeA = stores()
  const snapsA = new PartitionSnapshots({ objm: h.objm, names: h.names, db: nodeA.meta, logger: silentLog })
  const runnerOpts = (p: number, local: PartitionSnapshots) => ({ h, partition: p, config, logger: silentLog, clock: systemClock, pricer: null, local, price })

  const all: StoredEvent[] = []
  const publish = async (count: number) => {
    // Many appends in flight, as an ingest node does.
    const calls = []
    for (let i = 0; i < count; i += 50) {
      const a = log.append(Array.from({ length: Math.min(50, count - i) }, pending))
      calls.push(a.committed.then(() => a.events))
    }
    for (const events of await Promise.all(calls)) all.push(...events)
  }
  const ofPartition = (p: number) => all.filter((e) => partitionOf(e.project, e.model, PARTITIONS) === p)

  await publish(600)
  const runners: PartitionRunner[] = []
  t.teardown(async () => {
    for (const r of runners) await r.stop({ snapshot: false }).catch(() => {})
  })
  for (let p = 0; p < PARTITIONS; p++) runners.push(await PartitionRunner.start(runnerOpts(p, snapsA)))
  t.ok(runners.every((r) => r.restoredFrom === 'stream' && r.restored === null), 'no snapshot yet: every partition from the stream')
  const covered = new Set(all.map((e) => partitionOf(e.project, e.model, PARTITIONS)))
  t.equal(covered.size, PARTITIONS, `the events spread over partitions (${[...covered].join(',')})`)

  const checkAll = async (label: string) => {
    const last = await log.lastSeq()
    let total = 0
    for (const r of runners) {
      await r.ready(last, READY_MS)
      const mine = ofPartition(r.partition)
      const ref = reference(mine)
      await ref.sync()
      t.same(answers(r.topology), answers(ref), `${label}: partition ${r.partition} answers as a topology fed its ${mine.length} events`)
      await ref.close()
      for (const project of PROJECTS) {
        const m = metrics(r.topology, { ...RANGE, project })
        const want = sums(mine, project)
        t.same({ requests: m.totals.requests, prompt: m.totals.promptTokens, costNanos: m.totals.costNanos }, want, `${label}: partition ${r.partition} project ${project} hand sums`)
        total += m.totals.requests
      }
    }
    t.equal(total, all.length, `${label}: the partitions together hold every event once`)
  }
  await checkAll('first batch')

  // More events after the runners started: ready(upTo) waits for them.
  await publish(300)
  await checkAll('after more publishes')
  t.ok(runners.every((r) => r.lag === 0), 'no lag once ready')

  // The log path: a breakdown by a metadata key past the key cap needs the events themselves.
  const p0 = [...covered][0]!
  const r0 = runners[p0]!
  const project = PROJECTS.find((pr) => ofPartition(p0).some((e) => e.project === pr))!
  const q = { ...RANGE, project }
  t.throws(() => breakdown(r0.topology, q, 'metadata.team', 'cost', 10), /needs the event log/, 'without the log it cannot answer')
  const scan: LogScan = await r0.loadLog(project)
  const viaLog = breakdown({ reader: r0.topology, log: scan }, q, 'metadata.team', 'requests', 10)
  const byTeam = new Map<string, number>()
  for (const e of ofPartition(p0)) if (e.project === project) byTeam.set(String(e.meta!.team), (byTeam.get(String(e.meta!.team)) ?? 0) + 1)
  t.same(
    Object.fromEntries(viaLog.groups.map((g) => [g.value, g.agg.totals.requests])),
    Object.fromEntries(byTeam),
    `loadLog answers a log-path breakdown of partition ${p0} (${project})`
  )
  t.equal(viaLog.total.totals.requests, sums(ofPartition(p0), project).requests)
  t.same(await r0.answer((src) => plain(breakdown(src, q, 'metadata.team', 'requests', 10)), project), plain(viaLog), 'answer() loads the log only when needed, same answer')
  const wholeLog = await r0.loadLog()
  t.same(plain(breakdown({ reader: r0.topology, log: wholeLog }, q, 'metadata.team', 'requests', 10)), plain(viaLog), 'loadLog() of every project answers the same')

  // Snapshot every partition, then more events (the tail).
  for (const r of runners) await r.snapshot()
  for (const r of runners) {
    const s = r.lastSnapshot!
    t.ok(s !== null && s.objectStore && s.bytes > 0, `partition ${r.partition} snapshot stored in both places (${s.bytes} bytes, seq ${s.seq})`)
    t.ok(nodeA.meta.get(localKey(r.partition)) !== undefined, `partition ${r.partition} local copy in LMDB`)
  }
  const snapSeq = new Map(runners.map((r) => [r.partition, r.lastSnapshot!.seq]))
  const lastBefore = await log.lastSeq()
  t.same([...snapSeq.values()], runners.map(() => lastBefore + 1), 'after ready(last), every snapshot (a quiet partition\'s too) resumes past the stream\'s last seq')
  await publish(150)
  const last = await log.lastSeq()
  for (const r of runners) await r.ready(last, READY_MS)
  const before = new Map(runners.map((r) => [r.partition, answers(r.topology)]))
  // The node goes away without a final snapshot (its partitions move to another node).
  for (const r of runners.splice(0)) await r.stop({ snapshot: false })

  // Another node with an empty data dir: restores from the object store, replays only the tail.
  const nodeB = stores()
  const snapsB = new PartitionSnapshots({ objm: h.objm, names: h.names, db: nodeB.meta, logger: silentLog })
  for (let p = 0; p < PARTITIONS; p++) runners.push(await PartitionRunner.start(runnerOpts(p, snapsB)))
  for (const r of runners) {
    await r.ready(last, READY_MS)
    const mine = ofPartition(r.partition)
    const tail = mine.filter((e) => e.seq >= snapSeq.get(r.partition)!).length
    t.equal(r.restoredFrom, 'snapshot', `partition ${r.partition} restored from a snapshot`)
    t.equal(r.restored?.source, 'object-store', `partition ${r.partition} from the object store (empty data dir)`)
    t.equal(r.fed, tail, `partition ${r.partition} replayed only its tail (${tail} of ${mine.length} events)`)
    if (mine.length > 0) t.ok(r.fed < mine.length, `partition ${r.partition}: fewer events read than it holds`)
    t.same(answers(r.topology), before.get(r.partition), `partition ${r.partition} answers as before the handover`)
  }
  await checkAll('restored on node B')

  // Node B stops with final snapshots; node A takes over again: its local copy is older than the object store's.
  await publish(60)
  const last2 = await log.lastSeq()
  for (const r of runners) await r.ready(last2, READY_MS)
  for (const r of runners.splice(0)) await r.stop({ snapshot: true })
  const readA = await snapsA.read(p0)
  t.equal(readA?.source, 'object-store', 'a newer snapshot in the object store wins over an older local copy')
  t.ok(readA!.payload.seq > Math.max(...ofPartition(p0).map((e) => e.seq)), 'its seq is past every event the partition had')
  const readB = await snapsB.read(p0)
  t.equal(readB?.source, 'local', 'a local copy as new as the object store is read without downloading')
  t.equal(readB?.payload.seq, readA?.payload.seq)
  for (let p = 0; p < PARTITIONS; p++) runners.push(await PartitionRunner.start(runnerOpts(p, snapsA)))
  for (const r of runners) t.equal(r.restored?.source, 'object-store', `partition ${r.partition} on node A: from the object store`)
  await checkAll('back on node A')
  t.equal(runners.reduce((s, r) => s + r.fed, 0), 0, 'final snapshots hold everything: no tail to replay')
  const stopped = runners.pop()!
  await stopped.stop({ snapshot: false })
  await t.rejects(stopped.ready(last2, 1000), /stopped/, 'a stopped runner is never ready')
  await t.rejects(stopped.snapshot(), /stopped/, 'nor snapshots')
})

t.test('snapshots: a damaged object or one of another partition is skipped for the local copy', async (t) => {
  const nats = await startNats({ servers: 1 })
  t.teardown(() => nats.stop())
  const h: NatsHandles = await connectCluster({ ...config.cluster!, servers: nats.urls, replicas: 1, name: 'psnap' }, { log: silentLog })
  t.teardown(() => h.close())
  const s = openStores(join(config.dataDir, 'snapnode'))
  t.teardown(() => s.close())
  const warnings: unknown[] = []
  const logger = { ...silentLog, warn: (o: unknown) => void warnings.push(o) }
  const snaps = new PartitionSnapshots({ objm: h.objm, names: h.names, db: s.meta, logger })
  t.equal(await snaps.read(0), null, 'nothing stored: null')
  const payload = { seq: 5, createdAt: 1, aggregators: [], alerts: undefined, dimensions: {} }
  const w = await snaps.write(0, payload)
  t.ok(w.local && w.objectStore)
  t.same((await snaps.read(0))?.payload.seq, 5)
  // A damaged object with a higher seq in its metadata: the local copy is used.
  const os = await h.objm.open(h.names.snapshotBucket)
  await os.putBlob({ name: 'p0', metadata: { seq: '99' } }, new Uint8Array([1, 2, 3, 4]))
  const r = await snaps.read(0)
  t.equal(r?.source, 'local')
  t.equal(r?.payload.seq, 5)
  t.ok(warnings.length > 0, 'the damaged object is logged')
  // Partition 0's snapshot stored as partition 1's: never read as partition 1.
  await s.meta.put(localKey(1), s.meta.get(localKey(0))!)
  t.equal(await snaps.read(1), null, 'a snapshot of another partition is skipped')
  // The object store keeps the newer snapshot.
  await snaps.write(2, { ...payload, seq: 50 })
  const older = await snaps.write(2, { ...payload, seq: 40 })
  t.equal(older.objectStore, false, 'an older snapshot does not replace a newer one in the object store')
  const info = await os.info('p2')
  t.equal(info?.metadata?.seq, '50')
  // A snapshot past the stream's end (the stream was made anew): rebuilt from the stream.
  const runner = await PartitionRunner.start({ h, partition: 2, config, logger, clock: systemClock, pricer: null, local: snaps, price })
  t.teardown(() => runner.stop({ snapshot: false }))
  t.equal(runner.restoredFrom, 'stream', 'a snapshot ahead of the stream is not restored')
  t.ok(warnings.some((w) => (w as { seq?: number }).seq === 50), 'and that is logged')
})

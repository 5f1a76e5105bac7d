/**
 * Question (issue 12, Deliver 6): where does a cluster node's CPU go per event, part by part?
 * Against ONE nats-server (R1 stream, 16 partitions), in this process:
 * - `JetStreamLog.append` alone: events/s and µs CPU per event (this process, and the
 *   nats-server apart) for appends of 1, 100 and 1000 events, `IN_FLIGHT` appends at a time;
 * - the same through `js.publish` per event (how append published before: one `nc.request` per
 *   message), for comparison in the same run;
 * - `encodeEvent` / `decodeEvent` per event;
 * - the ClusterFeed's cost per event (ordered consumer over every partition → decode → price →
 *   a broadcaster that takes everything), reading events already in the stream.
 * Run alone: `npx tsc -p tsconfig.bench.json && node dist-bench/bench/cluster-micro.js [seconds]`.
 * CPU figures are process CPU time (user + system), so less noisy than rates on a shared machine.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startNatsServers, type Proc } from './cluster-up.js'
import { connectCluster, type NatsHandles } from '../src/cluster/nats.js'
import { nanoid } from 'nanoid'
import { decodeEvent, encodeEvent, JetStreamLog } from '../src/cluster/js-log.js'
import { partitionOf } from '../src/cluster/names.js'
import { ClusterFeed } from '../src/cluster/feed.js'
import type { Broadcaster } from '../src/actors/broadcaster.js'
import type { PendingEvent, PricedEvent, StoredEvent } from '../src/events.js'
import { silentLog } from '../src/log.js'
import { cpuMs, type Row } from './lib.js'

const PARTITIONS = 16
const IN_FLIGHT = 8

function pending(i: number): PendingEvent {
  const model = i % 4 === 0 ? 'gpt-4o' : i % 4 === 1 ? 'claude-3-5-sonnet-20241022' : i % 4 === 2 ? 'gpt-4o-mini' : `model-${i % 20}`
  return {
    ts: 1_700_000_000_000 + i, recv: 1_700_000_000_000 + i, model, provider: 'openai', prompt: 100 + (i % 900), completion: 50 + (i % 300),
    total: 150 + (i % 900) + (i % 300), cached: 0, reasoning: 0, latency: 200 + (i % 1000), ttft: null, error: false, cost: null,
    meta: { feature: 'chat' }, project: 'default', user: `u${i % 50}`, session: null, tags: null
  }
}

const selfCpuMs = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

/** What `JetStreamLog.append` did before: `js.publish` (a request) per event, nanoid ids, every ack awaited. */
function viaJsPublish(h: NatsHandles): Pick<JetStreamLog, 'append'> {
  return {
    append(pending) {
      const events = pending as StoredEvent[]
      const acks = events.map((e) => {
        const rnd = nanoid(12)
        return h.js.publish(h.names.subject(partitionOf(e.project, e.model, h.partitions), e.project), encodeEvent({ ...e, rnd }), { msgID: rnd, timeout: 5000 }).then((ack) => {
          e.seq = ack.seq
          e.id = `evt_${ack.seq.toString(36)}_${rnd}`
        })
      })
      return { events, committed: Promise.all(acks).then(() => {}) }
    }
  }
}

/** Appends batches of `size` for `seconds`, `IN_FLIGHT` at a time. */
async function appendRun(log: Pick<JetStreamLog, 'append'>, size: number, seconds: number, natsPid: number | undefined) {
  const batches = Array.from({ length: 64 }, (_, b) => Array.from({ length: size }, (_, i) => pending(b * size + i)))
  let events = 0
  let k = 0
  const end = performance.now() + seconds * 1000
  const c0 = selfCpuMs()
  const n0 = cpuMs(natsPid)
  const t0 = performance.now()
  const worker = async () => {
    while (performance.now() < end) {
      // Fresh objects: append sets seq and id on them.
      const batch = batches[k++ % batches.length]!.map((e) => ({ ...e }))
      await log.append(batch).committed
      events += size
    }
  }
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker))
  const wall = (performance.now() - t0) / 1000
  return { evPerSec: events / wall, usPerEvent: ((selfCpuMs() - c0) * 1000) / events, natsUsPerEvent: ((cpuMs(natsPid) - n0) * 1000) / events, events }
}

/** µs per call of `f` over `n` calls (best of 3). */
function perCall(n: number, f: (i: number) => void): number {
  let best = Infinity
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now()
    for (let i = 0; i < n; i++) f(i)
    best = Math.min(best, ((performance.now() - t0) * 1000) / n)
  }
  return best
}

/** The feed over `count` events already in the stream (from seq 1), to a broadcaster that takes all. */
async function feedRun(h: NatsHandles, log: JetStreamLog, count: number) {
  let got = 0
  let done: () => void = () => {}
  const all = new Promise<void>((r) => (done = r))
  const b = {
    closed: false,
    send(m: { type: string; events?: PricedEvent[] }) {
      if (m.type === 'events') {
        got += m.events!.length
        if (got >= count) done()
      }
      return true
    },
    idle: async () => {}
  } as unknown as Broadcaster
  // A log whose end reads 0: the feed follows from seq 1 (everything appended so far).
  const from0 = Object.create(log, { lastSeq: { value: async () => 0 } }) as JetStreamLog
  const price = (e: StoredEvent): PricedEvent => ({ ...e, costNanos: 0, unpriced: true })
  const feed = new ClusterFeed({ h, log: from0, broadcaster: b, price, logger: silentLog })
  const c0 = selfCpuMs()
  const t0 = performance.now()
  await feed.start()
  await all
  const wall = (performance.now() - t0) / 1000
  const cpu = selfCpuMs() - c0
  await feed.stop()
  return { evPerSec: got / wall, usPerEvent: (cpu * 1000) / got }
}

export async function run(seconds: number): Promise<Row[]> {
  const rows: Row[] = []
  const root = mkdtempSync(join(tmpdir(), 'llmscope-bench-micro-'))
  let nats: Proc[] = []
  let h: NatsHandles | null = null
  try {
    nats = await startNatsServers({ n: 1, dir: root })
    const pid = nats[0]!.proc.pid
    h = await connectCluster({ servers: [nats[0]!.url], nodeId: 'micro', leaseMs: 10_000, partitions: PARTITIONS, replicas: 1, queryTimeoutMs: 5000, name: 'micro' }, { log: silentLog })
    const log = new JetStreamLog(h)
    await log.append([pending(0)]).committed // warm up
    const old = viaJsPublish(h)
    await old.append([pending(0)]).committed
    for (const size of [1, 100, 1000]) {
      for (const [how, l] of [['append', log], ['js.publish per event (before)', old]] as const) {
        const r = await appendRun(l, size, seconds, pid)
        rows.push({ bench: 'cluster-micro', metric: `${how}, batch ${size} (${IN_FLIGHT} in flight): events/s`, value: r.evPerSec, unit: 'ev/s', note: `${r.events} events, 1 nats-server R1` })
        rows.push({ bench: 'cluster-micro', metric: `${how}, batch ${size}: CPU per event, this process`, value: r.usPerEvent, unit: 'µs' })
        rows.push({ bench: 'cluster-micro', metric: `${how}, batch ${size}: CPU per event, nats-server`, value: r.natsUsPerEvent, unit: 'µs' })
      }
    }
    const sample = Array.from({ length: 1000 }, (_, i) => ({ ...pending(i), id: `evt_1_abcdefghijkl` }))
    const bodies = sample.map((e) => encodeEvent(e))
    rows.push({ bench: 'cluster-micro', metric: 'encodeEvent', value: perCall(200_000, (i) => encodeEvent(sample[i % 1000]!)), unit: 'µs' })
    rows.push({ bench: 'cluster-micro', metric: 'decodeEvent', value: perCall(200_000, (i) => decodeEvent(i + 1, bodies[i % 1000]!)), unit: 'µs' })
    const total = await log.lastSeq()
    const f = await feedRun(h, log, total)
    rows.push({ bench: 'cluster-micro', metric: 'ClusterFeed (consume + decode + price stub): events/s', value: f.evPerSec, unit: 'ev/s', note: `${total} events in the stream` })
    rows.push({ bench: 'cluster-micro', metric: 'ClusterFeed: CPU per event, this process', value: f.usPerEvent, unit: 'µs' })
  } finally {
    await h?.close().catch(() => {})
    await Promise.all(nats.map((s) => s.stop(5000)))
    rmSync(root, { recursive: true, force: true })
  }
  return rows
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const seconds = Number(process.argv[2] ?? process.env.BENCH_SECONDS ?? 4)
  const rows = await run(seconds)
  for (const r of rows) console.log(`${r.metric.padEnd(70)} ${r.value.toFixed(r.value < 10 ? 2 : 0).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`)
}

/**
 * Question (issue 12, Deliver 6): what does cluster mode cost and give on this machine?
 * - ingest events/s into one cluster node and into 3 nodes (the load split evenly over them, as
 *   a round-robin balancer would), batches of 100 and single events, with single-node LMDB
 *   ingest in the same run as the baseline;
 * - CPU time per event of the LLMScope node and of the nats-servers, next to single-node LMDB's
 *   (the per-event overhead of cluster mode, less noisy than a rate on a shared machine);
 * - the same with one /ws subscriber on the node (its ClusterFeed follows the whole stream only
 *   while someone listens, so that is the cost of a watched node);
 * - failover: kill -9 of a node → every partition owned again (lease 5 s);
 * - query p50/p99 from a node that owns only part of the partitions (the rest answer over NATS),
 *   next to single-node's.
 * Everything runs on this one machine: 3 nats-server (R3 stream), the LLMScope processes and the
 * load generator (autocannon, in this process) share its cores, so the rates are the machine's
 * limit for the whole system, not a node's.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WebSocket } from 'ws'
import { BENCH_KEY, cpuMs, load, startLLMScope, type LoadResult, type Row } from './lib.js'
import { NATS_SERVER, readyOf, startNatsServers, startNode, waitAllOwned, type Proc } from './cluster-up.js'

const PARTITIONS = 16
const LEASE_S = 5
const QUERIES = 200

function event(i: number) {
  const model = i % 4 === 0 ? 'gpt-4o' : i % 4 === 1 ? 'claude-3-5-sonnet-20241022' : i % 4 === 2 ? 'gpt-4o-mini' : `model-${i % 20}`
  return { model, prompt_tokens: 100 + (i % 900), completion_tokens: 50 + (i % 300), latency_ms: 200 + (i % 1000), user_id: `u${i % 50}`, metadata: { feature: 'chat' } }
}

/** One /ws subscriber of the bench key's project, counting the frames it gets. */
async function wsSubscriber(url: string): Promise<{ frames(): number; close(): Promise<void> }> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/ws`, { headers: { 'x-api-key': BENCH_KEY } })
  let frames = 0
  ws.on('message', () => frames++)
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  return {
    frames: () => frames,
    close: () =>
      new Promise<void>((resolve) => {
        ws.once('close', () => resolve())
        ws.close()
      })
  }
}

interface Scenario {
  name: string
  path: string
  body: string
  events: number
  connections: number
}

/** Runs one scenario against every URL at once (connections split between them); sums the rates. */
async function loadAll(urls: string[], s: Scenario, seconds: number): Promise<{ evPerSec: number; p99: number; failures: number }> {
  const per = Math.max(1, Math.round(s.connections / urls.length))
  const rs: LoadResult[] = await Promise.all(urls.map((url) => load({ url, path: s.path, body: s.body, connections: per, seconds })))
  return {
    evPerSec: rs.reduce((sum, r) => sum + r.reqPerSec, 0) * s.events,
    p99: Math.max(...rs.map((r) => r.p99)),
    failures: rs.reduce((sum, r) => sum + r.non2xx + r.errors, 0)
  }
}

/** Ingest rate plus CPU ms per event of the given processes (the LLMScope ones and the NATS ones apart). */
async function measure(urls: string[], s: Scenario, seconds: number, scope: (number | undefined)[], nats: (number | undefined)[]) {
  const total = (pids: (number | undefined)[]) => pids.reduce((sum: number, p) => sum + cpuMs(p), 0)
  const a0 = total(scope)
  const n0 = total(nats)
  const r = await loadAll(urls, s, seconds)
  const events = r.evPerSec * seconds
  return { ...r, scopeUsPerEvent: ((total(scope) - a0) * 1000) / Math.max(1, events), natsUsPerEvent: ((total(nats) - n0) * 1000) / Math.max(1, events) }
}

/** p50/p99 of the 200 answers only (a quick 503 must not pass for a fast answer); `bad`: the other answers by status. */
async function queryTimes(url: string, path: string): Promise<{ p50: number; p99: number; bad: number; statuses: string }> {
  const times: number[] = []
  const other = new Map<number, number>()
  for (let i = 0; i < QUERIES; i++) {
    const t0 = performance.now()
    const r = await fetch(url + path, { headers: { 'x-api-key': BENCH_KEY } })
    await r.arrayBuffer()
    if (r.status === 200) times.push(performance.now() - t0)
    else other.set(r.status, (other.get(r.status) ?? 0) + 1)
  }
  times.sort((a, b) => a - b)
  const bad = QUERIES - times.length
  const statuses = [...other].map(([status, n]) => `${n} × ${status}`).join(', ')
  if (times.length === 0) return { p50: NaN, p99: NaN, bad, statuses }
  return { p50: times[Math.floor(times.length * 0.5)]!, p99: times[Math.min(times.length - 1, Math.ceil(times.length * 0.99) - 1)]!, bad, statuses }
}

const QUERY_PATHS = [
  { name: 'metrics', path: '/analytics/metrics' },
  { name: 'breakdown by user_id', path: '/analytics/breakdown?by=user_id' }
]

export async function run(seconds: number): Promise<Row[]> {
  if (NATS_SERVER.startsWith('/') && !existsSync(NATS_SERVER)) {
    console.log(`  cluster: skipped, ${NATS_SERVER} is missing (apt-get install nats-server)`)
    return []
  }
  const scenarios: Scenario[] = [
    { name: 'batch 100', path: '/events/batch', body: JSON.stringify(Array.from({ length: 100 }, (_, i) => event(i))), events: 100, connections: 9 },
    { name: 'single events', path: '/events/ingest', body: JSON.stringify(event(1)), events: 1, connections: 30 }
  ]
  const rows: Row[] = []
  const note = (f: number) => (f > 0 ? `${f} non-2xx/errors` : undefined)

  // Single-node LMDB: the baseline, in this run.
  const base = new Map<string, Awaited<ReturnType<typeof measure>>>()
  const baseQ = new Map<string, { p50: number; p99: number; bad: number }>()
  const single = await startLLMScope()
  try {
    for (const s of scenarios) {
      const r = await measure([single.url], s, seconds, [single.proc.pid], [])
      base.set(s.name, r)
      rows.push({ bench: 'cluster', metric: `single-node LMDB, ${s.name}: events/s`, value: r.evPerSec, unit: 'ev/s', note: note(r.failures) })
      rows.push({ bench: 'cluster', metric: `single-node LMDB, ${s.name}: CPU per event`, value: r.scopeUsPerEvent, unit: 'µs' })
    }
    for (const q of QUERY_PATHS) baseQ.set(q.name, await queryTimes(single.url, q.path))
  } finally {
    await single.stop()
  }

  const root = mkdtempSync(join(tmpdir(), 'llmscope-bench-cluster-'))
  let nats: Proc[] = []
  const nodes: Proc[] = []
  try {
    nats = await startNatsServers({ n: 3, dir: join(root, 'nats') })
    const natsPids = nats.map((s) => s.proc.pid)
    const env = (cluster: string, i: number) => ({
      LLMSCOPE_NATS_URL: nats.map((s) => s.url).join(','),
      LLMSCOPE_NODE_ID: `${cluster}-node${i + 1}`,
      LLMSCOPE_CLUSTER_NAME: cluster,
      LLMSCOPE_DATA_DIR: mkdtempSync(join(root, `${cluster}-node${i + 1}-`)),
      LLMSCOPE_API_KEYS: BENCH_KEY,
      LLMSCOPE_LEASE_S: String(LEASE_S),
      LLMSCOPE_PARTITIONS: String(PARTITIONS),
      PORT: '0'
    })

    // One cluster node (its own cluster name: its own stream on the same 3 nats-servers).
    const one = await startNode(env('one', 0), 'one')
    nodes.push(one)
    await waitAllOwned([one.url], PARTITIONS)
    for (const s of scenarios) {
      const r = await measure([one.url], s, seconds, [one.proc.pid], natsPids)
      const b = base.get(s.name)!
      rows.push({ bench: 'cluster', metric: `1 node + 3 nats (R3), ${s.name}: events/s`, value: r.evPerSec, unit: 'ev/s', baseline: b.evPerSec, ratio: r.evPerSec / b.evPerSec, note: note(r.failures) })
      rows.push({ bench: 'cluster', metric: `1 node, ${s.name}: CPU per event, LLMScope node`, value: r.scopeUsPerEvent, unit: 'µs', baseline: b.scopeUsPerEvent, ratio: r.scopeUsPerEvent / b.scopeUsPerEvent })
      rows.push({ bench: 'cluster', metric: `1 node, ${s.name}: CPU per event, 3 nats-servers`, value: r.natsUsPerEvent, unit: 'µs' })
      rows.push({ bench: 'cluster', metric: `1 node, ${s.name}: overhead per event vs single node`, value: r.scopeUsPerEvent + r.natsUsPerEvent - b.scopeUsPerEvent, unit: 'µs CPU', note: 'node + NATS − single-node LMDB' })
    }
    {
      const s = scenarios[0]!
      const sub = await wsSubscriber(one.url)
      const r = await measure([one.url], s, seconds, [one.proc.pid], natsPids)
      await sub.close()
      const b = base.get(s.name)!
      rows.push({ bench: 'cluster', metric: `1 node + one /ws subscriber, ${s.name}: events/s`, value: r.evPerSec, unit: 'ev/s', baseline: b.evPerSec, ratio: r.evPerSec / b.evPerSec, note: note(r.failures) ?? `${sub.frames()} frames received` })
      rows.push({ bench: 'cluster', metric: `1 node + one /ws subscriber, ${s.name}: CPU per event, LLMScope node`, value: r.scopeUsPerEvent, unit: 'µs', baseline: b.scopeUsPerEvent, ratio: r.scopeUsPerEvent / b.scopeUsPerEvent, note: 'its feed decodes and prices every event of the stream' })
    }
    await one.stop()
    nodes.length = 0

    // Three nodes, the load split evenly over them.
    for (let i = 0; i < 3; i++) nodes.push(await startNode(env('three', i), `three-${i + 1}`))
    await waitAllOwned(nodes.map((n) => n.url), PARTITIONS)
    for (const s of scenarios) {
      const r = await measure(nodes.map((n) => n.url), s, seconds, nodes.map((n) => n.proc.pid), natsPids)
      const b = base.get(s.name)!
      rows.push({ bench: 'cluster', metric: `3 nodes round-robin + 3 nats, ${s.name}: events/s`, value: r.evPerSec, unit: 'ev/s', baseline: b.evPerSec, ratio: r.evPerSec / b.evPerSec, note: note(r.failures) })
      rows.push({ bench: 'cluster', metric: `3 nodes, ${s.name}: CPU per event, 3 LLMScope nodes`, value: r.scopeUsPerEvent, unit: 'µs', baseline: b.scopeUsPerEvent, ratio: r.scopeUsPerEvent / b.scopeUsPerEvent })
      rows.push({ bench: 'cluster', metric: `3 nodes, ${s.name}: CPU per event, 3 nats-servers`, value: r.natsUsPerEvent, unit: 'µs' })
    }

    // Queries from node 1, which owns only part of the partitions.
    const owned = (await readyOf(nodes[0]!.url)).body?.cluster?.owned
    const ownedCount = Array.isArray(owned) ? owned.length : Number(owned)
    for (const q of QUERY_PATHS) {
      const r = await queryTimes(nodes[0]!.url, q.path)
      const b = baseQ.get(q.name)!
      const n = `node owns ${ownedCount} of ${PARTITIONS} partitions${r.bad > 0 ? `; ${r.bad} of ${QUERIES} not 200 (${r.statuses}), left out of the percentiles` : ''}`
      rows.push({ bench: 'cluster', metric: `query ${q.name} from a node: p50`, value: r.p50, unit: 'ms', baseline: b.p50, ratio: r.p50 / b.p50, note: n })
      rows.push({ bench: 'cluster', metric: `query ${q.name} from a node: p99`, value: r.p99, unit: 'ms', baseline: b.p99, ratio: r.p99 / b.p99, note: n })
    }

    // Failover: kill -9 node 3 → the two others own every partition.
    const killed = nodes[2]!
    const t0 = performance.now()
    await killed.kill()
    await waitAllOwned([nodes[0]!.url, nodes[1]!.url], PARTITIONS, 120_000)
    rows.push({ bench: 'cluster', metric: 'failover: kill -9 a node → every partition owned', value: performance.now() - t0, unit: 'ms', goal: `≤ ${2 * LEASE_S * 1000} (2 leases)`, note: `LLMSCOPE_LEASE_S=${LEASE_S}` })
  } finally {
    await Promise.all(nodes.map((n) => n.stop()))
    await Promise.all(nats.map((s) => s.stop(5000)))
    rmSync(root, { recursive: true, force: true })
  }
  return rows
}

/**
 * Cluster mode end to end (DESIGN §9): NATS (1 or 3 nats-server, test/helpers/nats.ts) plus N
 * LLMScope nodes, each the built server (`node dist/main.js`) as a real process with its own data
 * dir, all sharing one owner key so every node accepts it.
 *
 * Every wait is for a condition with a generous deadline; `stop()` kills everything and removes
 * the temp dirs (callers register `t.teardown(() => cluster.stop())`).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from '@nats-io/transport-node'
import { Objm } from '@nats-io/obj'
import { startNats, streamLeader, type NatsCluster } from './nats.js'
import { START_TIMEOUT_MS, startServer, waitReady, type Server } from './server.js'

/** The owner key every node of a test cluster is configured with. */
export const OWNER_KEY = 'cluster-owner-key-1'

/** Headers of the owner key, acting in `project` (default: the project `default`). */
export function ownerHeaders(project?: string): Record<string, string> {
  const h: Record<string, string> = { 'x-api-key': OWNER_KEY, 'content-type': 'application/json' }
  if (project !== undefined) h['x-llmscope-project'] = project
  return h
}

/** The `cluster` object of a node's /ready answer (DESIGN §9). */
export interface ReadyCluster {
  node: string
  partitions: number
  /** Partitions this node owns: a list of partition numbers, or their count. */
  owned: number[] | number
  /** Partitions without a live owner, as this node sees them: a list or a count. */
  unowned: number[] | number
  lag: number
  restored_from: string | null
}

/** A count from a field that may be a list or a number. */
export function count(x: unknown): number {
  if (Array.isArray(x)) return x.length
  if (typeof x === 'number') return x
  return Number.NaN
}

export interface ClusterOptions {
  /** nats-server processes: 1, or 3 in one NATS cluster (R3 stream). */
  nats: 1 | 3
  /** LLMScope nodes. */
  nodes: number
  /** LLMSCOPE_LEASE_S (default 3: failover tests wait for leases to expire). */
  leaseS?: number
  /** LLMSCOPE_PARTITIONS (default 8). */
  partitions?: number
  /** Further environment for every node (LLMSCOPE_SNAPSHOT_INTERVAL_S, …). */
  env?: Record<string, string>
}

export interface Cluster {
  readonly nats: NatsCluster
  /** Node i's newest process (replaced by restartNode). */
  readonly nodes: Server[]
  /** LLMSCOPE_CLUSTER_NAME of this cluster (its stream is `${name}-events`). */
  readonly name: string
  readonly stream: string
  readonly partitions: number
  readonly leaseMs: number
  /** Node i's LLMSCOPE_NODE_ID. */
  nodeId(i: number): string
  /** Node i's data dir (a new one after restartNode with emptyDataDir). */
  dataDir(i: number): string
  /** Node i's base URL (http://127.0.0.1:PORT; a restarted node has a new port). */
  url(i: number): string
  /** Whether node i's process is running (not killed, not exited). */
  alive(i: number): boolean
  /** Indexes of the running nodes. */
  live(): number[]
  /** SIGKILL (kill -9) node i; resolves once it has exited. */
  killNode(i: number): Promise<void>
  /** Starts node i again (same node id; an empty new data dir if asked); resolves once /ready answers 200. */
  restartNode(i: number, opts?: { emptyDataDir?: boolean }): Promise<Server>
  /** Node i's /ready: status and body (null body when it did not answer). */
  ready(i: number): Promise<{ status: number; body: any }>
  /**
   * Resolves once every partition has exactly one live owner: every running node answers /ready
   * 200 with `cluster`, none sees an unowned partition, and the running nodes' owned partitions
   * add up to the partition count (and, when they are lists, cover every partition once).
   * Returns each running node's `cluster` object.
   */
  /** `trace`, when given, gets a `+ms what` line each time the reason for waiting changes. */
  waitAllOwned(timeoutMs?: number, trace?: string[]): Promise<Map<number, ReadyCluster>>
  /** The server name (n1..n3) leading the event stream, asked through a live nats-server. */
  streamLeader(): Promise<string | undefined>
  /** The object-store info of every snapshot object (`p<N>` → mtime as epoch ms); missing ones left out. */
  snapshotTimes(): Promise<Map<number, number>>
  /** Node i's warnings and errors so far (log lines at level warn or above), the last `max`. */
  problems(i: number, max?: number): string[]
  /** Node i's `cluster:`/`partition` log lines written at or after `since` (epoch ms), as `+ms message {fields}`. */
  timeline(i: number, since: number, max?: number): string[]
  /** Kills every node and nats-server, removes the temp dirs; safe twice. */
  stop(): Promise<void>
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** A node that is not in cluster mode at all: no point in waiting for it. */
class NotClustered extends Error {}

/** Polls `cond` until it returns true; fails after `ms` naming what it waited for (and the last error). */
export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = START_TIMEOUT_MS): Promise<void> {
  const end = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      if (await cond()) return
    } catch (err) {
      if (err instanceof NotClustered) throw err
      last = err
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last === undefined ? '' : ` (last error: ${String(last)})`}`)
    await sleep(50)
  }
}

/**
 * The single-node server cluster answers are compared with (the e2e files' reference): a fresh
 * data dir from `t`, the nodes' owner key; resolves once /ready answers; killed at `t`'s teardown.
 */
export async function startReference(t: { testdir(): string; teardown(fn: () => unknown): void }): Promise<Server> {
  const single = await startServer({ LLMSCOPE_DATA_DIR: t.testdir(), LLMSCOPE_API_KEYS: OWNER_KEY })
  t.teardown(async () => {
    single.proc.kill('SIGKILL')
    await single.exited
  })
  await waitReady(single.url)
  return single
}

let clusters = 0

/** Starts NATS and `nodes` LLMScope nodes; resolves once every node is ready and every partition is owned. */
export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const nats = await startNats({ servers: opts.nats })
  const root = mkdtempSync(join(tmpdir(), 'llmscope-cluster-'))
  const leaseS = opts.leaseS ?? 3
  const partitions = opts.partitions ?? 8
  const name = `t${process.pid}x${clusters++}`
  const stream = `${name}-events`
  const dirs: string[] = []
  const nodes: Server[] = []
  const running: boolean[] = []
  let stopped = false

  const freshDir = () => mkdtempSync(join(root, 'node-'))
  const nodeId = (i: number) => `node${i + 1}`
  const envOf = (i: number): Record<string, string> => ({
    LLMSCOPE_NATS_URL: nats.urls.join(','),
    LLMSCOPE_NODE_ID: nodeId(i),
    LLMSCOPE_LEASE_S: String(leaseS),
    LLMSCOPE_PARTITIONS: String(partitions),
    LLMSCOPE_CLUSTER_NAME: name,
    LLMSCOPE_DATA_DIR: dirs[i]!,
    LLMSCOPE_API_KEYS: OWNER_KEY,
    LLMSCOPE_LOG_LEVEL: 'info',
    PORT: '0',
    ...opts.env
  })
  const spawnNode = async (i: number): Promise<Server> => {
    const s = await startServer(envOf(i))
    nodes[i] = s
    running[i] = true
    void s.exited.then(() => {
      if (nodes[i] === s) running[i] = false
    })
    await waitReady(s.url)
    return s
  }

  const ready = async (i: number): Promise<{ status: number; body: any }> => {
    try {
      const r = await fetch(`${nodes[i]!.url}/ready`, { signal: AbortSignal.timeout(5000) })
      const text = await r.text()
      let body: any = null
      try {
        body = JSON.parse(text)
      } catch {}
      return { status: r.status, body }
    } catch {
      return { status: 0, body: null }
    }
  }
  const live = () => nodes.map((_, i) => i).filter((i) => running[i])

  const stop = async () => {
    if (stopped) return
    stopped = true
    await Promise.all(
      nodes.map(async (s, i) => {
        if (!running[i]) return
        s.proc.kill('SIGTERM')
        const done = await Promise.race([s.exited.then(() => true), sleep(15_000).then(() => false)])
        if (!done) {
          s.proc.kill('SIGKILL')
          await s.exited
        }
      })
    )
    await nats.stop()
    rmSync(root, { recursive: true, force: true })
  }

  const cluster: Cluster = {
    nats,
    nodes,
    name,
    stream,
    partitions,
    leaseMs: leaseS * 1000,
    nodeId,
    dataDir: (i) => dirs[i]!,
    url: (i) => nodes[i]!.url,
    alive: (i) => running[i] === true,
    live,
    async killNode(i) {
      const s = nodes[i]!
      if (running[i]) s.proc.kill('SIGKILL')
      await s.exited
      running[i] = false
    },
    async restartNode(i, o = {}) {
      if (running[i]) await cluster.killNode(i)
      if (o.emptyDataDir === true) {
        rmSync(dirs[i]!, { recursive: true, force: true })
        dirs[i] = freshDir()
      }
      return spawnNode(i)
    },
    ready,
    async waitAllOwned(timeoutMs = START_TIMEOUT_MS, trace) {
      let seen = new Map<number, ReadyCluster>()
      let why = 'no node answered yet'
      const t0 = Date.now()
      let traced = ''
      await until(
        async () => {
          if (trace !== undefined && why !== traced) trace.push(`+${Date.now() - t0} ms ${(traced = why)}`)
          seen = new Map()
          const idx = live()
          const answers = await Promise.all(
            idx.map(async (i) => {
              const asked = Date.now()
              const a = await ready(i)
              if (trace !== undefined && Date.now() - asked > 500) trace.push(`+${asked - t0} ms node ${i} took ${Date.now() - asked} ms to answer /ready (${a.status})`)
              return a
            })
          )
          for (let k = 0; k < idx.length; k++) {
            const a = answers[k]!
            // 200 without `cluster`: the node runs single-node (cluster mode is off or not built yet).
            if (a.status === 200 && a.body?.cluster == null) throw new NotClustered(`node ${idx[k]} answers /ready 200 without "cluster" (not in cluster mode): ${JSON.stringify(a.body)}`)
            if (a.status !== 200 || a.body?.cluster == null) {
              why = `node ${idx[k]} /ready: ${a.status} ${JSON.stringify(a.body)}`
              return false
            }
            seen.set(idx[k]!, a.body.cluster as ReadyCluster)
          }
          let sum = 0
          const covered = new Set<number>()
          let lists = true
          for (const [i, c] of seen) {
            if (count(c.unowned) !== 0) {
              why = `node ${i} sees unowned ${JSON.stringify(c.unowned)}`
              return false
            }
            sum += count(c.owned)
            if (Array.isArray(c.owned)) for (const p of c.owned) covered.add(p)
            else lists = false
          }
          if (sum !== partitions || (lists && covered.size !== partitions)) {
            why = `owned by live nodes: ${JSON.stringify([...seen].map(([i, c]) => [i, c.owned]))}`
            return false
          }
          return true
        },
        'every partition owned by one live node',
        timeoutMs
      ).catch((err: Error) => {
        throw new Error(`${err.message}; last: ${why}`)
      })
      return seen
    },
    async streamLeader() {
      let last: unknown
      for (const s of nats.servers) {
        try {
          return await streamLeader(s.url, stream)
        } catch (err) {
          last = err
        }
      }
      throw last
    },
    async snapshotTimes() {
      const out = new Map<number, number>()
      const nc = await connect({ servers: nats.urls, timeout: 5000, reconnect: false })
      try {
        const os = await new Objm(nc).open(`${name}-snapshots`)
        for (const info of await os.list()) {
          const m = /^p(\d+)$/.exec(info.name)
          if (m !== null && !info.deleted) out.set(Number(m[1]), Date.parse(info.mtime))
        }
      } finally {
        await nc.close().catch(() => {})
      }
      return out
    },
    problems(i, max = 10) {
      return nodes[i]!
        .lines()
        .filter((l) => /"level":(4|5|6)0/.test(l))
        .slice(-max)
        .map((l) => l.slice(0, 600))
    },
    timeline(i, since, max = 40) {
      const out: string[] = []
      for (const l of nodes[i]!.lines()) {
        if (!/"msg":"(cluster:|partition)/.test(l)) continue
        let o: any
        try {
          o = JSON.parse(l)
        } catch {
          continue
        }
        if (typeof o.time !== 'number' || o.time < since) continue
        const { level, time, pid, hostname, msg, ...rest } = o
        out.push(`+${time - since} ms ${msg} ${JSON.stringify(rest)}`)
      }
      return out.slice(0, max)
    },
    stop
  }

  try {
    for (let i = 0; i < opts.nodes; i++) dirs.push(freshDir())
    // One node first (it makes the stream and buckets), then the others together.
    await spawnNode(0)
    await Promise.all(Array.from({ length: opts.nodes - 1 }, (_, k) => spawnNode(k + 1)))
    await cluster.waitAllOwned()
  } catch (err) {
    const outputs = nodes.map((s, i) => `--- node ${i}:\n${s.output().slice(-3000)}`).join('\n')
    await stop()
    throw new Error(`${(err as Error).message}\n${outputs}`)
  }
  return cluster
}

/** What a load loop saw. */
export interface LoadStats {
  /** Ids of every event answered 202, in no particular order. */
  acked: string[]
  /** Sum of `prompt_tokens` over the acknowledged events. */
  ackedTokens: number
  /** Events sent in requests that did not get a 202 (they may or may not be in the stream). */
  unackedEvents: number
  /** Count of answers per HTTP status (0: no answer). */
  statuses: Map<number, number>
  /** Bodies of the first few non-202 answers (for messages). */
  samples: string[]
}

export interface LoadLoop {
  readonly stats: LoadStats
  /** Events sent so far (acknowledged or not, answered or in flight). */
  sent(): number
  /** Stops sending and resolves once every in-flight request has been answered. */
  stop(): Promise<LoadStats>
}

/**
 * Sends batches of `batch` events (round robin over `urls()`, `clients` concurrent senders)
 * until stopped. Every event has model `m<k>`, `prompt_tokens` 1..20 and a timestamp inside
 * `day` (an ISO date, default 2026-11-05), so acknowledged counts and tokens can be checked.
 */
export function startLoad(opts: { urls: () => string[]; project?: string; clients?: number; batch?: number; day?: string; models?: number; pauseMs?: number }): LoadLoop {
  const stats: LoadStats = { acked: [], ackedTokens: 0, unackedEvents: 0, statuses: new Map(), samples: [] }
  const clients = opts.clients ?? 4
  const batch = opts.batch ?? 10
  const day = Date.parse(`${opts.day ?? '2026-11-05'}T00:00:00Z`)
  const models = opts.models ?? 6
  let stop = false
  let sent = 0
  let rr = 0
  const note = (status: number, body: string) => {
    stats.statuses.set(status, (stats.statuses.get(status) ?? 0) + 1)
    if (status !== 202 && stats.samples.length < 5) stats.samples.push(`${status} ${body.slice(0, 300)}`)
  }
  const client = async (c: number) => {
    let i = 0
    while (!stop) {
      const urls = opts.urls()
      if (urls.length === 0) break
      const url = urls[rr++ % urls.length]!
      const events = Array.from({ length: batch }, (_, k) => ({
        timestamp: new Date(day + ((sent + k) * 997) % 86_400_000).toISOString(),
        model: `m${(c + i + k) % models}`,
        prompt_tokens: 1 + ((i + k + c) % 20),
        completion_tokens: 1,
        latency_ms: 5 + ((i * 7 + k) % 300)
      }))
      sent += events.length
      i++
      try {
        const r = await fetch(`${url}/events/batch`, { method: 'POST', headers: ownerHeaders(opts.project), body: JSON.stringify(events), signal: AbortSignal.timeout(30_000) })
        const text = await r.text()
        note(r.status, text)
        if (r.status === 202) {
          const body = JSON.parse(text) as { event_ids: string[] }
          for (const id of body.event_ids) stats.acked.push(id)
          for (const e of events) stats.ackedTokens += e.prompt_tokens
        } else {
          stats.unackedEvents += events.length
          // Back off a little on refusals (503 during a failover) rather than spin.
          await sleep(50)
        }
      } catch (err) {
        note(0, (err as Error).message)
        stats.unackedEvents += events.length
        await sleep(50)
      }
      if (opts.pauseMs !== undefined) await sleep(opts.pauseMs)
    }
  }
  const running = Array.from({ length: clients }, (_, c) => client(c))
  return {
    stats,
    sent: () => sent,
    async stop() {
      stop = true
      await Promise.all(running)
      return stats
    }
  }
}

/** GET `path` from `url` as the owner (in `project`): status and parsed body. */
export async function get(url: string, path: string, project?: string): Promise<{ status: number; body: any }> {
  const r = await fetch(`${url}${path}`, { headers: ownerHeaders(project), signal: AbortSignal.timeout(60_000) })
  const text = await r.text()
  let body: any = text
  try {
    body = JSON.parse(text)
  } catch {}
  return { status: r.status, body }
}

/** POST JSON `body` to `url` + `path` as the owner (in `project`): status and parsed body. */
export function post(url: string, path: string, body: unknown, project?: string): Promise<{ status: number; body: any }> {
  return send('POST', url, path, body, { project })
}

/** `method` with JSON `body` to `url` + `path` as the owner (in `project`): status and parsed body (text when not JSON). */
export async function send(method: 'POST' | 'PUT' | 'PATCH', url: string, path: string, body: unknown, opts: { project?: string; timeoutMs?: number } = {}): Promise<{ status: number; body: any }> {
  const r = await fetch(`${url}${path}`, { method, headers: ownerHeaders(opts.project), body: JSON.stringify(body), signal: AbortSignal.timeout(opts.timeoutMs ?? 60_000) })
  const text = await r.text()
  let parsed: any = text
  try {
    parsed = JSON.parse(text)
  } catch {}
  return { status: r.status, body: parsed }
}

/**
 * Cluster mode on one machine, to try it: starts 3 nats-server (JetStream, one NATS cluster, so
 * the event stream is R3) and 3 LLMScope nodes, prints their URLs and the key, and runs until
 * Ctrl-C (then stops the nodes with SIGTERM, which releases their leases, and the servers).
 *
 *   npx tsc -p tsconfig.bench.json && node dist-bench/bench/cluster-up.js [--nodes 3] [--nats 3]
 *       [--port 3001] [--nats-port 4222] [--dir ./cluster-data] [--lease 10] [--partitions 16]
 *
 * LLMScope nodes listen on --port, --port+1, …; nats-server on --nats-port, +1, +2 (clients) and
 * --nats-port+2000… (routes). `--port 0` picks free ports for everything. State is kept under
 * --dir (nats/n1…, node1…), so a second run starts from where the first stopped. The key is
 * LLMSCOPE_API_KEYS from the environment, else `cluster-demo-key` (an owner key).
 *
 * bench/cluster.ts uses the same functions.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { createServer } from 'node:net'
import { join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'

const here = fileURLToPath(new URL('.', import.meta.url))
/** The compiled server (bench runs from dist-bench/). */
export const NODE_ENTRY = join(here, '../src/main.js')
/** Debian's nats-server, or NATS_SERVER, or the one on PATH. */
export const NATS_SERVER = process.env.NATS_SERVER ?? (existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server')

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** A port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer()
    srv.on('error', rej)
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address()
      const port = typeof a === 'object' && a !== null ? a.port : 0
      srv.close(() => res(port))
    })
  })
}

export interface Proc {
  name: string
  url: string
  proc: ChildProcess
  /** Output so far (the last 16 KB). */
  output(): string
  exited: Promise<void>
  /** SIGKILL; resolves once exited. */
  kill(): Promise<void>
  /** SIGTERM, then SIGKILL after `ms`; resolves once exited. */
  stop(ms?: number): Promise<void>
}

function track(name: string, url: string, proc: ChildProcess, initial = ''): Proc {
  let out = initial
  const onData = (d: Buffer) => {
    out = (out + d.toString()).slice(-16_000)
  }
  proc.stdout?.on('data', onData)
  proc.stderr?.on('data', onData)
  const exited = new Promise<void>((r) => {
    if (proc.exitCode !== null || proc.signalCode !== null) r()
    else proc.once('exit', () => r())
  })
  const alive = () => proc.exitCode === null && proc.signalCode === null
  return {
    name,
    url,
    proc,
    output: () => out,
    exited,
    async kill() {
      if (alive()) proc.kill('SIGKILL')
      await exited
    },
    async stop(ms = 20_000) {
      if (alive()) proc.kill('SIGTERM')
      const done = await Promise.race([exited.then(() => true), sleep(ms).then(() => false)])
      if (!done) {
        proc.kill('SIGKILL')
        await exited
      }
    }
  }
}

/** Every live child, killed if this process exits without stopping them. */
const children = new Set<ChildProcess>()
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL')
})

/**
 * Starts `n` nats-server with JetStream (n > 1: one NATS cluster with routes between them) and
 * resolves once JetStream answers through every one of them.
 */
export async function startNatsServers(opts: { n: number; dir: string; port?: number }): Promise<Proc[]> {
  const ports: number[] = []
  const routes: number[] = []
  for (let i = 0; i < opts.n; i++) {
    ports.push(opts.port ? opts.port + i : await freePort())
    routes.push(opts.port ? opts.port + 2000 + i : await freePort())
  }
  const servers: Proc[] = []
  for (let i = 0; i < opts.n; i++) {
    const name = `n${i + 1}`
    const store = join(opts.dir, name)
    mkdirSync(store, { recursive: true })
    const args = ['-a', '127.0.0.1', '-p', String(ports[i]), '-n', name, '-js', '-sd', store]
    if (opts.n > 1) {
      args.push('--cluster_name', 'llmscope', '--cluster', `nats://127.0.0.1:${routes[i]}`)
      args.push('--routes', routes.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p}`).join(','))
    }
    const proc = spawn(NATS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    children.add(proc)
    proc.once('exit', () => children.delete(proc))
    servers.push(track(name, `nats://127.0.0.1:${ports[i]}`, proc))
  }
  const deadline = Date.now() + 60_000
  for (const s of servers) {
    for (;;) {
      if (s.proc.exitCode !== null) throw new Error(`nats-server ${s.name} exited:\n${s.output()}`)
      try {
        const nc = await connect({ servers: s.url, reconnect: false, timeout: 2000 })
        try {
          await (await jetstreamManager(nc, { timeout: 2000 })).getAccountInfo()
          break
        } finally {
          await nc.close().catch(() => {})
        }
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`nats-server ${s.name} not ready: ${String(err)}\n${s.output()}`)
        await sleep(100)
      }
    }
  }
  return servers
}

/** Starts one LLMScope node (`node dist/main.js`) and resolves with its URL once it listens. */
export async function startNode(env: Record<string, string>, name = 'llmscope'): Promise<Proc> {
  const proc = spawn(process.execPath, [NODE_ENTRY], { env: { PATH: process.env.PATH ?? '', LLMSCOPE_LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(proc)
  proc.once('exit', () => children.delete(proc))
  let out = ''
  const url = await new Promise<string>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${name}: no address in 90 s:\n${out}`)), 90_000)
    const onData = (d: Buffer) => {
      out += d.toString()
      const m = /"msg":"Server listening at (http:\/\/[^"]+)"/.exec(out) ?? /Server listening at (http:\/\/\S+)/.exec(out)
      if (m !== null) {
        clearTimeout(timer)
        proc.stdout!.off('data', onData)
        proc.stderr!.off('data', onData)
        res(m[1]!)
      }
    }
    proc.stdout!.on('data', onData)
    proc.stderr!.on('data', onData)
    proc.once('exit', () => {
      clearTimeout(timer)
      rej(new Error(`${name} exited:\n${out}`))
    })
  })
  return track(name, url, proc, out)
}

/** /ready of a node: status and body (0 and null when it does not answer). */
export async function readyOf(url: string): Promise<{ status: number; body: any }> {
  try {
    const r = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(5000) })
    const text = await r.text()
    try {
      return { status: r.status, body: JSON.parse(text) }
    } catch {
      return { status: r.status, body: null }
    }
  } catch {
    return { status: 0, body: null }
  }
}

const countOf = (x: unknown) => (Array.isArray(x) ? x.length : typeof x === 'number' ? x : Number.NaN)

/** Resolves once the nodes at `urls` answer /ready 200 and own every partition between them, none unowned. */
export async function waitAllOwned(urls: string[], partitions: number, timeoutMs = 120_000): Promise<void> {
  const end = Date.now() + timeoutMs
  let last = ''
  for (;;) {
    const rs = await Promise.all(urls.map(readyOf))
    const ok = rs.every((r) => r.status === 200 && r.body?.cluster != null && countOf(r.body.cluster.unowned) === 0)
    if (ok && rs.reduce((s, r) => s + countOf(r.body.cluster.owned), 0) === partitions) return
    last = JSON.stringify(rs.map((r) => [r.status, r.body?.cluster ?? r.body]))
    if (rs.some((r) => r.status === 200 && r.body?.cluster == null)) throw new Error(`a node is not in cluster mode: ${last}`)
    if (Date.now() > end) throw new Error(`partitions not all owned within ${timeoutMs} ms: ${last}`)
    await sleep(50)
  }
}

export interface ClusterUp {
  nats: Proc[]
  nodes: Proc[]
  key: string
  partitions: number
  /** Environment of node i (to restart it). */
  env(i: number): Record<string, string>
  stop(): Promise<void>
}

/** NATS (`nats` servers) plus `nodes` LLMScope nodes under `dir`; resolves once every partition is owned. */
export async function clusterUp(opts: { nodes: number; nats: number; dir: string; port?: number; natsPort?: number; leaseS?: number; partitions?: number; key?: string; env?: Record<string, string> }): Promise<ClusterUp> {
  const key = opts.key ?? 'cluster-demo-key'
  const partitions = opts.partitions ?? 16
  const nats = await startNatsServers({ n: opts.nats, dir: join(opts.dir, 'nats'), port: opts.natsPort })
  const nodes: Proc[] = []
  const env = (i: number): Record<string, string> => {
    const dataDir = join(opts.dir, `node${i + 1}`)
    mkdirSync(dataDir, { recursive: true })
    return {
      LLMSCOPE_NATS_URL: nats.map((s) => s.url).join(','),
      LLMSCOPE_NODE_ID: `node${i + 1}`,
      LLMSCOPE_DATA_DIR: dataDir,
      LLMSCOPE_API_KEYS: key,
      LLMSCOPE_LEASE_S: String(opts.leaseS ?? 10),
      LLMSCOPE_PARTITIONS: String(partitions),
      PORT: String(opts.port ? opts.port + i : 0),
      ...opts.env
    }
  }
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()))
    await Promise.all(nats.map((s) => s.stop(5000)))
  }
  try {
    // The first node makes the stream and buckets; the others join it.
    nodes.push(await startNode(env(0), 'node1'))
    nodes.push(...(await Promise.all(Array.from({ length: opts.nodes - 1 }, (_, k) => startNode(env(k + 1), `node${k + 2}`)))))
    await waitAllOwned(nodes.map((n) => n.url), partitions)
  } catch (err) {
    await stop()
    throw new Error(`${(err as Error).message}\n${nodes.map((n) => `--- ${n.name}:\n${n.output().slice(-2000)}`).join('\n')}`)
  }
  return { nats, nodes, key, partitions, env, stop }
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}

async function main(): Promise<void> {
  const port = Number(arg('port', '3001'))
  const up = await clusterUp({
    nodes: Number(arg('nodes', '3')),
    nats: Number(arg('nats', '3')),
    dir: resolve(arg('dir', './cluster-data')),
    port,
    natsPort: port === 0 ? undefined : Number(arg('nats-port', '4222')),
    leaseS: Number(arg('lease', '10')),
    partitions: Number(arg('partitions', '16')),
    key: process.env.LLMSCOPE_API_KEYS?.split(',')[0]?.split(':')[0] || undefined
  })
  console.log(`nats-server: ${up.nats.map((s) => s.url).join(' ')}`)
  for (const n of up.nodes) console.log(`LLMScope ${n.name}: ${n.url}  (/ready shows its partitions)`)
  console.log(`key (owner): ${up.key}`)
  console.log(`try: curl -s -X POST ${up.nodes[0]!.url}/events/ingest -H 'X-API-Key: ${up.key}' -H 'content-type: application/json' -d '{"model":"gpt-4o","prompt_tokens":100,"completion_tokens":20,"latency_ms":500}'`)
  console.log(`     curl -s ${up.nodes[up.nodes.length - 1]!.url}/analytics/metrics -H 'X-API-Key: ${up.key}'`)
  console.log('Ctrl-C stops everything (state stays in the data dirs).')
  let stopping = false
  const onSignal = () => {
    if (stopping) return
    stopping = true
    console.log('stopping…')
    void up.stop().then(() => process.exit(0))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  // A node or server that dies is reported (kill -9 one to watch the others take over).
  for (const p of [...up.nats, ...up.nodes]) void p.exited.then(() => !stopping && console.log(`${p.name} exited (${p.proc.exitCode ?? p.proc.signalCode})`))
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(String(err))
    process.exit(1)
  })
}

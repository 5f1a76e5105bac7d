/**
 * Spawns Debian's nats-server (JetStream on) for tests: one server, or three in one NATS cluster
 * (what an R3 stream needs). Ports are found free on 127.0.0.1, every server has its own store
 * dir in a fresh temp dir, and every wait is for a condition (the server accepts a client; for a
 * cluster, the JetStream meta leader answers account info) with a generous deadline.
 *
 * Callers register `t.teardown(() => nats.stop())`; servers still alive when the test process
 * exits are killed then too.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, mkdirSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'

export const NATS_SERVER = '/usr/sbin/nats-server'

/** How long a server start (or a cluster's meta leader election) may take. */
export const NATS_START_TIMEOUT_MS = 60_000

export interface NatsServer {
  /** Server name (`-n`): n1, n2, n3. */
  readonly name: string
  /** Client URL: nats://127.0.0.1:<port>. */
  readonly url: string
  /** Client port. */
  readonly port: number
  /** Pid of the running process (of the newest start after a restart). */
  readonly pid: number
  /** Sends `signal` (default SIGKILL, like kill -9) and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>
  /** Starts it again on the same ports with the same store dir; resolves once it accepts clients and JetStream answers through it. */
  restart(): Promise<void>
}

export interface NatsCluster {
  /** Client URLs of every server. */
  readonly urls: string[]
  readonly servers: NatsServer[]
  /** Kills every server and removes the temp dirs; safe twice. */
  stop(): Promise<void>
}

/** A port free on 127.0.0.1 right now (bound to 0, read, released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

const live = new Set<ChildProcess>()
let exitHookInstalled = false
function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const p of live) {
      try {
        p.kill('SIGKILL')
      } catch {}
    }
  })
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref())

interface Spec {
  name: string
  port: number
  clusterPort: number | null
  routes: string[]
  storeDir: string
}

class ServerProc implements NatsServer {
  readonly name: string
  readonly url: string
  readonly port: number
  #spec: Spec
  #proc: ChildProcess | null = null
  #exited: Promise<void> = Promise.resolve()
  #out = ''

  constructor(spec: Spec) {
    this.#spec = spec
    this.name = spec.name
    this.port = spec.port
    this.url = `nats://127.0.0.1:${spec.port}`
  }

  get pid(): number {
    return this.#proc?.pid ?? -1
  }

  get running(): boolean {
    return this.#proc !== null && this.#proc.exitCode === null && this.#proc.signalCode === null
  }

  /** The last few KB the server wrote (for error messages). */
  output(): string {
    return this.#out.slice(-4000)
  }

  spawn(): void {
    const s = this.#spec
    const args = ['-a', '127.0.0.1', '-p', String(s.port), '-n', s.name, '-js', '-sd', s.storeDir]
    if (s.clusterPort !== null) {
      args.push('--cluster_name', 'llmscope-test', '--cluster', `nats://127.0.0.1:${s.clusterPort}`)
      if (s.routes.length > 0) args.push('--routes', s.routes.join(','))
    }
    const proc = spawn(NATS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    this.#proc = proc
    live.add(proc)
    installExitHook()
    const onData = (d: Buffer) => {
      this.#out = (this.#out + d.toString()).slice(-16_000)
    }
    proc.stdout!.on('data', onData)
    proc.stderr!.on('data', onData)
    this.#exited = new Promise<void>((resolve) => {
      proc.once('exit', () => {
        live.delete(proc)
        resolve()
      })
      proc.once('error', (err) => {
        this.#out += `\nspawn error: ${err.message}`
        live.delete(proc)
        resolve()
      })
    })
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const proc = this.#proc
    if (proc === null) return
    if (this.running) proc.kill(signal)
    await this.#exited
  }

  /**
   * Resolves once a client connects, sees `peers` servers in the cluster (its connect_urls: all
   * routes up) and (when `jetstream`) account info answers through this server.
   */
  async waitReady(jetstream: boolean, peers: number, deadline: number): Promise<void> {
    let lastErr: unknown
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`nats-server ${this.name} exited while starting:\n${this.output()}`)
      let nc: NatsConnection | undefined
      try {
        nc = await connect({ servers: this.url, reconnect: false, timeout: 2000, ignoreClusterUpdates: true })
        const seen = nc.info?.connect_urls?.length ?? 1
        if (seen < peers) throw new Error(`sees ${seen} of ${peers} servers`)
        if (!jetstream) return
        const jsm = await jetstreamManager(nc, { timeout: 2000 })
        await jsm.getAccountInfo()
        return
      } catch (err) {
        lastErr = err
      } finally {
        await nc?.close().catch(() => {})
      }
      await sleep(100)
    }
    throw new Error(`nats-server ${this.name} (${this.url}) not ready within ${NATS_START_TIMEOUT_MS} ms: ${String(lastErr)}\n${this.output()}`)
  }

  async restart(): Promise<void> {
    if (this.running) await this.kill()
    this.spawn()
    await this.waitReady(true, this.#spec.routes.length + 1, Date.now() + NATS_START_TIMEOUT_MS)
  }
}

/**
 * Starts 1 (default) or 3 nats-servers with JetStream; resolves once every server accepts
 * clients and JetStream answers (for 3: a meta leader is elected).
 */
export async function startNats(opts: { servers?: 1 | 3 } = {}): Promise<NatsCluster> {
  if (!existsSync(NATS_SERVER)) throw new Error(`${NATS_SERVER} is missing: apt-get install nats-server`)
  const n = opts.servers ?? 1
  // A port found free may be taken by another process before the server binds it: try again with new ports.
  let lastErr: unknown
  for (let attempt = 0; attempt < 3; attempt++) {
    const root = mkdtempSync(join(tmpdir(), 'llmscope-nats-'))
    const ports: number[] = []
    while (ports.length < n * 2) {
      const p = await freePort()
      if (!ports.includes(p)) ports.push(p)
    }
    const specs: Spec[] = []
    for (let i = 0; i < n; i++) {
      const storeDir = join(root, `n${i + 1}`)
      mkdirSync(storeDir)
      specs.push({
        name: `n${i + 1}`,
        port: ports[i]!,
        clusterPort: n > 1 ? ports[n + i]! : null,
        routes: n > 1 ? ports.slice(n).filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p}`) : [],
        storeDir
      })
    }
    const servers = specs.map((s) => new ServerProc(s))
    let stopped = false
    const stop = async () => {
      if (stopped) return
      stopped = true
      await Promise.all(servers.map((s) => s.kill('SIGKILL')))
      rmSync(root, { recursive: true, force: true })
    }
    try {
      for (const s of servers) s.spawn()
      const deadline = Date.now() + NATS_START_TIMEOUT_MS
      await Promise.all(servers.map((s) => s.waitReady(true, n, deadline)))
      return { urls: servers.map((s) => s.url), servers, stop }
    } catch (err) {
      lastErr = err
      const portClash = servers.some((s) => /address already in use/i.test(s.output()))
      await stop()
      if (!portClash) throw err
    }
  }
  throw lastErr
}

/** The server name (n1..n3) of the stream's leader, asked through `url`; undefined when it has none. */
export async function streamLeader(url: string, stream: string): Promise<string | undefined> {
  const nc = await connect({ servers: url, reconnect: false, timeout: 5000 })
  try {
    const jsm = await jetstreamManager(nc, { timeout: 5000 })
    const info = await jsm.streams.info(stream)
    return info.cluster?.leader
  } finally {
    await nc.close().catch(() => {})
  }
}

/**
 * LLMScope as a bench's server: its own process (as `main.ts` runs it, fresh data dir, one
 * owner key), a settled-RSS reading over IPC, keep-alive HTTP helpers, and the dimensions data
 * (bench/dim-data.ts) posted in batches of one project each, counted before the call returns.
 * Shared by bench/analytics.ts, bench/dimensions.ts, bench/search.ts and bench/money.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import http from 'node:http'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { PROJECTS, toJson, type DimEvent } from './dim-data.js'
import { settledRss } from './lib.js'

export const OWNER_KEY = 'bench-owner-key-1'
export const BATCH = 1000
export const IN_FLIGHT = 4
const self = fileURLToPath(import.meta.url)

/** The child: LLMScope as main.ts runs it, answering `{ type: 'rss' }` with its settled RSS. */
async function serverChild(): Promise<void> {
  const { loadConfig } = await import('../src/config.js')
  const { buildApp, loggerOptions } = await import('../src/app.js')
  const config = loadConfig(process.env)
  const { app, engine } = await buildApp(config, { logger: loggerOptions('warn') })
  await app.listen({ port: 0, host: '127.0.0.1' })
  await engine.recover()
  engine.startSnapshots()
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  process.on('message', (m: { type: string }) => {
    if (m.type === 'rss') void settledRss().then((rss) => process.send!({ type: 'rss', rss }))
  })
  const close = () => void app.close().then(() => process.exit(0), () => process.exit(1))
  process.on('SIGTERM', close)
  // The bench process gone (crashed, killed): no orphan server.
  process.on('disconnect', close)
  process.send!({ type: 'listening', url: `http://127.0.0.1:${port}`, rss: await settledRss() })
}

export interface Server {
  url: string
  /** The server's process id (bench/money.ts reads its CPU time). */
  pid: number | undefined
  /** Settled RSS right after start, before any project or event. */
  rss0: number
  /** The same split into anonymous memory (heaps) and file pages (LMDB's map), from /proc. */
  parts0: RssParts
  /** Settled RSS (gc first). */
  rss(): Promise<number>
  /** Anonymous and file-backed resident memory now (/proc VmRSS split). */
  parts(): RssParts
  /** RSS as the kernel counts it now (VmRSS), no gc: for sampling during a request. */
  rssNow(): number
  stop(): Promise<void>
}

export interface RssParts {
  anon: number
  file: number
}

/** A field of /proc/<pid>/status in bytes (NaN when unknown). */
function statusKb(pid: number | undefined, field: string): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Number(m[1]) * 1024
}

const rssParts = (pid: number | undefined): RssParts => ({ anon: statusKb(pid, 'RssAnon'), file: statusKb(pid, 'RssFile') + statusKb(pid, 'RssShmem') })

/** Starts a server process on a fresh data dir and waits until it listens. */
export async function startServer(env: Record<string, string> = {}): Promise<Server> {
  const dataDir = mkdtempSync(join(tmpdir(), 'llmscope-bench-srv-'))
  const proc: ChildProcess = spawn(process.execPath, ['--expose-gc', '--max-old-space-size=8192', self], {
    env: { ...process.env, LLMSCOPE_BENCH_SERVER_CHILD: '1', PORT: '0', LLMSCOPE_DATA_DIR: dataDir, LLMSCOPE_API_KEYS: OWNER_KEY, LLMSCOPE_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc']
  })
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  const next = <T>(type: string) =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server: no ${type} message in 300 s`)), 300_000)
      const onMessage = (m: { type: string }) => {
        if (m.type !== type) return
        clearTimeout(timer)
        proc.off('message', onMessage)
        resolve(m as T)
      }
      proc.on('message', onMessage)
      void exited.then(() => reject(new Error(`server exited (code ${proc.exitCode}) before ${type}`)))
    })
  const ready = await next<{ url: string; rss: number }>('listening')
  return {
    url: ready.url,
    pid: proc.pid,
    rss0: ready.rss,
    parts0: rssParts(proc.pid),
    async rss() {
      const r = next<{ rss: number }>('rss')
      proc.send({ type: 'rss' })
      return (await r).rss
    },
    rssNow() {
      return statusKb(proc.pid, 'VmRSS')
    },
    parts() {
      return rssParts(proc.pid)
    },
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))])
      if (proc.exitCode === null) proc.kill('SIGKILL')
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

// ---- HTTP ----

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 })
/** Closes the keep-alive sockets (at the end of a question, so the process can exit). */
export const closeAgent = () => agent.destroy()

/**
 * One request over the shared keep-alive agent, owner key, optional project header. A GET on a
 * reused socket that the server had closed meanwhile (its keep-alive timeout ran out while this
 * process was busy, e.g. blocked in a peer's synchronous load, so the close was not seen) is
 * sent again once on a new socket: Node's documented remedy for that race.
 */
export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE'

export function request(url: string, method: Method, project: string | null, body?: string, retried = false): Promise<{ status: number; body: string }> {
  const headers: Record<string, string> = { 'x-api-key': OWNER_KEY }
  if (project !== null) headers['x-llmscope-project'] = project
  if (body !== undefined) headers['content-type'] = 'application/json'
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }))
      res.on('error', reject)
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (method === 'GET' && !retried && req.reusedSocket && (err.code === 'ECONNRESET' || err.message === 'socket hang up')) resolve(request(url, method, project, body, true))
      else reject(err)
    })
    req.end(body)
  })
}

/** GET `path` in `project`, 200 or throws; `ms` is the HTTP exchange to the body's last byte (parsing it comes after). */
export async function timedGetJson(server: Server, path: string, project: string): Promise<{ json: Record<string, unknown>; ms: number }> {
  const t = performance.now()
  const r = await request(server.url + path, 'GET', project)
  const ms = performance.now() - t
  if (r.status !== 200) throw new Error(`GET ${path} (${project}) → ${r.status}: ${r.body.slice(0, 300)}`)
  return { json: JSON.parse(r.body) as Record<string, unknown>, ms }
}

/** GET `path` in `project`, 200 or throws. */
export const getJson = async (server: Server, path: string, project: string) => (await timedGetJson(server, path, project)).json

/** `method` on `path` in `project` (no body), 200 or throws. */
export async function json(server: Server, method: Method, path: string, project: string): Promise<Record<string, unknown>> {
  if (method === 'GET') return getJson(server, path, project)
  const r = await request(server.url + path, method, project)
  if (r.status !== 200) throw new Error(`${method} ${path} (${project}) → ${r.status}: ${r.body.slice(0, 300)}`)
  return JSON.parse(r.body) as Record<string, unknown>
}

export async function createProjects(server: Server): Promise<void> {
  for (const id of PROJECTS) {
    const r = await request(`${server.url}/projects`, 'POST', null, JSON.stringify({ id }))
    if (r.status !== 201 && r.status !== 409) throw new Error(`POST /projects {"id":"${id}"} → ${r.status}: ${r.body.slice(0, 200)}`)
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Posts one batch; 503/429 (busy) waits and resends. Returns the resends. */
export async function post(server: Server, project: string, body: string): Promise<number> {
  for (let resends = 0; ; resends++) {
    const r = await request(`${server.url}/events/batch`, 'POST', project, body)
    if (r.status === 202) return resends
    if (r.status !== 503 && r.status !== 429) throw new Error(`POST /events/batch (${project}) → ${r.status}: ${r.body.slice(0, 300)}`)
    await sleep(20)
  }
}

/** Sends the batches, IN_FLIGHT at a time (each as {@link post}). Returns the resends. */
export async function send(server: Server, batches: Array<{ project: string; body: string }>): Promise<number> {
  let next = 0
  let resends = 0
  const worker = async () => {
    while (next < batches.length) {
      const b = batches[next++]
      resends += await post(server, b.project, b.body)
    }
  }
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker))
  return resends
}

/** Waits until every project counts the events sent to it. */
export async function counted(server: Server, expected: readonly number[]): Promise<void> {
  const deadline = Date.now() + 300_000
  for (let p = 0; p < PROJECTS.length; p++) {
    for (;;) {
      const m = await getJson(server, '/analytics/metrics', PROJECTS[p])
      if (m.total_requests === expected[p]) break
      if (Number(m.total_requests) > expected[p]) throw new Error(`${PROJECTS[p]} counts ${String(m.total_requests)} events, ${expected[p]} were sent`)
      if (Date.now() > deadline) throw new Error(`${PROJECTS[p]}: ${String(m.total_requests)} of ${expected[p]} events counted after 300 s`)
      await sleep(2)
    }
  }
}

export function* take(gen: Iterator<DimEvent>, n: number): Generator<DimEvent> {
  for (let i = 0; i < n; i++) {
    const r = gen.next()
    if (r.done === true) return
    yield r.value
  }
}

/** Batches of one project each, as JSON bodies. */
export function bodies(events: readonly DimEvent[], dims: boolean): Array<{ project: string; body: string }> {
  const out: Array<{ project: string; body: string }> = []
  for (let p = 0; p < PROJECTS.length; p++) {
    const mine = events.filter((e) => e.project === p)
    for (let i = 0; i < mine.length; i += BATCH) out.push({ project: PROJECTS[p], body: JSON.stringify(mine.slice(i, i + BATCH).map((e) => toJson(e, dims))) })
  }
  return out
}

if (process.env.LLMSCOPE_BENCH_SERVER_CHILD === '1') await serverChild()

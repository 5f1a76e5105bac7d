/** Shared bench helpers: servers as separate processes, autocannon runs, machine info, tables. */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir, cpus, loadavg, totalmem } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execSync } from 'node:child_process'
import autocannon from 'autocannon'
import { goalMet } from './goals.js'

export { goalMet }

/** Deterministic pseudo-random (mulberry32): the same data for LLMScope and every engine it is compared with. */
export function rng(seed: number): () => number {
  return () => {
    seed |= 0
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export const BENCH_KEY = 'bench-admin-key-1'
const here = fileURLToPath(new URL('.', import.meta.url))
/** Compiled entry points (bench runs from dist-bench/). */
export const LLMSCOPE_ENTRY = join(here, '../src/main.js')
export const BARE_ENTRY = join(here, 'bare-server.js')

export interface Running {
  url: string
  proc: ChildProcess
  dataDir?: string
  stop(): Promise<void>
}

/** Starts a server process and waits for its address. */
export async function startProcess(entry: string, env: Record<string, string> = {}): Promise<Running> {
  const proc = spawn(process.execPath, [entry], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no address from ${entry}: ${out}`)), 30_000)
    const onData = (d: Buffer) => {
      out += d.toString()
      const m = /LISTENING (\S+)/.exec(out) ?? /"msg":"Server listening at (http:\/\/127\.0\.0\.1:\d+)"/.exec(out)
      if (m !== null) {
        clearTimeout(timer)
        proc.stdout!.off('data', onData)
        proc.stdout!.resume()
        resolve(m[1])
      }
    }
    proc.stdout!.on('data', onData)
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()))
    proc.on('exit', () => reject(new Error(`${entry} exited: ${out}`)))
  })
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()))
  return {
    url,
    proc,
    async stop() {
      proc.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))])
      if (proc.exitCode === null) proc.kill('SIGKILL')
    }
  }
}

/** LLMScope on a fresh temp data dir, ready. */
export async function startLLMScope(env: Record<string, string> = {}): Promise<Running> {
  const dataDir = mkdtempSync(join(tmpdir(), 'llmscope-bench-'))
  const r = await startProcess(LLMSCOPE_ENTRY, { PORT: '0', LLMSCOPE_DATA_DIR: dataDir, LLMSCOPE_API_KEYS: BENCH_KEY, LLMSCOPE_LOG_LEVEL: 'info', ...env })
  for (let i = 0; i < 600; i++) {
    if ((await fetch(`${r.url}/ready`)).status === 200) break
    await new Promise((res) => setTimeout(res, 50))
  }
  return {
    ...r,
    dataDir,
    async stop() {
      await r.stop()
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

export const startBare = () => startProcess(BARE_ENTRY)

export interface LoadResult {
  reqPerSec: number
  p50: number
  p99: number
  non2xx: number
  errors: number
}

/** One autocannon run (in this process: the servers are separate processes). */
export async function load(opts: { url: string; path: string; body: string; contentType?: string; connections: number; seconds: number }): Promise<LoadResult> {
  const r = await autocannon({
    url: opts.url + opts.path,
    method: 'POST',
    headers: { 'content-type': opts.contentType ?? 'application/json', 'x-api-key': BENCH_KEY },
    body: opts.body,
    connections: opts.connections,
    duration: opts.seconds,
    timeout: 10
  })
  return { reqPerSec: r.requests.mean, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors + r.timeouts }
}

/** CPU time (user + system) of a process so far, in ms (Linux /proc; 100 ticks a second); 0 when unknown. */
export function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) * 10
  } catch {
    return 0
  }
}

export function machine() {
  let commit = 'unknown'
  try {
    commit = execSync('git rev-parse --short HEAD', { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()
  } catch {}
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memGiB: Math.round(totalmem() / 1024 ** 3),
    node: process.version,
    date: new Date().toISOString(),
    commit,
    /** The 1-, 5- and 15-minute load averages when this was read. */
    load: loadavg().map((x) => Math.round(x * 100) / 100)
  }
}

/** The machine in one line, load average included: printed before every figure. */
export function machineLine(m = machine()): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, node ${m.node}, commit ${m.commit}, ${m.date}, load average ${m.load.join(' ')}`
}

/** The 1-minute load average now. */
export const load1 = () => Math.round(loadavg()[0] * 100) / 100

/** The q-quantile of xs as the nearest lower rank (xs is not changed). */
export function pct(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1)))]
}

export interface Row {
  bench: string
  metric: string
  value: number
  unit: string
  baseline?: number
  ratio?: number
  /** What the issue asks of this row, e.g. `≤ 2`, `≥ 10`, `ratio ≥ 0.9`. */
  goal?: string
  /** Whether the goal was met; left out, goalMet (bench/goals.ts) reads it from a plain goal. */
  met?: boolean
  note?: string
}

const fmt = (x: number | undefined) => (x === undefined ? '' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(2))

/** One Markdown table; `met` is `yes`, `NO`, or `?` for a goal no one judged. */
export function table(rows: Row[]): string {
  const head = ['bench', 'metric', 'value', 'unit', 'baseline', 'ratio', 'goal', 'met', 'note']
  const body = rows.map((r) => {
    const met = goalMet(r)
    const goal = r.goal ?? ''
    return [r.bench, r.metric, fmt(r.value), r.unit, fmt(r.baseline), r.ratio === undefined ? '' : r.ratio.toFixed(2), goal, goal === '' && r.met === undefined ? '' : met === undefined ? '?' : met ? 'yes' : 'NO', r.note ?? '']
  })
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)))
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |'
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n')
}

/**
 * Collects garbage until RSS stops falling (one gc() alone leaves garbage behind at millions of
 * events), then reads it; without --expose-gc, RSS as it is. Shared by the benches' servers.
 */
export async function settledRss(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc
  let last = Infinity
  for (let i = 0; gc !== undefined && i < 5; i++) {
    gc()
    await new Promise((r) => setImmediate(r))
    const rss = process.memoryUsage().rss
    if (rss >= last * 0.99) break
    last = rss
  }
  return process.memoryUsage().rss
}

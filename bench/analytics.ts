/**
 * Question: with millions of events over 50 models and 30 days loaded through the real ingest
 * code (engine.ingest: validation-free but durable, priced, aggregated — not HTTP), how fast
 * are /analytics/metrics, /costs and /timeseries for random ranges, and how much RAM does a
 * retained event cost? Baseline: the same events and queries in PostgreSQL (Debian's server on
 * a temp cluster over a Unix socket: one INSERT per event through a pool, SQL aggregates with
 * an index on time) at a size PostgreSQL loads within the bench's time budget; skipped with a
 * note when PostgreSQL is not installed.
 *
 * Runs in a child process so RSS is this workload's alone.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Row } from './lib.js'
import { rng, settledRss } from './lib.js'

const DAY = 86_400_000
const T0 = Date.parse('2026-01-01T00:00:00Z')
const MODELS = Array.from({ length: 50 }, (_, i) => (i % 5 === 0 ? 'gpt-4o' : i % 5 === 1 ? 'gpt-4o-mini' : i % 5 === 2 ? 'claude-3-5-sonnet-20241022' : i % 5 === 3 ? 'gpt-4' : 'private-model') + `-v${i}`)


interface Ev { ts: number; model: string; provider: string; prompt: number; completion: number; latency: number; error: boolean }
function* events(n: number, seed = 1): Generator<Ev> {
  const r = rng(seed)
  for (let i = 0; i < n; i++) {
    const m = Math.floor(r() * MODELS.length)
    yield { ts: T0 + Math.floor(r() * 30 * DAY), model: MODELS[m], provider: m % 5 === 2 ? 'anthropic' : 'openai', prompt: Math.floor(r() * 4000), completion: Math.floor(r() * 1000), latency: Math.round(r() * 3000 * 1000) / 1000, error: r() < 0.02 }
  }
}

function ranges(n: number, seed = 7) {
  const r = rng(seed)
  return Array.from({ length: n }, () => {
    const a = T0 + Math.floor(r() * 30 * DAY)
    const b = T0 + Math.floor(r() * 30 * DAY)
    return { start: Math.min(a, b), end: Math.max(a, b) + 1, model: r() < 0.5 ? MODELS[Math.floor(r() * MODELS.length)] : undefined }
  })
}

const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1)))]
}

/** The child: load N events through the engine, time queries, report JSON on stdout. */
async function child(n: number, queries: number): Promise<void> {
  const { loadConfig } = await import('../src/config.js')
  const { Engine } = await import('../src/engine.js')
  const { metrics, costs, timeseries } = await import('../src/queries.js')
  const { silentLog } = await import('../src/log.js')
  const dir = mkdtempSync(join(tmpdir(), 'llmscope-analytics-'))
  const config = loadConfig({ LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: 'bench-key-123', LLMSCOPE_HIGH_WATER_EVENTS: '2000000' })
  const engine = new Engine({ config, logger: silentLog, clock: { now: () => Date.now() } })
  await engine.recover()
  await settledRss()
  const rss0 = process.memoryUsage().rss
  const t0 = performance.now()
  const BATCH = 10_000
  let batch = []
  const inflight: Promise<unknown>[] = []
  for (const e of events(n)) {
    batch.push({ ts: e.ts, recv: e.ts, model: e.model, provider: e.provider, prompt: e.prompt, completion: e.completion, total: e.prompt + e.completion, cached: 0, reasoning: 0, latency: e.latency, ttft: null, error: e.error, cost: null, meta: null, project: 'default', user: null, session: null, tags: null })
    if (batch.length === BATCH) {
      inflight.push(engine.ingest(batch))
      batch = []
      // A few appends in flight at once, as concurrent requests would be.
      if (inflight.length >= 4) await inflight.shift()
      while (engine.topology.inFlightEvents > 200_000) await new Promise((r) => setTimeout(r, 5))
    }
  }
  if (batch.length > 0) inflight.push(engine.ingest(batch))
  await Promise.all(inflight)
  await engine.sync()
  const loadSeconds = (performance.now() - t0) / 1000
  await settledRss()
  const rss1 = process.memoryUsage().rss
  const times: Record<string, number[]> = { metrics: [], costs: [], timeseries: [] }
  for (const q of ranges(queries)) {
    const models = q.model === undefined ? undefined : new Set([q.model])
    let t = performance.now()
    metrics(engine.topology, { start: q.start, end: q.end, models })
    times.metrics.push(performance.now() - t)
    t = performance.now()
    costs(engine.topology, { start: q.start, end: q.end })
    times.costs.push(performance.now() - t)
    t = performance.now()
    timeseries(engine.topology, { start: q.start, end: q.end, models }, 3_600_000)
    times.timeseries.push(performance.now() - t)
  }
  const total = metrics(engine.topology, { start: -Infinity, end: Infinity }).totals.requests
  await engine.close()
  rmSync(dir, { recursive: true, force: true })
  const out = { n, total, loadSeconds, bytesPerEvent: (rss1 - rss0) / n, rssMiB: rss1 / 2 ** 20, q: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, { p50: pct(v, 0.5), p99: pct(v, 0.99) }])) }
  process.stdout.write(`RESULT ${JSON.stringify(out)}\n`)
}

/** PostgreSQL on a temp cluster: same events, one INSERT per event via a pool, same queries. */
async function postgres(n: number, queries: number): Promise<null | { loadSeconds: number; q: Record<string, { p50: number; p99: number }> }> {
  const bin = '/usr/lib/postgresql/15/bin'
  const { existsSync, chmodSync, mkdirSync } = await import('node:fs')
  if (!existsSync(`${bin}/initdb`)) return null
  const { execFileSync } = await import('node:child_process')
  const base = mkdtempSync(join(tmpdir(), 'llmscope-pg-'))
  chmodSync(base, 0o777)
  const data = join(base, 'data')
  const sock = join(base, 'sock')
  mkdirSync(sock, { mode: 0o777 })
  chmodSync(sock, 0o777)
  // stdio ignored: the server pg_ctl starts would otherwise hold our pipe open forever.
  const asPg = (cmd: string, args: string[]) => (process.getuid?.() === 0 ? execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdio: 'ignore' }) : execFileSync(cmd, args, { stdio: 'ignore' }))
  asPg(`${bin}/initdb`, ['-D', data, '-A', 'trust', '-U', 'postgres'])
  asPg(`${bin}/pg_ctl`, ['-D', data, '-l', join(base, 'pg.log'), '-o', `-k ${sock} -c listen_addresses='' -c fsync=on`, '-w', 'start'])
  const pg = await import('pg')
  const pool = new pg.default.Pool({ host: sock, user: 'postgres', database: 'postgres', max: 8 })
  // Idle clients see the server stop at the end: not an error of the measurement.
  pool.on('error', () => {})
  try {
    await pool.query('CREATE TABLE events (ts timestamptz NOT NULL, model text NOT NULL, provider text NOT NULL, prompt_tokens int, completion_tokens int, latency_ms double precision, cost double precision, error boolean)')
    await pool.query('CREATE INDEX events_ts ON events (ts)')
    const t0 = performance.now()
    const pending: Promise<unknown>[] = []
    for (const e of events(n)) {
      pending.push(pool.query('INSERT INTO events VALUES ($1,$2,$3,$4,$5,$6,$7,$8)', [new Date(e.ts), e.model, e.provider, e.prompt, e.completion, e.latency, (e.prompt * 2.5 + e.completion * 10) / 1e6, e.error]))
      if (pending.length >= 64) await Promise.all(pending.splice(0))
    }
    await Promise.all(pending)
    const loadSeconds = (performance.now() - t0) / 1000
    await pool.query('ANALYZE events')
    const times: Record<string, number[]> = { metrics: [], costs: [], timeseries: [] }
    for (const q of ranges(queries)) {
      const s = new Date(q.start)
      const e = new Date(q.end)
      let t = performance.now()
      await pool.query(
        `SELECT count(*), sum(prompt_tokens + completion_tokens), sum(cost), avg(latency_ms), percentile_cont(ARRAY[0.5,0.95,0.99]) WITHIN GROUP (ORDER BY latency_ms) FROM events WHERE ts >= $1 AND ts < $2 ${q.model ? 'AND model = $3' : ''}`,
        q.model ? [s, e, q.model] : [s, e]
      )
      times.metrics.push(performance.now() - t)
      t = performance.now()
      await pool.query('SELECT model, provider, count(*), sum(cost) AS c FROM events WHERE ts >= $1 AND ts < $2 GROUP BY model, provider ORDER BY c DESC', [s, e])
      times.costs.push(performance.now() - t)
      t = performance.now()
      await pool.query(`SELECT date_trunc('hour', ts) AS b, count(*), sum(cost), avg(latency_ms) FROM events WHERE ts >= $1 AND ts < $2 ${q.model ? 'AND model = $3' : ''} GROUP BY b ORDER BY b`, q.model ? [s, e, q.model] : [s, e])
      times.timeseries.push(performance.now() - t)
    }
    return { loadSeconds, q: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, { p50: pct(v, 0.5), p99: pct(v, 0.99) }])) }
  } finally {
    await pool.end()
    asPg(`${bin}/pg_ctl`, ['-D', data, '-m', 'fast', 'stop'])
    rmSync(base, { recursive: true, force: true })
  }
}

async function runChild(n: number, queries: number) {
  const self = fileURLToPath(import.meta.url)
  const proc = spawn(process.execPath, ['--expose-gc', '--max-old-space-size=8192', self], { env: { ...process.env, ANALYTICS_CHILD: String(n), ANALYTICS_QUERIES: String(queries) }, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  await new Promise((r) => proc.on('exit', r))
  const m = /RESULT (.*)/.exec(out)
  if (m === null) throw new Error(`analytics child failed: ${out}`)
  return JSON.parse(m[1]) as { n: number; total: number; loadSeconds: number; bytesPerEvent: number; rssMiB: number; q: Record<string, { p50: number; p99: number }> }
}

export async function run(): Promise<Row[]> {
  const big = Number(process.env.BENCH_ANALYTICS_EVENTS ?? 10_000_000)
  const small = Number(process.env.BENCH_PG_EVENTS ?? 100_000)
  const queries = 300
  const rows: Row[] = []
  const full = await runChild(big, queries)
  rows.push({ bench: 'analytics', metric: `load ${full.n.toLocaleString('en-US')} events (engine.ingest)`, value: full.n / full.loadSeconds, unit: 'ev/s', note: `${full.loadSeconds.toFixed(1)} s; counted ${full.total}` })
  rows.push({ bench: 'analytics', metric: 'RSS per retained event', value: full.bytesPerEvent, unit: 'B', goal: '≤ 64', note: `RSS ${full.rssMiB.toFixed(0)} MiB` })
  for (const k of ['metrics', 'costs', 'timeseries']) {
    rows.push({ bench: 'analytics', metric: `${k} p50 / p99 @ ${full.n.toLocaleString('en-US')}`, value: full.q[k].p50, unit: 'ms', goal: 'p99 ≤ 2', note: `p99 ${full.q[k].p99.toFixed(3)} ms` })
  }
  // BENCH_PG_EVENTS=0: only the big run (memory and query times), no PostgreSQL comparison.
  if (small === 0) return rows
  const smallRun = await runChild(small, queries)
  let pg: Awaited<ReturnType<typeof postgres>> = null
  let pgNote = ''
  try {
    pg = await postgres(small, queries)
    if (pg === null) pgNote = 'PostgreSQL not installed: baseline skipped'
  } catch (err) {
    pgNote = `PostgreSQL baseline failed: ${(err as Error).message.split('\n')[0]}`
  }
  for (const k of ['metrics', 'costs', 'timeseries']) {
    const b = pg?.q[k]
    rows.push({
      bench: 'analytics',
      metric: `${k} p50 @ ${small.toLocaleString('en-US')} vs PostgreSQL`,
      value: smallRun.q[k].p50,
      unit: 'ms',
      baseline: b?.p50,
      ratio: b === undefined ? undefined : b.p50 / smallRun.q[k].p50,
      goal: '≥ 100× faster',
      note: b === undefined ? pgNote : `p99 ${smallRun.q[k].p99.toFixed(3)} vs ${b.p99.toFixed(1)} ms (ratio = times faster)`
    })
  }
  if (pg !== null) rows.push({ bench: 'analytics', metric: `PostgreSQL load ${small.toLocaleString('en-US')} (INSERT per event, pool of 8)`, value: small / pg.loadSeconds, unit: 'ev/s', baseline: small / smallRun.loadSeconds, note: 'baseline column = LLMScope' })
  return rows
}

if (process.env.ANALYTICS_CHILD !== undefined) {
  await child(Number(process.env.ANALYTICS_CHILD), Number(process.env.ANALYTICS_QUERIES ?? 300))
  process.exit(0)
}

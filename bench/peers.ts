/**
 * ClickHouse in process (npm `chdb`) and DuckDB (npm `@duckdb/node-api`) as the bench's peers.
 *
 * Both are large (chdb ~550 MB, DuckDB ~70 MB), so they are never dependencies of the project:
 * the first bench that needs one installs it, at an exact version, into its own folder under
 * `~/.cache/llmscope-bench/peers` (`LLMSCOPE_BENCH_PEERS_DIR` moves it), and imports it from
 * there by absolute path. A peer that cannot be installed or loaded is reported as skipped,
 * with why; `LLMSCOPE_BENCH_PEERS=0` skips both without trying.
 *
 * Each engine gets the same rows, loaded the way it likes best:
 * - ClickHouse: a MergeTree `ORDER BY (project, ts)` — a time range in one project is a
 *   contiguous run of granules, which is what every breakdown reads — plus a projection
 *   `ORDER BY (project, user_id, ts)` that ClickHouse picks by itself for a `user_id =` filter,
 *   so a user's rows in a range are contiguous too. Rows go in as TSV through chdb's raw insert
 *   (parsed by the engine, not JS), then `OPTIMIZE … FINAL` merges the parts.
 * - DuckDB: the appender into a staging table, then one `CREATE TABLE … AS … ORDER BY project,
 *   ts` so the row groups' zone maps skip everything outside a project's time range. Tags go
 *   in as one string and become a `VARCHAR[]` in that statement: the appender's `appendList`
 *   costs ~15 µs a row (a DuckDB value object per list), 30 times a plain string's.
 * Timestamps are Int64 epoch ms in both (what TIMESTAMP/DateTime64 store anyway).
 */
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { MODELS, PROJECTS, type DimEvent, type DimQuery } from './dim-data.js'

export const PEER_VERSIONS = { chdb: '3.4.0', '@duckdb/node-api': '1.5.6-r.1' } as const
type PeerPackage = keyof typeof PEER_VERSIONS

const peersDir = () => process.env.LLMSCOPE_BENCH_PEERS_DIR ?? join(homedir(), '.cache', 'llmscope-bench', 'peers')

/** One group of a breakdown, or a whole range: what every engine answers, in the same units. */
export interface Totals {
  requests: number
  tokens: number
  costNanos: number
  /** The 95th percentile latency; which definition depends on the query (see `exact`). */
  p95: number | null
}
export interface Answer {
  /** Breakdowns: the top groups by cost (ties by user id), in order; metrics: empty. */
  groups: Array<Totals & { value: string }>
  total: Totals
  /** The engine's time for it in ms: the query until its result is in hand, before that is decoded into JS values. */
  ms?: number
}

/** A peer engine, loaded. `exact` computes p95 as the nearest rank (⌈0.95·n⌉-th smallest), as LLMScope defines it, instead of the engine's own quantile. */
export interface Peer {
  name: string
  /** Which SQL the engine speaks. */
  dialect: 'clickhouse' | 'duckdb'
  /** Seconds the load took (rows in, plus the engine's own sort or merge). */
  loadSeconds: number
  query(q: DimQuery, limit: number, exact: boolean): Promise<Answer>
  /** Any SELECT on the `events` table, its rows as arrays of JS values (numbers may come as strings or bigints: read them with Number), and `ms` as in {@link Answer}. */
  rows(sql: string): Promise<{ rows: unknown[][]; ms: number }>
  close(): void
}

/** Installs `pkg` at its pinned version into its own folder (once) and returns a require for it. */
async function install(pkg: PeerPackage): Promise<NodeRequire> {
  const dir = join(peersDir(), pkg.replace('/', '+'))
  const version = PEER_VERSIONS[pkg]
  const installed = join(dir, 'node_modules', pkg, 'package.json')
  const have = existsSync(installed) ? (JSON.parse(readFileSync(installed, 'utf8')) as { version?: string }).version : undefined
  if (have !== version) {
    mkdirSync(dir, { recursive: true })
    // Its own package.json, so a later install in the folder never prunes it as extraneous.
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ private: true, description: 'LLMScope bench peer (installed on demand)', dependencies: { [pkg]: version } }, null, 2))
    console.log(`  installing ${pkg}@${version} into ${dir} (once)…`)
    await new Promise<void>((resolve, reject) => {
      execFile('npm', ['install', '--prefix', dir, '--no-audit', '--no-fund', '--no-package-lock'], { timeout: 15 * 60_000, maxBuffer: 16 * 2 ** 20 }, (err, _out, stderr) => {
        if (err === null) resolve()
        else reject(new Error(`npm install ${pkg}@${version} failed: ${(stderr || err.message).trim().split('\n').slice(-3).join(' | ')}`))
      })
    })
  }
  return createRequire(join(dir, 'package.json'))
}

const num = (x: unknown) => (x === null || x === undefined ? null : Number(x))
const totals = (r: readonly unknown[], from: number): Totals => ({ requests: Number(r[from]), tokens: Number(r[from + 1] ?? 0), costNanos: Number(r[from + 2] ?? 0), p95: num(r[from + 3]) })
export const sqlString = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`

/** The WHERE clause of a query, shared by both dialects. */
function where(q: DimQuery): string {
  let w = `project = ${sqlString(PROJECTS[q.project])} AND ts >= ${q.start} AND ts < ${q.end}`
  if (q.user !== undefined) w += ` AND user_id = ${sqlString(q.user)}`
  return w
}

// ---- ClickHouse (chdb) ----

interface ChdbSession {
  query(sql: string, format?: string): string
  insert(p: { table: string; values: Buffer; format: 'TSV' }): Promise<unknown>
  close(): void
}

/**
 * One TSV row (ClickHouse's text format; our strings have no tab, newline, quote or backslash).
 * Array.join, not a template literal: 16 interpolations leave a rope of cons strings per row,
 * twice the CPU once the collector is counted.
 */
function tsv(e: DimEvent): string {
  const m = MODELS[e.model]
  return [PROJECTS[e.project], e.ts, m.name, m.provider, e.prompt, e.completion, e.prompt + e.completion, e.latency, e.error ? 1 : 0, e.costNanos, e.user, e.session, `['${e.tags[0]}','${e.tags[1]}']`, e.feature, e.env, e.version].join('\t')
}

/** Rows per insert: each insert is a part, and fewer parts leave less to merge. */
const CH_INSERT_ROWS = 1_000_000

export async function clickhouse(rows: () => Iterable<DimEvent>): Promise<Peer> {
  const require = await install('chdb')
  const { Session } = require('chdb') as { Session: new (path?: string) => ChdbSession }
  const dir = mkdtempSync(join(tmpdir(), 'llmscope-bench-chdb-'))
  const s = new Session(dir)
  try {
    s.query(`CREATE TABLE events (
      project LowCardinality(String), ts Int64, model LowCardinality(String), provider LowCardinality(String),
      prompt_tokens UInt32, completion_tokens UInt32, total_tokens UInt32, latency_ms Float64, error UInt8, cost_nanos Int64,
      user_id String, session_id String, tags Array(LowCardinality(String)), feature LowCardinality(String), env LowCardinality(String), prompt_version UInt8,
      PROJECTION by_user (SELECT * ORDER BY project, user_id, ts)
    ) ENGINE = MergeTree ORDER BY (project, ts)`)
    const t0 = performance.now()
    let chunk: string[] = []
    for (const e of rows()) {
      chunk.push(tsv(e))
      if (chunk.length === CH_INSERT_ROWS) {
        await s.insert({ table: 'events', values: Buffer.from(chunk.join('\n') + '\n'), format: 'TSV' })
        chunk = []
      }
    }
    if (chunk.length > 0) await s.insert({ table: 'events', values: Buffer.from(chunk.join('\n') + '\n'), format: 'TSV' })
    s.query('OPTIMIZE TABLE events FINAL')
    const loadSeconds = (performance.now() - t0) / 1000
    const agg = (p95: string) => `count(), sum(total_tokens), sum(cost_nanos), ${p95}`
    const timed = <T>(sql: string) => {
      const t = performance.now()
      const text = s.query(sql, 'JSONCompact')
      const ms = performance.now() - t
      return { r: JSON.parse(text) as T, ms }
    }
    return {
      name: 'ClickHouse',
      dialect: 'clickhouse',
      loadSeconds,
      async rows(sql) {
        const { r, ms } = timed<{ data: unknown[][] }>(sql)
        return { rows: r.data, ms }
      },
      async query(q, limit, exact) {
        const p95 = exact ? 'arrayElement(arraySort(groupArray(latency_ms)), intDiv(95 * count() + 99, 100))' : 'quantileExact(0.95)(latency_ms)'
        if (q.user !== undefined) {
          // Metrics: the same three percentiles LLMScope answers, in one pass.
          const sql = `SELECT ${exact ? agg(p95) : `${agg('quantilesExact(0.5, 0.95, 0.99)(latency_ms)[2]')}, avg(latency_ms), avg(error)`} FROM events WHERE ${where(q)}`
          const { r, ms } = timed<{ data: unknown[][] }>(sql)
          return { groups: [], total: totals(r.data[0], 0), ms }
        }
        // Breakdown: top groups by cost and, WITH TOTALS, the whole range in the same pass.
        const sql = `SELECT user_id, ${agg(p95)}, sum(prompt_tokens), sum(completion_tokens), avg(latency_ms), avg(error) AS er, sum(cost_nanos) AS cost
          FROM events WHERE ${where(q)} GROUP BY user_id WITH TOTALS ORDER BY cost DESC, user_id ASC LIMIT ${limit}`
        const { r, ms } = timed<{ data: unknown[][]; totals?: unknown[] }>(sql)
        return { groups: r.data.map((row) => ({ value: String(row[0]), ...totals(row, 1) })), total: r.totals === undefined ? { requests: 0, tokens: 0, costNanos: 0, p95: null } : totals(r.totals, 1), ms }
      },
      close() {
        s.close()
        rmSync(dir, { recursive: true, force: true })
      }
    }
  } catch (err) {
    s.close()
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
}

// ---- DuckDB ----

interface DuckReader {
  getRowsJS(): unknown[][]
}
interface DuckConnection {
  run(sql: string): Promise<unknown>
  runAndReadAll(sql: string): Promise<DuckReader>
  createAppender(table: string): Promise<DuckAppender>
  closeSync(): void
}
interface DuckAppender {
  appendVarchar(v: string): void
  appendBigInt(v: bigint): void
  appendInteger(v: number): void
  appendTinyInt(v: number): void
  appendDouble(v: number): void
  appendBoolean(v: boolean): void
  endRow(): void
  flushSync(): void
  closeSync(): void
}
interface DuckModule {
  DuckDBInstance: { create(path?: string): Promise<{ connect(): Promise<DuckConnection>; closeSync(): void }> }
}

export async function duckdb(rows: () => Iterable<DimEvent>): Promise<Peer> {
  const require = await install('@duckdb/node-api')
  const duck = require('@duckdb/node-api') as DuckModule
  const instance = await duck.DuckDBInstance.create(':memory:')
  const c = await instance.connect()
  try {
    await c.run(`CREATE TABLE staging (
      project VARCHAR, ts BIGINT, model VARCHAR, provider VARCHAR, prompt_tokens INTEGER, completion_tokens INTEGER, total_tokens INTEGER,
      latency_ms DOUBLE, error BOOLEAN, cost_nanos BIGINT, user_id VARCHAR, session_id VARCHAR, tags VARCHAR, feature VARCHAR, env VARCHAR, prompt_version TINYINT)`)
    const t0 = performance.now()
    const a = await c.createAppender('staging')
    for (const e of rows()) {
      const m = MODELS[e.model]
      a.appendVarchar(PROJECTS[e.project])
      a.appendBigInt(BigInt(e.ts))
      a.appendVarchar(m.name)
      a.appendVarchar(m.provider)
      a.appendInteger(e.prompt)
      a.appendInteger(e.completion)
      a.appendInteger(e.prompt + e.completion)
      a.appendDouble(e.latency)
      a.appendBoolean(e.error)
      a.appendBigInt(BigInt(e.costNanos))
      a.appendVarchar(e.user)
      a.appendVarchar(e.session)
      a.appendVarchar(`${e.tags[0]},${e.tags[1]}`)
      a.appendVarchar(e.feature)
      a.appendVarchar(e.env)
      a.appendTinyInt(e.version)
      a.endRow()
    }
    a.flushSync()
    a.closeSync()
    await c.run("CREATE TABLE events AS SELECT * REPLACE (string_split(tags, ',') AS tags) FROM staging ORDER BY project, ts")
    await c.run('DROP TABLE staging')
    await c.run('CHECKPOINT')
    const loadSeconds = (performance.now() - t0) / 1000
    const timed = async (sql: string) => {
      const t = performance.now()
      const reader = await c.runAndReadAll(sql)
      const ms = performance.now() - t
      return { r: reader.getRowsJS(), ms }
    }
    return {
      name: 'DuckDB',
      dialect: 'duckdb',
      loadSeconds,
      async rows(sql) {
        const { r, ms } = await timed(sql)
        return { rows: r, ms }
      },
      async query(q, limit, exact) {
        const p95 = exact ? 'list_sort(list(latency_ms))[(95 * count(*) + 99) // 100]' : 'quantile_disc(latency_ms, 0.95)'
        const agg = `count(*), sum(total_tokens), sum(cost_nanos), ${p95}`
        if (q.user !== undefined) {
          const sql = `SELECT ${exact ? agg : `count(*), sum(total_tokens), sum(cost_nanos), quantile_disc(latency_ms, [0.5, 0.95, 0.99])[2], avg(latency_ms), avg(error::INTEGER)`} FROM events WHERE ${where(q)}`
          const { r, ms } = await timed(sql)
          return { groups: [], total: totals(r[0], 0), ms }
        }
        // Breakdown: top groups by cost and the whole range in one pass (GROUPING SETS).
        const sql = `SELECT user_id, ${agg}, sum(prompt_tokens), sum(completion_tokens), avg(latency_ms), avg(error::INTEGER), grouping(user_id) AS g, sum(cost_nanos) AS cost
          FROM events WHERE ${where(q)} GROUP BY GROUPING SETS ((user_id), ()) ORDER BY g DESC, cost DESC, user_id ASC LIMIT ${limit + 1}`
        const { r, ms } = await timed(sql)
        const total = r.length > 0 && Number(r[0][9]) === 1 ? totals(r[0], 1) : { requests: 0, tokens: 0, costNanos: 0, p95: null }
        const groups = r.filter((row) => Number(row[9]) === 0).map((row) => ({ value: String(row[0]), ...totals(row, 1) }))
        return { groups, total, ms }
      },
      close() {
        c.closeSync()
        instance.closeSync()
      }
    }
  } catch (err) {
    c.closeSync()
    instance.closeSync()
    throw err
  }
}

/**
 * Question (issue 15): at 10M events over 30 days, 50 models, 3 projects, 100,000 users, tags
 * and metadata (bench/dim-data.ts), how fast does LLMScope answer its analytics over HTTP — at
 * the median and at the tail — next to ClickHouse (chdb) and DuckDB loaded with the same rows
 * in this process (bench/peers.ts, installed on demand), and do all three give the same answers?
 *
 * - Load: one LLMScope server (its own process, bench/server.ts) is sent the events over HTTP,
 *   batches of 1000 of one project each, 4 in flight, until `/analytics/metrics` counts them
 *   all. Its settled RSS before and after gives the bytes per event. Then DuckDB (appender,
 *   sorted by project, ts) and ClickHouse (MergeTree ordered by project, ts; a projection by
 *   user) load the same rows; a peer that cannot be installed or loaded is a row saying why.
 * - Queries, each kind in a random project over a random range at ms precision (two uniform
 *   points of the 30 days): metrics without filters, with `model=` (1 of 50), `user_id=`
 *   (uniform over the project's users: most are light), `tag=` (1 of 20); costs by model;
 *   timeseries by the hour; breakdown by user_id (top 20 by cost, and the range's total); a
 *   search page (`GET /events?model=…`, the newest 50). One query at a time; the kinds
 *   interleaved and every query run by every engine in turn, the first engine rotating, so
 *   the machine's drift hits all alike. Ours over HTTP (keep-alive), theirs in process. A time
 *   is the engine's: ours the HTTP exchange to the last byte of the body, theirs the query until
 *   its result is in hand (ClickHouse's JSON text, DuckDB's materialised chunks); turning either
 *   into JS values for the check comes after the clock stops.
 * - Answers: the first queries of each kind are a warm-up where the peers compute latency
 *   percentiles as the nearest rank (⌈q·n⌉-th smallest, LLMScope's definition) and ours must
 *   be within its sketch's 1%. Every timed answer is compared too (bench/agree.ts): requests,
 *   tokens, errors exactly, cost to the nano-dollar, a search page's events (ties at its last
 *   millisecond aside), with each engine's own exact quantile in the timing.
 * - Goals (issue 15): metrics, costs, timeseries p50 ≤ 0.5 ms and p99 ≤ 2 ms; breakdown by
 *   user p99 ≤ 10 ms; a search page p99 ≤ 10 ms (issue 13); at p99 ≥ 10× faster than the
 *   faster peer on every kind.
 *
 * Sizes: `LLMSCOPE_BENCH_ANALYTICS_EVENTS` (else `LLMSCOPE_BENCH_EVENTS`, else 10,000,000),
 * `LLMSCOPE_BENCH_ANALYTICS_QUERIES` timed queries per kind (default 200),
 * `LLMSCOPE_BENCH_ANALYTICS_BUDGET_S` seconds per kind, all engines together, past which that
 * kind stops early (default 60), `LLMSCOPE_BENCH_ANALYTICS_TOTAL_S` the whole question's
 * budget (default 1500): when the loads leave less than the kinds' budgets need, each kind's
 * budget shrinks to its share of what is left. `LLMSCOPE_BENCH_PEERS=0` leaves the peers out;
 * `LLMSCOPE_BENCH_ANALYTICS_KINDS=tag,breakdown` times only the kinds whose names contain one of
 * the words (the same queries as a whole run: the others are drawn and skipped).
 * At 10M on a quiet 2-core machine the loads take about 8 minutes (LLMScope over HTTP ~4,
 * ClickHouse ~3, DuckDB ~1.5), the queries at most 8 × 60 s. Alone:
 * `npm run bench -- analytics`, or `node dist-bench/bench/analytics.js` after
 * `tsc -p tsconfig.bench.json`.
 */
import { loadavg } from 'node:os'
import { pathToFileURL } from 'node:url'
import { DAY, DAYS, MODELS, PROJECTS, T0, TAGS, anyUser, dimEvents } from './dim-data.js'
import { clickhouse, duckdb, PEER_VERSIONS, sqlString, type Peer } from './peers.js'
import { Verdict, type Answer, type Figures } from './agree.js'
import { load1, machineLine, pct, rng, table, type Row } from './lib.js'
import { BATCH, IN_FLIGHT, bodies, closeAgent, counted, createProjects, request, send, startServer, take, timedGetJson, type Server } from './server.js'

export const KINDS = ['metrics', 'metrics ?model=', 'metrics ?user_id=', 'metrics ?tag=', 'costs', 'timeseries (1h buckets)', 'breakdown by user_id', 'search page ?model='] as const
export type Kind = (typeof KINDS)[number]

/** The goals per kind, in ms. */
const GOALS: Record<Kind, { p50?: number; p99: number }> = {
  metrics: { p50: 0.5, p99: 2 },
  'metrics ?model=': { p50: 0.5, p99: 2 },
  'metrics ?user_id=': { p50: 0.5, p99: 2 },
  'metrics ?tag=': { p50: 0.5, p99: 2 },
  costs: { p50: 0.5, p99: 2 },
  'timeseries (1h buckets)': { p50: 0.5, p99: 2 },
  'breakdown by user_id': { p99: 10 },
  'search page ?model=': { p99: 10 }
}
/** At p99, ours must be this many times faster than the faster peer. */
const PEER_FACTOR = 10
const LIMIT = 20
const PAGE = 50
const HOUR = 3_600_000
const CHUNK = 100_000
/** Warm-up queries per kind, where percentiles are checked against the nearest rank. */
const CHECKED = 3

export interface Query {
  kind: Kind
  project: number
  start: number
  end: number
  model?: string
  user?: string
  tag?: string
}

/** `perKind` queries of every kind, interleaved (one of each kind in turn), the same for every engine. */
export function analyticsQueries(perKind: number, seed = 31): Query[] {
  const r = rng(seed)
  const out: Query[] = []
  for (let i = 0; i < perKind; i++) {
    for (const kind of KINDS) {
      const project = Math.floor(r() * PROJECTS.length)
      const a = T0 + Math.floor(r() * DAYS * DAY)
      const b = T0 + Math.floor(r() * DAYS * DAY)
      const q: Query = { kind, project, start: Math.min(a, b), end: Math.max(a, b) + 1 }
      if (kind === 'metrics ?model=' || kind === 'search page ?model=') q.model = MODELS[Math.floor(r() * MODELS.length)].name
      if (kind === 'metrics ?user_id=') q.user = anyUser(project, r())
      if (kind === 'metrics ?tag=') q.tag = TAGS[Math.floor(r() * TAGS.length)]
      out.push(q)
    }
  }
  return out
}

// ---- ours, over HTTP ----

const nanos = (dollars: unknown) => Math.round(Number(dollars) * 1e9)
const ms = (x: unknown) => (x === null || x === undefined ? null : Number(x))

function queryString(q: Query): string {
  let s = `start_time=${q.start}&end_time=${q.end}`
  if (q.model !== undefined) s += `&model=${encodeURIComponent(q.model)}`
  if (q.user !== undefined) s += `&user_id=${encodeURIComponent(q.user)}`
  if (q.tag !== undefined) s += `&tag=${encodeURIComponent(q.tag)}`
  return s
}

type Json = Record<string, unknown>

/** An answer and the engine's time for it in ms (ours: the HTTP exchange to the last byte; theirs: the query until its result is in hand), decoding left out. */
export interface Timed {
  answer: Answer
  ms: number
}

async function ours(server: Server, q: Query): Promise<Timed> {
  const project = PROJECTS[q.project]
  let ms = 0
  const getJson = async (path: string) => {
    const r = await timedGetJson(server, path, project)
    ms = r.ms
    return r.json
  }
  const answer = await oursAnswer(getJson, q)
  return { answer, ms }
}

async function oursAnswer(getJson: (path: string) => Promise<Json>, q: Query): Promise<Answer> {
  const qs = queryString(q)
  switch (q.kind) {
    case 'metrics':
    case 'metrics ?model=':
    case 'metrics ?user_id=':
    case 'metrics ?tag=': {
      const m = await getJson(`/analytics/metrics?${qs}`)
      const total: Figures = { requests: Number(m.total_requests), tokens: Number(m.total_tokens), costNanos: nanos(m.total_cost), errors: Number(m.error_count), pct: { p50: ms(m.p50_latency_ms), p95: ms(m.p95_latency_ms), p99: ms(m.p99_latency_ms) } }
      return { groups: [], ordered: false, total }
    }
    case 'costs': {
      const c = (await getJson(`/analytics/costs?${qs}`)) as { breakdown: Json[] }
      return { groups: c.breakdown.map((g) => ({ key: `${String(g.model)}|${String(g.provider)}`, requests: Number(g.requests), tokens: Number(g.total_tokens), costNanos: nanos(g.total_cost) })), ordered: false }
    }
    case 'timeseries (1h buckets)': {
      const t = (await getJson(`/analytics/timeseries?interval=1h&${qs}`)) as { buckets: Json[] }
      return { groups: t.buckets.map((b) => ({ key: String(Date.parse(String(b.timestamp))), requests: Number(b.requests), tokens: Number(b.total_tokens), costNanos: nanos(b.cost), errors: Number(b.errors), pct: { p95: ms(b.p95_latency_ms) } })), ordered: false }
    }
    case 'breakdown by user_id': {
      const b = (await getJson(`/analytics/breakdown?by=user_id&limit=${LIMIT}&sort=cost&${qs}`)) as { groups: Json[]; total: Json }
      const figures = (g: Json): Figures => ({ requests: Number(g.requests), tokens: Number(g.total_tokens), costNanos: nanos(g.total_cost), pct: { p95: ms(g.p95_latency_ms) } })
      return { groups: b.groups.map((g) => ({ key: String(g.value), ...figures(g) })), ordered: true, total: figures(b.total) }
    }
    case 'search page ?model=': {
      const p = (await getJson(`/events?limit=${PAGE}&${qs}`)) as { events: Json[] }
      return { groups: [], ordered: false, page: p.events.map((e) => ({ ts: Date.parse(String(e.timestamp)), fields: fields(e.model, e.user_id, e.latency_ms, e.total_tokens, nanos(e.cost)) })) }
    }
  }
}

const fields = (model: unknown, user: unknown, latency: unknown, tokens: unknown, costNanos: unknown) => `${String(model)}|${String(user)}|${Number(latency)}|${Number(tokens)}|${Number(costNanos)}`

// ---- theirs, in SQL ----

function where(d: Peer['dialect'], q: Query): string {
  let w = `project = ${sqlString(PROJECTS[q.project])} AND ts >= ${q.start} AND ts < ${q.end}`
  if (q.model !== undefined) w += ` AND model = ${sqlString(q.model)}`
  if (q.user !== undefined) w += ` AND user_id = ${sqlString(q.user)}`
  if (q.tag !== undefined) w += d === 'clickhouse' ? ` AND has(tags, ${sqlString(q.tag)})` : ` AND list_contains(tags, ${sqlString(q.tag)})`
  return w
}

/**
 * One aggregate query: columns `[g,] n, tokens, cost, errors[, percentiles as one array]`, and
 * the average latency (computed, as ours does, and not compared). `exact`: percentiles as the
 * nearest rank from the sorted latencies; else the engine's own exact quantile.
 */
function aggregate(d: Peer['dialect'], q: Query, group: string | null, ps: number[], exact: boolean, order: string): string {
  const ch = d === 'clickhouse'
  const g = group === null ? '' : `${group} AS g, `
  const gb = group === null ? '' : ' GROUP BY g'
  const sums = `${ch ? 'count()' : 'count(*)'} AS n, sum(total_tokens) AS tok, sum(cost_nanos) AS cost, sum(${ch ? 'error' : 'error::INTEGER'}) AS errs, avg(latency_ms) AS a`
  if (ps.length === 0) return `SELECT ${g}${sums} FROM events WHERE ${where(d, q)}${gb}${order}`
  if (!exact) {
    const pcts = ch ? `quantilesExact(${ps.join(', ')})(latency_ms)` : `quantile_disc(latency_ms, [${ps.join(', ')}])`
    return `SELECT ${g}${sums}, ${pcts} FROM events WHERE ${where(d, q)}${gb}${order}`
  }
  const sorted = ch ? 'arraySort(groupArray(latency_ms))' : 'list_sort(list(latency_ms))'
  const rank = (p: number) => (ch ? `s[intDiv(${Math.round(p * 100)} * n + 99, 100)]` : `s[(${Math.round(p * 100)} * n + 99) // 100]`)
  return `SELECT ${group === null ? '' : 'g, '}n, tok, cost, errs, a, [${ps.map(rank).join(', ')}] FROM (SELECT ${g}${sums}, ${sorted} AS s FROM events WHERE ${where(d, q)}${gb})${order}`
}

const figuresOf = (r: unknown[], from: number, ps: string[]): Figures => {
  const f: Figures = { requests: Number(r[from]), tokens: Number(r[from + 1] ?? 0), costNanos: Number(r[from + 2] ?? 0), errors: Number(r[from + 3] ?? 0) }
  if (ps.length > 0) {
    const xs = (r[from + 5] ?? []) as unknown[]
    f.pct = Object.fromEntries(ps.map((p, i) => [p, f.requests === 0 ? null : Number(xs[i])]))
  }
  return f
}

async function theirs(peer: Peer, q: Query, exact: boolean): Promise<Timed> {
  let ms = 0
  const rows = async (sql: string) => {
    const r = await peer.rows(sql)
    ms = r.ms
    return r.rows
  }
  const { ms: own, ...answer } = await theirsAnswer(peer, rows, q, exact)
  return { answer, ms: own ?? ms }
}

async function theirsAnswer(peer: Peer, rows: (sql: string) => Promise<unknown[][]>, q: Query, exact: boolean): Promise<Answer & { ms?: number }> {
  const d = peer.dialect
  switch (q.kind) {
    case 'metrics':
    case 'metrics ?model=':
    case 'metrics ?user_id=':
    case 'metrics ?tag=': {
      const r = await rows(aggregate(d, q, null, [0.5, 0.95, 0.99], exact, ''))
      return { groups: [], ordered: false, total: figuresOf(r[0], 0, ['p50', 'p95', 'p99']) }
    }
    case 'costs': {
      const r = await rows(aggregate(d, q, d === 'clickhouse' ? "concat(model, '|', provider)" : "model || '|' || provider", [], exact, ' ORDER BY cost DESC'))
      return { groups: r.map((row) => ({ key: String(row[0]), ...figuresOf(row, 1, []) })), ordered: false }
    }
    case 'timeseries (1h buckets)': {
      const r = await rows(aggregate(d, q, d === 'clickhouse' ? `intDiv(ts, ${HOUR})` : `ts // ${HOUR}`, [0.95], exact, ' ORDER BY g'))
      return { groups: r.map((row) => ({ key: String(Number(row[0]) * HOUR), ...figuresOf(row, 1, ['p95']) })), ordered: false }
    }
    case 'breakdown by user_id': {
      // Top groups and the range's total in one pass (bench/peers.ts, as the dimensions question asks it).
      const a = await peer.query({ kind: 'breakdown 1 hour', project: q.project, start: q.start, end: q.end }, LIMIT, exact)
      const f = (t: { requests: number; tokens: number; costNanos: number; p95: number | null }): Figures => ({ requests: t.requests, tokens: t.tokens, costNanos: t.costNanos, pct: { p95: t.p95 } })
      return { groups: a.groups.map((g) => ({ key: g.value, ...f(g) })), ordered: true, total: f(a.total), ms: a.ms }
    }
    case 'search page ?model=': {
      const r = await rows(`SELECT ts, model, user_id, latency_ms, total_tokens, cost_nanos FROM events WHERE ${where(d, q)} ORDER BY ts DESC LIMIT ${PAGE}`)
      return { groups: [], ordered: false, page: r.map((row) => ({ ts: Number(row[0]), fields: fields(row[1], row[2], row[3], row[4], row[5]) })) }
    }
  }
}

// ---- the run ----

interface Engine {
  name: string
  answer(q: Query, exact: boolean): Promise<Timed>
}

const where1 = (q: Query) => `${PROJECTS[q.project]} [${q.start}, ${q.end})${q.model ?? ''}${q.user ?? ''}${q.tag ?? ''}`
const progress = (what: string) => console.error(`  analytics ${new Date().toISOString().slice(11, 19)} ${what} (load ${loadavg()[0].toFixed(2)})`)

/** The kinds `LLMSCOPE_BENCH_ANALYTICS_KINDS` selects (all when unset). */
function selectedKinds(): Set<Kind> {
  const words = (process.env.LLMSCOPE_BENCH_ANALYTICS_KINDS ?? '').split(',').map((w) => w.trim()).filter((w) => w !== '')
  return new Set(KINDS.filter((k) => words.length === 0 || words.some((w) => k.includes(w))))
}

async function measure(engines: Engine[], perKind: number, budgetMs: number, kinds: Set<Kind>) {
  const times = new Map(engines.map((e) => [e.name, new Map(KINDS.map((k) => [k, [] as number[]]))]))
  const verdicts = new Map(engines.slice(1).map((e) => [e.name, new Map(KINDS.map((k) => [k, new Verdict()]))]))
  // Warm-up, with percentiles against the nearest rank.
  for (const q of analyticsQueries(CHECKED, 101)) {
    if (!kinds.has(q.kind)) continue
    const o = (await engines[0].answer(q, false)).answer
    for (const e of engines.slice(1)) verdicts.get(e.name)!.get(q.kind)!.judge(where1(q), o, (await e.answer(q, true)).answer, { percentiles: true })
  }
  progress('warm-up done')
  // A kind stops early past its time budget (all engines together), so a slow engine cannot
  // hold the whole bench; the rows say how many queries each percentile is over.
  const spent = new Map(KINDS.map((k) => [k, 0]))
  let i = 0
  for (const q of analyticsQueries(perKind)) {
    if (!kinds.has(q.kind) || spent.get(q.kind)! > budgetMs) continue
    const t0 = performance.now()
    const answers = new Map<string, Answer>()
    const first = i++ % engines.length
    for (let j = 0; j < engines.length; j++) {
      const e = engines[(first + j) % engines.length]
      const a = await e.answer(q, false)
      answers.set(e.name, a.answer)
      times.get(e.name)!.get(q.kind)!.push(a.ms)
    }
    const o = answers.get(engines[0].name)!
    for (const e of engines.slice(1)) verdicts.get(e.name)!.get(q.kind)!.judge(where1(q), o, answers.get(e.name)!, { percentiles: false })
    spent.set(q.kind, spent.get(q.kind)! + performance.now() - t0)
  }
  const stats = (name: string, kind: Kind) => {
    const xs = times.get(name)!.get(kind)!
    return { p50: pct(xs, 0.5), p99: pct(xs, 0.99), n: xs.length }
  }
  return { stats, verdicts }
}

/** Loads n events into the server over HTTP, chunk by chunk; seconds until all are counted. */
async function loadOurs(server: Server, n: number) {
  const gen = dimEvents(n)[Symbol.iterator]()
  const expected = [0, 0, 0]
  let resends = 0
  const t0 = performance.now()
  for (let chunk = 0; chunk * CHUNK < n; chunk++) {
    const events = [...take(gen, CHUNK)]
    for (const e of events) expected[e.project]++
    resends += await send(server, bodies(events, true))
    if (chunk % 10 === 9) progress(`LLMScope: ${((chunk + 1) * CHUNK).toLocaleString('en-US')} events sent`)
  }
  await counted(server, expected)
  return { seconds: (performance.now() - t0) / 1000, resends }
}

export async function run(): Promise<Row[]> {
  const n = Number(process.env.LLMSCOPE_BENCH_ANALYTICS_EVENTS ?? process.env.LLMSCOPE_BENCH_EVENTS ?? 10_000_000)
  const perKind = Number(process.env.LLMSCOPE_BENCH_ANALYTICS_QUERIES ?? 200)
  const budgetS = Number(process.env.LLMSCOPE_BENCH_ANALYTICS_BUDGET_S ?? 60)
  const totalS = Number(process.env.LLMSCOPE_BENCH_ANALYTICS_TOTAL_S ?? 1500)
  const started = performance.now()
  const size = n.toLocaleString('en-US')
  const rows: Row[] = []
  const row = (r: Omit<Row, 'bench'>) => rows.push({ bench: 'analytics', ...r })
  let server: Server | undefined
  const peers: Peer[] = []
  try {
    server = await startServer()
    await createProjects(server)
    const loaded = await loadOurs(server, n)
    row({ metric: `LLMScope: load ${size} events over HTTP with dimensions, until counted`, value: n / loaded.seconds, unit: 'ev/s', note: `${loaded.seconds.toFixed(1)} s; batches of ${BATCH}, ${IN_FLIGHT} in flight; busy resends ${loaded.resends}` })
    // The goal is per event at 10M; below that the fixed costs (dictionaries of 100,000 users, pages touched) weigh in.
    row({ metric: `LLMScope: RSS per event @ ${size}`, value: ((await server.rss()) - server.rss0) / n, unit: 'B', goal: n >= 10_000_000 ? '≤ 80' : undefined, note: `settled RSS after the load − at start, over the events${n >= 10_000_000 ? '' : '; the goal (≤ 80 B) is for 10M events'}` })
    progress('LLMScope loaded')

    const s = server
    const engines: Engine[] = [{ name: 'LLMScope', answer: (q) => ours(s, q) }]
    if (process.env.LLMSCOPE_BENCH_PEERS === '0') row({ metric: 'peers (ClickHouse, DuckDB)', value: 0, unit: '', note: 'skipped: LLMSCOPE_BENCH_PEERS=0' })
    else {
      for (const [label, start, how] of [
        [`DuckDB (@duckdb/node-api ${PEER_VERSIONS['@duckdb/node-api']})`, duckdb, 'appender, then CREATE TABLE … ORDER BY project, ts'],
        [`ClickHouse (chdb ${PEER_VERSIONS.chdb})`, clickhouse, 'MergeTree ORDER BY (project, ts) + projection by user, TSV insert, OPTIMIZE FINAL']
      ] as const) {
        try {
          const p = await start(() => dimEvents(n))
          peers.push(p)
          engines.push({ name: p.name, answer: (q, exact) => theirs(p, q, exact) })
          row({ metric: `${label}: load ${size} rows in process`, value: n / p.loadSeconds, unit: 'ev/s', note: `${p.loadSeconds.toFixed(1)} s, ${how}` })
          progress(`${p.name} loaded`)
        } catch (err) {
          row({ metric: label, value: 0, unit: '', note: `skipped: ${(err as Error).message.split('\n')[0].slice(0, 200)}` })
        }
      }
    }

    // What the loads left of the whole budget, less a minute for the warm-up and the end.
    const leftS = totalS - (performance.now() - started) / 1000 - 60
    const kinds = selectedKinds()
    if (kinds.size === 0) throw new Error(`LLMSCOPE_BENCH_ANALYTICS_KINDS=${process.env.LLMSCOPE_BENCH_ANALYTICS_KINDS} names no kind of: ${KINDS.join('; ')}`)
    const kindS = Math.max(5, Math.min(budgetS, leftS / kinds.size))
    if (kindS < budgetS) row({ metric: 'query budget per kind (shrunk to fit the question budget)', value: kindS, unit: 's', note: `LLMSCOPE_BENCH_ANALYTICS_BUDGET_S ${budgetS} s; ${leftS.toFixed(0)} s left of LLMSCOPE_BENCH_ANALYTICS_TOTAL_S ${totalS} s after the loads` })
    progress(`queries: up to ${perKind} per kind, ${kindS.toFixed(0)} s per kind`)
    const { stats, verdicts } = await measure(engines, perKind, kindS * 1000, kinds)
    // What HTTP alone costs ours: a route that does nothing, the same way.
    const floor: number[] = []
    for (let i = 0; i < 200; i++) {
      const t = performance.now()
      await request(`${s.url}/health`, 'GET', null)
      floor.push(performance.now() - t)
    }
    row({ metric: 'HTTP floor: GET /health p50 (part of every LLMScope time below)', value: pct(floor, 0.5), unit: 'ms', note: `p99 ${pct(floor, 0.99).toFixed(3)} ms over ${floor.length}` })
    for (const kind of KINDS) {
      if (!kinds.has(kind)) continue
      const o = stats('LLMScope', kind)
      const goal = GOALS[kind]
      row({ metric: `${kind} @ ${size}: LLMScope p99 (HTTP)`, value: o.p99, unit: 'ms', goal: `≤ ${goal.p99}`, note: `over ${o.n} queries` })
      row({ metric: `${kind} @ ${size}: LLMScope p50 (HTTP)`, value: o.p50, unit: 'ms', goal: goal.p50 === undefined ? undefined : `≤ ${goal.p50}` })
      let fastest = Infinity
      for (const p of peers) {
        const t = stats(p.name, kind)
        fastest = Math.min(fastest, t.p99)
        const v = verdicts.get(p.name)!.get(kind)!
        row({ metric: `${kind}: p99 LLMScope vs ${p.name}`, value: o.p99, unit: 'ms', baseline: t.p99, ratio: t.p99 / o.p99, goal: 'answers agree', met: v.ok, note: `ratio = times faster; p50 ${o.p50.toFixed(2)} vs ${t.p50.toFixed(2)} ms; ${v}` })
      }
      if (peers.length > 0) row({ metric: `${kind}: ours ×N faster at p99 than the faster peer`, value: fastest / o.p99, unit: '×', goal: `≥ ${PEER_FACTOR}` })
    }
  } catch (err) {
    row({ metric: 'failed', value: 0, unit: '', note: (err as Error).message.split('\n')[0].slice(0, 300) })
  } finally {
    for (const p of peers) p.close()
    await server?.stop()
    closeAgent()
  }
  return rows
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(`LLMScope bench (analytics) — ${machineLine()}`)
  const t0 = performance.now()
  const l0 = load1()
  const rows = await run()
  rows.push({ bench: 'analytics', metric: 'machine load average (1 min), start → end', value: l0, unit: '', note: `→ ${load1()}` })
  console.log(table(rows))
  console.log(`analytics: ${((performance.now() - t0) / 1000).toFixed(0)} s`)
}

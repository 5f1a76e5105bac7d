/**
 * Question (issue 11, DESIGN §5–§6): with 10M events over 30 days in 3 projects, 100,000 users,
 * 2 tags and 3 metadata keys each (bench/dim-data.ts), how fast does LLMScope answer "who
 * spends" — `GET /analytics/breakdown?by=user_id` over the 30 days and over a random hour, and
 * `GET /analytics/metrics?user_id=` over a random range — next to ClickHouse (chdb) and DuckDB
 * loaded with the same rows (bench/peers.ts), do the answers agree, what does an event with
 * dimensions cost in RAM, and what do dimensions cost ingestion?
 *
 * - Ingest: two servers (each its own process, fresh data dir), one sent the events with
 *   `user_id`, `session_id`, `tags` and `metadata`, one the same events without them, over
 *   HTTP in batches of 1000 (4 in flight, `X-LLMScope-Project` per batch). Chunks of 100,000
 *   events alternate between the two (A/B, first one then the other) and a chunk counts until
 *   every event of it is counted by `/analytics/metrics`, so the aggregation behind the 202
 *   is in the time too.
 * - RSS per event: each server settles its own heap (gc until RSS stops falling, as
 *   bench/analytics.ts) before the load and after it; the difference over the events.
 * - Queries: one at a time; ours over HTTP (keep-alive), the peers in this process, each
 *   engine's own time (ours to the body's last byte, theirs until the result is in hand; decoding
 *   after). Every
 *   query runs on every engine in turn, so the machine's drift hits all alike. The first
 *   queries of each kind are a warm-up that also checks the percentiles: there the peers
 *   compute p95 as the nearest rank (⌈0.95·n⌉-th smallest, LLMScope's definition; ClickHouse's
 *   `quantileExact` and DuckDB's `quantile_disc` pick other ranks), and ours must be within
 *   the sketch's 1%. Timed queries use each engine's own exact quantile and check groups,
 *   requests and tokens exactly and cost to the nano-dollar. The peers answer the top 20
 *   groups and the range's total in one pass; ours answers those plus `other`.
 *
 * Sizes: `LLMSCOPE_BENCH_DIM_EVENTS` (else `LLMSCOPE_BENCH_EVENTS`, else 10,000,000), `LLMSCOPE_BENCH_DIM_QUERIES` timed
 * queries per kind (default 200; the 30-day breakdowns take a quarter of it),
 * `LLMSCOPE_BENCH_DIM_BUDGET_S` seconds per kind, all engines together, past which that kind
 * stops early (default 300), `LLMSCOPE_BENCH_PEERS=0` leaves the peers out. Alone: `node dist-bench/bench/dimensions.js`
 * after `tsc -p tsconfig.bench.json`.
 */
import { pathToFileURL } from 'node:url'
import { dimEvents, dimQueries, PROJECTS, type DimQuery, type QueryKind } from './dim-data.js'
import { clickhouse, duckdb, PEER_VERSIONS, type Answer, type Peer, type Totals } from './peers.js'
import { Verdict, type Answer as Agreed, type Figures } from './agree.js'
import { load1, machineLine, pct, table, type Row } from './lib.js'
import { BATCH, IN_FLIGHT, bodies, closeAgent, counted, createProjects, request, send, startServer, take, timedGetJson, type Server } from './server.js'

const LIMIT = 20
const CHUNK = 100_000
/** Warm-up queries per kind, where p95 is checked against the nearest rank. */
const CHECKED = 3

/** Loads n events into both servers, chunk by chunk, alternating which goes first. */
async function loadBoth(n: number, withDims: Server, without: Server) {
  const gen = dimEvents(n)[Symbol.iterator]()
  const arms = [
    { server: withDims, dims: true, seconds: 0, resends: 0 },
    { server: without, dims: false, seconds: 0, resends: 0 }
  ]
  const expected = [0, 0, 0]
  for (let chunk = 0; chunk * CHUNK < n; chunk++) {
    const events = [...take(gen, CHUNK)]
    for (const e of events) expected[e.project]++
    const prepared = arms.map((a) => bodies(events, a.dims))
    for (const i of chunk % 2 === 0 ? [0, 1] : [1, 0]) {
      const t = performance.now()
      arms[i].resends += await send(arms[i].server, prepared[i])
      await counted(arms[i].server, expected)
      arms[i].seconds += (performance.now() - t) / 1000
    }
  }
  return { withDims: arms[0], without: arms[1], expected }
}

// ---- answers ----

const nanos = (dollars: unknown) => Math.round(Number(dollars) * 1e9)
const ourTotals = (g: Record<string, unknown>, prefix = ''): Totals => ({
  requests: Number(g[`${prefix}requests`]),
  tokens: Number(g.total_tokens),
  costNanos: nanos(g.total_cost),
  p95: g.p95_latency_ms === null || g.p95_latency_ms === undefined ? null : Number(g.p95_latency_ms)
})

async function ours(server: Server, q: DimQuery): Promise<Answer> {
  const range = `start_time=${q.start}&end_time=${q.end}`
  if (q.user !== undefined) {
    const { json: m, ms } = await timedGetJson(server, `/analytics/metrics?user_id=${encodeURIComponent(q.user)}&${range}`, PROJECTS[q.project])
    return { groups: [], total: ourTotals(m, 'total_'), ms }
  }
  const { json, ms } = await timedGetJson(server, `/analytics/breakdown?by=user_id&${range}&limit=${LIMIT}&sort=cost`, PROJECTS[q.project])
  const b = json as { groups: Array<Record<string, unknown>>; total: Record<string, unknown> }
  return { groups: b.groups.map((g) => ({ value: String(g.value), ...ourTotals(g) })), total: ourTotals(b.total), ms }
}

/** The answer as bench/agree.ts compares it: the top groups in order, the range's total, p95. */
function agreeForm(a: Answer): Agreed {
  const f = (t: Totals): Figures => ({ requests: t.requests, tokens: t.tokens, costNanos: t.costNanos, pct: { p95: t.p95 } })
  return { groups: a.groups.map((g) => ({ key: g.value, ...f(g) })), ordered: true, total: f(a.total) }
}

interface Engine {
  name: string
  answer(q: DimQuery, exact: boolean): Promise<Answer>
}

const KINDS: readonly QueryKind[] = ['breakdown 30 days', 'breakdown 1 hour', 'metrics ?user_id=']
const GOALS: Record<QueryKind, string> = { 'breakdown 30 days': '≤ 10', 'breakdown 1 hour': '≤ 10', 'metrics ?user_id=': '≤ 2' }

async function measure(engines: Engine[], perKind: number, budgetMs: number) {
  const counts = { 'breakdown 30 days': Math.max(CHECKED, Math.ceil(perKind / 4)), 'breakdown 1 hour': perKind, 'metrics ?user_id=': perKind }
  const checks = dimQueries({ 'breakdown 30 days': CHECKED, 'breakdown 1 hour': CHECKED, 'metrics ?user_id=': CHECKED }, 101)
  const times = new Map(engines.map((e) => [e.name, new Map(KINDS.map((k) => [k, [] as number[]]))]))
  const verdicts = new Map(engines.slice(1).map((e) => [e.name, new Map(KINDS.map((k) => [k, new Verdict()]))]))
  const judge = (peer: string, q: DimQuery, o: Answer, t: Answer, p95: boolean) =>
    verdicts.get(peer)!.get(q.kind)!.judge(`${PROJECTS[q.project]} [${q.start}, ${q.end})${q.user === undefined ? '' : ` ${q.user}`}`, agreeForm(o), agreeForm(t), { percentiles: p95 })
  // Warm-up, with p95 against the nearest rank.
  for (const q of checks) {
    const o = await engines[0].answer(q, false)
    for (const e of engines.slice(1)) judge(e.name, q, o, await e.answer(q, true), true)
  }
  // A kind stops early past its time budget (all engines together), so one slow engine cannot
  // hold the whole bench; the rows say how many queries each percentile is over.
  const spent = new Map(KINDS.map((k) => [k, 0]))
  for (const q of dimQueries(counts)) {
    if (spent.get(q.kind)! > budgetMs) continue
    const t0 = performance.now()
    let o: Answer | undefined
    for (const e of engines) {
      const t = performance.now()
      const a = await e.answer(q, false)
      // The engine's own time (HTTP exchange / query until its result is in hand), decoding after.
      times.get(e.name)!.get(q.kind)!.push(a.ms ?? performance.now() - t)
      if (o === undefined) o = a
      else judge(e.name, q, o, a, false)
    }
    spent.set(q.kind, spent.get(q.kind)! + performance.now() - t0)
  }
  const stats = (name: string, kind: QueryKind) => {
    const xs = times.get(name)!.get(kind)!
    return { p50: pct(xs, 0.5), p99: pct(xs, 0.99), n: xs.length }
  }
  return { stats, verdicts }
}

export async function run(): Promise<Row[]> {
  const n = Number(process.env.LLMSCOPE_BENCH_DIM_EVENTS ?? process.env.LLMSCOPE_BENCH_EVENTS ?? 10_000_000)
  const perKind = Number(process.env.LLMSCOPE_BENCH_DIM_QUERIES ?? 200)
  const budgetS = Number(process.env.LLMSCOPE_BENCH_DIM_BUDGET_S ?? 300)
  const size = n.toLocaleString('en-US')
  const rows: Row[] = []
  const row = (r: Omit<Row, 'bench'>) => rows.push({ bench: 'dimensions', ...r })
  const servers: Server[] = []
  const peers: Peer[] = []
  try {
    const withDims = await startServer()
    servers.push(withDims)
    const without = await startServer()
    servers.push(without)
    await createProjects(withDims)
    await createProjects(without)
    const load = await loadBoth(n, withDims, without)
    const rate = (a: { seconds: number }) => n / a.seconds
    row({ metric: `ingest ${size} events over HTTP with dimensions (baseline: without)`, value: rate(load.withDims), unit: 'ev/s', baseline: rate(load.without), ratio: rate(load.withDims) / rate(load.without), goal: 'ratio ≥ 0.9', note: `batches of ${BATCH}, ${IN_FLIGHT} in flight, A/B chunks of ${CHUNK.toLocaleString('en-US')} until counted; ${load.withDims.seconds.toFixed(1)} vs ${load.without.seconds.toFixed(1)} s; busy resends ${load.withDims.resends} / ${load.without.resends}` })
    const perEvent = async (s: Server) => ((await s.rss()) - s.rss0) / n
    const [bWith, bWithout] = [await perEvent(withDims), await perEvent(without)]
    row({ metric: `RSS per event with dimensions @ ${size} (baseline: without)`, value: bWith, unit: 'B', baseline: bWithout, ratio: bWith / bWithout, goal: '≤ 80', note: `settled RSS; dimensions add ${(bWith - bWithout).toFixed(1)} B/event` })
    await without.stop()
    servers.pop()

    const events = () => dimEvents(n)
    const engines: Engine[] = [{ name: 'LLMScope', answer: (q) => ours(withDims, q) }]
    if (process.env.LLMSCOPE_BENCH_PEERS === '0') row({ metric: 'peers (ClickHouse, DuckDB)', value: 0, unit: '', note: 'skipped: LLMSCOPE_BENCH_PEERS=0' })
    else {
      for (const [label, start] of [[`DuckDB (@duckdb/node-api ${PEER_VERSIONS['@duckdb/node-api']})`, duckdb], [`ClickHouse (chdb ${PEER_VERSIONS.chdb})`, clickhouse]] as const) {
        try {
          const p = await start(events)
          peers.push(p)
          engines.push({ name: p.name, answer: (q, exact) => p.query(q, LIMIT, exact) })
          row({ metric: `${label}: load ${size} rows`, value: n / p.loadSeconds, unit: 'ev/s', note: `${p.loadSeconds.toFixed(1)} s, in process, ${p.name === 'DuckDB' ? 'appender + ORDER BY project, ts' : 'TSV insert + OPTIMIZE FINAL'}` })
        } catch (err) {
          row({ metric: label, value: 0, unit: '', note: `skipped: ${(err as Error).message.split('\n')[0].slice(0, 200)}` })
        }
      }
    }

    const { stats, verdicts } = await measure(engines, perKind, budgetS * 1000)
    // What HTTP alone costs ours: a route that does nothing, the same way, as many times.
    const floor: number[] = []
    for (let i = 0; i < perKind; i++) {
      const t = performance.now()
      await request(`${withDims.url}/health`, 'GET', null)
      floor.push(performance.now() - t)
    }
    row({ metric: 'HTTP floor: GET /health p50 (part of every LLMScope time below)', value: pct(floor, 0.5), unit: 'ms', note: `p99 ${pct(floor, 0.99).toFixed(3)} ms over ${floor.length}` })
    for (const kind of KINDS) {
      const o = stats('LLMScope', kind)
      row({ metric: `${kind} @ ${size}: LLMScope p99 (HTTP)`, value: o.p99, unit: 'ms', goal: GOALS[kind], note: `p50 ${o.p50.toFixed(3)} ms over ${o.n} queries` })
      let fastest = Infinity
      for (const p of peers) {
        const s = stats(p.name, kind)
        fastest = Math.min(fastest, s.p99)
        const v = verdicts.get(p.name)!.get(kind)!
        row({ metric: `${kind}: p99 LLMScope vs ${p.name}`, value: o.p99, unit: 'ms', baseline: s.p99, ratio: s.p99 / o.p99, goal: 'answers agree', met: v.ok, note: `ratio = times faster; p50 ${o.p50.toFixed(2)} vs ${s.p50.toFixed(2)} ms; ${v}` })
      }
      if (peers.length > 0) row({ metric: `${kind}: ours ×N faster at p99 than the faster peer`, value: fastest / o.p99, unit: '×', goal: '≥ 10' })
    }
  } catch (err) {
    row({ metric: 'failed', value: 0, unit: '', note: (err as Error).message.split('\n')[0].slice(0, 300) })
  } finally {
    for (const p of peers) p.close()
    for (const s of servers) await s.stop()
    closeAgent()
  }
  return rows
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(`LLMScope bench (dimensions) — ${machineLine()}`)
  const t0 = performance.now()
  const l0 = load1()
  const rows = await run()
  rows.push({ bench: 'dimensions', metric: 'machine load average (1 min), start → end', value: l0, unit: '', note: `→ ${load1()}` })
  console.log(table(rows))
  console.log(`dimensions: ${((performance.now() - t0) / 1000).toFixed(0)} s`)
}

/**
 * Question (issue 14, DESIGN §8): what do the price book, re-pricing, budgets and grouped rules
 * cost?
 *
 * - Micro (in this process, no server): pricing with the book against pricing without it, on
 *   the dimensions bench's 50 models. Main-thread µs per event of `priceInputOf(e, book)` (the
 *   book's schedule lookups: effective revision + memoised schedule, in the cost stage before a
 *   batch goes to a worker) against `priceInputOf(e)`; and events/s one thread prices a batch of
 *   1,024 with schedules (half the models under book versions, an override layer, 3 re-pricings)
 *   against the same batch without them (a worker's work). A/B alternated, best of 3.
 * - Re-pricing: N events of bench/dim-data.ts (30 days, 50 models) loaded into ONE project over
 *   HTTP (search bench's server and loaders), then a price version PUT for every model from the
 *   first day, so every event's cost changes. A dry run over [start, end − 2 h) (the last 2 h
 *   are left to the live traffic below), then the apply; meanwhile a loop posts batches of 10
 *   events (one at a time, in the last 2 h) and another asks GET /analytics/costs over the 30
 *   days (one at a time): their p99 during the apply against the 10 s before it. Checked: the
 *   apply's totals equal the dry run's, and /analytics/costs over the range then equals the
 *   dry run's `after` total.
 * - Budgets and grouped rules: in a fresh project of the same server, K events of the last
 *   minute (1,100 users, so a rule grouped by user holds its 1,000 groups and counts 100 capped)
 *   posted over HTTP with no rules (A), with 100 rules grouped by user_id (B1), with 10 budgets
 *   grouped by user_id on top (B2), and with none again (A'). Server CPU time (/proc) per event
 *   during each load and per second idle after it (the 1 s alert tick's evaluation alone); B
 *   against the mean of A and A'. Shown: the rules' `groups_capped` (> 0: past 1,000 groups)
 *   and how many groups a budget lists.
 *
 * Sizes: `--events N` (default 10,000,000; 0 leaves the re-pricing out), `LLMSCOPE_BENCH_MONEY_RULE_EVENTS` K (default
 * 200,000; 0 leaves that part out). `npm run bench -- money`, or alone after `tsc -p tsconfig.bench.json`:
 * `node --expose-gc dist-bench/bench/money.js --events 1000000`.
 */
import { loadavg } from 'node:os'
import { pathToFileURL } from 'node:url'
import { createProjects, counted, json, request, send, sleep, startServer, type Server } from './server.js'
import { ingestLoop, pct } from './search.js'
import { dimEvents, toJson, DAY, HOUR, MODELS, PROJECTS, T0, T1 } from './dim-data.js'
import { cpuMs, machine, rng, table, type Row } from './lib.js'
import { encodeBatch, priceBatch } from '../src/pricing/batch.js'
import { PriceBook, fillRates, priceInputOf } from '../src/pricing/book.js'
import type { StoredEvent } from '../src/events.js'

const BATCH = 1000
const CHUNK = 100_000
/** The project the re-pricing runs in: the search bench's live loop posts there too. */
const PROJECT = PROJECTS[0]
const RULES_PROJECT = 'money-rules'
const RULES = 100
const BUDGETS = 10
const RULE_USERS = 1100
const BEFORE_MS = 10_000
const IDLE_MS = 5_000
/** The re-priced range: the data's 30 days but the last 2 h, where the live loop posts. */
const RANGE = { start: T0, end: T1 - 2 * HOUR }

type AddRow = (r: Omit<Row, 'bench'>) => void
const fmtN = (x: number) => x.toLocaleString('en-US')
const load1 = () => loadavg()[0].toFixed(2)
const progress = (what: string) => console.error(`  money ${new Date().toISOString().slice(11, 19)} ${what} (load ${loadavg()[0].toFixed(1)})`)

function flag(name: string): number | undefined {
  const i = process.argv.indexOf(name)
  return i === -1 ? undefined : Number(process.argv[i + 1])
}

// ---- micro: the book on the pricing hot path ----

function microEvents(n: number): StoredEvent[] {
  const r = rng(5)
  const out: StoredEvent[] = []
  for (let i = 0; i < n; i++) {
    const m = MODELS[Math.floor(r() * MODELS.length)]
    const ts = T0 + Math.floor(r() * 30 * DAY)
    out.push({
      seq: i, id: `e${i}`, ts, recv: ts, model: m.name, provider: m.provider, prompt: 100 + Math.floor(r() * 4000), completion: Math.floor(r() * 1000), total: 0,
      cached: i % 3 === 0 ? 50 : 0, reasoning: 0, latency: 1, ttft: null, error: false, cost: null, meta: null, project: PROJECT, user: null, session: null, tags: null, priceRev: 6
    })
  }
  return out
}

function microBook(): PriceBook {
  const book = new PriceBook()
  book.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'acme-private-large': { input_mtok: 1, output_mtok: 2 } } })
  MODELS.forEach((m, i) => {
    if (i % 2 === 1) return
    book.addVersion({ id: `pv_${i}`, project: PROJECT, provider: m.provider, model: m.name, rates: fillRates({ input: 1 + (i % 5), output: 4 }), effective_from: T0 + (i % 10) * DAY, created_at: 0, rev: book.nextRev() })
  })
  for (let k = 0; k < 3; k++) book.addReprice({ id: `rp_${k}`, project: PROJECT, start: T0 + k * 5 * DAY, end: T0 + (k + 1) * 5 * DAY, model: null, rev: book.nextRev(), created_at: 0 })
  return book
}

function microRows(row: AddRow): void {
  const events = microEvents(1024)
  const book = microBook()
  const rounds = 3
  const reps = 200
  const time = (f: () => void) => {
    const t = performance.now()
    for (let k = 0; k < reps; k++) f()
    return (performance.now() - t) / (reps * events.length)
  }
  // Warm both paths (memos, JIT).
  for (let k = 0; k < 20; k++) {
    priceBatch(encodeBatch(events.map((e) => priceInputOf(e, book))))
    priceBatch(encodeBatch(events.map((e) => priceInputOf(e))))
  }
  const withBook = encodeBatch(events.map((e) => priceInputOf(e, book)))
  const without = encodeBatch(events.map((e) => priceInputOf(e)))
  const lookup = { book: Infinity, none: Infinity }
  const price = { book: Infinity, none: Infinity }
  for (let k = 0; k < rounds; k++) {
    lookup.none = Math.min(lookup.none, time(() => events.map((e) => priceInputOf(e))))
    lookup.book = Math.min(lookup.book, time(() => events.map((e) => priceInputOf(e, book))))
    price.none = Math.min(price.none, time(() => priceBatch(without)))
    price.book = Math.min(price.book, time(() => priceBatch(withBook)))
  }
  const us = (ms: number) => ms * 1000
  row({ metric: 'main thread: priceInputOf with the book (effective rev + memoised schedule) µs/event (baseline: without the book)', value: us(lookup.book), unit: 'µs', baseline: us(lookup.none), ratio: lookup.book / lookup.none, note: `batches of ${events.length}, 50 models, 25 under versions, an override layer, 3 re-pricings; best of ${rounds}×${reps}; the lookup adds ${((lookup.book - lookup.none) * 1e6).toFixed(0)} ns/event` })
  row({ metric: 'one worker: events/s priceBatch with schedules (baseline: without the book)', value: 1 / price.book * 1000, unit: 'ev/s', baseline: 1 / price.none * 1000, ratio: price.none / price.book, note: `${withBook.schedules.length} distinct schedules in the batch; same thread, best of ${rounds}×${reps}` })
}

// ---- re-pricing under load ----

/** The events as batches for PROJECT, CHUNK events at a time (10M events of JSON would not fit at once). */
function* chunksOne(n: number): Generator<Array<{ project: string; body: string }>> {
  let out: Array<{ project: string; body: string }> = []
  let batch: Array<Record<string, unknown>> = []
  for (const e of dimEvents(n)) {
    batch.push(toJson(e, true))
    if (batch.length === BATCH) {
      out.push({ project: PROJECT, body: JSON.stringify(batch) })
      batch = []
      if (out.length * BATCH >= CHUNK) {
        yield out
        out = []
      }
    }
  }
  if (batch.length > 0) out.push({ project: PROJECT, body: JSON.stringify(batch) })
  if (out.length > 0) yield out
}

/** Asks GET /analytics/costs over the 30 days, one at a time, until stopped; latencies by phase. */
function queryLoop(server: Server) {
  let phase = 'idle'
  let stopped = false
  let failure: string | null = null
  const times = new Map<string, number[]>()
  const loop = (async () => {
    while (!stopped) {
      const at = phase
      const t = performance.now()
      const r = await request(`${server.url}/analytics/costs?start_time=${T0}&end_time=${T1}`, 'GET', PROJECT)
      if (r.status !== 200) failure ??= `GET /analytics/costs → ${r.status}: ${r.body.slice(0, 200)}`
      const ms = performance.now() - t
      if (!times.has(at)) times.set(at, [])
      times.get(at)!.push(ms)
    }
  })()
  loop.catch((err: Error) => (failure ??= err.message))
  return {
    set(p: string) {
      phase = p
    },
    times: (p: string) => times.get(p) ?? [],
    failure: () => failure,
    async stop() {
      stopped = true
      await loop.catch(() => {})
    }
  }
}

/**
 * The server's longest event-loop block since the previous call: the max of prom-client's
 * `monitorEventLoopDelay` histogram (nodejs_eventloop_lag_max_seconds), sampled in the server
 * every 10 ms and reset by every scrape of /metrics — so a scrape opens a window and the next
 * one reads it. A block of B ms shows as a delay of about B (± the 10 ms sampling).
 */
async function loopMax(server: Server): Promise<number> {
  const r = await request(`${server.url}/metrics`, 'GET', null)
  const m = /^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(r.body)
  return m === null ? NaN : Number(m[1]) * 1000
}

interface RepriceAnswer {
  models: Array<{ provider: string; model: string; requests: number; before: number; after: number; difference: number }>
  total: { requests: number; before: number; after: number; difference: number }
}

async function repriceRows(server: Server, n: number, row: AddRow): Promise<void> {
  const size = fmtN(n)
  await createProjects(server)
  const t0 = performance.now()
  let resends = 0
  let loaded = 0
  for (const chunk of chunksOne(n)) {
    resends += await send(server, chunk)
    loaded += chunk.length * BATCH
    if (loaded % 1_000_000 === 0) progress(`posted ${fmtN(loaded)}`)
  }
  await counted(server, [n, 0, 0])
  const loadS = (performance.now() - t0) / 1000
  row({ metric: `load ${size} events into one project over HTTP`, value: n / loadS, unit: 'ev/s', note: `${loadS.toFixed(0)} s, batches of ${BATCH}, 4 in flight; busy resends ${resends}` })
  progress(`loaded ${size}`)

  // A version for every model from the first day: every event in the range changes cost.
  for (const [i, m] of MODELS.entries()) {
    const body = { provider: m.provider, model: m.name, input: 0.5 + (i % 7), output: 2 + (i % 5), cache_write: 1, effective_from: T0 }
    const r = await request(`${server.url}/prices`, 'PUT', PROJECT, JSON.stringify(body))
    if (r.status !== 200 && r.status !== 201) throw new Error(`PUT /prices ${m.name} → ${r.status}: ${r.body.slice(0, 200)}`)
  }
  const reprice = async (dryRun: boolean) => {
    const t = performance.now()
    const r = await request(`${server.url}/prices/reprice`, 'POST', PROJECT, JSON.stringify({ start_time: RANGE.start, end_time: RANGE.end, dry_run: dryRun }))
    if (r.status !== 200) throw new Error(`POST /prices/reprice dry_run=${dryRun} → ${r.status}: ${r.body.slice(0, 300)}`)
    return { ms: performance.now() - t, answer: JSON.parse(r.body) as RepriceAnswer }
  }
  progress('dry run')
  await loopMax(server)
  const dry = await reprice(true)
  const dryBlock = await loopMax(server)
  row({ metric: `POST /prices/reprice dry run over ${fmtN(dry.answer.total.requests)} events`, value: dry.ms / 1000, unit: 's', note: `${fmtN(Math.round(dry.answer.total.requests / (dry.ms / 1000)))} events/s; ${dry.answer.models.length} models; $${dry.answer.total.before.toFixed(2)} → $${dry.answer.total.after.toFixed(2)}` })

  progress('apply under load')
  const live = ingestLoop(server, false)
  const queries = queryLoop(server)
  let apply: Awaited<ReturnType<typeof reprice>>
  let beforeBlock = NaN
  let applyBlock = NaN
  try {
    live.set('before')
    queries.set('before')
    await loopMax(server)
    await sleep(BEFORE_MS)
    beforeBlock = await loopMax(server)
    live.set('during')
    queries.set('during')
    apply = await reprice(false)
    applyBlock = await loopMax(server)
    live.set('after')
    queries.set('after')
  } finally {
    await live.stop()
    await queries.stop()
  }
  const costs = await json(server, 'GET', `/analytics/costs?start_time=${RANGE.start}&end_time=${RANGE.end}`, PROJECT)
  const total = Number(costs.total_cost)
  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b))
  const checks = [
    close(apply.answer.total.after, dry.answer.total.after) && apply.answer.total.requests === dry.answer.total.requests ? 'apply totals = dry run' : `APPLY ≠ DRY RUN: ${JSON.stringify(apply.answer.total)} vs ${JSON.stringify(dry.answer.total)}`,
    close(total, dry.answer.total.after) ? '/analytics/costs then = dry run after' : `ANALYTICS $${total} ≠ dry run after $${dry.answer.total.after}`
  ].join('; ')
  row({ metric: `POST /prices/reprice apply: ${fmtN(apply.answer.total.requests)} events re-priced, wall time`, value: apply.ms / 1000, unit: 's', note: `${fmtN(Math.round(apply.answer.total.requests / (apply.ms / 1000)))} events/s; ${checks}${queries.failure() === null ? '' : `; QUERY FAILED: ${queries.failure()}`}` })
  const during = (xs: number[], before: number[], what: string): Omit<Row, 'bench' | 'metric'> => ({
    value: pct(xs, 0.99),
    unit: 'ms',
    baseline: pct(before, 0.99),
    ratio: pct(xs, 0.99) / pct(before, 0.99),
    note: `p50 ${pct(xs, 0.5).toFixed(1)} ms over ${xs.length} ${what}, one at a time (before: p50 ${pct(before, 0.5).toFixed(1)} ms over ${before.length}); max during ${Math.max(...xs).toFixed(0)} ms`
  })
  const blockNote = 'server-side monitorEventLoopDelay max (prom-client, 10 ms sampling), over the whole request: scan, record, plan and stage, the cut, the snapshot after'
  row({ metric: '  longest event-loop block in the server during the apply (baseline: 10 s before, same live load)', value: applyBlock, unit: 'ms', baseline: beforeBlock, ratio: applyBlock / beforeBlock, goal: '≤ 20', note: blockNote })
  row({ metric: '  longest event-loop block in the server during the dry run (no live load)', value: dryBlock, unit: 'ms', goal: '≤ 20', note: 'same sampling; the scan of the log, a slice per turn' })
  row({ metric: '  ingest p99 during the apply (baseline: 10 s before)', ...during(live.times('during'), live.times('before'), 'batches of 10') })
  row({ metric: '  GET /analytics/costs (30 days) p99 during the apply (baseline: before)', ...during(queries.times('during'), queries.times('before'), 'queries') })
}

// ---- budgets and grouped rules ----

function recentBodies(k: number, seed: number): string[] {
  const r = rng(seed)
  const now = Date.now()
  const out: string[] = []
  for (let i = 0; i < k; i += BATCH) {
    const batch: Array<Record<string, unknown>> = []
    for (let j = i; j < Math.min(k, i + BATCH); j++) {
      const m = MODELS[j % 48]
      batch.push({ timestamp: new Date(now - Math.floor(r() * 60_000)).toISOString(), model: m.name, provider: m.provider, prompt_tokens: 100 + Math.floor(r() * 2000), completion_tokens: Math.floor(r() * 500), latency_ms: 100 + Math.floor(r() * 2000), user_id: `ru-${j % RULE_USERS}`, tags: [`t${j % 7}`] })
    }
    out.push(JSON.stringify(batch))
  }
  return out
}

async function ruleRows(server: Server, k: number, row: AddRow): Promise<void> {
  const created = await request(`${server.url}/projects`, 'POST', null, JSON.stringify({ id: RULES_PROJECT }))
  if (created.status !== 201 && created.status !== 409) throw new Error(`POST /projects ${RULES_PROJECT} → ${created.status}`)
  let sent = 0
  const phase = async (name: string, seed: number) => {
    const bodies = recentBodies(k, seed)
    const cpu0 = cpuMs(server.pid)
    const t0 = performance.now()
    await send(server, bodies.map((body) => ({ project: RULES_PROJECT, body })))
    sent += k
    for (const deadline = Date.now() + 300_000; ; ) {
      const m = await json(server, 'GET', '/analytics/metrics', RULES_PROJECT)
      if (m.total_requests === sent) break
      if (Date.now() > deadline) throw new Error(`${name}: ${String(m.total_requests)} of ${sent} counted after 300 s`)
      await sleep(5)
    }
    const loadMs = performance.now() - t0
    const cpuLoad = cpuMs(server.pid) - cpu0
    const cpu1 = cpuMs(server.pid)
    const t1 = performance.now()
    await sleep(IDLE_MS)
    const idle = ((cpuMs(server.pid) - cpu1) / (performance.now() - t1)) * 1000
    progress(`${name}: ${(cpuLoad / k * 1000).toFixed(1)} µs CPU/event, idle ${idle.toFixed(0)} ms CPU/s`)
    return { name, usPerEvent: (cpuLoad / k) * 1000, evPerS: k / (loadMs / 1000), idleMsPerS: idle }
  }
  const a1 = await phase('A (no rules)', 31)
  const ruleIds: string[] = []
  const conditions = ['cost_per_hour', 'avg_latency', 'error_rate', 'requests_per_minute', 'tokens_per_minute']
  for (let i = 0; i < RULES; i++) {
    const body = { name: `grouped ${i}`, condition: conditions[i % conditions.length], threshold: 1e12, comparator: 'gt', window_seconds: 300, group_by: 'user_id', ...(i % 4 === 0 ? { filters: { tag: `t${i % 7}` } } : {}) }
    const r = await request(`${server.url}/alerts/rules`, 'POST', RULES_PROJECT, JSON.stringify(body))
    if (r.status !== 201) throw new Error(`POST /alerts/rules → ${r.status}: ${r.body.slice(0, 200)}`)
    ruleIds.push((JSON.parse(r.body) as { id: string }).id)
  }
  await sleep(2000) // a tick or two: every rule has been evaluated once
  const b1 = await phase(`B1 (${RULES} grouped rules)`, 32)
  const budgetIds: string[] = []
  for (let i = 0; i < BUDGETS; i++) {
    const r = await request(`${server.url}/budgets`, 'POST', RULES_PROJECT, JSON.stringify({ name: `per user ${i}`, amount: 1e9, period: i % 2 === 0 ? 'day' : 'month', group_by: 'user_id', thresholds: [0.5, 0.8, 1] }))
    if (r.status !== 201) throw new Error(`POST /budgets → ${r.status}: ${r.body.slice(0, 200)}`)
    budgetIds.push((JSON.parse(r.body) as { id: string }).id)
  }
  await sleep(2000)
  const b = await phase(`B2 (${RULES} grouped rules + ${BUDGETS} grouped budgets)`, 34)
  // What the rules and budgets held: groups evaluated (capped past 1,000) and budget groups.
  const states = await Promise.all(ruleIds.slice(0, 5).map((id) => json(server, 'GET', `/alerts/rules/${id}/state`, RULES_PROJECT)))
  const capped = states.map((s) => Number(s.groups_capped))
  const budget = await json(server, 'GET', `/budgets/${budgetIds[0]}`, RULES_PROJECT)
  const budgetGroups = Array.isArray(budget.groups) ? budget.groups.length : 0
  for (const id of ruleIds) await request(`${server.url}/alerts/rules/${id}`, 'DELETE', RULES_PROJECT)
  for (const id of budgetIds) await request(`${server.url}/budgets/${id}`, 'DELETE', RULES_PROJECT)
  await sleep(2000)
  const a2 = await phase('A\' (no rules again)', 33)
  const base = { us: (a1.usPerEvent + a2.usPerEvent) / 2, ev: (a1.evPerS + a2.evPerS) / 2, idle: (a1.idleMsPerS + a2.idleMsPerS) / 2 }
  const held = `first 5 rules: groups_capped ${capped.join(', ')} (> 0: over 1,000 groups among ${fmtN(RULE_USERS)} users, 1,000 evaluated); budget groups listed: ${budgetGroups}${budget.groups_capped !== undefined ? `, groups_capped ${String(budget.groups_capped)}` : ''}`
  row({ metric: `server CPU per event ingesting ${fmtN(k)} recent events with ${RULES} grouped rules (baseline: none, mean of before and after)`, value: b1.usPerEvent, unit: 'µs', baseline: base.us, ratio: b1.usPerEvent / base.us, note: `A ${a1.usPerEvent.toFixed(1)}, B1 ${b1.usPerEvent.toFixed(1)}, A' ${a2.usPerEvent.toFixed(1)} µs; ingest ${fmtN(Math.round(b1.evPerS))} ev/s vs ${fmtN(Math.round(base.ev))}; ${held}` })
  row({ metric: `  … with the ${RULES} grouped rules + ${BUDGETS} budgets grouped by user_id`, value: b.usPerEvent, unit: 'µs', baseline: base.us, ratio: b.usPerEvent / base.us, note: `ingest ${fmtN(Math.round(b.evPerS))} ev/s vs ${fmtN(Math.round(base.ev))}` })
  row({ metric: `  server CPU idle (alert tick only) with the ${RULES} grouped rules (baseline: none)`, value: b1.idleMsPerS, unit: 'ms/s', baseline: base.idle, ratio: b1.idleMsPerS / base.idle, note: `${IDLE_MS / 1000} s after each load; A ${a1.idleMsPerS.toFixed(0)}, B1 ${b1.idleMsPerS.toFixed(0)}, A' ${a2.idleMsPerS.toFixed(0)} ms CPU per second: ${RULES} rules × 1,000 groups evaluated each 1 s tick` })
  row({ metric: `  … with the rules + ${BUDGETS} grouped budgets`, value: b.idleMsPerS, unit: 'ms/s', baseline: base.idle, ratio: b.idleMsPerS / base.idle, note: `budgets add ${(b.idleMsPerS - b1.idleMsPerS).toFixed(0)} ms CPU/s (${((b.idleMsPerS - b1.idleMsPerS) / BUDGETS).toFixed(1)} per budget of 1,000 groups)` })
}

export async function run(): Promise<Row[]> {
  const n = flag('--events') ?? Number(process.env.LLMSCOPE_BENCH_MONEY_EVENTS ?? 10_000_000)
  const k = Number(process.env.LLMSCOPE_BENCH_MONEY_RULE_EVENTS ?? 200_000)
  const rows: Row[] = []
  const row: AddRow = (r) => rows.push({ bench: 'money', ...r })
  const section = async (name: string, body: () => Promise<void> | void): Promise<void> => {
    try {
      await body()
    } catch (err) {
      row({ metric: `${name}: failed`, value: 0, unit: '', note: (err as Error).message.split('\n')[0].slice(0, 300) })
    }
  }
  const loadAtStart = load1()
  progress('micro')
  await section('micro', () => microRows(row))
  let server: Server | undefined
  try {
    server = await startServer()
    const s = server
    if (k > 0) await section('budgets and grouped rules', () => ruleRows(s, k, row))
    if (n > 0) await section('re-pricing', () => repriceRows(s, n, row))
  } catch (err) {
    row({ metric: 'failed', value: 0, unit: '', note: (err as Error).message.split('\n')[0].slice(0, 300) })
  } finally {
    await server?.stop()
  }
  row({ metric: 'machine load average (1 min), start → end', value: Number(loadAtStart), unit: '', note: `→ ${load1()}` })
  return rows
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const m = machine()
  console.log(`LLMScope bench (money) — ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, node ${m.node}, commit ${m.commit}, ${m.date}`)
  const t0 = performance.now()
  const rows = await run()
  console.log(table(rows))
  console.log(`money: ${((performance.now() - t0) / 1000).toFixed(0)} s`)
}

/**
 * Question (issue 13, DESIGN §7): with the dimensions bench's 10M events (bench/dim-data.ts),
 * how fast does LLMScope find events, export them, and forget them — and what does an event
 * cost in RAM now that every row carries its log seq and the dedupe window holds every id?
 *
 * - Load: two servers (each its own process, fresh data dir), one sent the events with a
 *   client `id` (UUID-shaped, as a client library sends), one the same events without, over
 *   HTTP in batches of 1000 (4 in flight), A/B chunks of 100,000, each counted by
 *   `/analytics/metrics` before the next (the way bench/dimensions.ts loads).
 * - RSS per event: settled RSS (gc until it stops falling) after the load minus at start, over
 *   the events; the server without ids is the baseline, measured in the same run. Then it stops.
 * - `GET /events` (newest 50, over the 30 days, in the big project) for a rare filter (a
 *   user_id with about 1 event in 10,000 of all events), the same user by `sort=latency`, and
 *   common filters (`model=gpt-4o`, 1 in 50; `status=success`, 98%): one request at a time over
 *   HTTP (keep-alive), the kinds interleaved so the machine's drift hits all alike. The first
 *   request of each kind is timed apart (it may build an index); the next are the percentiles.
 *   Every page is checked: the filter matches, the order holds, the page is full when it can be.
 * - Export: NDJSON and CSV of the big project's first 5 days (1M events at 10M) over loopback
 *   HTTP, lines counted against the generator's count. Then a slow reader (128 KiB/s) on an
 *   export of the whole project: the server's RSS (/proc VmRSS) sampled while it lasts.
 * - Delete: a loop posts batches of 10 events over HTTP, one at a time, before and during each
 *   DELETE; its latencies give ingest p50/p99 before vs during. Deletes: all events of 10 users
 *   with about 100 each (one after the other), then `status=success` over 5 days of the big
 *   project (≈ 1M at 10M). Each answer's `deleted` is checked against the generator's count
 *   and the filter then finds nothing.
 *
 * Sizes: `--events N` or `LLMSCOPE_BENCH_SEARCH_EVENTS` (default 10,000,000),
 * `LLMSCOPE_BENCH_SEARCH_QUERIES` timed requests per kind (default 200),
 * `LLMSCOPE_BENCH_SEARCH_SLOW_S` seconds of slow reading (default 30),
 * `LLMSCOPE_BENCH_SEARCH_EXPORT_S` seconds past which an export is cut and its rate taken over
 * what was read (default 300). Alone:
 * `node --expose-gc dist-bench/bench/search.js --events 100000` after `tsc -p tsconfig.bench.json`.
 */
import http from 'node:http'
import { loadavg } from 'node:os'
import { pathToFileURL } from 'node:url'
import { dimEvents, toJson, DAY, HOUR, MODELS, PROJECTS, T0, T1, type DimEvent } from './dim-data.js'
import { machine, rng, table, type Row } from './lib.js'
import { BATCH, IN_FLIGHT, OWNER_KEY, closeAgent, counted, createProjects, json, post, request, send, sleep, startServer, take, type Server } from './server.js'

const CHUNK = 100_000
const PAGE = 50
/** The big project (60% of the events): every search, export and delete runs in it. */
const P = 0
const PROJECT = PROJECTS[P]
const COMMON_MODEL = 'gpt-4o'
/** Export range: the big project's first 5 days (10% of all events). */
const EXPORT_RANGE = { start: T0, end: T0 + 5 * DAY }
/** The large delete: `status=success` over these 5 days of the big project (9.8% of all events). */
const DELETE_RANGE = { start: T0 + 10 * DAY, end: T0 + 15 * DAY }
/** The slow reader's pace: far below a full-speed export, so the server must hold back. */
const SLOW_BYTES_PER_S = 128 * 1024
const SMALL_DELETES = 10
const SMALL_DELETE_SIZE = 100
/** How long the ingest loop runs before the first delete: its baseline. */
const BEFORE_MS = 10_000

/** A progress line on stderr (the table goes to stdout). */
const progress = (what: string) => console.error(`  search ${new Date().toISOString().slice(11, 19)} ${what} (load ${loadavg()[0].toFixed(1)})`)

// ---- data ----

/** A UUID-shaped client id (36 characters, as `crypto.randomUUID()` gives), deterministic. */
function uuids(seed: number): () => string {
  const r = rng(seed)
  const hex = (digits: number) => Math.floor(r() * 16 ** digits).toString(16).padStart(digits, '0')
  return () => `${hex(8)}-${hex(4)}-4${hex(3)}-${(8 + Math.floor(r() * 4)).toString(16)}${hex(3)}-${hex(6)}${hex(6)}`
}

/** What the generator says the answers must be. */
interface Truth {
  perProject: number[]
  /** Events per user of the big project. */
  users: Map<string, number>
  exported: number
  bigDelete: number
  /** Per user of the big project, their events the large delete matches (a user deleted first is not in it). */
  bigDeleteOf: Map<string, number>
}

/** Batches of one project each, as JSON bodies, with or without a client id per event. */
function bodies(events: readonly DimEvent[], ids: readonly string[] | null): Array<{ project: string; body: string }> {
  const out: Array<{ project: string; body: string }> = []
  for (let p = 0; p < PROJECTS.length; p++) {
    let batch: Array<Record<string, unknown>> = []
    for (let i = 0; i < events.length; i++) {
      if (events[i].project !== p) continue
      const o = toJson(events[i], true)
      if (ids !== null) o.id = ids[i]
      batch.push(o)
      if (batch.length === BATCH) {
        out.push({ project: PROJECTS[p], body: JSON.stringify(batch) })
        batch = []
      }
    }
    if (batch.length > 0) out.push({ project: PROJECTS[p], body: JSON.stringify(batch) })
  }
  return out
}

/** Loads n events into both servers, chunk by chunk, alternating which goes first. */
async function loadBoth(n: number, withIds: Server, without: Server, ids: boolean) {
  const gen = dimEvents(n)[Symbol.iterator]()
  const nextId = uuids(13)
  const arms = [
    { server: withIds, ids, seconds: 0, resends: 0 },
    { server: without, ids: false, seconds: 0, resends: 0 }
  ]
  const truth: Truth = { perProject: [0, 0, 0], users: new Map(), exported: 0, bigDelete: 0, bigDeleteOf: new Map() }
  for (let chunk = 0; chunk * CHUNK < n; chunk++) {
    const events = [...take(gen, CHUNK)]
    const ids = events.map(() => nextId())
    for (const e of events) {
      truth.perProject[e.project]++
      if (e.project !== P) continue
      truth.users.set(e.user, (truth.users.get(e.user) ?? 0) + 1)
      if (e.ts >= EXPORT_RANGE.start && e.ts < EXPORT_RANGE.end) truth.exported++
      if (e.ts >= DELETE_RANGE.start && e.ts < DELETE_RANGE.end && !e.error) {
        truth.bigDelete++
        truth.bigDeleteOf.set(e.user, (truth.bigDeleteOf.get(e.user) ?? 0) + 1)
      }
    }
    const prepared = arms.map((a) => bodies(events, a.ids ? ids : null))
    for (const i of chunk % 2 === 0 ? [0, 1] : [1, 0]) {
      const t = performance.now()
      arms[i].resends += await send(arms[i].server, prepared[i])
      await counted(arms[i].server, truth.perProject)
      arms[i].seconds += (performance.now() - t) / 1000
    }
    if ((chunk + 1) % 10 === 0) progress(`loaded ${fmtN((chunk + 1) * CHUNK)} of ${fmtN(n)} (${arms[0].seconds.toFixed(0)} + ${arms[1].seconds.toFixed(0)} s)`)
  }
  return { withIds: arms[0], without: arms[1], truth }
}

/** The users of the big project whose counts are nearest `target`, `k` of them, skipping `not`. */
function usersNear(users: Map<string, number>, target: number, k: number, not: ReadonlySet<string> = new Set()): Array<[string, number]> {
  return [...users].filter(([u]) => !not.has(u)).sort((a, b) => Math.abs(a[1] - target) - Math.abs(b[1] - target) || (a[0] < b[0] ? -1 : 1)).slice(0, k)
}

// ---- GET /events ----

export const pct = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1)))]
}

interface Kind {
  name: string
  /** The query string for the i-th request, and what every event of its page must satisfy. */
  query(i: number): { qs: string; matches(e: Record<string, unknown>): boolean; total: number }
  sort: 'time' | 'latency'
}

/** Checks one page: every event matches, the order holds, the page is as full as it can be. */
function checkPage(kind: Kind, page: Array<Record<string, unknown>>, matches: (e: Record<string, unknown>) => boolean, total: number): string | null {
  if (page.length !== Math.min(PAGE, total)) return `${page.length} events, expected ${Math.min(PAGE, total)}`
  const key = (e: Record<string, unknown>) => (kind.sort === 'time' ? Date.parse(String(e.timestamp)) : Number(e.latency_ms))
  for (let i = 0; i < page.length; i++) {
    if (!matches(page[i])) return `event ${i} does not match: ${JSON.stringify(page[i]).slice(0, 200)}`
    if (i > 0 && key(page[i]) > key(page[i - 1])) return `event ${i} out of order (${key(page[i])} after ${key(page[i - 1])})`
  }
  return null
}

async function searches(server: Server, kinds: Kind[], perKind: number) {
  const stats = new Map(kinds.map((k) => [k.name, { first: NaN, times: [] as number[], bad: null as string | null }]))
  for (let i = 0; i <= perKind; i++) {
    for (const kind of kinds) {
      const q = kind.query(i)
      const t = performance.now()
      const r = await request(`${server.url}/events?${q.qs}`, 'GET', PROJECT)
      const ms = performance.now() - t
      const s = stats.get(kind.name)!
      if (r.status !== 200) throw new Error(`GET /events?${q.qs} → ${r.status}: ${r.body.slice(0, 300)}`)
      if (i === 0) s.first = ms
      else s.times.push(ms)
      s.bad ??= checkPage(kind, (JSON.parse(r.body) as { events: Array<Record<string, unknown>> }).events, q.matches, q.total)
    }
  }
  return stats
}

// ---- export ----

/** Streams `path` to the end, counting bytes and lines; `bytesPerSecond` reads slowly and stops after `maxMs`. */
function stream(server: Server, path: string, opts: { bytesPerSecond?: number; maxMs?: number; onTick?: () => void } = {}) {
  return new Promise<{ bytes: number; lines: number; ms: number; ended: boolean; head: string }>((resolve, reject) => {
    const t0 = performance.now()
    let bytes = 0
    let lines = 0
    let head = ''
    const req = http.request(server.url + path, { method: 'GET', headers: { 'x-api-key': OWNER_KEY, 'x-llmscope-project': PROJECT } }, (res) => {
      if (res.statusCode !== 200) {
        let text = ''
        res.on('data', (d: Buffer) => (text += d.toString()))
        res.on('end', () => reject(new Error(`GET ${path} → ${res.statusCode}: ${text.slice(0, 300)}`)))
        return
      }
      const done = (ended: boolean) => {
        clearInterval(tick)
        resolve({ bytes, lines, ms: performance.now() - t0, ended, head })
      }
      const tick = setInterval(() => {
        opts.onTick?.()
        if (opts.maxMs !== undefined && performance.now() - t0 > opts.maxMs) {
          res.destroy()
          done(false)
        }
      }, 250)
      res.on('data', (d: Buffer) => {
        bytes += d.length
        if (head.length < 400) head += d.subarray(0, 400).toString()
        for (let i = d.indexOf(10); i !== -1; i = d.indexOf(10, i + 1)) lines++
        if (opts.bytesPerSecond !== undefined) {
          // Ahead of the allowed rate: stop reading until the rate catches up (TCP then pushes back).
          const ahead = bytes / opts.bytesPerSecond - (performance.now() - t0) / 1000
          if (ahead > 0) {
            res.pause()
            setTimeout(() => res.resume(), ahead * 1000)
          }
        }
      })
      res.on('end', () => done(true))
      res.on('error', (err) => (res.destroyed ? undefined : reject(err)))
    })
    req.on('error', reject)
    req.end()
  })
}

// ---- ingest during deletes ----

/** Posts batches of 10 events to the big project, one at a time, until stopped; latencies by phase. */
export function ingestLoop(server: Server, ids: boolean) {
  let phase = 'idle'
  let stopped = false
  const times = new Map<string, number[]>()
  let seq = 0
  const loop = (async () => {
    while (!stopped) {
      const batch = Array.from({ length: 10 }, () => {
        const i = seq++
        // The last day, no user: never matched by the deletes below.
        const e: Record<string, unknown> = { timestamp: new Date(T1 - HOUR - (i % 3_600_000)).toISOString(), model: COMMON_MODEL, provider: 'openai', prompt_tokens: 100, completion_tokens: 20, latency_ms: 500 }
        if (ids) e.id = `live-${i}`
        return e
      })
      const at = phase
      const t = performance.now()
      await post(server, PROJECT, JSON.stringify(batch))
      const ms = performance.now() - t
      if (!times.has(at)) times.set(at, [])
      times.get(at)!.push(ms)
    }
  })()
  // A failed post ends the loop; stop() reports it.
  loop.catch(() => {})
  return {
    set(p: string) {
      phase = p
    },
    times: (p: string) => times.get(p) ?? [],
    async stop() {
      stopped = true
      await loop
    }
  }
}

// ---- the question ----

const fmtN = (x: number) => x.toLocaleString('en-US')
const load1 = () => loadavg()[0].toFixed(2)
const RANGE = `start_time=${T0}&end_time=${T1}`
type AddRow = (r: Omit<Row, 'bench'>) => void

function eventsFlag(): number | undefined {
  const i = process.argv.indexOf('--events')
  return i === -1 ? undefined : Number(process.argv[i + 1])
}

/** Whether the server takes an event's `id` (a server without it refuses unknown fields). */
async function takesIds(server: Server): Promise<boolean> {
  const project = 'search-probe'
  const created = await request(`${server.url}/projects`, 'POST', null, JSON.stringify({ id: project }))
  if (created.status !== 201) throw new Error(`POST /projects {"id":"${project}"} → ${created.status}: ${created.body.slice(0, 200)}`)
  const r = await request(`${server.url}/events/batch`, 'POST', project, JSON.stringify([{ id: 'probe-1', model: COMMON_MODEL, provider: 'openai', prompt_tokens: 1, completion_tokens: 1, latency_ms: 1, timestamp: new Date(T1 - 1).toISOString() }]))
  if (r.status === 202) return true
  if (r.status === 400) return false
  throw new Error(`probe POST /events/batch with an id → ${r.status}: ${r.body.slice(0, 200)}`)
}

async function searchRows(server: Server, truth: Truth, n: number, perKind: number, row: AddRow): Promise<string[]> {
  const size = fmtN(n)
  const rare = usersNear(truth.users, Math.max(1, Math.round(n / 10_000)), 20)
  const user = (i: number) => rare[i % rare.length]
  const ofUser = (u: string) => (e: Record<string, unknown>) => e.user_id === u
  const kinds: Kind[] = [
    { name: 'rare', sort: 'time', query: (i) => ({ qs: `user_id=${user(i)[0]}&${RANGE}&limit=${PAGE}`, matches: ofUser(user(i)[0]), total: user(i)[1] }) },
    { name: 'rare latency', sort: 'latency', query: (i) => ({ qs: `user_id=${user(i)[0]}&${RANGE}&limit=${PAGE}&sort=latency`, matches: ofUser(user(i)[0]), total: user(i)[1] }) },
    { name: 'model', sort: 'time', query: () => ({ qs: `model=${COMMON_MODEL}&${RANGE}&limit=${PAGE}`, matches: (e) => e.model === COMMON_MODEL, total: Infinity }) },
    { name: 'status', sort: 'time', query: () => ({ qs: `status=success&${RANGE}&limit=${PAGE}`, matches: (e) => e.status === 'success', total: Infinity }) }
  ]
  const rareCounts = rare.map(([, c]) => c)
  const labels: Record<string, string> = {
    rare: `GET /events newest ${PAGE}, a user_id of ${Math.min(...rareCounts)}–${Math.max(...rareCounts)} events (≈ 1 in 10,000)`,
    'rare latency': `GET /events sort=latency top ${PAGE}, the same users`,
    model: `GET /events newest ${PAGE}, model=${COMMON_MODEL} (1 in ${MODELS.length})`,
    status: `GET /events newest ${PAGE}, status=success (98%)`
  }
  const stats = await searches(server, kinds, perKind)
  const floor: number[] = []
  for (let i = 0; i < perKind; i++) {
    const t = performance.now()
    await request(`${server.url}/health`, 'GET', null)
    floor.push(performance.now() - t)
  }
  row({ metric: 'HTTP floor: GET /health p50 (part of every time below)', value: pct(floor, 0.5), unit: 'ms', note: `p99 ${pct(floor, 0.99).toFixed(3)} ms over ${floor.length}` })
  for (const kind of kinds) {
    const s = stats.get(kind.name)!
    row({ metric: `${labels[kind.name]} @ ${size}: p99`, value: pct(s.times, 0.99), unit: 'ms', goal: '≤ 10', note: `p50 ${pct(s.times, 0.5).toFixed(2)} ms over ${s.times.length}; first request ${s.first.toFixed(1)} ms; ${s.bad === null ? 'every page checked' : `WRONG PAGE: ${s.bad}`}` })
  }
  return rare.map(([u]) => u)
}

async function exportRows(server: Server, truth: Truth, slowS: number, budgetS: number, row: AddRow): Promise<void> {
  const qs = `start_time=${EXPORT_RANGE.start}&end_time=${EXPORT_RANGE.end}`
  let fullBytesPerS = NaN
  for (const format of ['ndjson', 'csv'] as const) {
    // An export slower than the budget is cut there: the rate is then over what was read.
    const r = await stream(server, `/events?${qs}&format=${format}`, { maxMs: budgetS * 1000 })
    const events = format === 'csv' ? r.lines - 1 : r.lines
    if (format === 'ndjson') fullBytesPerS = (r.bytes / r.ms) * 1000
    const check = !r.ended ? `STOPPED at the ${budgetS} s budget after ${fmtN(events)} of ${fmtN(truth.exported)} events` : events === truth.exported ? 'count matches' : `WRONG: ${events} events of ${truth.exported}: ${r.head.slice(0, 150)}`
    row({ metric: `export ${format.toUpperCase()} over loopback HTTP, ${fmtN(truth.exported)} events`, value: (events / r.ms) * 1000, unit: 'ev/s', goal: format === 'ndjson' ? '≥ 200,000' : '', note: `${(r.ms / 1000).toFixed(1)} s, ${(r.bytes / 2 ** 20).toFixed(0)} MiB (${(r.bytes / Math.max(1, events)).toFixed(0)} B/event); ${check}` })
  }
  // A reader far slower than the server: its memory must not follow the export.
  // Bounded means flat: the peak of the second half is no higher than the first's.
  const before = server.rssNow()
  const t0 = performance.now()
  const peaks = [before, before]
  const onTick = () => {
    const half = performance.now() - t0 < (slowS * 1000) / 2 ? 0 : 1
    peaks[half] = Math.max(peaks[half], server.rssNow())
  }
  const r = await stream(server, `/events?${RANGE}&format=ndjson`, { bytesPerSecond: SLOW_BYTES_PER_S, maxMs: slowS * 1000, onTick })
  await sleep(500)
  const after = server.rssNow()
  const mib = (x: number) => (x / 2 ** 20).toFixed(0)
  const pileUp = Math.max(0, fullBytesPerS - SLOW_BYTES_PER_S) * slowS
  row({ metric: `export NDJSON read at ${SLOW_BYTES_PER_S / 1024} KiB/s for ${slowS} s: server RSS growth (peak − before)`, value: (Math.max(...peaks) - before) / 2 ** 20, unit: 'MiB', note: `whole project (${fmtN(truth.perProject[P])} events); without backpressure ≈ ${mib(pileUp)} MiB would pile up (full-speed NDJSON ${(fullBytesPerS / 2 ** 20).toFixed(2)} MiB/s above); read ${(r.bytes / 2 ** 20).toFixed(1)} MiB (${fmtN(r.lines)} events) then closed; RSS before ${mib(before)} MiB, peak in the first half ${mib(peaks[0])}, in the second ${mib(peaks[1])}, 0.5 s after close ${mib(after)} MiB${r.ended ? '; THE EXPORT ENDED before the time was up' : ''}` })
}

async function deleteRows(server: Server, truth: Truth, n: number, ids: boolean, notUsers: readonly string[], row: AddRow): Promise<void> {
  const size = fmtN(n)
  const del = async (qs: string, expected: number, filter: string) => {
    const t = performance.now()
    const r = await request(`${server.url}/events?${qs}`, 'DELETE', PROJECT)
    const ms = performance.now() - t
    if (r.status !== 200) throw new Error(`DELETE /events?${qs} → ${r.status}: ${r.body.slice(0, 300)}`)
    const deleted = Number((JSON.parse(r.body) as { deleted: unknown }).deleted)
    const left = ((await json(server, 'GET', `/events?${filter}&limit=1`, PROJECT)) as { events: unknown[] }).events.length
    return { ms, deleted, ok: deleted === expected && left === 0, detail: `deleted ${deleted} of ${expected}, ${left === 0 ? 'none found after' : 'STILL FOUND after'}` }
  }
  const small = usersNear(truth.users, SMALL_DELETE_SIZE, SMALL_DELETES, new Set(notUsers))
  const bigQs = `status=success&start_time=${DELETE_RANGE.start}&end_time=${DELETE_RANGE.end}`
  const bigExpected = small.reduce((left, [u]) => left - (truth.bigDeleteOf.get(u) ?? 0), truth.bigDelete)
  const live = ingestLoop(server, ids)
  const smallRuns: Array<Awaited<ReturnType<typeof del>>> = []
  let big: Awaited<ReturnType<typeof del>>
  try {
    live.set('before')
    await sleep(BEFORE_MS)
    live.set('small')
    for (const [user, count] of small) smallRuns.push(await del(`user_id=${user}`, count, `user_id=${user}&${RANGE}`))
    live.set('between')
    await sleep(1000)
    live.set('big')
    big = await del(bigQs, bigExpected, bigQs)
    live.set('after')
  } finally {
    await live.stop()
  }
  const before = live.times('before')
  const ingest = (phase: string): Omit<Row, 'bench' | 'metric'> => {
    const xs = live.times(phase)
    return { value: pct(xs, 0.99), unit: 'ms', baseline: pct(before, 0.99), ratio: pct(xs, 0.99) / pct(before, 0.99), note: `p50 ${pct(xs, 0.5).toFixed(1)} ms over ${xs.length} batches of 10, one at a time (before: p50 ${pct(before, 0.5).toFixed(1)} ms over ${before.length})` }
  }
  const smallMs = smallRuns.map((r) => r.ms)
  const smallCounts = small.map(([, c]) => c)
  row({ metric: `DELETE one user's events (${Math.min(...smallCounts)}–${Math.max(...smallCounts)}) @ ${size}: wall time, median of ${small.length}`, value: pct(smallMs, 0.5), unit: 'ms', note: `max ${Math.max(...smallMs).toFixed(0)} ms; ${smallRuns.every((r) => r.ok) ? 'every count checked, none found after' : `WRONG: ${smallRuns.find((r) => !r.ok)!.detail}`}` })
  row({ metric: '  ingest p99 during those deletes (baseline: before)', ...ingest('small') })
  row({ metric: `DELETE status=success over 5 days (${fmtN(bigExpected)} events) @ ${size}: wall time`, value: big.ms / 1000, unit: 's', note: `${fmtN(Math.round(big.deleted / (big.ms / 1000)))} events/s; ${big.ok ? 'count checked, none found after' : `WRONG: ${big.detail}`}` })
  row({ metric: '  ingest p99 during that delete (baseline: before)', ...ingest('big') })
}

export async function run(): Promise<Row[]> {
  const n = eventsFlag() ?? Number(process.env.LLMSCOPE_BENCH_SEARCH_EVENTS ?? 10_000_000)
  const perKind = Number(process.env.LLMSCOPE_BENCH_SEARCH_QUERIES ?? 200)
  const slowS = Number(process.env.LLMSCOPE_BENCH_SEARCH_SLOW_S ?? 30)
  const exportS = Number(process.env.LLMSCOPE_BENCH_SEARCH_EXPORT_S ?? 300)
  const size = fmtN(n)
  const rows: Row[] = []
  const row: AddRow = (r) => rows.push({ bench: 'search', ...r })
  const section = async <T>(name: string, body: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await body()
    } catch (err) {
      row({ metric: `${name}: failed`, value: 0, unit: '', note: (err as Error).message.split('\n')[0].slice(0, 300) })
      return undefined
    }
  }
  const servers: Server[] = []
  const loadAtStart = load1()
  try {
    const withIds = await startServer()
    servers.push(withIds)
    const without = await startServer()
    servers.push(without)
    await createProjects(withIds)
    await createProjects(without)
    const ids = await takesIds(withIds)

    // Load both; ingest rate and RSS per event with ids against without.
    const load = await loadBoth(n, withIds, without, ids)
    const truth = load.truth
    const rate = (a: { seconds: number }) => n / a.seconds
    const idsNote = ids ? '' : 'NO IDS: this server refuses an event `id`; both arms are the same; '
    row({ metric: `ingest ${size} events over HTTP with client ids (baseline: without)`, value: rate(load.withIds), unit: 'ev/s', baseline: rate(load.without), ratio: rate(load.withIds) / rate(load.without), note: `${idsNote}dimensions on both; batches of ${BATCH}, ${IN_FLIGHT} in flight, A/B chunks of ${fmtN(CHUNK)} until counted; ${load.withIds.seconds.toFixed(1)} vs ${load.without.seconds.toFixed(1)} s; busy resends ${load.withIds.resends} / ${load.without.resends}` })
    const perEvent = async (s: Server) => {
      const total = ((await s.rss()) - s.rss0) / n
      const parts = s.parts()
      return { total, anon: (parts.anon - s.parts0.anon) / n, file: (parts.file - s.parts0.file) / n }
    }
    const [bWith, bWithout] = [await perEvent(withIds), await perEvent(without)]
    const split = (b: { anon: number; file: number }) => `${b.anon.toFixed(1)} anonymous + ${b.file.toFixed(1)} file (LMDB map)`
    row({ metric: `RSS per event @ ${size}, seq in every row, dedupe window full (baseline: no ids)`, value: bWith.total, unit: 'B', baseline: bWithout.total, ratio: bWith.total / bWithout.total, goal: '≤ 80', note: `${idsNote}settled RSS after load − at start, over the events; the window's ids add ${(bWith.total - bWithout.total).toFixed(1)} B/event; with ids ${split(bWith)}, without ${split(bWithout)}` })
    await without.stop()
    servers.pop()

    progress('GET /events')
    const rare = (await section('GET /events', () => searchRows(withIds, truth, n, perKind, row))) ?? []
    progress('export')
    await section('export', () => exportRows(withIds, truth, slowS, exportS, row))
    progress('DELETE /events')
    await section('DELETE /events', () => deleteRows(withIds, truth, n, ids, rare, row))
  } catch (err) {
    row({ metric: 'failed', value: 0, unit: '', note: (err as Error).message.split('\n')[0].slice(0, 300) })
  } finally {
    for (const s of servers) await s.stop()
    closeAgent()
  }
  row({ metric: 'machine load average (1 min), start → end', value: Number(loadAtStart), unit: '', note: `→ ${load1()}` })
  return rows
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const m = machine()
  console.log(`LLMScope bench (search) — ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, node ${m.node}, commit ${m.commit}, ${m.date}`)
  const t0 = performance.now()
  const rows = await run()
  console.log(table(rows))
  console.log(`search: ${((performance.now() - t0) / 1000).toFixed(0)} s`)
}

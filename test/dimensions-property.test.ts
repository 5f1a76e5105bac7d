/**
 * Dimensions property (DESIGN §6): random events in two projects (users, sessions, tags,
 * metadata of strings, numbers and booleans, errors, caller costs, ms timestamps over three
 * days), then random ranges and filter combinations through the HTTP routes — metrics, costs,
 * timeseries and breakdowns by every dimension with a random limit and sort — compared with a
 * naive scan of the events sent. Caps are tiny (3 values per user/session/tag, 2 per metadata
 * key, 1 metadata key) so `(other)` groups appear and filters on capped values or keys take the
 * log path, which must be exact too.
 */
import t from 'tap'
import fc from 'fast-check'
import { makeApp, adminHeaders, type TestApp } from './helpers/app.js'

const HOUR = 3_600_000
const DAY = 24 * HOUR
const base = Date.parse('2026-03-01T00:00:00.000Z')
const CAP_VALUES = 3
const CAP_META_VALUES = 2
const CAP_META_KEYS = 1
const OTHER = '(other)'

// ---------------------------------------------------------------------------------------------
// Events

interface Ev {
  project: 0 | 1
  ts: number
  model: string
  provider: string
  prompt: number
  completion: number
  latency: number
  /** undefined: sent without a status (a success). */
  status: 'success' | 'error' | undefined
  nanos: number
  user: string | null
  session: string | null
  tags: string[] | null
  meta: Record<string, unknown> | null
}

const metaValueArb = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom('search', 'chat', 'sum') },
  { weight: 3, arbitrary: fc.constantFrom(0, 1, 2, 1.5, -1) },
  { weight: 2, arbitrary: fc.boolean() },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, { nested: 1 }, ['x']) },
)

const evArb: fc.Arbitrary<Ev> = fc.record({
  project: fc.constantFrom<0 | 1>(0, 1),
  ts: fc.oneof(
    fc.integer({ min: 0, max: 3 * DAY - 1 }).map((o) => base + o),
    // a dense two hours, so narrow ranges hold several events
    fc.integer({ min: 0, max: 2 * HOUR }).map((o) => base + DAY + o),
  ),
  model: fc.constantFrom('m-a', 'm-b', 'm-c'),
  provider: fc.constantFrom('p1', 'p2'),
  prompt: fc.integer({ min: 0, max: 2000 }),
  completion: fc.integer({ min: 0, max: 500 }),
  latency: fc.oneof(fc.integer({ min: 0, max: 5000 }), fc.constantFrom(0, 1, 100, 4999)),
  status: fc.constantFrom<Ev['status']>(undefined, undefined, 'success', 'error'),
  nanos: fc.oneof(fc.integer({ min: 0, max: 5_000_000 }), fc.constant(0), fc.integer({ min: 0, max: 3 }).map((x) => x * 1000)),
  user: fc.option(fc.constantFrom('u0', 'u1', 'u2', 'u3', 'u4', 'u5'), { freq: 5 }),
  session: fc.option(fc.constantFrom('s0', 's1', 's2', 's3', 's4'), { freq: 3 }),
  tags: fc.option(fc.uniqueArray(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'), { maxLength: 3 }), { freq: 4 }),
  meta: fc.option(fc.dictionary(fc.constantFrom('feature', 'tier', 'beta'), metaValueArb, { maxKeys: 3, noNullPrototype: true }), { freq: 4 }),
})

const body = (e: Ev) => ({
  timestamp: new Date(e.ts).toISOString(),
  model: e.model,
  provider: e.provider,
  prompt_tokens: e.prompt,
  completion_tokens: e.completion,
  latency_ms: e.latency,
  cost: e.nanos / 1e9,
  ...(e.status === undefined ? {} : { status: e.status }),
  ...(e.user === null ? {} : { user_id: e.user }),
  ...(e.session === null ? {} : { session_id: e.session }),
  ...(e.tags === null ? {} : { tags: e.tags }),
  ...(e.meta === null ? {} : { metadata: e.meta }),
})

const isError = (e: Ev) => e.status === 'error'

/** A metadata value as a dimension (DESIGN §6), written independently of the server's. */
function metaText(v: unknown): string | null {
  if (typeof v === 'string') return v
  if (typeof v === 'number') return Number.isFinite(v) ? JSON.stringify(v) : null
  if (typeof v === 'boolean') return String(v)
  return null
}

// ---------------------------------------------------------------------------------------------
// The naive model of a project's dictionaries: first seen first, capped.

interface Kept {
  users: string[]
  sessions: string[]
  tags: string[]
  /** The metadata keys that are dimensions (first seen with a scalar value). */
  metaKeys: string[]
  metaValues: Map<string, string[]>
}

function keptOf(events: readonly Ev[]): Kept {
  const k: Kept = { users: [], sessions: [], tags: [], metaKeys: [], metaValues: new Map() }
  const add = (list: string[], v: string, cap: number) => {
    if (!list.includes(v) && list.length < cap) list.push(v)
  }
  for (const e of events) {
    if (e.user !== null) add(k.users, e.user, CAP_VALUES)
    if (e.session !== null) add(k.sessions, e.session, CAP_VALUES)
    for (const tag of e.tags ?? []) add(k.tags, tag, CAP_VALUES)
    for (const [key, v] of Object.entries(e.meta ?? {})) {
      const text = metaText(v)
      if (text === null) continue
      if (!k.metaKeys.includes(key)) {
        if (k.metaKeys.length >= CAP_META_KEYS) continue
        k.metaKeys.push(key)
        k.metaValues.set(key, [])
      }
      add(k.metaValues.get(key)!, text, CAP_META_VALUES)
    }
  }
  return k
}

// ---------------------------------------------------------------------------------------------
// Queries

interface Filters {
  model?: string
  status?: 'success' | 'error'
  user_id?: string
  session_id?: string
  tag?: string
  meta?: Array<[string, string]>
}

interface Query {
  project: 0 | 1
  kind: 'metrics' | 'costs' | 'timeseries' | 'breakdown'
  start: number | null
  end: number | null
  iso: boolean
  filters: Filters
  by: string
  limit: number
  sort: 'cost' | 'requests' | 'tokens'
  interval: '1h' | '5m'
}

/** Zero to two filters, ANDed (more would leave most answers empty). */
const filtersArb: fc.Arbitrary<Filters> = fc
  .array(
    fc.oneof(
      fc.record({ model: fc.constantFrom('m-a', 'm-b', 'm-c', 'm-zz') }),
      fc.record({ status: fc.constantFrom<'success' | 'error'>('success', 'error') }),
      fc.record({ user_id: fc.constantFrom('u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'u-never') }),
      fc.record({ session_id: fc.constantFrom('s0', 's1', 's2', 's3', 's4', 's-never') }),
      fc.record({ tag: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'never') }),
      fc.record({
        meta: fc.tuple(fc.constantFrom('feature', 'tier', 'beta', 'never'), fc.constantFrom('search', 'chat', 'sum', '0', '1', '2', '1.5', '-1', 'true', 'false', 'zz')).map((kv): Array<[string, string]> => [kv]),
      }),
    ),
    { maxLength: 2 },
  )
  .map((parts) => {
    const f: Filters = {}
    for (const p of parts) {
      if ('meta' in p) f.meta = [...(f.meta ?? []).filter(([k]) => k !== p.meta[0][0]), ...p.meta]
      else Object.assign(f, p)
    }
    return f
  })

const queryArb: fc.Arbitrary<Query> = fc.record({
  project: fc.constantFrom<0 | 1>(0, 1),
  kind: fc.constantFrom<Query['kind']>('metrics', 'costs', 'timeseries', 'breakdown', 'breakdown'),
  start: fc.option(fc.oneof(fc.integer({ min: -HOUR, max: 3 * DAY + HOUR }), fc.integer({ min: -HOUR, max: DAY + HOUR })).map((o) => base + o), { freq: 3 }),
  end: fc.option(fc.oneof(fc.integer({ min: 0, max: 3 * DAY }), fc.integer({ min: 0, max: 2 * HOUR })), { freq: 5 }),
  iso: fc.boolean(),
  filters: filtersArb,
  by: fc.constantFrom('user_id', 'session_id', 'tag', 'metadata.feature', 'metadata.tier', 'metadata.beta', 'model', 'provider'),
  limit: fc.integer({ min: 1, max: 6 }),
  sort: fc.constantFrom<Query['sort']>('cost', 'requests', 'tokens'),
  interval: fc.constantFrom<Query['interval']>('1h', '5m'),
})

/** [start, end) of a query: `end` is generated as a length after start. */
function rangeOf(q: Query): [number, number] {
  const start = q.start ?? (q.kind === 'timeseries' ? base - HOUR : -Infinity)
  const end = q.end === null ? (q.kind === 'timeseries' ? base + 3 * DAY + HOUR : Infinity) : (Number.isFinite(start) ? start : base) + q.end
  return [start, end]
}

function urlOf(q: Query): string {
  const [start, end] = rangeOf(q)
  const p = new URLSearchParams()
  const bound = (ms: number) => (q.iso ? new Date(ms).toISOString() : String(ms))
  if (Number.isFinite(start)) p.set('start_time', bound(start))
  if (Number.isFinite(end)) p.set('end_time', bound(end))
  const f = q.filters
  if (f.model !== undefined) p.set('model', f.model)
  if (f.status !== undefined) p.set('status', f.status)
  if (f.user_id !== undefined) p.set('user_id', f.user_id)
  if (f.session_id !== undefined) p.set('session_id', f.session_id)
  if (f.tag !== undefined) p.set('tag', f.tag)
  for (const [k, v] of f.meta ?? []) p.set(`metadata.${k}`, v)
  if (q.kind === 'breakdown') {
    p.set('by', q.by)
    p.set('limit', String(q.limit))
    p.set('sort', q.sort)
  }
  if (q.kind === 'timeseries') p.set('interval', q.interval)
  return `/analytics/${q.kind}?${p}`
}

function matches(e: Ev, f: Filters): boolean {
  if (f.model !== undefined && e.model !== f.model) return false
  if (f.status !== undefined && (f.status === 'error') !== isError(e)) return false
  if (f.user_id !== undefined && e.user !== f.user_id) return false
  if (f.session_id !== undefined && e.session !== f.session_id) return false
  if (f.tag !== undefined && !(e.tags ?? []).includes(f.tag)) return false
  for (const [k, v] of f.meta ?? []) if (e.meta === null || !Object.hasOwn(e.meta, k) || metaText(e.meta[k]) !== v) return false
  return true
}

// ---------------------------------------------------------------------------------------------
// The naive figures

const dollars = (nanos: number) => Math.round(nanos) / 1e9
const round3 = (x: number) => Math.round(x * 1000) / 1000
/** Nearest rank: the ⌈q·n⌉-th smallest (ms). */
const rank = (xs: readonly number[], q: number) => [...xs].sort((a, b) => a - b)[Math.max(1, Math.ceil(q * xs.length)) - 1]

interface Fig {
  requests: number
  prompt: number
  completion: number
  nanos: number
  errors: number
  latUs: number
  lats: number[]
}
const emptyFig = (): Fig => ({ requests: 0, prompt: 0, completion: 0, nanos: 0, errors: 0, latUs: 0, lats: [] })
function add(f: Fig, e: Ev): void {
  f.requests++
  f.prompt += e.prompt
  f.completion += e.completion
  f.nanos += e.nanos
  f.errors += isError(e) ? 1 : 0
  f.latUs += e.latency * 1000
  f.lats.push(e.latency)
}
const figOf = (events: readonly Ev[]) => {
  const f = emptyFig()
  for (const e of events) add(f, e)
  return f
}

/** Within the sketch's 1% of the nearest-rank value (wire rounding to 0.001 ms aside). */
function checkQuantile(label: string, got: unknown, lats: readonly number[], q: number): void {
  if (lats.length === 0) {
    if (got !== null) throw new Error(`${label}: p${q * 100} ${String(got)} with no data, want null`)
    return
  }
  const want = rank(lats, q)
  if (typeof got !== 'number' || Math.abs(got - want) > want * 0.01 + 0.0011) throw new Error(`${label}: p${q * 100} ${String(got)}, want ${want} (nearest rank) within 1%`)
}

function same(label: string, got: unknown, want: unknown): void {
  const g = JSON.stringify(got)
  const w = JSON.stringify(want)
  if (g !== w) throw new Error(`${label}:\n  got  ${g}\n  want ${w}`)
}

/** A breakdown group as the wire shows it, without p95 (checked within 1%). */
const groupJson = (f: Fig) => ({
  requests: f.requests,
  total_tokens: f.prompt + f.completion,
  prompt_tokens: f.prompt,
  completion_tokens: f.completion,
  total_cost: dollars(f.nanos),
  avg_latency_ms: f.requests === 0 ? 0 : round3(f.latUs / f.requests / 1000),
  error_rate: f.requests === 0 ? 0 : f.errors / f.requests,
})

function cmpValue(a: string | null, b: string | null): number {
  if (a === b) return 0
  if (a === null) return 1
  if (b === null) return -1
  return a < b ? -1 : 1
}

/**
 * Known deviations from DESIGN §6, found by this test and reported (pinned by the deterministic
 * tests at the end of this file). Off by default: the property checks the design. With
 * `DIMENSIONS_PROPERTY_KNOWN=tagDup,logNames` a breakdown showing them is accepted as well, to
 * check everything else while they are open.
 *  - tagDup: by=tag counts an event once per capped tag in "(other)" (twice for two).
 *  - logNames: a query answered from the log (a filter past a cap) names capped values by
 *    themselves instead of "(other)".
 */
interface Deviations {
  tagDup: boolean
  logNames: boolean
}
const KNOWN: Deviations = {
  tagDup: (process.env.DIMENSIONS_PROPERTY_KNOWN ?? '').includes('tagDup'),
  logNames: (process.env.DIMENSIONS_PROPERTY_KNOWN ?? '').includes('logNames'),
}

/** Whether the server must answer from the log: a filter names a value or key memory does not keep. */
function logPath(f: Filters, k: Kept): boolean {
  return (
    (f.user_id !== undefined && !k.users.includes(f.user_id)) ||
    (f.session_id !== undefined && !k.sessions.includes(f.session_id)) ||
    (f.tag !== undefined && !k.tags.includes(f.tag)) ||
    (f.meta ?? []).some(([key, v]) => !k.metaKeys.includes(key) || !k.metaValues.get(key)!.includes(v))
  )
}

/**
 * The groups an event falls in for `by` (DESIGN §6): values past a cap as "(other)", events
 * without the dimension as null; a key past the metadata key cap has no dictionary, so its
 * values show as themselves. For `tag`, each distinct group once.
 */
function groupsOf(e: Ev, by: string, kept: Kept, logPath: boolean, dev: Deviations): Array<string | null> {
  const cap = (list: string[], v: string) => (list.includes(v) || (logPath && dev.logNames) ? v : OTHER)
  switch (by) {
    case 'model':
      return [e.model]
    case 'provider':
      return [e.provider]
    case 'user_id':
      return [e.user === null ? null : cap(kept.users, e.user)]
    case 'session_id':
      return [e.session === null ? null : cap(kept.sessions, e.session)]
    case 'tag':
      return e.tags === null || e.tags.length === 0 ? [null] : dev.tagDup && !logPath ? e.tags.map((x) => cap(kept.tags, x)) : [...new Set(e.tags.map((x) => cap(kept.tags, x)))]
    default: {
      const key = by.slice('metadata.'.length)
      const v = e.meta !== null && Object.hasOwn(e.meta, key) ? metaText(e.meta[key]) : null
      if (v === null) return [null]
      return kept.metaKeys.includes(key) ? [cap(kept.metaValues.get(key)!, v)] : [v]
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checks of one answer against the events of its project

/** Throws unless the answer equals the naive one; returns how many events matched. */
function checkAnswer(q: Query, url: string, res: { statusCode: number; body: string }, events: readonly Ev[], kept: Kept): number {
  const label = `${q.project === 0 ? 'A' : 'B'} ${url}`
  if (res.statusCode !== 200) throw new Error(`${label}: status ${res.statusCode} ${res.body}`)
  const got = JSON.parse(res.body)
  const [start, end] = rangeOf(q)
  const rows = events.filter((e) => e.ts >= start && e.ts < end && matches(e, q.filters))
  const all = figOf(rows)
  switch (q.kind) {
    case 'metrics': {
      const want = groupJson(all)
      same(`${label} figures`, {
        total_requests: got.total_requests,
        total_tokens: got.total_tokens,
        prompt_tokens: got.prompt_tokens,
        completion_tokens: got.completion_tokens,
        cached_tokens: got.cached_tokens,
        reasoning_tokens: got.reasoning_tokens,
        total_cost: got.total_cost,
        avg_latency_ms: got.avg_latency_ms,
        error_count: got.error_count,
        error_rate: got.error_rate,
        unpriced_requests: got.unpriced_requests,
      }, {
        total_requests: want.requests,
        total_tokens: want.total_tokens,
        prompt_tokens: want.prompt_tokens,
        completion_tokens: want.completion_tokens,
        cached_tokens: 0,
        reasoning_tokens: 0,
        total_cost: want.total_cost,
        avg_latency_ms: want.avg_latency_ms,
        error_count: all.errors,
        error_rate: want.error_rate,
        unpriced_requests: 0,
      })
      for (const [field, p] of [['p50_latency_ms', 0.5], ['p95_latency_ms', 0.95], ['p99_latency_ms', 0.99]] as const) checkQuantile(label, got[field], all.lats, p)
      break
    }
    case 'costs': {
      const by = new Map<string, { model: string; provider: string; f: Fig }>()
      for (const e of rows) {
        const key = `${e.model}\u0000${e.provider}`
        let row = by.get(key)
        if (row === undefined) by.set(key, (row = { model: e.model, provider: e.provider, f: emptyFig() }))
        add(row.f, e)
      }
      const want = [...by.values()]
        .sort((a, b) => b.f.nanos - a.f.nanos || b.f.requests - a.f.requests || (a.model < b.model ? -1 : a.model > b.model ? 1 : a.provider < b.provider ? -1 : 1))
        .map((r) => ({ model: r.model, provider: r.provider, requests: r.f.requests, total_cost: dollars(r.f.nanos), prompt_tokens: r.f.prompt, completion_tokens: r.f.completion, total_tokens: r.f.prompt + r.f.completion }))
      same(`${label} rows`, got.breakdown.map((r: Record<string, unknown>) => ({ model: r.model, provider: r.provider, requests: r.requests, total_cost: r.total_cost, prompt_tokens: r.prompt_tokens, completion_tokens: r.completion_tokens, total_tokens: r.total_tokens })), want)
      same(`${label} total_cost`, got.total_cost, dollars(all.nanos))
      break
    }
    case 'timeseries': {
      const iv = q.interval === '1h' ? HOUR : 5 * 60_000
      const buckets = new Map<number, Fig>()
      for (const e of rows) {
        const b = Math.floor(e.ts / iv) * iv
        if (!buckets.has(b)) buckets.set(b, emptyFig())
        add(buckets.get(b)!, e)
      }
      const want: unknown[] = []
      for (let b = Math.floor(start / iv) * iv; b < end; b += iv) {
        const f = buckets.get(b) ?? emptyFig()
        want.push({ timestamp: new Date(b).toISOString(), requests: f.requests, prompt_tokens: f.prompt, completion_tokens: f.completion, cost: dollars(f.nanos), errors: f.errors })
      }
      same(`${label} buckets`, got.buckets.map((b: Record<string, unknown>) => ({ timestamp: b.timestamp, requests: b.requests, prompt_tokens: b.prompt_tokens, completion_tokens: b.completion_tokens, cost: b.cost, errors: b.errors })), want)
      got.buckets.forEach((b: { timestamp: string; p95_latency_ms: unknown }) => checkQuantile(`${label} bucket ${b.timestamp}`, b.p95_latency_ms, buckets.get(Date.parse(b.timestamp))?.lats ?? [], 0.95))
      break
    }
    case 'breakdown': {
      // The design's answer; with DIMENSIONS_PROPERTY_KNOWN set, a known deviation's answer is accepted too.
      const variants: Deviations[] = [{ tagDup: false, logNames: false }]
      if (KNOWN.tagDup || KNOWN.logNames) variants.push({ tagDup: KNOWN.tagDup, logNames: KNOWN.logNames })
      let failure: unknown
      for (const v of variants) {
        try {
          checkBreakdown(label, q, got, rows, all, kept, v)
          return rows.length
        } catch (err) {
          failure ??= err
        }
      }
      throw failure
    }
  }
  return rows.length
}

function checkBreakdown(label: string, q: Query, got: any, rows: readonly Ev[], all: Fig, kept: Kept, dev: Deviations): void {
  const groups = new Map<string | null, Fig>()
  for (const e of rows) {
    for (const g of groupsOf(e, q.by, kept, logPath(q.filters, kept), dev)) {
      if (!groups.has(g)) groups.set(g, emptyFig())
      add(groups.get(g)!, e)
    }
  }
  const metric = (f: Fig) => (q.sort === 'cost' ? f.nanos : q.sort === 'requests' ? f.requests : f.prompt + f.completion)
  const sorted = [...groups].sort(([va, a], [vb, b]) => metric(b) - metric(a) || cmpValue(va, vb))
  const shown = sorted.slice(0, q.limit)
  const rest = sorted.slice(q.limit)
  same(`${label} by`, got.by, q.by)
  same(`${label} groups`, got.groups.map((g: Record<string, unknown>) => ({ ...g, p95_latency_ms: undefined })), shown.map(([value, f]) => ({ value, ...groupJson(f), p95_latency_ms: undefined })))
  shown.forEach(([value, f], i) => checkQuantile(`${label} group ${value}`, got.groups[i].p95_latency_ms, f.lats, 0.95))
  if (rest.length === 0) {
    same(`${label} other`, got.other, null)
  } else {
    const other = emptyFig()
    for (const [, f] of rest) {
      other.requests += f.requests
      other.prompt += f.prompt
      other.completion += f.completion
      other.nanos += f.nanos
      other.errors += f.errors
      other.latUs += f.latUs
      other.lats.push(...f.lats)
    }
    same(`${label} other`, { ...got.other, p95_latency_ms: undefined }, { ...groupJson(other), p95_latency_ms: undefined })
    checkQuantile(`${label} other`, got.other.p95_latency_ms, other.lats, 0.95)
  }
  same(`${label} total`, { ...got.total, p95_latency_ms: undefined }, { ...groupJson(all), p95_latency_ms: undefined })
  checkQuantile(`${label} total`, got.total.p95_latency_ms, all.lats, 0.95)
}


// ---------------------------------------------------------------------------------------------

t.test('metrics, costs, timeseries and breakdowns equal a naive scan, for random events, ranges and filters, caps hit', async (t) => {
  const app: TestApp = await makeApp(t, {
    env: { LLMSCOPE_MAX_DIMENSION_VALUES: String(CAP_VALUES), LLMSCOPE_MAX_METADATA_VALUES: String(CAP_META_VALUES), LLMSCOPE_MAX_METADATA_DIMENSIONS: String(CAP_META_KEYS) },
  })
  const inject = (method: 'GET' | 'POST' | 'DELETE', url: string, project: string, payload?: unknown) =>
    app.app.inject({ method, url, headers: { ...adminHeaders, 'x-llmscope-project': project }, payload: payload as object })
  let run = 0
  const stats = { runs: 0, queries: 0, capped: 0, otherGroups: 0, logPath: 0, nonEmpty: 0 }

  const deadline = Date.now() + 60_000
  await fc.assert(
    fc.asyncProperty(fc.array(evArb, { minLength: 20, maxLength: 250 }), fc.array(queryArb, { minLength: 6, maxLength: 16 }), fc.integer({ min: 1, max: 60 }), async (events, queries, chunk) => {
      // Bounded in time: a run started before the limit finishes, later ones pass untried. (Not
      // fast-check's interruptAfterTimeLimit, which abandons the run in flight to go on against
      // an app the test is closing.)
      if (Date.now() > deadline) return
      // A fresh pair of projects per run: fresh dictionaries and caps.
      run++
      const names = [`prop-${run}-a`, `prop-${run}-b`]
      for (const id of names) {
        const res = await inject('POST', '/projects', 'default', { id })
        if (res.statusCode !== 201) throw new Error(`POST /projects ${id}: ${res.statusCode} ${res.body}`)
      }
      // Sent in order (first seen first decides the caps), in batches of `chunk` per project, one by one when chunk is 1.
      for (const p of [0, 1] as const) {
        const mine = events.filter((e) => e.project === p)
        for (let i = 0; i < mine.length; i += chunk) {
          const part = mine.slice(i, i + chunk)
          const res = part.length === 1 ? await inject('POST', '/events/ingest', names[p], body(part[0])) : await inject('POST', '/events/batch', names[p], part.map(body))
          if (res.statusCode !== 202) throw new Error(`ingest into ${names[p]}: ${res.statusCode} ${res.body}`)
        }
      }
      try {
        await check(names, events, queries)
      } finally {
        // Projects count against a cap of 1000 (shrinking runs many): each run's go.
        for (const id of names) await inject('DELETE', `/projects/${id}`, 'default')
      }
    }),
    { numRuns: Number(process.env.DIMENSIONS_PROPERTY_RUNS ?? 30) },
  )

  async function check(names: string[], events: Ev[], queries: Query[]): Promise<void> {
    const byProject = [0, 1].map((p) => events.filter((e) => e.project === p))
    const kept = byProject.map(keptOf)
    stats.runs++
    if (kept.some((k, p) => new Set(byProject[p].map((e) => e.user).filter((u) => u !== null)).size > k.users.length)) stats.capped++
    for (const q of queries) {
      const url = urlOf(q)
      const res = await inject('GET', url, names[q.project])
      const matched = checkAnswer(q, url, res, byProject[q.project], kept[q.project])
      if (matched > 0) stats.nonEmpty++
      stats.queries++
      if (q.kind === 'breakdown' && res.body.includes('"(other)"')) stats.otherGroups++
      if (logPath(q.filters, kept[q.project])) stats.logPath++
    }
    // The dictionaries as GET /analytics/dimensions shows them.
    for (const p of [0, 1] as const) {
      const dims = (await inject('GET', '/analytics/dimensions', names[p])).json().dimensions
      const k = kept[p]
      const seen = (xs: Array<string | null>) => new Set(xs.filter((x) => x !== null))
      const users = seen(byProject[p].map((e) => e.user))
      const sessions = seen(byProject[p].map((e) => e.session))
      const tags = seen(byProject[p].flatMap((e) => e.tags ?? []))
      const want = [
        ...(users.size > 0 ? [{ name: 'user_id', values: k.users.length, capped: users.size > k.users.length }] : []),
        ...(sessions.size > 0 ? [{ name: 'session_id', values: k.sessions.length, capped: sessions.size > k.sessions.length }] : []),
        ...(tags.size > 0 ? [{ name: 'tag', values: k.tags.length, capped: tags.size > k.tags.length }] : []),
        ...k.metaKeys.map((key) => {
          const values = seen(byProject[p].map((e) => (e.meta !== null && Object.hasOwn(e.meta, key) ? metaText(e.meta[key]) : null)))
          return { name: `metadata.${key}`, values: k.metaValues.get(key)!.length, capped: values.size > k.metaValues.get(key)!.length }
        }),
      ]
      same(`${names[p]} dimensions`, dims, want)
    }
  }
  t.comment(`runs ${stats.runs}, queries ${stats.queries} (${stats.nonEmpty} non-empty), runs with users capped ${stats.capped}, breakdowns with (other) ${stats.otherGroups}, queries on the log path ${stats.logPath}`)
  t.ok(stats.otherGroups > 0, 'some breakdown showed an (other) group')
  t.ok(stats.logPath > 0, 'some filter named a value or key past a cap')
})

// ---------------------------------------------------------------------------------------------
// The deviations the property found, pinned on the smallest inputs (see KNOWN above).

t.test('by=tag: an event with two tags past the cap counts once in "(other)"', async (t) => {
  const app = await makeApp(t, { env: { LLMSCOPE_MAX_DIMENSION_VALUES: '3' } })
  const ev = (tags: string[]) => ({ timestamp: new Date(base).toISOString(), model: 'm-a', provider: 'p1', latency_ms: 10, cost: 0.001, tags })
  const sent = await app.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [ev(['a']), ev(['b']), ev(['c']), ev(['d', 'e'])] })
  t.equal(sent.statusCode, 202)
  const b = (await app.app.inject({ method: 'GET', url: '/analytics/breakdown?by=tag&sort=requests', headers: adminHeaders })).json()
  t.equal(b.total.requests, 4)
  const other = b.groups.find((g: { value: string | null }) => g.value === OTHER)
  t.equal(other?.requests, 1, 'one event in the (other) group (tags d and e are both past the cap)')
  t.equal(other?.total_cost, 0.001, 'its cost once')
})

t.test('a filter past a cap (answered from the log) still groups capped values as "(other)"', async (t) => {
  const app = await makeApp(t, { env: { LLMSCOPE_MAX_DIMENSION_VALUES: '3' } })
  const ev = (user: string, tags: string[]) => ({ timestamp: new Date(base).toISOString(), model: 'm-a', provider: 'p1', latency_ms: 10, cost: 0.001, user_id: user, tags })
  const sent = await app.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [ev('u0', ['a']), ev('u1', ['b']), ev('u2', ['c']), ev('u3', ['d'])] })
  t.equal(sent.statusCode, 202)
  const get = async (url: string) => (await app.app.inject({ method: 'GET', url, headers: adminHeaders })).json()
  const values = (b: { groups: Array<{ value: string | null }> }) => b.groups.map((g) => g.value)
  t.same(values(await get('/analytics/breakdown?by=user_id&sort=requests')), [OTHER, 'u0', 'u1', 'u2'], 'u3 is past the cap of 3 users')
  t.same(values(await get('/analytics/breakdown?by=user_id&tag=d')), [OTHER], 'filtered on a capped tag (the log path): u3 is still (other)')
  t.same(values(await get('/analytics/breakdown?by=tag&user_id=u3')), [OTHER], 'filtered on a capped user (the log path): tag d is still (other)')
})

t.test('by=session_id: the latency of `other` is that of the events past the limit', async (t) => {
  // Found by the property (seed 1408943307): other's p95 came out as another group's latency.
  const app = await makeApp(t, { env: { LLMSCOPE_MAX_DIMENSION_VALUES: '3' } })
  const at = (iso: string) => Date.parse(iso)
  const evs: Array<[number, string, string, number, string | null, number]> = [
    // ts, model, provider, latency ms, session, tokens
    [at('2026-03-02T00:00:00.000Z'), 'm-a', 'p1', 0, 's0', 0],
    [at('2026-03-01T05:12:14.705Z'), 'm-a', 'p1', 0, 's4', 0],
    [at('2026-03-02T00:00:00.000Z'), 'm-a', 'p1', 0, null, 0],
    [at('2026-03-02T00:00:00.000Z'), 'm-a', 'p1', 1, null, 0],
    [at('2026-03-02T01:59:33.431Z'), 'm-b', 'p1', 100, null, 1881],
    [at('2026-03-02T20:20:59.703Z'), 'm-c', 'p1', 1621, 's3', 1395],
    [at('2026-03-02T05:15:17.435Z'), 'm-c', 'p2', 474, 's3', 2289],
    [at('2026-03-02T00:34:53.486Z'), 'm-a', 'p2', 3625, 's1', 1761],
    [at('2026-03-02T00:37:13.267Z'), 'm-a', 'p2', 4999, 's3', 557],
    [at('2026-03-02T00:49:34.209Z'), 'm-c', 'p1', 4999, null, 634],
  ]
  const payload = evs.map(([ts, model, provider, latency, session, tokens]) => ({ timestamp: new Date(ts).toISOString(), model, provider, latency_ms: latency, prompt_tokens: tokens, cost: 0, ...(session === null ? {} : { session_id: session }) }))
  t.equal((await app.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload })).statusCode, 202)
  const b = (await app.app.inject({ method: 'GET', url: '/analytics/breakdown?by=session_id&limit=4&sort=tokens', headers: adminHeaders })).json()
  // s3 4241 tokens, null 2515, (other) = s1 1761, s0 0, then s4 0 (ties by value): s4 is `other`.
  t.same(b.groups.map((g: { value: string | null }) => g.value), ['s3', null, OTHER, 's0'])
  t.equal(b.other?.requests, 1, 'other holds the one s4 event')
  t.equal(b.other?.p95_latency_ms, 0, "other's p95 is its one event's latency, 0 ms")
  const want = [4999, 4999, 3625, 0]
  b.groups.forEach((g: { value: string | null; p95_latency_ms: number }, i: number) => t.ok(Math.abs(g.p95_latency_ms - want[i]) <= want[i] * 0.01, `group ${g.value}: p95 ${g.p95_latency_ms} ~ ${want[i]}`))
})

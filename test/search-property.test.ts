/**
 * GET /events against a naive reference (DESIGN §7): random events (many on the same
 * millisecond, with equal latencies and costs), random filters, ranges, sorts and page sizes;
 * every page sequence equals the reference's order. Then paging while events arrive between
 * pages: no event that existed at the first page is skipped or repeated, and the pages stay in
 * order. Run on memory (default caps), on the log path (tiny dimension caps), and on hours
 * folded by retention.
 */
import t from 'tap'
import fc from 'fast-check'
import { makeApp, ADMIN_KEY, type TestApp } from './helpers/app.js'
import { seqOfEventId } from '../src/events.js'

const BASE = Date.parse('2026-05-10T00:00:00.000Z')
const HOUR = 3_600_000

interface Sent {
  id: string
  seq: number
  ts: number
  model: string
  status: 'success' | 'error'
  user: string | null
  session: string | null
  tags: string[] | null
  feature: string | null
  latencyUs: number
  costNanos: number
}

const MODELS = ['model-a', 'model-b', 'model-c']
const USERS = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6']
const SESSIONS = ['s1', 's2', 's3', 's4']
const TAGS = ['t1', 't2', 't3', 't4']
const FEATURES = ['f1', 'f2', 'f3', 'f4', 'f5']

/** A few dozen instants over three days (many events share one), some mid-hour, some on the hour. */
const arbInstant = fc.oneof(
  fc.integer({ min: 0, max: 72 }).map((h) => BASE + h * HOUR),
  fc.tuple(fc.integer({ min: 0, max: 72 }), fc.integer({ min: 0, max: 3 })).map(([h, m]) => BASE + h * HOUR + m * 17 * 60_000 + 123),
  fc.constantFrom(BASE + 5 * HOUR + 1, BASE + 30 * HOUR - 1)
)

const arbEvent = fc.record({
  ts: arbInstant,
  model: fc.constantFrom(...MODELS),
  error: fc.boolean(),
  user: fc.option(fc.constantFrom(...USERS)),
  session: fc.option(fc.constantFrom(...SESSIONS)),
  tags: fc.option(fc.uniqueArray(fc.constantFrom(...TAGS), { minLength: 1, maxLength: 3 })),
  feature: fc.option(fc.constantFrom(...FEATURES)),
  latency: fc.constantFrom(0, 10, 10.5, 250, 999.999, 4000),
  // Caller costs (exact nanos); null: an unknown model's event is unpriced, cost 0.
  cost: fc.option(fc.constantFrom(0.001, 0.002, 0.0125, 1.5))
})
type Gen = typeof arbEvent extends fc.Arbitrary<infer T> ? T : never

const body = (e: Gen): Record<string, unknown> => {
  const out: Record<string, unknown> = { timestamp: new Date(e.ts).toISOString(), model: e.model, provider: 'acme', prompt_tokens: 5, completion_tokens: 1, latency_ms: e.latency }
  if (e.error) out.status = 'error'
  if (e.user !== null) out.user_id = e.user
  if (e.session !== null) out.session_id = e.session
  if (e.tags !== null) out.tags = e.tags
  if (e.feature !== null) out.metadata = { feature: e.feature, other: 1 }
  if (e.cost !== null) out.cost = e.cost
  return out
}

/** Up to `maxFilters` filters (values from the pools, or never seen), maybe a range, a sort and a page size up to `maxLimit`. */
const queryArb = (maxFilters: number, maxLimit: number) => fc
  .record({
    filters: fc.uniqueArray(
      fc.oneof(
        fc.constantFrom('model-a', 'model-b', 'model-a,model-c', 'nope').map((v) => ['model', v]),
        fc.constantFrom('success', 'error').map((v) => ['status', v]),
        fc.constantFrom(...USERS, 'nobody').map((v) => ['user_id', v]),
        fc.constantFrom(...SESSIONS).map((v) => ['session_id', v]),
        fc.constantFrom(...TAGS).map((v) => ['tag', v]),
        fc.constantFrom(...FEATURES, 'f-none').map((v) => ['metadata.feature', v])
      ),
      { maxLength: maxFilters, selector: (kv) => kv[0] }
    ),
    range: fc.option(fc.tuple(fc.option(arbInstant), fc.option(arbInstant.map((ms) => ms + HOUR)))),
    sort: fc.constantFrom('time', 'latency', 'cost'),
    limit: fc.integer({ min: 1, max: maxLimit })
  })
  .map(({ filters, range, sort, limit }) => {
    const q: Record<string, string> = Object.fromEntries(filters)
    q.sort = sort
    q.limit = String(limit)
    if (range !== null) {
      // A range is never reversed (that is a 400, tested elsewhere).
      const [a, b] = range[0] !== null && range[1] !== null && range[1] < range[0] ? [range[1], range[0]] : range
      if (a !== null) q.start_time = new Date(a).toISOString()
      if (b !== null) q.end_time = new Date(b).toISOString()
    }
    return q
  })
const arbQuery = queryArb(3, 25)
type Query = Record<string, string>

function reference(sent: Sent[], p: Query): Sent[] {
  const start = p.start_time === undefined ? -Infinity : Date.parse(p.start_time)
  const end = p.end_time === undefined ? Infinity : Date.parse(p.end_time)
  const sort = p.sort ?? 'time'
  const key = (e: Sent) => (sort === 'time' ? e.ts : sort === 'latency' ? e.latencyUs : e.costNanos)
  return sent
    .filter(
      (e) =>
        e.ts >= start &&
        e.ts < end &&
        (p.model === undefined || p.model.split(',').includes(e.model)) &&
        (p.status === undefined || e.status === p.status) &&
        (p.user_id === undefined || e.user === p.user_id) &&
        (p.session_id === undefined || e.session === p.session_id) &&
        (p.tag === undefined || (e.tags ?? []).includes(p.tag)) &&
        (p['metadata.feature'] === undefined || e.feature === p['metadata.feature'])
    )
    .sort((a, b) => key(b) - key(a) || b.seq - a.seq)
}

/** A project of its own per run: the runs share one app (and its caps, which are per project). */
let runs = 0
async function newProject(app: TestApp): Promise<Record<string, string>> {
  const id = `run-${++runs}`
  const res = await app.app.inject({ method: 'POST', url: '/projects', headers: { 'x-api-key': ADMIN_KEY }, payload: { id } })
  if (res.statusCode !== 201) throw new Error(`POST /projects: ${res.statusCode} ${res.body}`)
  return { 'x-api-key': ADMIN_KEY, 'x-llmscope-project': id }
}

async function send(app: TestApp, headers: Record<string, string>, events: Gen[]): Promise<Sent[]> {
  if (events.length === 0) return []
  const res = await app.app.inject({ method: 'POST', url: '/events/batch', headers, payload: events.map(body) })
  if (res.statusCode !== 202) throw new Error(`batch: ${res.statusCode} ${res.body}`)
  const ids = res.json().event_ids as string[]
  return events.map((e, i) => ({
    id: ids[i],
    seq: seqOfEventId(ids[i]) as number,
    ts: e.ts,
    model: e.model,
    status: e.error ? 'error' : 'success',
    user: e.user,
    session: e.session,
    tags: e.tags,
    feature: e.feature,
    latencyUs: Math.round(e.latency * 1000),
    costNanos: e.cost === null ? 0 : Math.round(e.cost * 1e9)
  }))
}

interface Page {
  events: Array<{ id: string; seq: number; timestamp: string; latency_ms: number; cost: number }>
  next_cursor: string | null
}

async function getPage(app: TestApp, headers: Record<string, string>, p: Query, cursor: string | null): Promise<Page> {
  const q = new URLSearchParams(cursor === null ? p : { ...p, cursor }).toString()
  const res = await app.app.inject({ url: `/events?${q}`, headers })
  if (res.statusCode !== 200) throw new Error(`GET /events?${q}: ${res.statusCode} ${res.body}`)
  return res.json() as Page
}

// Seeded, so the "not vacuous" counts below are the same every run (unseeded, a draw with few
// multi-page queries failed one in a loaded full suite while every answer matched);
// SEARCH_PROPERTY_SEED explores others.
const SEED = Number(process.env.SEARCH_PROPERTY_SEED ?? 20261202)

const apps: Array<[string, Record<string, string>, boolean]> = [
  ['memory', {}, false],
  ['log path (tiny caps)', { LLMSCOPE_MAX_DIMENSION_VALUES: '2', LLMSCOPE_MAX_METADATA_VALUES: '2', LLMSCOPE_MAX_ATTRIBUTE_SETS: '4' }, false],
  ['folded hours', { LLMSCOPE_RETENTION_EVENTS: '8' }, true]
]

for (const [name, env, fold] of apps) {
  t.test(`pages equal the reference: ${name}`, async (t) => {
    const app = await makeApp(t, { env })
    let queried = 0
    let nonEmpty = 0
    let multiPage = 0
    await fc.assert(
      fc.asyncProperty(fc.array(arbEvent, { minLength: 0, maxLength: 150, size: 'max' }), fc.array(arbQuery, { minLength: 1, maxLength: 6 }), async (events, queries) => {
        const headers = await newProject(app)
        const sent = await send(app, headers, events)
        if (fold) await app.engine.sync().then(() => app.engine.retain())
        for (const p of queries) {
          const want = reference(sent, p).map((e) => e.id)
          const got: string[] = []
          let cursor: string | null = null
          let pages = 0
          do {
            const page = await getPage(app, headers, p, cursor)
            got.push(...page.events.map((e) => e.id))
            cursor = page.next_cursor
            if (++pages > 200) throw new Error('no end of pages')
          } while (cursor !== null)
          queried++
          if (want.length > 0) nonEmpty++
          if (pages > 2) multiPage++
          if (JSON.stringify(got) !== JSON.stringify(want)) {
            t.same(got, want, `${new URLSearchParams(p).toString()}: pages equal the reference`)
            return false
          }
        }
        return true
      }),
      { numRuns: 40, seed: SEED }
    )
    t.pass('every run matched')
    // Not vacuous: many queries match something, many take several pages.
    t.ok(nonEmpty > queried / 3 && multiPage > queried / 10, `${nonEmpty} of ${queried} queries matched events, ${multiPage} took 3 pages or more`)
    if (fold) t.ok(app.engine.topology.retentionStats().coarseRows > 0, 'hours were folded')
  })

  t.test(`paging while events arrive: none that existed is skipped or repeated: ${name}`, async (t) => {
    const app = await makeApp(t, { env })
    let existingTotal = 0
    let multiPage = 0
    let lateListed = 0
    await fc.assert(
      fc.asyncProperty(
        fc.array(arbEvent, { minLength: 1, maxLength: 100, size: 'max' }),
        queryArb(1, 10),
        fc.array(fc.array(arbEvent, { maxLength: 12, size: 'max' }), { minLength: 1, maxLength: 12 }),
        async (events, p, arrivals) => {
          const headers = await newProject(app)
          const sent = await send(app, headers, events)
          if (fold) await app.engine.sync().then(() => app.engine.retain())
          const existing = reference(sent, p).map((e) => e.id)
          const all = [...sent]
          const sort = p.sort ?? 'time'
          const seen: Array<{ id: string; key: number; seq: number }> = []
          let cursor: string | null = null
          let pages = 0
          do {
            const page = await getPage(app, headers, p, cursor)
            for (const e of page.events) {
              const key = sort === 'time' ? Date.parse(e.timestamp) : sort === 'latency' ? Math.round(e.latency_ms * 1000) : Math.round(e.cost * 1e9)
              seen.push({ id: e.id, key, seq: e.seq })
            }
            cursor = page.next_cursor
            // Events arrive between the first pages (then stop, so the paging ends): newer, older,
            // and on the same instants as the ones seen.
            const more = pages < arrivals.length ? arrivals[pages] : []
            all.push(...(await send(app, headers, more)))
            if (fold) await app.engine.sync().then(() => app.engine.retain())
            if (++pages > 300) throw new Error('no end of pages')
          } while (cursor !== null)
          const ids = seen.map((s) => s.id)
          existingTotal += existing.length
          if (pages > 2) multiPage++
          lateListed += ids.length - ids.filter((id) => existing.includes(id)).length
          const unique = new Set(ids)
          if (unique.size !== ids.length) {
            t.fail(`repeated: ${ids.filter((id, i) => ids.indexOf(id) !== i).join(', ')}`)
            return false
          }
          const skipped = existing.filter((id) => !unique.has(id))
          if (skipped.length > 0) {
            t.fail(`skipped: ${skipped.join(', ')}`)
            return false
          }
          for (let i = 1; i < seen.length; i++) {
            const a = seen[i - 1]
            const b = seen[i]
            if (!(a.key > b.key || (a.key === b.key && a.seq > b.seq))) {
              t.fail(`out of order at ${i}: ${JSON.stringify(a)} then ${JSON.stringify(b)}`)
              return false
            }
          }
          // Whatever arrived and was listed matches the query (no stray event).
          const matching = new Set(reference(all, p).map((e) => e.id))
          const stray = ids.filter((id) => !matching.has(id))
          if (stray.length > 0) {
            t.fail(`not matching the query: ${stray.join(', ')}`)
            return false
          }
          return true
        }
      ),
      { numRuns: 30, seed: SEED + 1 }
    )
    t.pass('every run kept its order, skipped nothing, repeated nothing')
    t.ok(existingTotal > 200 && multiPage > 5 && lateListed > 0, `not vacuous: ${existingTotal} events to find, ${multiPage} runs of 3+ pages, ${lateListed} late events listed`)
    if (name.startsWith('log path')) {
      const dims = (await app.app.inject({ url: '/analytics/dimensions', headers: { 'x-api-key': ADMIN_KEY, 'x-llmscope-project': `run-${runs}` } })).json().dimensions as Array<{ capped: boolean }>
      t.ok(dims.some((d) => d.capped), 'the caps were reached (the log path answered)')
    }
  })
}

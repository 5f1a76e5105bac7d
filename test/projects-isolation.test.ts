/**
 * Projects isolate (DESIGN §5): random interleavings of ingest, rules, keys and queries in two
 * projects never show one project's figures, events, rules or dimensions in the other's
 * answers; restart and crash (kill -9) answer the same as before; DELETE /projects/:id removes
 * every piece of a project, and nothing of it comes back after a restart or a crash.
 */
import t from 'tap'
import fc from 'fast-check'
import { ADMIN_KEY, makeApp, type TestApp } from './helpers/app.js'

const HOUR = 3_600_000
const DAY = 24 * HOUR
const base = Date.parse('2026-03-01T00:00:00.000Z')

interface Ev {
  ts: number
  model: string
  user: string | null
  tags: string[] | null
  feature: string | null
  nanos: number
  prompt: number
  latency: number
  error: boolean
}

/** Users and tags overlap between the projects (separate dictionaries), and each has its own. */
const evArb = (p: 0 | 1): fc.Arbitrary<Ev> =>
  fc.record({
    ts: fc.integer({ min: 0, max: 2 * DAY - 1 }).map((o) => base + o),
    model: fc.constantFrom('m-a', 'm-b', p === 0 ? 'only-a' : 'only-b'),
    user: fc.option(fc.constantFrom('u1', 'u2', p === 0 ? 'ua' : 'ub')),
    tags: fc.option(fc.uniqueArray(fc.constantFrom('t1', 't2', p === 0 ? 'ta' : 'tb'), { minLength: 1, maxLength: 2 })),
    feature: fc.option(fc.constantFrom('search', p === 0 ? 'fa' : 'fb')),
    nanos: fc.integer({ min: 0, max: 3_000_000 }),
    prompt: fc.integer({ min: 0, max: 1000 }),
    latency: fc.integer({ min: 0, max: 3000 }),
    error: fc.boolean(),
  })

const body = (e: Ev) => ({
  timestamp: new Date(e.ts).toISOString(),
  model: e.model,
  provider: 'prov',
  prompt_tokens: e.prompt,
  completion_tokens: 3,
  latency_ms: e.latency,
  cost: e.nanos / 1e9,
  status: e.error ? 'error' : 'success',
  ...(e.user === null ? {} : { user_id: e.user }),
  ...(e.tags === null ? {} : { tags: e.tags }),
  ...(e.feature === null ? {} : { metadata: { feature: e.feature } }),
})

type Headers = Record<string, string>
const owner = (project: string): Headers => ({ 'x-api-key': ADMIN_KEY, 'x-llmscope-project': project })
const keyed = (key: string): Headers => ({ 'x-api-key': key })

function same(label: string, got: unknown, want: unknown): void {
  const g = JSON.stringify(got)
  const w = JSON.stringify(want)
  if (g !== w) throw new Error(`${label}:\n  got  ${g}\n  want ${w}`)
}

/** What a project holds, as the test sent it. */
interface ProjectModel {
  name: string
  events: Ev[]
  ids: string[]
  rules: string[]
  /** Keys made with POST /keys, by scope. */
  keys: { read: string[]; admin: string[]; ingest: string[] }
}

const naiveMetrics = (events: readonly Ev[]) => ({
  total_requests: events.length,
  prompt_tokens: events.reduce((a, e) => a + e.prompt, 0),
  total_cost: events.reduce((a, e) => a + e.nanos, 0) / 1e9,
  error_count: events.filter((e) => e.error).length,
})

function naiveGroups(events: readonly Ev[], by: string): Array<[string | null, number]> {
  const m = new Map<string | null, number>()
  for (const e of events) {
    const keys = by === 'user_id' ? [e.user] : by === 'tag' ? (e.tags ?? [null]) : by === 'metadata.feature' ? [e.feature] : [e.model]
    for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1)
  }
  return [...m].sort(([va, a], [vb, b]) => b - a || (va === vb ? 0 : va === null ? 1 : vb === null ? -1 : va < vb ? -1 : 1))
}

function naiveDimensions(events: readonly Ev[]) {
  const distinct = (xs: Array<string | null>) => new Set(xs.filter((x) => x !== null)).size
  const out: Array<{ name: string; values: number; capped: boolean }> = []
  const users = distinct(events.map((e) => e.user))
  const tags = distinct(events.flatMap((e) => e.tags ?? []))
  const features = distinct(events.map((e) => e.feature))
  if (users > 0) out.push({ name: 'user_id', values: users, capped: false })
  if (tags > 0) out.push({ name: 'tag', values: tags, capped: false })
  if (features > 0) out.push({ name: 'metadata.feature', values: features, capped: false })
  return out
}

/** Every answer a project gives, through every way of naming it, checked against its model. */
async function checkProject(app: TestApp, m: ProjectModel, via: Headers, label: string): Promise<void> {
  const get = async (url: string) => {
    const res = await app.app.inject({ method: 'GET', url, headers: via })
    if (res.statusCode !== 200) throw new Error(`${label} GET ${url}: ${res.statusCode} ${res.body}`)
    return res.json()
  }
  const metrics = await get('/analytics/metrics')
  same(`${label} metrics`, { total_requests: metrics.total_requests, prompt_tokens: metrics.prompt_tokens, total_cost: metrics.total_cost, error_count: metrics.error_count }, naiveMetrics(m.events))
  for (const user of ['u1', 'ua', 'ub']) {
    const f = await get(`/analytics/metrics?user_id=${user}`)
    same(`${label} metrics user ${user}`, f.total_requests, m.events.filter((e) => e.user === user).length)
  }
  for (const by of ['user_id', 'tag', 'metadata.feature', 'model']) {
    const b = await get(`/analytics/breakdown?by=${by}&limit=1000&sort=requests`)
    same(`${label} breakdown by ${by}`, b.groups.map((g: { value: string | null; requests: number }) => [g.value, g.requests]), naiveGroups(m.events, by))
    same(`${label} breakdown by ${by} total`, b.total.requests, m.events.length)
  }
  same(`${label} dimensions`, (await get('/analytics/dimensions')).dimensions, naiveDimensions(m.events))
  const costs = await get('/analytics/costs')
  same(`${label} cost models`, costs.breakdown.map((r: { model: string }) => r.model).sort(), [...new Set(m.events.map((e) => e.model))].sort())
  same(`${label} rules`, (await get('/alerts/rules')).rules.map((r: { id: string }) => r.id).sort(), [...m.rules].sort())
}

/** The other project's event and rule ids answer 404 here; a few of its own answer 200. */
async function checkIds(app: TestApp, m: ProjectModel, other: ProjectModel, via: Headers, label: string, pick: number): Promise<void> {
  const status = async (url: string) => (await app.app.inject({ method: 'GET', url, headers: via })).statusCode
  for (const [i, id] of m.ids.entries()) {
    if (i % 7 !== pick % 7) continue
    const res = await app.app.inject({ method: 'GET', url: `/events/${id}`, headers: via })
    if (res.statusCode !== 200) throw new Error(`${label} own event ${id}: ${res.statusCode}`)
    same(`${label} own event ${id}`, [res.json().timestamp, res.json().user_id], [new Date(m.events[i].ts).toISOString(), m.events[i].user])
  }
  for (const id of other.ids) if ((await status(`/events/${id}`)) !== 404) throw new Error(`${label}: the other project's event ${id} does not answer 404`)
  for (const id of other.rules) if ((await status(`/alerts/rules/${id}`)) !== 404) throw new Error(`${label}: the other project's rule ${id} does not answer 404`)
  for (const id of m.rules) if ((await status(`/alerts/rules/${id}`)) !== 200) throw new Error(`${label}: own rule ${id} does not answer 200`)
}

type Op =
  | { kind: 'ingest'; p: 0 | 1; events: Ev[]; viaKey: boolean }
  | { kind: 'rule'; p: 0 | 1; user: string | null }
  | { kind: 'key'; p: 0 | 1; scope: 'read' | 'admin' | 'ingest'; byAdmin: boolean }
  | { kind: 'query'; p: 0 | 1; via: 'header' | 'param' | 'key'; pick: number }
  | { kind: 'cross'; p: 0 | 1 }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<0 | 1>(0, 1).chain((p) => fc.record({ kind: fc.constant('ingest' as const), p: fc.constant(p), events: fc.array(evArb(p), { minLength: 1, maxLength: 25 }), viaKey: fc.boolean() })) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('rule' as const), p: fc.constantFrom<0 | 1>(0, 1), user: fc.option(fc.constantFrom('u1', 'ua')) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('key' as const), p: fc.constantFrom<0 | 1>(0, 1), scope: fc.constantFrom<'read' | 'admin' | 'ingest'>('read', 'admin', 'ingest'), byAdmin: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('query' as const), p: fc.constantFrom<0 | 1>(0, 1), via: fc.constantFrom<'header' | 'param' | 'key'>('header', 'param', 'key'), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('cross' as const), p: fc.constantFrom<0 | 1>(0, 1) }) },
)

/** Applies one operation to the app and the models, checking its answer. */
async function apply(app: TestApp, models: [ProjectModel, ProjectModel], op: Op): Promise<void> {
  const m = models[op.p]
  const other = models[1 - op.p]
  const inject = (method: 'GET' | 'POST', url: string, headers: Headers, payload?: unknown) => app.app.inject({ method, url, headers, payload: payload as object })
  switch (op.kind) {
    case 'ingest': {
      // With a project ingest key, no header: the key's project decides.
      const key = m.keys.ingest[0]
      const headers = op.viaKey && key !== undefined ? keyed(key) : owner(m.name)
      const res = op.events.length === 1 ? await inject('POST', '/events/ingest', headers, body(op.events[0])) : await inject('POST', '/events/batch', headers, op.events.map(body))
      if (res.statusCode !== 202) throw new Error(`ingest into ${m.name}: ${res.statusCode} ${res.body}`)
      const ids: string[] = op.events.length === 1 ? [res.json().event_id] : res.json().event_ids
      m.events.push(...op.events)
      m.ids.push(...ids)
      return
    }
    case 'rule': {
      const res = await inject('POST', '/alerts/rules', owner(m.name), { name: `r-${m.rules.length}`, condition: 'cost_per_hour', threshold: 1e9, ...(op.user === null ? {} : { filters: { user_id: op.user } }) })
      if (res.statusCode !== 201) throw new Error(`rule in ${m.name}: ${res.statusCode} ${res.body}`)
      m.rules.push(res.json().id)
      return
    }
    case 'key': {
      // An owner names the project; a project admin key makes keys in its own project only.
      const admin = m.keys.admin[0]
      const byAdmin = op.byAdmin && admin !== undefined
      const res = await inject('POST', '/keys', byAdmin ? keyed(admin) : owner('default'), { scope: op.scope, ...(byAdmin ? {} : { project: m.name }) })
      if (res.statusCode !== 201) throw new Error(`key in ${m.name}: ${res.statusCode} ${res.body}`)
      same(`key project`, res.json().project, m.name)
      m.keys[op.scope].push(res.json().key)
      if (byAdmin) {
        // …and never in the other project.
        const cross = await inject('POST', '/keys', keyed(admin), { scope: 'read', project: other.name })
        if (cross.statusCode !== 403) throw new Error(`${m.name} admin key made a key in ${other.name}: ${cross.statusCode}`)
      }
      return
    }
    case 'query': {
      const read = m.keys.read[op.pick % Math.max(1, m.keys.read.length)]
      let via: Headers
      let label: string
      if (op.via === 'key' && read !== undefined) {
        via = keyed(read)
        label = `${m.name} (its read key)`
      } else if (op.via === 'param') {
        // ?project= (browsers, WebSocket): the check routes add it to every URL.
        via = { 'x-api-key': ADMIN_KEY }
        label = `${m.name} (?project=)`
        const withParam = { ...app, app: { inject: (o: { method: string; url: string; headers: Headers }) => app.app.inject({ ...o, url: `${o.url}${o.url.includes('?') ? '&' : '?'}project=${m.name}` } as never) } } as unknown as TestApp
        await checkProject(withParam, m, via, label)
        await checkIds(withParam, m, other, via, label, op.pick)
        return
      } else {
        via = owner(m.name)
        label = `${m.name} (owner header)`
      }
      await checkProject(app, m, via, label)
      await checkIds(app, m, other, via, label, op.pick)
      return
    }
    case 'cross': {
      // A project-bound key naming the other project: 403, whatever the route.
      for (const key of [...m.keys.read, ...m.keys.admin].slice(0, 2)) {
        for (const url of ['/analytics/metrics', '/alerts/rules', '/analytics/dimensions', `/analytics/metrics?project=${other.name}`]) {
          const headers = url.includes('?project=') ? keyed(key) : { ...keyed(key), 'x-llmscope-project': other.name }
          const res = await inject('GET', url, headers)
          if (res.statusCode !== 403) throw new Error(`${m.name} key naming ${other.name} on ${url}: ${res.statusCode} ${res.body}`)
          if (res.body.includes(other.name) && other.events.some((e) => res.body.includes(String(e.ts)))) throw new Error('a 403 shows the other project')
        }
      }
      for (const key of m.keys.ingest.slice(0, 1)) {
        const res = await inject('POST', '/events/ingest', { ...keyed(key), 'x-llmscope-project': other.name }, body(other.events[0] ?? { ts: base, model: 'm-a', user: null, tags: null, feature: null, nanos: 1, prompt: 1, latency: 1, error: false }))
        if (res.statusCode !== 403) throw new Error(`${m.name} ingest key into ${other.name}: ${res.statusCode}`)
      }
      // Its own project named explicitly is fine.
      for (const key of m.keys.read.slice(0, 1)) {
        const res = await inject('GET', '/analytics/metrics', { ...keyed(key), 'x-llmscope-project': m.name })
        if (res.statusCode !== 200 || res.json().total_requests !== m.events.length) throw new Error(`${m.name} read key naming its own project: ${res.statusCode} ${res.body}`)
      }
    }
  }
}

const newModel = (name: string): ProjectModel => ({ name, events: [], ids: [], rules: [], keys: { read: [], admin: [], ingest: [] } })

async function createProject(app: TestApp, id: string): Promise<void> {
  const res = await app.app.inject({ method: 'POST', url: '/projects', headers: owner('default'), payload: { id } })
  if (res.statusCode !== 201) throw new Error(`POST /projects ${id}: ${res.statusCode} ${res.body}`)
}

async function deleteProject(app: TestApp, id: string): Promise<void> {
  const res = await app.app.inject({ method: 'DELETE', url: `/projects/${id}`, headers: owner('default') })
  if (res.statusCode !== 204) throw new Error(`DELETE /projects/${id}: ${res.statusCode} ${res.body}`)
}

/** After its DELETE: the project is gone from every answer, the other one unchanged. */
async function checkGone(app: TestApp, gone: ProjectModel, kept: ProjectModel | null): Promise<void> {
  const res = (url: string, headers: Headers) => app.app.inject({ method: 'GET', url, headers })
  for (const url of ['/analytics/metrics', '/alerts/rules', '/analytics/dimensions', `/events/${gone.ids[0] ?? 'evt_0_x'}`]) {
    const r = await res(url, owner(gone.name))
    if (r.statusCode !== 404) throw new Error(`owner naming deleted ${gone.name} on ${url}: ${r.statusCode} ${r.body}`)
  }
  for (const key of [...gone.keys.read, ...gone.keys.admin, ...gone.keys.ingest]) {
    const r = await res('/analytics/metrics', keyed(key))
    if (r.statusCode !== 401) throw new Error(`a key of deleted ${gone.name}: ${r.statusCode}`)
  }
  if ((await res(`/projects/${gone.name}`, owner('default'))).statusCode !== 404) throw new Error(`GET /projects/${gone.name} after its delete`)
  const list = (await res('/projects', owner('default'))).json().projects.map((p: { id: string }) => p.id)
  if (list.includes(gone.name)) throw new Error(`GET /projects still lists ${gone.name}`)
  // Its event ids are unknown everywhere, the default project included.
  for (const id of gone.ids.slice(0, 5)) if ((await res(`/events/${id}`, owner('default'))).statusCode !== 404) throw new Error(`event ${id} of deleted ${gone.name} answers in default`)
  if (kept !== null) {
    await checkProject(app, kept, owner(kept.name), `${kept.name} after ${gone.name} was deleted`)
    await checkIds(app, kept, gone, owner(kept.name), `${kept.name} after ${gone.name} was deleted`, 0)
  }
}

t.test('random interleavings in two projects: no figure, event, rule or dimension of one shows in the other', async (t) => {
  const app = await makeApp(t)
  let run = 0
  let ops = 0
  const deadline = Date.now() + 60_000
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 30 }), async (list) => {
      // Bounded in time: a run started before the limit finishes, later ones pass untried. (Not
      // fast-check's interruptAfterTimeLimit, which abandons the run in flight to go on against
      // an app the test is closing.)
      if (Date.now() > deadline) return
      run++
      const models: [ProjectModel, ProjectModel] = [newModel(`iso-${run}-a`), newModel(`iso-${run}-b`)]
      for (const m of models) await createProject(app, m.name)
      try {
        for (const op of list) {
          await apply(app, models, op)
          ops++
        }
        // Both, every way, at the end.
        for (const p of [0, 1] as const) await apply(app, models, { kind: 'query', p, via: 'header', pick: 0 })
        // Deleting one leaves the other as it was.
        await deleteProject(app, models[0].name)
        await checkGone(app, models[0], models[1])
      } finally {
        for (const m of models) await app.app.inject({ method: 'DELETE', url: `/projects/${m.name}`, headers: owner('default') })
      }
    }),
    { numRuns: Number(process.env.ISOLATION_RUNS ?? 15) },
  )
  t.comment(`runs ${run}, operations ${ops}`)
  t.ok(ops > 0)
})

// ---------------------------------------------------------------------------------------------
// Restart, crash and delete

/** A seeded state: events, rules and keys in team-a, team-b and default. */
function seeded(seed: number) {
  const sample = <T>(arb: fc.Arbitrary<T>, n: number, s: number) => fc.sample(arb, { numRuns: n, seed: s })
  return {
    a: sample(evArb(0), 300, seed),
    b: sample(evArb(1), 200, seed + 1),
    d: sample(evArb(0), 50, seed + 2),
  }
}

/** Every answer of interest, by each way of asking; equal before and after a restart. */
async function observe(app: TestApp, keys: Record<string, string>): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  const urls = [
    '/analytics/metrics',
    `/analytics/metrics?start_time=${base + 3_600_123}&end_time=${base + 30 * HOUR + 17}`,
    '/analytics/metrics?user_id=u1&tag=t1',
    '/analytics/metrics?metadata.feature=search&status=error',
    '/analytics/costs',
    `/analytics/timeseries?interval=1h&start_time=${base}&end_time=${base + 2 * DAY}`,
    '/analytics/breakdown?by=user_id&limit=3',
    '/analytics/breakdown?by=tag&sort=requests',
    '/analytics/breakdown?by=metadata.feature&sort=tokens&user_id=u2',
    '/analytics/dimensions',
    '/alerts/rules',
  ]
  const ways: Array<[string, Headers]> = [
    ['owner default', owner('default')],
    ['owner team-a', owner('team-a')],
    ['owner team-b', owner('team-b')],
    ...Object.entries(keys).map(([name, key]): [string, Headers] => [name, keyed(key)]),
  ]
  for (const [way, headers] of ways) {
    for (const url of urls) {
      const res = await app.app.inject({ method: 'GET', url, headers })
      out[`${way} ${url}`] = [res.statusCode, res.json()]
    }
  }
  const projects = (await app.app.inject({ method: 'GET', url: '/projects', headers: owner('default') })).json()
  out['/projects'] = projects
  return out
}

async function ingestAll(app: TestApp, project: string, events: Ev[]): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < events.length; i += 97) {
    const res = await app.app.inject({ method: 'POST', url: '/events/batch', headers: owner(project), payload: events.slice(i, i + 97).map(body) })
    if (res.statusCode !== 202) throw new Error(`ingest: ${res.statusCode} ${res.body}`)
    ids.push(...res.json().event_ids)
  }
  return ids
}

async function makeKey(app: TestApp, project: string, scope: string): Promise<string> {
  const res = await app.app.inject({ method: 'POST', url: '/keys', headers: owner('default'), payload: { scope, project } })
  if (res.statusCode !== 201) throw new Error(`POST /keys: ${res.statusCode} ${res.body}`)
  return res.json().key
}

async function makeRule(app: TestApp, project: string, filters?: Record<string, string>): Promise<string> {
  const res = await app.app.inject({ method: 'POST', url: '/alerts/rules', headers: owner(project), payload: { name: 'spend', condition: 'cost_per_hour', threshold: 1e9, ...(filters ? { filters } : {}) } })
  if (res.statusCode !== 201) throw new Error(`POST /alerts/rules: ${res.statusCode} ${res.body}`)
  return res.json().id
}

t.test('restart and crash answer exactly as before, in every project', async (t) => {
  const s = seeded(11)
  const a = await makeApp(t)
  for (const id of ['team-a', 'team-b']) await createProject(a, id)
  await ingestAll(a, 'team-a', s.a.slice(0, 200))
  await ingestAll(a, 'team-b', s.b.slice(0, 120))
  await ingestAll(a, 'default', s.d)
  await makeRule(a, 'team-a', { user_id: 'u1' })
  await makeRule(a, 'team-b')
  const keys = { 'team-a read key': await makeKey(a, 'team-a', 'read'), 'team-b admin key': await makeKey(a, 'team-b', 'admin') }
  const before = await observe(a, keys)
  t.equal((before['owner team-a /analytics/metrics'] as [number, { total_requests: number }])[1].total_requests, 200)
  t.equal((before['team-b admin key /analytics/metrics'] as [number, { total_requests: number }])[1].total_requests, 120)
  await a.close()

  const b = await makeApp(t, { dir: a.dir })
  t.equal(b.engine.recovery?.snapshot, 'loaded')
  t.same(await observe(b, keys), before, 'after a clean restart: the same answers, keys made through the API included')

  // More events after a snapshot, then a crash: the snapshot plus the log tail.
  await ingestAll(b, 'team-a', s.a.slice(200, 260))
  await b.engine.snapshotNow()
  await ingestAll(b, 'team-a', s.a.slice(260))
  await ingestAll(b, 'team-b', s.b.slice(120))
  await makeRule(b, 'team-b', { tag: 't2' })
  const beforeCrash = await observe(b, keys)
  t.equal((beforeCrash['owner team-a /analytics/metrics'] as [number, { total_requests: number }])[1].total_requests, 300)
  await b.engine.destroy()
  await b.close()

  const c = await makeApp(t, { dir: a.dir })
  t.equal(c.engine.recovery?.snapshot, 'loaded')
  t.ok((c.engine.recovery?.replayed ?? 0) > 0, 'the tail after the snapshot was replayed')
  t.same(await observe(c, keys), beforeCrash, 'after a crash: the same answers')
})

t.test('DELETE /projects/:id: gone from every answer, after a restart and after a crash; recreated empty', async (t) => {
  const s = seeded(23)
  // A configured key names team-b: the project is made at start, and stays deleted once deleted.
  const CFG_B = 'cfg-team-b-read-0001'
  const env = { LLMSCOPE_API_KEYS: `${ADMIN_KEY},${CFG_B}:read:team-b`, LLMSCOPE_MAX_DIMENSION_VALUES: '3' }
  const a = await makeApp(t, { env })
  t.equal((await a.app.inject({ method: 'GET', url: '/projects/team-b', headers: owner('default') })).statusCode, 200, 'made at start for its configured key')
  await createProject(a, 'team-a')
  const idsA = await ingestAll(a, 'team-a', s.a)
  const idsB = await ingestAll(a, 'team-b', s.b)
  await ingestAll(a, 'default', s.d)
  const rulesA = [await makeRule(a, 'team-a')]
  const rulesB = [await makeRule(a, 'team-b'), await makeRule(a, 'team-b', { user_id: 'ub' })]
  const keyA = await makeKey(a, 'team-a', 'read')
  const keysB = [await makeKey(a, 'team-b', 'read'), await makeKey(a, 'team-b', 'admin'), await makeKey(a, 'team-b', 'ingest')]
  const modelA: ProjectModel = { name: 'team-a', events: s.a, ids: idsA, rules: rulesA, keys: { read: [keyA], admin: [], ingest: [] } }
  const modelB: ProjectModel = { name: 'team-b', events: s.b, ids: idsB, rules: rulesB, keys: { read: [keysB[0], CFG_B], admin: [keysB[1]], ingest: [keysB[2]] } }
  await checkProject(a, modelB, keyed(CFG_B), 'team-b by its configured key')
  await checkProject(a, modelA, owner('team-a'), 'team-a')
  const keep = { 'team-a read key': keyA }
  const strip = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([k]) => !k.includes('team-b')))
  const beforeA = strip(await observe(a, keep))

  t.equal((await a.app.inject({ method: 'DELETE', url: '/projects/default', headers: owner('default') })).statusCode, 409, 'default cannot be deleted')
  await deleteProject(a, 'team-b')
  await checkGone(a, modelB, modelA)
  // Ingest naming it: 404 for an owner, 401 for its ingest key.
  t.equal((await a.app.inject({ method: 'POST', url: '/events/ingest', headers: owner('team-b'), payload: body(s.b[0]) })).statusCode, 404)
  t.equal((await a.app.inject({ method: 'POST', url: '/events/ingest', headers: keyed(keysB[2]), payload: body(s.b[0]) })).statusCode, 401)
  const projectsAfter = (await a.app.inject({ method: 'GET', url: '/projects', headers: owner('default') })).json()
  const after = strip(await observe(a, keep))
  delete after['/projects']
  const { '/projects': _p, ...beforeRest } = beforeA
  t.same(after, beforeRest, 'team-a and default answer as before')
  t.same(projectsAfter.projects.map((p: { id: string }) => p.id).sort(), ['default', 'team-a'])
  await a.close()

  // A clean restart: still gone (its configured key does not bring it back).
  const b = await makeApp(t, { dir: a.dir, env })
  await checkGone(b, modelB, modelA)
  t.same(strip(await observe(b, keep)), { ...beforeRest, '/projects': projectsAfter }, 'after a restart: team-a and default as before, team-b still gone')

  // Delete team-a too, then crash right after the 204.
  await deleteProject(b, 'team-a')
  await b.engine.destroy()
  await b.close()
  const c = await makeApp(t, { dir: a.dir, env })
  await checkGone(c, modelA, null)
  await checkGone(c, modelB, null)
  const d = (await c.app.inject({ method: 'GET', url: '/analytics/metrics', headers: owner('default') })).json()
  t.equal(d.total_requests, s.d.length, 'default kept its events through both deletes and the crash')
  t.same((await c.app.inject({ method: 'GET', url: '/projects', headers: owner('default') })).json().projects.map((p: { id: string }) => p.id), ['default'])

  // Recreated with the same id: empty, whatever the old one held.
  await createProject(c, 'team-b')
  const fresh: ProjectModel = { name: 'team-b', events: [], ids: [], rules: [], keys: { read: [], admin: [], ingest: [] } }
  await checkProject(c, fresh, owner('team-b'), 'recreated team-b')
  for (const id of idsB.slice(0, 20)) t.equal((await c.app.inject({ method: 'GET', url: `/events/${id}`, headers: owner('team-b') })).statusCode, 404, `old event ${id}`)
  for (const id of rulesB) t.equal((await c.app.inject({ method: 'GET', url: `/alerts/rules/${id}`, headers: owner('team-b') })).statusCode, 404, `old rule ${id}`)
  for (const key of keysB) t.equal((await c.app.inject({ method: 'GET', url: '/analytics/metrics', headers: keyed(key) })).statusCode, 401, 'an old API key stays revoked')
  const cfg = await c.app.inject({ method: 'GET', url: '/analytics/metrics', headers: keyed(CFG_B) })
  t.equal(cfg.statusCode, 200, 'its configured key works again once an owner made the project again')
  t.equal(cfg.json().total_requests, 0)
  // Past the cap of 3 users (n1, n2, n3 kept; ub not), a filter on an old user reads the log: the old events are gone from it too.
  const newEvents: Ev[] = ['n1', 'n2', 'n3', 'ub'].map((user, i) => ({ ts: base + i * 1000, model: 'm-a', user, tags: ['t9'], feature: null, nanos: 5, prompt: 1, latency: 1, error: false }))
  fresh.ids.push(...(await ingestAll(c, 'team-b', newEvents)))
  fresh.events.push(...newEvents)
  const dims = (await c.app.inject({ method: 'GET', url: '/analytics/dimensions', headers: owner('team-b') })).json().dimensions
  t.same(dims[0], { name: 'user_id', values: 3, capped: true }, 'the new dictionary is capped')
  for (const user of ['u1', 'u2', 'ub', 'n3']) {
    const m = (await c.app.inject({ method: 'GET', url: `/analytics/metrics?user_id=${user}`, headers: owner('team-b') })).json()
    t.equal(m.total_requests, newEvents.filter((e) => e.user === user).length, `user ${user}: only the new project's events (the log path)`)
  }
  const bd = (await c.app.inject({ method: 'GET', url: '/analytics/breakdown?by=tag&user_id=u2', headers: owner('team-b') })).json()
  t.equal(bd.total.requests, 0, 'a breakdown from the log sees no old event')
  await c.close()

  // And after one more crash, the recreated project holds exactly its new events.
  const e = await makeApp(t, { dir: a.dir, env })
  const m = (await e.app.inject({ method: 'GET', url: '/analytics/metrics', headers: owner('team-b') })).json()
  t.equal(m.total_requests, newEvents.length)
  t.equal((await e.app.inject({ method: 'GET', url: `/events/${fresh.ids[3]}`, headers: owner('team-b') })).json().user_id, 'ub')
})

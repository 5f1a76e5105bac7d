/**
 * /projects (DESIGN §5), owner scope: POST → 201 (409 for an existing id), GET lists with
 * event counts, GET /:id, DELETE → 204 (default → 409, unknown → 404). A delete runs
 * beginDelete → API keys removed → the injected purge → finishDelete, in that order; a failed
 * purge leaves the project deleted and purging, and a second DELETE finishes it; a project's
 * keys (configured and API-made) answer 401 once it is deleted.
 *
 * The route tests run the real stores, auth hook and routes on a bare fastify app with the
 * engine's two functions (`eventCount`, `deleteProject`) injected as fakes; the end-to-end
 * tests at the bottom run through buildApp and need `Engine.projectEvents` / `Engine.deleteProject`.
 */
import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import { openStores } from '../../src/store/db.js'
import { ProjectStore } from '../../src/store/projects.js'
import { ApiKeyStore } from '../../src/store/api-keys.js'
import { KeyRing } from '../../src/keys.js'
import { registerAuth } from '../../src/http/auth.js'
import { registerErrorHandling } from '../../src/http/errors.js'
import { registerOpenApi } from '../../src/http/openapi.js'
import { projectRoutes } from '../../src/http/routes/projects.js'
import { keyRoutes } from '../../src/http/routes/keys.js'
import { ManualClock } from '../../src/clock.js'
import { Engine } from '../../src/engine.js'
import { makeApp, event } from '../helpers/app.js'

type T = Test

const OWNER = 'owner-key-00000001'
const ADMIN_A = 'admin-a-key-000001'
const READ_A = 'read-a-key-0000001'
const T0 = Date.parse('2026-03-01T12:00:00.000Z')

interface Harness {
  app: ReturnType<typeof Fastify>
  projects: ProjectStore
  apiKeys: ApiKeyStore
  calls: string[]
  counts: Map<string, number>
  /** What the next deleteProject does (default: resolves). */
  purge: { impl: (id: string) => Promise<void> }
  dir: string
  /** Closes the app and the stores (idempotent; teardown calls it too). */
  close(): Promise<void>
}

/** app.ts's wiring of projects and keys, with the engine's two functions faked. */
async function harness(t: T, dir = t.testdir(), keys = `${OWNER}:owner,${ADMIN_A}:admin:team-a,${READ_A}:read:team-a`): Promise<Harness> {
  const stores = openStores(dir)
  const clock = new ManualClock(T0)
  const projects = new ProjectStore(stores.projects, clock.now())
  const apiKeys = new ApiKeyStore(stores.apiKeys)
  const specs = keys.split(',').map((k) => {
    const [key, scope, project] = k.split(':')
    return { key, scope: scope as 'owner', project: project ?? null }
  })
  const ring = new KeyRing(specs)
  ring.attach(apiKeys)
  await projects.ensure(ring.configuredProjects, clock.now())
  for (const id of projects.purging()) await apiKeys.deleteProject(id)
  const calls: string[] = []
  const counts = new Map<string, number>()
  const purge = { impl: async (_id: string) => {} }
  projects.onChange((c) => calls.push(`${c.type} ${c.type === 'created' ? c.project.id : c.id}`))
  const app = Fastify({ logger: false })
  registerErrorHandling(app)
  await registerOpenApi(app)
  registerAuth(app, { keys: ring, projects })
  await app.register(keyRoutes, { store: apiKeys, ring, projects, clock })
  await app.register(projectRoutes, {
    projects,
    apiKeys,
    clock,
    eventCount: (id) => counts.get(id) ?? 0,
    deleteProject: async (id) => {
      calls.push(`purge ${id}: exists=${projects.exists(id)} purging=${projects.isPurging(id)} keys=${apiKeys.list(id).length}`)
      await purge.impl(id)
    }
  })
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await app.close()
    await stores.close()
  }
  t.teardown(close)
  return { app, projects, apiKeys, calls, counts, purge, dir, close }
}

const owner = { 'x-api-key': OWNER }

t.test('POST /projects → 201; GET lists with event counts; GET /:id; 409 for an existing id', async (t) => {
  const h = await harness(t)
  const res = await h.app.inject({ method: 'POST', url: '/projects', headers: owner, payload: { id: 'checkout', name: 'Checkout team' } })
  t.equal(res.statusCode, 201)
  t.same(res.json(), { id: 'checkout', name: 'Checkout team', created_at: '2026-03-01T12:00:00.000Z' })
  t.same((await h.app.inject({ method: 'POST', url: '/projects', headers: owner, payload: { id: 'search' } })).json(), { id: 'search', name: 'search', created_at: '2026-03-01T12:00:00.000Z' }, 'the name defaults to the id')
  h.counts.set('checkout', 42)
  h.counts.set('default', 7)
  const list = await h.app.inject({ url: '/projects', headers: owner })
  t.equal(list.statusCode, 200)
  t.same(
    Object.fromEntries(list.json().projects.map((p: { id: string; events: number }) => [p.id, p.events])),
    { default: 7, 'team-a': 0, checkout: 42, search: 0 },
    'every project, with its events'
  )
  t.same(Object.keys(list.json().projects[0]).sort(), ['created_at', 'events', 'id', 'name'])
  t.same((await h.app.inject({ url: '/projects/checkout', headers: owner })).json(), { id: 'checkout', name: 'Checkout team', created_at: '2026-03-01T12:00:00.000Z', events: 42 })
  const missing = await h.app.inject({ url: '/projects/nope', headers: owner })
  t.equal(missing.statusCode, 404)
  t.same(missing.json(), { statusCode: 404, error: 'Not Found', code: 'LLMS_ERR_NOT_FOUND', message: 'project nope not found', details: [{ path: '(params) id', message: 'no such project' }] })

  for (const id of ['checkout', 'default', 'team-a']) {
    const dup = await h.app.inject({ method: 'POST', url: '/projects', headers: owner, payload: { id } })
    t.equal(dup.statusCode, 409, id)
    t.equal(dup.json().code, 'LLMS_ERR_CONFLICT')
    t.equal(dup.json().error, 'Conflict')
    t.same(dup.json().details, [{ path: 'id', message: 'a project with this id exists' }])
  }
  t.equal(h.projects.get('checkout')?.name, 'Checkout team', 'unchanged by the 409')
})

t.test('POST /projects validates its body, naming the field; nothing is made', async (t) => {
  const h = await harness(t)
  const cases: Array<[unknown, string]> = [
    [{}, 'id'],
    [{ id: '' }, 'id'],
    [{ id: 'Team' }, 'id'],
    [{ id: '-lead' }, 'id'],
    [{ id: 'a_b' }, 'id'],
    [{ id: 'a'.repeat(64) }, 'id'],
    [{ id: 5 }, 'id'],
    [{ id: 'ok', name: '' }, 'name'],
    [{ id: 'ok', name: 'x'.repeat(201) }, 'name'],
    [{ id: 'ok', extra: 1 }, '(body)'],
    [[], '(body)']
  ]
  for (const [body, field] of cases) {
    const res = await h.app.inject({ method: 'POST', url: '/projects', headers: { ...owner, 'content-type': 'application/json' }, payload: JSON.stringify(body) })
    t.equal(res.statusCode, 400, JSON.stringify(body))
    t.equal(res.json().code, 'LLMS_ERR_VALIDATION')
    t.ok(res.json().details.some((d: { path: string }) => d.path === field), `${field} named in ${res.body}`)
  }
  t.same(h.projects.list().map((p) => p.id), ['default', 'team-a'])
  t.ok((await h.app.inject({ method: 'POST', url: '/projects', headers: owner, payload: { id: 'a'.repeat(63) } })).statusCode === 201, '63 characters is fine')
})

t.test('only an owner key manages projects; the project header does not matter there', async (t) => {
  const h = await harness(t)
  for (const headers of [{ 'x-api-key': ADMIN_A }, { 'x-api-key': READ_A }]) {
    for (const [method, url] of [['GET', '/projects'], ['POST', '/projects'], ['GET', '/projects/team-a'], ['DELETE', '/projects/team-a']] as const) {
      const res = await h.app.inject({ method, url, headers, payload: method === 'POST' ? { id: 'x' } : undefined })
      t.equal(res.statusCode, 403, `${headers['x-api-key']} ${method} ${url}`)
      t.equal(res.json().code, 'LLMS_ERR_FORBIDDEN')
    }
  }
  t.equal((await h.app.inject({ url: '/projects' })).statusCode, 401)
  t.equal((await h.app.inject({ url: '/projects', headers: { ...owner, 'x-llmscope-project': 'deleted-long-ago' } })).statusCode, 200)
  t.ok(h.projects.exists('team-a'), 'nothing was deleted')
  t.notOk(h.projects.exists('x'), 'nothing was made')
})

t.test('DELETE /projects/:id: beginDelete, keys removed, purge, finishDelete — in that order; 204', async (t) => {
  const h = await harness(t)
  const made = (await h.app.inject({ method: 'POST', url: '/keys', headers: owner, payload: { scope: 'ingest', project: 'team-a' } })).json()
  const other = (await h.app.inject({ method: 'POST', url: '/keys', headers: owner, payload: { scope: 'ingest', project: 'default' } })).json()
  t.equal((await h.app.inject({ url: '/keys', headers: { 'x-api-key': ADMIN_A } })).statusCode, 200)
  h.calls.length = 0
  const del = await h.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner })
  t.equal(del.statusCode, 204)
  t.equal(del.body, '')
  t.same(h.calls, ['deleting team-a', 'purge team-a: exists=false purging=true keys=0', 'deleted team-a'])
  t.notOk(h.projects.exists('team-a'))
  t.ok(h.projects.isDeleted('team-a'))
  t.same(h.projects.purging(), [])
  t.equal(h.apiKeys.get(made.id), undefined, 'its API key is gone')
  t.ok(h.apiKeys.get(other.id), "another project's key stays")

  for (const key of [ADMIN_A, READ_A, made.key]) {
    const res = await h.app.inject({ url: '/keys', headers: { 'x-api-key': key } })
    t.equal(res.statusCode, 401, 'its keys answer 401')
    t.equal(res.json().code, 'LLMS_ERR_UNAUTHORIZED')
  }
  t.equal((await h.app.inject({ url: '/keys', headers: { ...owner, 'x-llmscope-project': 'team-a' } })).statusCode, 404, 'an owner naming it: 404')
  t.equal((await h.app.inject({ url: '/projects/team-a', headers: owner })).statusCode, 404)
  t.notOk((await h.app.inject({ url: '/projects', headers: owner })).json().projects.some((p: { id: string }) => p.id === 'team-a'))
  const again = await h.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner })
  t.equal(again.statusCode, 404)
  t.equal(again.json().code, 'LLMS_ERR_NOT_FOUND')
})

t.test('DELETE: default → 409, unknown → 404, nothing purged', async (t) => {
  const h = await harness(t)
  const d = await h.app.inject({ method: 'DELETE', url: '/projects/default', headers: owner })
  t.equal(d.statusCode, 409)
  t.equal(d.json().code, 'LLMS_ERR_CONFLICT')
  t.match(d.json().message, /default cannot be deleted/)
  for (const id of ['nope', 'Not_A_Slug', 'x'.repeat(64)]) {
    const res = await h.app.inject({ method: 'DELETE', url: `/projects/${id}`, headers: owner })
    t.equal(res.statusCode, 404, id.slice(0, 20))
    t.ok(res.body.length < 400, 'the id is not echoed at length')
  }
  t.same(h.calls.filter((c) => c.startsWith('purge') || c.startsWith('deleting')), [])
  t.ok(h.projects.exists('default'))
})

t.test('a configured project, once deleted, stays deleted across a restart until an owner creates it again', async (t) => {
  const dir = t.testdir()
  const a = await harness(t, dir)
  t.equal((await a.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner })).statusCode, 204)
  await a.close()
  const b = await harness(t, dir)
  t.notOk(b.projects.exists('team-a'), 'not re-created from the configuration')
  t.equal((await b.app.inject({ url: '/keys', headers: { 'x-api-key': ADMIN_A } })).statusCode, 401)
  const made = await b.app.inject({ method: 'POST', url: '/projects', headers: owner, payload: { id: 'team-a' } })
  t.equal(made.statusCode, 201)
  t.equal((await b.app.inject({ url: '/keys', headers: { 'x-api-key': ADMIN_A } })).statusCode, 200, 'its configured keys work again')
})

t.test('a failed purge leaves the project deleted and purging; a second DELETE finishes it', async (t) => {
  const h = await harness(t)
  const made = (await h.app.inject({ method: 'POST', url: '/keys', headers: owner, payload: { scope: 'read', project: 'team-a' } })).json()
  h.purge.impl = async () => {
    throw new Error('disk on fire')
  }
  const failed = await h.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner })
  t.equal(failed.statusCode, 500)
  t.equal(failed.json().code, 'LLMS_ERR_INTERNAL')
  t.notMatch(failed.body, /disk on fire/)
  t.notOk(h.projects.exists('team-a'))
  t.same(h.projects.purging(), ['team-a'])
  t.equal((await h.app.inject({ url: '/keys', headers: { 'x-api-key': made.key } })).statusCode, 401)
  t.equal((await h.app.inject({ url: '/keys', headers: { 'x-api-key': ADMIN_A } })).statusCode, 401)
  const early = await h.app.inject({ method: 'POST', url: '/projects', headers: owner, payload: { id: 'team-a' } })
  t.equal(early.statusCode, 409, 'not created again while its purge is unfinished')
  t.match(early.json().message, /still being deleted/)

  h.purge.impl = async () => {}
  h.calls.length = 0
  t.equal((await h.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner })).statusCode, 204)
  t.same(h.calls, ['purge team-a: exists=false purging=true keys=0', 'deleted team-a'])
  t.same(h.projects.purging(), [])
  t.equal((await h.app.inject({ method: 'POST', url: '/projects', headers: owner, payload: { id: 'team-a' } })).statusCode, 201)
  t.equal((await h.app.inject({ url: '/keys', headers: { 'x-api-key': made.key } })).statusCode, 401, 'an API key of the deleted project does not come back')
})

t.test('a crash mid-purge: the next start removes the API keys and reports the project as purging', async (t) => {
  const dir = t.testdir()
  const a = await harness(t, dir)
  const made = (await a.app.inject({ method: 'POST', url: '/keys', headers: owner, payload: { scope: 'read', project: 'team-a' } })).json()
  // The first step only, as if the process died right after it.
  await a.projects.beginDelete('team-a', T0)
  t.ok(a.apiKeys.get(made.id), 'the key record is still on disk')
  await a.close()
  const b = await harness(t, dir)
  t.same(b.projects.purging(), ['team-a'], 'for the engine to finish')
  t.equal(b.apiKeys.get(made.id), undefined, 'the keys went at start')
  t.equal((await b.app.inject({ url: '/keys', headers: { 'x-api-key': made.key } })).statusCode, 401)
})

t.test('two DELETEs of one project at once share one purge', async (t) => {
  const h = await harness(t)
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  let purges = 0
  h.purge.impl = async () => {
    purges++
    await gate
  }
  const first = h.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner })
  // Wait until the first is inside the purge, then send the second.
  while (purges === 0) await new Promise((r) => setImmediate(r))
  const second = h.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner })
  await new Promise((r) => setImmediate(r))
  release()
  const [r1, r2] = await Promise.all([first, second])
  t.equal(r1.statusCode, 204)
  t.equal(r2.statusCode, 204)
  t.equal(purges, 1)
  t.same(h.projects.purging(), [])
})

// ─── end to end through buildApp: needs the lead's Engine.projectEvents and Engine.deleteProject

const engineReady = typeof (Engine.prototype as unknown as Record<string, unknown>).projectEvents === 'function' && typeof (Engine.prototype as unknown as Record<string, unknown>).deleteProject === 'function'
const waits = engineReady ? false : 'waits for Engine.projectEvents and Engine.deleteProject (the lead)'

t.test('end to end: configured projects exist at start; GET /projects counts events; DELETE survives a restart', { skip: waits }, async (t) => {
  const dir = t.testdir()
  const env = { LLMSCOPE_API_KEYS: `${OWNER},${ADMIN_A}:admin:team-a,${READ_A}:read:team-a` }
  const a = await makeApp(t, { dir, env, inlinePricing: true })
  t.same(a.engine.projects.list().map((p) => p.id), ['default', 'team-a'])
  t.equal((await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { 'x-api-key': OWNER, 'x-llmscope-project': 'team-a' }, payload: event() })).statusCode, 202)
  t.equal((await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { 'x-api-key': OWNER }, payload: event() })).statusCode, 202)
  await a.engine.sync()
  const list = (await a.app.inject({ url: '/projects', headers: owner })).json().projects
  t.same(Object.fromEntries(list.map((p: { id: string; events: number }) => [p.id, p.events])), { default: 1, 'team-a': 1 })
  t.equal((await a.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner })).statusCode, 204)
  t.equal((await a.app.inject({ url: '/keys', headers: { 'x-api-key': ADMIN_A } })).statusCode, 401)
  await a.close()
  const b = await makeApp(t, { dir, env, inlinePricing: true })
  t.same(b.engine.projects.list().map((p) => p.id), ['default'], 'still deleted after a restart')
  t.equal((await b.app.inject({ url: '/keys', headers: { 'x-api-key': ADMIN_A } })).statusCode, 401)
  t.equal((await b.app.inject({ method: 'POST', url: '/projects', headers: owner, payload: { id: 'team-a' } })).statusCode, 201)
  t.same((await b.app.inject({ url: '/projects/team-a', headers: owner })).json().events, 0, 'nothing of it came back')
})

t.test('DELETE /projects started beside a periodic snapshot: once it answers, the stored snapshot holds nothing of the project', { skip: waits }, async (t) => {
  const env = { LLMSCOPE_API_KEYS: `${OWNER},${ADMIN_A}:admin:team-a` }
  const a = await makeApp(t, { env, inlinePricing: true })
  const batch = Array.from({ length: 2000 }, () => event())
  t.equal((await a.app.inject({ method: 'POST', url: '/events/batch', headers: { 'x-api-key': OWNER, 'x-llmscope-project': 'team-a' }, payload: batch })).statusCode, 202)
  await a.engine.sync()
  // A periodic snapshot starts (its cut holds team-a), and the delete arrives while it runs.
  const periodic = a.engine.snapshotNow()
  t.equal((await a.app.inject({ method: 'DELETE', url: '/projects/team-a', headers: owner })).statusCode, 204)
  await periodic
  const read = a.engine.snapshots.read()
  t.ok(read.ok, 'a snapshot is stored')
  if (read.ok) {
    t.same(read.payload.aggregators.filter((x) => x.project === 'team-a'), [], 'no aggregator of the deleted project')
    t.notOk(Object.hasOwn(read.payload.dimensions ?? {}, 'team-a'), 'no dictionaries of the deleted project')
  }
})

import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import { makeApp, adminHeaders, readHeaders, ingestHeaders, event } from '../helpers/app.js'
import { registerAuth } from '../../src/http/auth.js'
import { registerErrorHandling } from '../../src/http/errors.js'
import { KeyRing, allows } from '../../src/keys.js'
import type { Scope } from '../../src/config.js'

t.test('no key or a wrong key → 401 in fastify shape', async (t) => {
  const { app } = await makeApp(t)
  for (const headers of [{}, { 'x-api-key': 'wrong-key-123' }]) {
    const res = await app.inject({ url: '/analytics/metrics', headers })
    t.equal(res.statusCode, 401)
    const b = res.json()
    t.same(Object.keys(b).sort(), ['code', 'details', 'error', 'message', 'statusCode'])
    t.equal(b.code, 'LLMS_ERR_UNAUTHORIZED')
    t.equal(b.error, 'Unauthorized')
  }
  const ing = await app.inject({ method: 'POST', url: '/events/ingest', payload: event() })
  t.equal(ing.statusCode, 401)
})

t.test('scopes: ingest may only send, read may only read, the bare (owner) key may do everything', async (t) => {
  const { app } = await makeApp(t)
  t.equal((await app.inject({ method: 'POST', url: '/events/ingest', headers: ingestHeaders, payload: event() })).statusCode, 202)
  t.equal((await app.inject({ url: '/analytics/metrics', headers: ingestHeaders })).statusCode, 403)
  t.equal((await app.inject({ method: 'POST', url: '/events/ingest', headers: readHeaders, payload: event() })).statusCode, 403)
  t.equal((await app.inject({ url: '/analytics/metrics', headers: readHeaders })).statusCode, 200)
  const forbidden = await app.inject({ method: 'POST', url: '/alerts/rules', headers: readHeaders, payload: {} })
  t.equal(forbidden.statusCode, 403)
  t.equal(forbidden.json().code, 'LLMS_ERR_FORBIDDEN')
  t.equal((await app.inject({ url: '/analytics/costs', headers: adminHeaders })).statusCode, 200)
})

t.test('public routes need no key', async (t) => {
  const { app } = await makeApp(t)
  t.equal((await app.inject({ url: '/health' })).statusCode, 200)
  t.equal((await app.inject({ url: '/ready' })).statusCode, 200)
  const m = await app.inject({ url: '/metrics' })
  t.equal(m.statusCode, 200)
  t.match(m.body, /llmscope_ready 1/)
})

t.test('with no keys configured, the first start makes one and keeps it', async (t) => {
  const { readFileSync, statSync } = await import('node:fs')
  const dir = t.testdir()
  const first = await makeApp(t, { dir, env: { LLMSCOPE_API_KEYS: '' } })
  t.match(first.createdKey, /^lsk_/)
  const stored = readFileSync(`${dir}/api-key`, 'utf8').trim()
  t.equal(stored, first.createdKey)
  t.equal(statSync(`${dir}/api-key`).mode & 0o777, 0o600)
  t.equal((await first.app.inject({ url: '/analytics/metrics', headers: { 'x-api-key': stored } })).statusCode, 200)
  await first.close()
  const second = await makeApp(t, { dir, env: { LLMSCOPE_API_KEYS: '' } })
  t.equal(second.createdKey, null, 'not made (or printed) again')
  t.equal((await second.app.inject({ url: '/analytics/metrics', headers: { 'x-api-key': stored } })).statusCode, 200)
  // It is an owner key: it manages projects and makes owner keys.
  const list = await second.app.inject({ url: '/keys', headers: { 'x-api-key': stored } })
  t.match(list.json().keys, [{ source: 'config', scope: 'owner', project: null }])
  const owner = await second.app.inject({ method: 'POST', url: '/keys', headers: { 'x-api-key': stored }, payload: { scope: 'owner' } })
  t.equal(owner.statusCode, 201)
  t.equal(owner.json().project, null)
})

t.test('allows: owner everything, admin everything but owner routes, read and ingest their own', async (t) => {
  const scopes: Scope[] = ['ingest', 'read', 'admin', 'owner']
  const table = Object.fromEntries(scopes.map((have) => [have, scopes.filter((need) => allows(have, need))]))
  t.same(table, { ingest: ['ingest'], read: ['read'], admin: ['ingest', 'read', 'admin'], owner: ['ingest', 'read', 'admin', 'owner'] })
})

// ─── the project a request acts in: a bare fastify app with the auth hook and a route that tells

const OWNER = 'owner-key-0000001'
const ADMIN_A = 'admin-a-key-00001'
const READ_A = 'read-a-key-000001'
const READ_DEF = 'read-def-key-0001'
const READ_GONE = 'read-gone-key-001'

async function whoami(t: Test) {
  const live = new Set(['default', 'team-a', 'team-b'])
  const keys = new KeyRing([
    { key: OWNER, scope: 'owner', project: null },
    { key: ADMIN_A, scope: 'admin', project: 'team-a' },
    { key: READ_A, scope: 'read', project: 'team-a' },
    { key: READ_DEF, scope: 'read', project: 'default' },
    { key: READ_GONE, scope: 'read', project: 'gone' }
  ])
  const app = Fastify({ logger: false })
  registerErrorHandling(app)
  registerAuth(app, { keys, projects: { exists: (id) => live.has(id) } })
  const tell = async (request: { project: string; apiKey: { id: string; scope: string } | null }) => ({ project: request.project, scope: request.apiKey?.scope })
  app.get('/read', { config: { scope: 'read' } }, tell)
  app.get('/admin', { config: { scope: 'admin' } }, tell)
  app.get('/owner', { config: { scope: 'owner' } }, tell)
  app.get('/ws-like', { config: { scope: 'read', keyInQuery: true } }, tell)
  app.get('/public', async (request) => ({ project: request.project }))
  t.teardown(() => app.close())
  return { app, live }
}

t.test('a project-bound key acts in its project; naming it again is fine, naming another is 403', async (t) => {
  const { app } = await whoami(t)
  const get = (url: string, key: string, headers: Record<string, string> = {}) => app.inject({ url, headers: { 'x-api-key': key, ...headers } })
  t.same((await get('/read', READ_A)).json(), { project: 'team-a', scope: 'read' })
  t.same((await get('/admin', ADMIN_A)).json(), { project: 'team-a', scope: 'admin' })
  t.same((await get('/read', READ_DEF)).json(), { project: 'default', scope: 'read' }, 'secret:read acts in default')
  t.same((await get('/read', READ_A, { 'x-llmscope-project': 'team-a' })).json(), { project: 'team-a', scope: 'read' })
  t.same((await get('/read?project=team-a', READ_A)).json(), { project: 'team-a', scope: 'read' })
  for (const [url, headers, path] of [
    ['/read', { 'x-llmscope-project': 'team-b' }, '(header) x-llmscope-project'],
    ['/read', { 'x-llmscope-project': 'default' }, '(header) x-llmscope-project'],
    ['/read', { 'x-llmscope-project': 'no-such-project' }, '(header) x-llmscope-project'],
    ['/read?project=team-b', {}, '(query) project'],
    ['/admin?project=default', {}, '(query) project']
  ] as Array<[string, Record<string, string>, string]>) {
    const res = await get(url, url.startsWith('/admin') ? ADMIN_A : READ_A, headers)
    t.equal(res.statusCode, 403, `${url} ${JSON.stringify(headers)}`)
    const b = res.json()
    t.equal(b.code, 'LLMS_ERR_FORBIDDEN')
    t.same(b.details, [{ path, message: "not this key's project" }])
    t.notMatch(res.body, /team-b|no-such-project/, 'the other project is not echoed')
  }
  const noScope = await get('/owner', ADMIN_A)
  t.equal(noScope.statusCode, 403, 'an admin key is not an owner')
  t.equal(noScope.json().code, 'LLMS_ERR_FORBIDDEN')
})

t.test('an owner key acts in the project it names, default without; 404 for one that does not exist', async (t) => {
  const { app } = await whoami(t)
  const get = (url: string, headers: Record<string, string> = {}) => app.inject({ url, headers: { 'x-api-key': OWNER, ...headers } })
  t.same((await get('/read')).json(), { project: 'default', scope: 'owner' })
  t.same((await get('/admin', { 'x-llmscope-project': 'team-b' })).json(), { project: 'team-b', scope: 'owner' })
  t.same((await get('/read?project=team-a')).json(), { project: 'team-a', scope: 'owner' })
  t.same((await get('/read?project=team-a', { 'x-llmscope-project': 'team-a' })).json(), { project: 'team-a', scope: 'owner' }, 'both, agreeing')
  t.same((await app.inject({ url: `/ws-like?api_key=${OWNER}&project=team-b` })).json(), { project: 'team-b', scope: 'owner' }, 'key and project in the URL (browsers, WebSocket)')
  for (const [url, headers, path] of [
    ['/read', { 'x-llmscope-project': 'nope' }, '(header) x-llmscope-project'],
    ['/read?project=nope', {}, '(query) project']
  ] as Array<[string, Record<string, string>, string]>) {
    const res = await get(url, headers)
    t.equal(res.statusCode, 404)
    t.same(res.json(), { statusCode: 404, error: 'Not Found', code: 'LLMS_ERR_NOT_FOUND', message: 'project nope not found', details: [{ path, message: 'no such project' }] })
  }
  // Owner routes are instance-level: the project header is not read (a stale one does not break them).
  t.same((await get('/owner', { 'x-llmscope-project': 'nope' })).json(), { project: 'default', scope: 'owner' })
  t.same((await get('/owner', { 'x-llmscope-project': 'Not A Slug' })).json(), { project: 'default', scope: 'owner' })
})

t.test('a malformed or contradictory project is a 400 naming where it came from', async (t) => {
  const { app } = await whoami(t)
  const cases: Array<[string, string, Record<string, string>, string, string]> = [
    ['/read', OWNER, { 'x-llmscope-project': 'Team_A' }, '(header) x-llmscope-project', 'LLMS_ERR_VALIDATION'],
    ['/read', OWNER, { 'x-llmscope-project': '' }, '(header) x-llmscope-project', 'LLMS_ERR_VALIDATION'],
    ['/read', OWNER, { 'x-llmscope-project': '-x' }, '(header) x-llmscope-project', 'LLMS_ERR_VALIDATION'],
    ['/read', OWNER, { 'x-llmscope-project': 'a'.repeat(64) }, '(header) x-llmscope-project', 'LLMS_ERR_VALIDATION'],
    ['/read?project=a%20b', OWNER, {}, '(query) project', 'LLMS_ERR_BAD_QUERY'],
    ['/read?project=team-a&project=team-b', OWNER, {}, '(query) project', 'LLMS_ERR_BAD_QUERY'],
    ['/read?project=team-a', OWNER, { 'x-llmscope-project': 'team-b' }, '(query) project', 'LLMS_ERR_BAD_QUERY'],
    ['/read', READ_A, { 'x-llmscope-project': 'TEAM-A' }, '(header) x-llmscope-project', 'LLMS_ERR_VALIDATION']
  ]
  for (const [url, key, headers, path, code] of cases) {
    const res = await app.inject({ url, headers: { 'x-api-key': key, ...headers } })
    t.equal(res.statusCode, 400, `${url} ${JSON.stringify(headers)}`)
    t.equal(res.json().code, code)
    t.equal(res.json().details[0].path, path)
  }
})

t.test("a key whose project was deleted answers 401 until the project exists again", async (t) => {
  const { app, live } = await whoami(t)
  const gone = await app.inject({ url: '/read', headers: { 'x-api-key': READ_GONE } })
  t.equal(gone.statusCode, 401)
  t.equal(gone.json().code, 'LLMS_ERR_UNAUTHORIZED')
  t.match(gone.json().message, /project was deleted/)
  live.delete('team-a')
  t.equal((await app.inject({ url: '/admin', headers: { 'x-api-key': ADMIN_A } })).statusCode, 401, 'refused from the moment the project is gone')
  t.equal((await app.inject({ url: '/read', headers: { 'x-api-key': OWNER, 'x-llmscope-project': 'team-a' } })).statusCode, 404, 'an owner naming it: 404')
  live.add('team-a')
  t.same((await app.inject({ url: '/admin', headers: { 'x-api-key': ADMIN_A } })).json(), { project: 'team-a', scope: 'admin' })
  t.same((await app.inject({ url: '/public' })).json(), { project: '' }, 'public routes carry no project')
})

/**
 * Scoped API keys made through the API: POST /keys shows a key once, GET /keys lists without
 * secrets, DELETE /keys/:id revokes at once; keys are stored as digests in LMDB and survive a
 * restart; configured keys are listed but not revocable; scopes hold on HTTP and on /ws.
 * Projects (DESIGN §5): an owner makes keys in any existing project, a project admin only in
 * its own and never owner keys; an admin sees and revokes its project's keys only.
 */
import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { WebSocket } from 'ws'
import { makeApp, adminHeaders, readHeaders, ingestHeaders, event } from '../helpers/app.js'
import { digest } from '../../src/keys.js'

async function createKey(app: Awaited<ReturnType<typeof makeApp>>['app'], body: unknown, headers: Record<string, string> = adminHeaders) {
  return app.inject({ method: 'POST', url: '/keys', headers, payload: body as object })
}

/** Every file under `dir`, concatenated as latin1 (LMDB files are binary). */
function dirBytes(dir: string): string {
  let out = ''
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out += dirBytes(p)
    else out += readFileSync(p, 'latin1')
  }
  return out
}

t.test('POST /keys makes a scoped key shown once; it works at once with its scope', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const res = await createKey(a.app, { name: 'checkout service', scope: 'ingest' })
  t.equal(res.statusCode, 201)
  t.equal(res.headers['cache-control'], 'no-store')
  const body = res.json()
  t.match(body, { name: 'checkout service', scope: 'ingest', project: 'default', source: 'api' })
  t.match(body.id, /^key_[A-Za-z0-9_-]{12}$/)
  t.match(body.key, /^lsk_[A-Za-z0-9_-]{32}$/)
  t.equal(body.last4, body.key.slice(-4))
  t.ok(!Number.isNaN(Date.parse(body.created_at)))
  const key: string = body.key
  const h = { 'x-api-key': key }
  t.equal((await a.app.inject({ method: 'POST', url: '/events/ingest', headers: h, payload: event() })).statusCode, 202, 'ingest key may send')
  const q = await a.app.inject({ url: '/analytics/metrics', headers: h })
  t.equal(q.statusCode, 403, 'but not read')
  t.equal(q.json().code, 'LLMS_ERR_FORBIDDEN')
  t.equal((await a.app.inject({ url: '/keys', headers: h })).statusCode, 403, 'nor manage keys')

  // The list never holds the key or its digest.
  const list = await a.app.inject({ url: '/keys', headers: adminHeaders })
  t.equal(list.statusCode, 200)
  t.notMatch(list.body, key)
  t.notMatch(list.body, /digest/)
  const keys = list.json().keys
  t.same(keys.filter((k: { source: string }) => k.source === 'api'), [{ id: body.id, name: 'checkout service', scope: 'ingest', project: 'default', last4: body.last4, created_at: body.created_at, source: 'api' }])
  t.same(
    keys.filter((k: { source: string }) => k.source === 'config').map((k: { scope: string; project: string | null }) => [k.scope, k.project]),
    [['owner', null], ['ingest', 'default'], ['read', 'default']],
    'the three configured keys are listed: the bare one is an owner key'
  )
  for (const k of keys.filter((k: { source: string }) => k.source === 'config')) t.match(k.id, /^cfg_[0-9a-f]{8}$/)

  // Stored hashed: the key's bytes appear nowhere in the data dir.
  await a.engine.stores.root.flushed
  t.notOk(dirBytes(a.dir).includes(key), 'the key is not stored in the clear')
})

t.test('a read key and an admin key made through the API', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const read = (await createKey(a.app, { name: 'grafana', scope: 'read' })).json().key
  const admin = (await createKey(a.app, { name: 'ops', scope: 'admin' })).json().key
  t.equal((await a.app.inject({ url: '/analytics/metrics', headers: { 'x-api-key': read } })).statusCode, 200)
  t.equal((await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { 'x-api-key': read }, payload: event() })).statusCode, 403)
  t.equal((await a.app.inject({ method: 'POST', url: '/alerts/rules', headers: { 'x-api-key': read }, payload: { name: 'x', condition: 'avg_latency', threshold: 1 } })).statusCode, 403)
  t.equal((await createKey(a.app, { name: 'child', scope: 'read' }, { 'x-api-key': admin })).statusCode, 201, 'an API-made admin key may make keys')
})

t.test('DELETE /keys/:id revokes at once; 404 when absent; configured keys are not revocable', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const made = (await createKey(a.app, { name: 'temp', scope: 'read' })).json()
  const h = { 'x-api-key': made.key }
  t.equal((await a.app.inject({ url: '/analytics/metrics', headers: h })).statusCode, 200)
  const del = await a.app.inject({ method: 'DELETE', url: `/keys/${made.id}`, headers: adminHeaders })
  t.equal(del.statusCode, 204)
  const after = await a.app.inject({ url: '/analytics/metrics', headers: h })
  t.equal(after.statusCode, 401, 'the next request is refused')
  t.equal(after.json().code, 'LLMS_ERR_UNAUTHORIZED')
  const again = await a.app.inject({ method: 'DELETE', url: `/keys/${made.id}`, headers: adminHeaders })
  t.equal(again.statusCode, 404)
  t.equal(again.json().code, 'LLMS_ERR_NOT_FOUND')
  t.equal((await a.app.inject({ method: 'DELETE', url: '/keys/key_nope', headers: adminHeaders })).statusCode, 404)

  const cfg = (await a.app.inject({ url: '/keys', headers: adminHeaders })).json().keys.find((k: { source: string }) => k.source === 'config')
  const refused = await a.app.inject({ method: 'DELETE', url: `/keys/${cfg.id}`, headers: adminHeaders })
  t.equal(refused.statusCode, 403)
  t.equal(refused.json().code, 'LLMS_ERR_FORBIDDEN')
  t.match(refused.json().message, /LLMSCOPE_API_KEYS/)
  t.equal((await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).statusCode, 200, 'configured keys still work')
  t.equal((await a.app.inject({ method: 'DELETE', url: `/keys/${made.id}`, headers: readHeaders })).statusCode, 403, 'only admin revokes')
})

t.test('keys survive a restart; revoked ones stay revoked', async (t) => {
  const dir = t.testdir()
  const a = await makeApp(t, { dir, inlinePricing: true })
  const keep = (await createKey(a.app, { name: 'keep', scope: 'read' })).json()
  const drop = (await createKey(a.app, { name: 'drop', scope: 'read' })).json()
  t.equal((await a.app.inject({ method: 'DELETE', url: `/keys/${drop.id}`, headers: adminHeaders })).statusCode, 204)
  await a.close()
  const b = await makeApp(t, { dir, inlinePricing: true })
  t.equal((await b.app.inject({ url: '/analytics/metrics', headers: { 'x-api-key': keep.key } })).statusCode, 200)
  t.equal((await b.app.inject({ url: '/analytics/metrics', headers: { 'x-api-key': drop.key } })).statusCode, 401)
  const api = (await b.app.inject({ url: '/keys', headers: adminHeaders })).json().keys.filter((k: { source: string }) => k.source === 'api')
  t.same(api.map((k: { name: string }) => k.name), ['keep'])
})

t.test('POST /keys validates its body', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const cases: Array<[unknown, string]> = [
    [{ name: '', scope: 'read' }, 'name'],
    [{ name: '   ', scope: 'read' }, 'name'],
    [{ name: 'x'.repeat(101), scope: 'read' }, 'name'],
    [{ name: 'x', scope: 'root' }, 'scope'],
    [{ name: 'x' }, 'scope'],
    [{ name: 'x', scope: 'read', key: 'my-own-key-123' }, '(body)'],
    [{ scope: 'read', project: 'Team_A' }, 'project'],
    [{ scope: 'read', project: 7 }, 'project'],
    [{ scope: 'owner', project: 'default' }, 'project'],
    [[], '(body)'],
    ['"x"', '(body)']
  ]
  for (const [body, field] of cases) {
    const res = await a.app.inject({ method: 'POST', url: '/keys', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload: typeof body === 'string' ? body : JSON.stringify(body) })
    t.equal(res.statusCode, 400, `${JSON.stringify(body)} → 400`)
    t.equal(res.json().code, 'LLMS_ERR_VALIDATION')
    t.ok(res.json().details.some((d: { path: string }) => d.path === field), `${field} named in ${res.body}`)
  }
  t.equal((await createKey(a.app, { name: 'x', scope: 'read' }, ingestHeaders)).statusCode, 403)
  t.equal((await createKey(a.app, { name: 'x', scope: 'read' }, readHeaders)).statusCode, 403)
  t.equal((await createKey(a.app, { name: 'x', scope: 'read' }, {})).statusCode, 401)
  const api = (await a.app.inject({ url: '/keys', headers: adminHeaders })).json().keys.filter((k: { source: string }) => k.source === 'api')
  t.same(api, [], 'nothing was made')
})

t.test('/ws: an ingest key made through the API is refused with 403 before the upgrade; a read key subscribes', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const ingest = (await createKey(a.app, { name: 'app', scope: 'ingest' })).json().key
  const read = (await createKey(a.app, { name: 'ui', scope: 'read' })).json().key
  await a.app.listen({ port: 0, host: '127.0.0.1' })
  const url = `ws://127.0.0.1:${(a.app.server.address() as AddressInfo).port}/ws`
  const attempt = (query: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; body: string } | 'open'>((resolve, reject) => {
      const ws = new WebSocket(url + query, { headers })
      ws.once('open', () => {
        ws.close()
        resolve('open')
      })
      ws.once('unexpected-response', (_req, res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d.toString()))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      })
      ws.once('error', (err) => reject(err))
    })
  for (const r of [await attempt(`?api_key=${ingest}`), await attempt('', { 'x-api-key': ingest })]) {
    t.not(r, 'open')
    if (r !== 'open') {
      t.equal(r.status, 403)
      t.equal(JSON.parse(r.body).code, 'LLMS_ERR_FORBIDDEN')
    }
  }
  t.equal(await attempt(`?api_key=${read}`), 'open')
  const wrong = await attempt('?api_key=lsk_not-a-real-key-at-all')
  t.ok(wrong !== 'open' && wrong.status === 401)
})

t.test('a key made without a name has name null', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const res = await createKey(a.app, { scope: 'read' })
  t.equal(res.statusCode, 201)
  t.match(res.json(), { name: null, scope: 'read', project: 'default' })
})

const OWNER_KEY = 'test-owner-key-0002'
const TEAM_A_ADMIN = 'test-team-a-admin-01'
const TEAM_B_READ = 'test-team-b-read-001'
const projectEnv = { LLMSCOPE_API_KEYS: `${OWNER_KEY}:owner,${TEAM_A_ADMIN}:admin:team-a,${TEAM_B_READ}:read:team-b,test-default-read-1:read` }
const ownerH = { 'x-api-key': OWNER_KEY }
const adminA = { 'x-api-key': TEAM_A_ADMIN }

t.test('an owner makes keys in any existing project (default: the one it names), owner keys without one; 404 for an unknown project', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: projectEnv })
  const inB = await createKey(a.app, { scope: 'admin', project: 'team-b', name: 'b ops' }, ownerH)
  t.equal(inB.statusCode, 201)
  t.match(inB.json(), { scope: 'admin', project: 'team-b', name: 'b ops' })
  t.match((await createKey(a.app, { scope: 'read' }, ownerH)).json(), { project: 'default' }, 'no project named: default')
  t.match((await createKey(a.app, { scope: 'ingest' }, { ...ownerH, 'x-llmscope-project': 'team-a' })).json(), { project: 'team-a' }, 'the project its request names')
  t.match((await createKey(a.app, { scope: 'ingest', project: 'team-b' }, { ...ownerH, 'x-llmscope-project': 'team-a' })).json(), { project: 'team-b' }, 'the body wins over the header')
  const owner = await createKey(a.app, { scope: 'owner', name: 'second owner' }, ownerH)
  t.equal(owner.statusCode, 201)
  t.match(owner.json(), { scope: 'owner', project: null })
  // The new owner key manages the instance.
  t.equal((await a.app.inject({ method: 'POST', url: '/projects', headers: { 'x-api-key': owner.json().key }, payload: { id: 'team-c' } })).statusCode, 201)
  t.match((await createKey(a.app, { scope: 'read', project: 'team-c' }, { 'x-api-key': owner.json().key })).json(), { project: 'team-c' })

  const missing = await createKey(a.app, { scope: 'read', project: 'nope' }, ownerH)
  t.equal(missing.statusCode, 404)
  t.equal(missing.json().code, 'LLMS_ERR_NOT_FOUND')
  t.same(missing.json().details, [{ path: 'project', message: 'no such project' }])

  // The key made in team-b acts in team-b: naming team-a is a 403.
  const bAdmin = { 'x-api-key': inB.json().key }
  t.equal((await a.app.inject({ url: '/keys', headers: { ...bAdmin, 'x-llmscope-project': 'team-a' } })).statusCode, 403)
  const seen = (await a.app.inject({ url: '/keys', headers: bAdmin })).json().keys
  t.ok(seen.length > 0 && seen.every((k: { project: string }) => k.project === 'team-b'), 'it sees team-b keys only')
})

t.test('a project admin makes keys in its own project only, never owner keys', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: projectEnv })
  const made = await createKey(a.app, { scope: 'read', name: 'dash' }, adminA)
  t.equal(made.statusCode, 201)
  t.match(made.json(), { scope: 'read', project: 'team-a', name: 'dash' })
  t.match((await createKey(a.app, { scope: 'admin', project: 'team-a' }, adminA)).json(), { scope: 'admin', project: 'team-a' }, 'naming its own project is fine')
  const cases: Array<[Record<string, unknown>, Record<string, string>, string]> = [
    [{ scope: 'read', project: 'team-b' }, {}, 'project'],
    [{ scope: 'read', project: 'default' }, {}, 'project'],
    [{ scope: 'read', project: 'no-such' }, {}, 'project'],
    [{ scope: 'owner' }, {}, 'scope']
  ]
  for (const [body, headers, path] of cases) {
    const res = await createKey(a.app, body, { ...adminA, ...headers })
    t.equal(res.statusCode, 403, JSON.stringify(body))
    t.equal(res.json().code, 'LLMS_ERR_FORBIDDEN')
    t.equal(res.json().details[0].path, path)
  }
  t.equal((await createKey(a.app, { scope: 'read' }, { ...adminA, 'x-llmscope-project': 'team-b' })).statusCode, 403, 'nor through the header')
  t.equal((await createKey(a.app, { scope: 'read' }, { 'x-api-key': TEAM_B_READ })).statusCode, 403, 'a read key makes none')
  const api = (await a.app.inject({ url: '/keys', headers: ownerH })).json().keys.filter((k: { source: string }) => k.source === 'api')
  t.same(api.map((k: { project: string }) => k.project), ['team-a', 'team-a'], 'only the two allowed keys were made')
})

t.test('GET /keys: an owner sees every key, a project admin its project\'s only', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: projectEnv })
  const inA = (await createKey(a.app, { scope: 'ingest', project: 'team-a' }, ownerH)).json()
  const inB = (await createKey(a.app, { scope: 'ingest', project: 'team-b' }, ownerH)).json()
  const owner = (await createKey(a.app, { scope: 'owner' }, ownerH)).json()
  const all = (await a.app.inject({ url: '/keys', headers: ownerH })).json().keys
  t.same(all.map((k: { source: string; scope: string; project: string | null }) => `${k.source} ${k.scope} ${k.project}`), [
    'config owner null',
    'config admin team-a',
    'config read team-b',
    'config read default',
    'api ingest team-a',
    'api ingest team-b',
    'api owner null'
  ])
  const mine = await a.app.inject({ url: '/keys', headers: adminA })
  t.equal(mine.statusCode, 200)
  t.same(mine.json().keys.map((k: { id: string }) => k.id), [all[1].id, inA.id])
  t.notMatch(mine.body, inB.id)
  t.notMatch(mine.body, owner.id)
  t.notMatch(mine.body, /team-b|"owner"/)
})

t.test('DELETE /keys/:id: a project admin revokes its project\'s keys only; others answer 404', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: projectEnv })
  const inA = (await createKey(a.app, { scope: 'read', project: 'team-a' }, ownerH)).json()
  const inB = (await createKey(a.app, { scope: 'read', project: 'team-b' }, ownerH)).json()
  const owner = (await createKey(a.app, { scope: 'owner' }, ownerH)).json()
  const cfg = (await a.app.inject({ url: '/keys', headers: ownerH })).json().keys.filter((k: { source: string }) => k.source === 'config')
  const cfgB = cfg.find((k: { project: string }) => k.project === 'team-b')
  const cfgA = cfg.find((k: { project: string }) => k.project === 'team-a')
  for (const id of [inB.id, owner.id, cfgB.id, cfg[0].id]) {
    const res = await a.app.inject({ method: 'DELETE', url: `/keys/${id}`, headers: adminA })
    t.equal(res.statusCode, 404, `${id} is not team-a's`)
    t.equal(res.json().code, 'LLMS_ERR_NOT_FOUND')
  }
  const stillB = await a.app.inject({ url: '/keys', headers: { 'x-api-key': inB.key } })
  t.equal(stillB.statusCode, 403, "team-b's key still works (known, only without the admin scope)")
  t.match(stillB.json().message, /scope "read"/)
  const own = await a.app.inject({ method: 'DELETE', url: `/keys/${cfgA.id}`, headers: adminA })
  t.equal(own.statusCode, 403, 'its own configured key: not revocable here')
  t.equal((await a.app.inject({ method: 'DELETE', url: `/keys/${inA.id}`, headers: adminA })).statusCode, 204)
  t.equal((await a.app.inject({ url: '/keys', headers: { 'x-api-key': inA.key } })).statusCode, 401, 'revoked at once')
  // An owner revokes any project's key, and owner keys.
  t.equal((await a.app.inject({ method: 'DELETE', url: `/keys/${inB.id}`, headers: ownerH })).statusCode, 204)
  t.equal((await a.app.inject({ method: 'DELETE', url: `/keys/${owner.id}`, headers: ownerH })).statusCode, 204)
  t.equal((await a.app.inject({ url: '/keys', headers: { 'x-api-key': owner.key } })).statusCode, 401)
})

t.test('keys with projects survive a restart; a key stored before projects acts in default', async (t) => {
  const dir = t.testdir()
  const a = await makeApp(t, { dir, inlinePricing: true, env: projectEnv })
  const inA = (await createKey(a.app, { scope: 'admin', project: 'team-a' }, ownerH)).json()
  const owner = (await createKey(a.app, { scope: 'owner' }, ownerH)).json()
  // A record as written before projects existed (format 1: no project).
  const oldKey = 'lsk_old-key-from-before-projects'
  await a.engine.stores.apiKeys.put('key_oldoldoldold', { v: 1, id: 'key_oldoldoldold', name: 'old', scope: 'admin', digest: digest(oldKey).toString('hex'), last4: oldKey.slice(-4), created_at: '2025-01-01T00:00:00.000Z' })
  await a.close()
  const b = await makeApp(t, { dir, inlinePricing: true, env: projectEnv })
  const keys = (await b.app.inject({ url: '/keys', headers: ownerH })).json().keys.filter((k: { source: string }) => k.source === 'api')
  t.same(keys.map((k: { id: string; scope: string; project: string | null }) => [k.id, k.scope, k.project]), [
    ['key_oldoldoldold', 'admin', 'default'],
    [inA.id, 'admin', 'team-a'],
    [owner.id, 'owner', null]
  ])
  t.match((await createKey(b.app, { scope: 'read' }, { 'x-api-key': inA.key })).json(), { project: 'team-a' })
  t.match((await createKey(b.app, { scope: 'read' }, { 'x-api-key': oldKey })).json(), { project: 'default' })
  t.equal((await createKey(b.app, { scope: 'owner' }, { 'x-api-key': oldKey })).statusCode, 403, 'an old admin key is a project admin, not an owner')
  t.equal((await b.app.inject({ method: 'POST', url: '/projects', headers: { 'x-api-key': owner.key }, payload: { id: 'after-restart' } })).statusCode, 201, 'the owner key made through the API still works')
})

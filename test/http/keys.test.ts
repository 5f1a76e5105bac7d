/**
 * Scoped API keys made through the API: POST /keys shows a key once, GET /keys lists without
 * secrets, DELETE /keys/:id revokes at once; keys are stored as digests in LMDB and survive a
 * restart; configured keys are listed but not revocable; scopes hold on HTTP and on /ws.
 */
import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { WebSocket } from 'ws'
import { makeApp, adminHeaders, readHeaders, ingestHeaders, event } from '../helpers/app.js'

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
  t.match(body, { name: 'checkout service', scope: 'ingest', source: 'api' })
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
  t.same(keys.filter((k: { source: string }) => k.source === 'api'), [{ id: body.id, name: 'checkout service', scope: 'ingest', last4: body.last4, created_at: body.created_at, source: 'api' }])
  t.equal(keys.filter((k: { source: string }) => k.source === 'config').length, 3, 'the three configured keys are listed')
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
    [{ scope: 'read' }, 'name'],
    [{ name: '', scope: 'read' }, 'name'],
    [{ name: '   ', scope: 'read' }, 'name'],
    [{ name: 'x'.repeat(101), scope: 'read' }, 'name'],
    [{ name: 'x', scope: 'root' }, 'scope'],
    [{ name: 'x' }, 'scope'],
    [{ name: 'x', scope: 'read', key: 'my-own-key-123' }, '(body)'],
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

import t from 'tap'
import { makeApp, adminHeaders, readHeaders, ingestHeaders, event } from '../helpers/app.js'

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

t.test('scopes: ingest may only send, read may only read, admin may do everything', async (t) => {
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
})

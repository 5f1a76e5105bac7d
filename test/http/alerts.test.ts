import t from 'tap'
import { makeApp, adminHeaders, readHeaders } from '../helpers/app.js'

const rule = { name: 'High cost', condition: 'cost_per_hour', threshold: 10, enabled: true }

t.test('rules CRUD with defaults', async (t) => {
  const { app } = await makeApp(t)
  const created = await app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: rule })
  t.equal(created.statusCode, 201)
  const r = created.json()
  t.match(r.id, /^rule_/)
  t.equal(r.name, 'High cost')
  t.equal(r.comparator, 'gt')
  t.equal(r.window_seconds, 300)
  t.equal(r.model, null)
  t.equal(r.webhook_url, null)

  const list = (await app.inject({ url: '/alerts/rules', headers: readHeaders })).json()
  t.same(list.rules.map((x: { id: string }) => x.id), [r.id])
  t.same((await app.inject({ url: `/alerts/rules/${r.id}`, headers: readHeaders })).json(), r)

  const patched = await app.inject({ method: 'PATCH', url: `/alerts/rules/${r.id}`, headers: adminHeaders, payload: { threshold: 20, enabled: false, model: 'gpt-4' } })
  t.equal(patched.statusCode, 200)
  t.equal(patched.json().threshold, 20)
  t.equal(patched.json().enabled, false)
  t.equal(patched.json().model, 'gpt-4')
  t.equal(patched.json().name, 'High cost')

  const del = await app.inject({ method: 'DELETE', url: `/alerts/rules/${r.id}`, headers: adminHeaders })
  t.equal(del.statusCode, 204)
  t.equal((await app.inject({ url: `/alerts/rules/${r.id}`, headers: readHeaders })).statusCode, 404)
  t.equal((await app.inject({ method: 'DELETE', url: `/alerts/rules/${r.id}`, headers: adminHeaders })).statusCode, 404)
  t.equal((await app.inject({ method: 'PATCH', url: `/alerts/rules/${r.id}`, headers: adminHeaders, payload: { threshold: 1 } })).statusCode, 404)
})

t.test('rule validation names the field and changes nothing', async (t) => {
  const { app } = await makeApp(t)
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ ...rule, condition: 'vibes' }, 'condition'],
    [{ ...rule, threshold: 'ten' }, 'threshold'],
    [{ ...rule, name: '' }, 'name'],
    [{ ...rule, comparator: 'eq' }, 'comparator'],
    [{ ...rule, window_seconds: 1 }, 'window_seconds'],
    [{ ...rule, webhook_url: 'ftp://x' }, 'webhook_url'],
    [{ condition: 'avg_latency', threshold: 1 }, 'name']
  ]
  for (const [payload, field] of cases) {
    const res = await app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload })
    t.equal(res.statusCode, 400, field)
    t.ok(res.json().details.some((d: { path: string }) => d.path === field), `${field}: ${JSON.stringify(res.json().details)}`)
  }
  t.same((await app.inject({ url: '/alerts/rules', headers: readHeaders })).json().rules, [])
  const created = (await app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: rule })).json()
  const badPatch = await app.inject({ method: 'PATCH', url: `/alerts/rules/${created.id}`, headers: adminHeaders, payload: { threshold: null } })
  t.equal(badPatch.statusCode, 400)
  const emptyPatch = await app.inject({ method: 'PATCH', url: `/alerts/rules/${created.id}`, headers: adminHeaders, payload: {} })
  t.equal(emptyPatch.statusCode, 400)
  t.equal((await app.inject({ url: `/alerts/rules/${created.id}`, headers: readHeaders })).json().threshold, 10)
})

t.test('rules survive a restart', async (t) => {
  const first = await makeApp(t)
  const r = (await first.app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: { ...rule, webhook_url: 'http://127.0.0.1:9/hook' } })).json()
  await first.close()
  const second = await makeApp(t, { dir: first.dir })
  t.same((await second.app.inject({ url: `/alerts/rules/${r.id}`, headers: readHeaders })).json(), r)
})

import t from 'tap'
import { makeApp, adminHeaders, readHeaders, ingestHeaders, event, type TestApp } from '../helpers/app.js'
import { ManualClock } from '../../src/clock.js'
import type { AlertNotice } from '../../src/actors/broadcaster.js'

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

// ── Evaluation, /alerts/events, test notifications (manual clock: no waiting on real time) ──

const T0 = Date.parse('2026-04-01T10:00:00.000Z')

/** What the evaluator would do on its next 1 s tick, done now: sync, tick, wait for records. */
async function evaluate(engine: TestApp['engine']): Promise<void> {
  await engine.sync()
  engine.topology.alerts.send({ type: 'tick' })
  await engine.topology.alerts.idle()
  await engine.alerting.idle()
}

async function ingest(app: TestApp['app'], events: object[]): Promise<void> {
  const res = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: events })
  if (res.statusCode !== 202) throw new Error(res.body)
}

async function createRule(app: TestApp['app'], payload: object): Promise<{ id: string }> {
  const res = await app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload })
  if (res.statusCode !== 201) throw new Error(res.body)
  return res.json()
}

async function alertEvents(app: TestApp['app'], query = ''): Promise<Array<Record<string, unknown>>> {
  const res = await app.inject({ url: `/alerts/events${query}`, headers: readHeaders })
  if (res.statusCode !== 200) throw new Error(res.body)
  return res.json().events
}

/** Alert messages the broadcaster was handed (what WebSocket clients are sent). */
function spyAlerts(engine: TestApp['engine']): AlertNotice[] {
  const seen: AlertNotice[] = []
  const b = engine.topology.broadcaster
  const send = b.send.bind(b)
  b.send = (m) => {
    if (m.type === 'alert') seen.push(m.alert)
    return send(m)
  }
  return seen
}

const slow = { name: 'Slow gpt-4', condition: 'avg_latency', threshold: 1000, window_seconds: 60, cooldown_seconds: 120, model: 'gpt-4' }

t.test('a crossing fires: recorded in /alerts/events and pushed to WebSocket clients; it resolves when traffic stops', async (t) => {
  const clock = new ManualClock(T0)
  const { app, engine } = await makeApp(t, { clock, inlinePricing: true })
  const pushed = spyAlerts(engine)
  const r = await createRule(app, slow)
  await ingest(app, [event({ timestamp: undefined, latency_ms: 900 }), event({ timestamp: undefined, latency_ms: 1500 })])
  await evaluate(engine)
  const [fired, ...rest] = await alertEvents(app)
  t.same(rest, [])
  t.match(fired, {
    id: /^aev_/,
    rule_id: r.id,
    rule_name: 'Slow gpt-4',
    condition: 'avg_latency',
    comparator: 'gt',
    threshold: 1000,
    model: 'gpt-4',
    window_seconds: 60,
    state: 'firing',
    reminder: false,
    reason: 'condition',
    value: 1200,
    samples: 2,
    since: '2026-04-01T10:00:00.000Z',
    at: '2026-04-01T10:00:00.000Z',
    delivery: { status: 'none', attempts: 0 }
  })
  t.same(pushed, [{ type: 'alert', project: 'default', rule_id: r.id, rule_name: 'Slow gpt-4', state: 'firing', value: 1200, threshold: 1000, at: '2026-04-01T10:00:00.000Z', group: null }])

  clock.advance(59_999)
  await evaluate(engine)
  t.equal((await alertEvents(app)).length, 1, 'still firing, inside the cooldown: nothing new')
  clock.advance(1)
  await evaluate(engine)
  const [resolved] = await alertEvents(app)
  t.match(resolved, { state: 'resolved', value: null, samples: 0, at: '2026-04-01T10:01:00.000Z' })
  t.same(pushed.map((p) => p.state), ['firing', 'resolved'])
  const metrics = (await app.inject({ url: '/metrics' })).body
  t.match(metrics, /llmscope_alert_notifications_total\{kind="firing"\} 1/)
  t.match(metrics, /llmscope_alert_notifications_total\{kind="resolved"\} 1/)
  t.match(metrics, /llmscope_alert_evaluations_total \d+/)
  t.match(metrics, /llmscope_alert_rules_firing 0/)
})

t.test('a disabled rule is silent; disabling a firing rule resolves it (reason rule_disabled)', async (t) => {
  const clock = new ManualClock(T0)
  const { app, engine } = await makeApp(t, { clock, inlinePricing: true })
  const off = await createRule(app, { ...slow, name: 'off', enabled: false })
  const on = await createRule(app, slow)
  await ingest(app, [event({ timestamp: undefined, latency_ms: 5000 })])
  await evaluate(engine)
  t.same((await alertEvents(app)).map((e) => [e.rule_id, e.state]), [[on.id, 'firing']])
  await app.inject({ method: 'PATCH', url: `/alerts/rules/${on.id}`, headers: adminHeaders, payload: { enabled: false } })
  await evaluate(engine)
  t.match(await alertEvents(app), [{ rule_id: on.id, state: 'resolved', reason: 'rule_disabled' }, { rule_id: on.id, state: 'firing' }])
  t.same(await alertEvents(app, `?rule_id=${off.id}`), [])
})

t.test('GET /alerts/events: rule_id, since, limit; newest first; bad parameters are a 400 naming them', async (t) => {
  const clock = new ManualClock(T0)
  const { app, engine } = await makeApp(t, { clock, inlinePricing: true })
  const a = await createRule(app, { ...slow, name: 'a', cooldown_seconds: 10 })
  const b = await createRule(app, { ...slow, name: 'b', cooldown_seconds: 0 })
  await ingest(app, [event({ timestamp: undefined, latency_ms: 5000 })])
  for (let i = 0; i < 3; i++) {
    await evaluate(engine)
    clock.advance(10_000)
  }
  // a: firing@0, reminder@10, reminder@20; b: firing@0 only (cooldown 0).
  const all = await alertEvents(app)
  const rows = all.map((e) => [e.rule_name, e.reminder, e.at])
  t.same(rows.slice(0, 2), [
    ['a', true, '2026-04-01T10:00:20.000Z'],
    ['a', true, '2026-04-01T10:00:10.000Z']
  ])
  // Both fired in the same pass; rules created in the same millisecond have no set order.
  t.same(rows.slice(2).sort(), [
    ['a', false, '2026-04-01T10:00:00.000Z'],
    ['b', false, '2026-04-01T10:00:00.000Z']
  ])
  t.same(all[0].since, '2026-04-01T10:00:00.000Z', 'a reminder says when the firing began')
  t.same((await alertEvents(app, `?rule_id=${b.id}`)).map((e) => e.rule_id), [b.id])
  t.same((await alertEvents(app, `?rule_id=${a.id}&limit=2`)).map((e) => e.at), ['2026-04-01T10:00:20.000Z', '2026-04-01T10:00:10.000Z'])
  t.same((await alertEvents(app, `?since=2026-04-01T10:00:10Z`)).length, 2)
  t.same((await alertEvents(app, `?since=${T0 + 10_001}`)).length, 1, 'since as epoch ms')
  t.same(await alertEvents(app, '?rule_id=rule_nope'), [])

  for (const [query, param] of [['?limit=0', 'limit'], ['?limit=1001', 'limit'], ['?limit=ten', 'limit'], ['?since=yesterday', 'since'], ['?rule_id=', 'rule_id'], ['?state=firing', '(query)']]) {
    const res = await app.inject({ url: `/alerts/events${query}`, headers: readHeaders })
    t.equal(res.statusCode, 400, query)
    t.equal(res.json().code, 'LLMS_ERR_BAD_QUERY', query)
    t.match(JSON.stringify(res.json().details), param, query)
  }
  t.equal((await app.inject({ url: '/alerts/events', headers: ingestHeaders })).statusCode, 403)
  t.equal((await app.inject({ url: '/alerts/events' })).statusCode, 401)
})

t.test('POST /alerts/rules/:id/test sends one test notification and answers its outcome', async (t) => {
  const { createServer } = await import('node:http')
  const hits: Array<{ body: Record<string, unknown> }> = []
  let status = 204
  const server = createServer((req, res) => {
    let data = ''
    req.on('data', (c: Buffer) => (data += c.toString()))
    req.on('end', () => {
      hits.push({ body: JSON.parse(data) })
      res.writeHead(status).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`

  const clock = new ManualClock(T0)
  const { app, engine } = await makeApp(t, { clock, inlinePricing: true })
  const withHook = await createRule(app, { ...slow, webhook_url: url })
  const without = await createRule(app, slow)

  const ok = await app.inject({ method: 'POST', url: `/alerts/rules/${withHook.id}/test`, headers: adminHeaders })
  t.equal(ok.statusCode, 200)
  t.same(ok.json().delivery, { status: 'delivered', attempts: 1, status_code: 204, error: null })
  t.equal(hits.length, 1)
  t.match(hits[0].body, { type: 'alert', rule_id: withHook.id, rule_name: 'Slow gpt-4', state: 'test', threshold: 1000, at: '2026-04-01T10:00:00.000Z', event_id: null })
  t.equal(hits[0].body.value, null, 'never evaluated: no value')
  t.same(ok.json().payload, hits[0].body)

  // Once evaluated, a test carries the rule's last value (Engine.ruleState).
  await ingest(app, [event({ timestamp: undefined, latency_ms: 700 })])
  await evaluate(engine)
  t.equal(engine.ruleState(withHook.id)?.lastValue, 700)
  const valued = await app.inject({ method: 'POST', url: `/alerts/rules/${withHook.id}/test`, headers: adminHeaders })
  t.equal(valued.json().payload.value, 700)
  t.equal(hits.length, 2)

  status = 500
  const failed = await app.inject({ method: 'POST', url: `/alerts/rules/${withHook.id}/test`, headers: adminHeaders })
  t.equal(failed.statusCode, 200, 'the test ran; its outcome says it failed')
  t.same(failed.json().delivery, { status: 'failed', attempts: 1, status_code: 500, error: 'HTTP 500' }, 'one attempt: a test is not retried')

  const noHook = await app.inject({ method: 'POST', url: `/alerts/rules/${without.id}/test`, headers: adminHeaders })
  t.equal(noHook.statusCode, 400)
  t.equal(noHook.json().code, 'LLMS_ERR_VALIDATION')
  t.same(noHook.json().details, [{ path: 'webhook_url', message: 'is not set' }])
  t.equal((await app.inject({ method: 'POST', url: '/alerts/rules/rule_nope/test', headers: adminHeaders })).statusCode, 404)
  t.equal((await app.inject({ method: 'POST', url: `/alerts/rules/${withHook.id}/test`, headers: readHeaders })).statusCode, 403)
  t.same(await alertEvents(app), [], 'tests are not alert events')
})

t.test('a firing rule does not notify again after a restart unless its cooldown passed', async (t) => {
  const clock = new ManualClock(T0)
  const first = await makeApp(t, { clock, inlinePricing: true })
  const r = await createRule(first.app, { ...slow, window_seconds: 3600, cooldown_seconds: 300 })
  await ingest(first.app, [event({ timestamp: undefined, latency_ms: 5000 })])
  await evaluate(first.engine)
  t.equal((await alertEvents(first.app)).length, 1)
  await first.close()

  clock.advance(100_000)
  const second = await makeApp(t, { clock, dir: first.dir, inlinePricing: true })
  t.equal(second.engine.recovery?.snapshot, 'loaded')
  const pushed = spyAlerts(second.engine)
  await evaluate(second.engine)
  t.same((await alertEvents(second.app)).map((e) => e.state), ['firing'], 'the history survived; nothing new inside the cooldown')
  t.same(pushed, [])
  t.match(second.engine.ruleState(r.id), { state: 'firing', since: T0, lastNotifiedAt: T0 })

  clock.set(T0 + 300_000)
  await evaluate(second.engine)
  t.match(await alertEvents(second.app), [{ state: 'firing', reminder: true, since: '2026-04-01T10:00:00.000Z', at: '2026-04-01T10:05:00.000Z' }, { state: 'firing', reminder: false }])
})

t.test('after a crash the alert-event log wins over an older snapshot: no duplicate notification', async (t) => {
  const clock = new ManualClock(T0)
  const first = await makeApp(t, { clock, inlinePricing: true })
  await createRule(first.app, { ...slow, window_seconds: 3600 })
  await first.engine.snapshotNow()
  await ingest(first.app, [event({ timestamp: undefined, latency_ms: 5000 })])
  await evaluate(first.engine)
  t.equal((await alertEvents(first.app)).length, 1)
  // The crash: no final snapshot, so the last one does not know about the firing.
  await first.engine.destroy()
  await first.close()

  clock.advance(1000)
  const second = await makeApp(t, { clock, dir: first.dir, inlinePricing: true })
  t.equal(second.engine.recovery?.replayed, 1, 'the event after the snapshot is replayed')
  await evaluate(second.engine)
  t.same((await alertEvents(second.app)).map((e) => e.state), ['firing'], 'still only the one firing')
})

t.test('a rule with filters counts only the matching events of its own project', async (t) => {
  const clock = new ManualClock(T0)
  const { app, engine } = await makeApp(t, { clock, inlinePricing: true })
  t.equal((await app.inject({ method: 'POST', url: '/projects', headers: adminHeaders, payload: { id: 'team-b' } })).statusCode, 201)
  const forU1 = await createRule(app, { name: 'Slow for u1', condition: 'avg_latency', threshold: 1000, window_seconds: 60, filters: { user_id: 'u1', 'metadata.feature': 'search' } })
  // u1's search calls average 1200 ms; everything else (other users, other features, the other project) is fast or would pull the average down.
  await ingest(app, [
    event({ timestamp: undefined, latency_ms: 900, user_id: 'u1', metadata: { feature: 'search' } }),
    event({ timestamp: undefined, latency_ms: 1500, user_id: 'u1', metadata: { feature: 'search' } }),
    event({ timestamp: undefined, latency_ms: 10, user_id: 'u1', metadata: { feature: 'chat' } }),
    event({ timestamp: undefined, latency_ms: 10, user_id: 'u2', metadata: { feature: 'search' } })
  ])
  const other = await app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'x-llmscope-project': 'team-b' }, payload: [event({ timestamp: undefined, latency_ms: 10, user_id: 'u1', metadata: { feature: 'search' } })] })
  t.equal(other.statusCode, 202)
  await evaluate(engine)
  const fired = await alertEvents(app)
  t.equal(fired.length, 1)
  t.match(fired[0], { rule_id: forU1.id, state: 'firing', value: 1200, samples: 2 }, 'the window held only u1 search calls of project default')
  const inB = await app.inject({ url: '/alerts/events', headers: { ...adminHeaders, 'x-llmscope-project': 'team-b' } })
  t.same(inB.json().events, [], 'another project sees none of it')
  const bad = await app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: { name: 'x', condition: 'avg_latency', threshold: 1, filters: { colour: 'red' } } })
  t.equal(bad.statusCode, 400)
  t.match(bad.json().details[0].path, 'filters.colour')
})

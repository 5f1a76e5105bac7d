/**
 * Alerting through the whole server: events in over HTTP, alert out over WebSocket, in
 * /alerts/events and POSTed to a webhook receiver on loopback. The app is built with no alert
 * timer (ticks are sent by hand) and a short webhook backoff, so nothing waits on real time.
 */
import t, { type Test } from 'tap'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import WebSocket from 'ws'
import { loadConfig } from '../../src/config.js'
import { buildApp, type Built } from '../../src/app.js'
import { ManualClock } from '../../src/clock.js'
import { ADMIN_KEY, READ_KEY, adminHeaders, readHeaders, event } from '../helpers/app.js'

const T0 = Date.parse('2026-04-01T10:00:00.000Z')

async function build(t: Test, clock: ManualClock): Promise<Built> {
  const config = loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), LLMSCOPE_API_KEYS: `${ADMIN_KEY},${READ_KEY}:read`, LLMSCOPE_LOG_LEVEL: 'silent' })
  const built = await buildApp(config, { logger: false, clock, inlinePricing: true, alertTickMs: 0, webhook: { backoffMs: 5, timeoutMs: 5000 } })
  await built.engine.recover()
  t.teardown(() => built.app.close())
  return built
}

/** A webhook receiver on 127.0.0.1; `respond(n)` answers the n-th request (from 1). */
async function receiver(t: Test, respond: (n: number, res: ServerResponse) => void) {
  const hits: Array<Record<string, unknown>> = []
  const server = createServer((req, res) => {
    let data = ''
    req.on('data', (c: Buffer) => (data += c.toString()))
    req.on('end', () => {
      hits.push(JSON.parse(data))
      respond(hits.length, res)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/llmscope`, hits }
}

async function fire(built: Built, rule: object, events: object[]): Promise<string> {
  const { app, engine } = built
  const created = await app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: rule })
  if (created.statusCode !== 201) throw new Error(created.body)
  const res = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: events })
  if (res.statusCode !== 202) throw new Error(res.body)
  await engine.sync()
  engine.topology.alerts.send({ type: 'tick' })
  await engine.topology.system.idle()
  await engine.alerting.idle()
  return created.json().id
}

const costly = { name: 'Spend', condition: 'cost_per_hour', threshold: 10, window_seconds: 300 }

t.test('a webhook receiver that fails twice then succeeds gets the alert; the outcome is recorded', async (t) => {
  const r = await receiver(t, (n, res) => res.writeHead(n <= 2 ? 503 : 200).end('ok'))
  const built = await build(t, new ManualClock(T0))
  // $1 in a 300 s window = $12/h.
  const id = await fire(built, { ...costly, webhook_url: r.url }, [event({ timestamp: undefined, cost: 1 })])
  t.equal(r.hits.length, 3)
  t.same(r.hits[2], {
    type: 'alert',
    rule_id: id,
    rule_name: 'Spend',
    state: 'firing',
    value: 12,
    threshold: 10,
    at: '2026-04-01T10:00:00.000Z',
    event_id: 'aev_0',
    condition: 'cost_per_hour',
    comparator: 'gt',
    model: null,
    window_seconds: 300,
    samples: 1,
    since: '2026-04-01T10:00:00.000Z',
    reminder: false,
    reason: 'condition',
    group: null
  })
  const [ev] = (await built.app.inject({ url: '/alerts/events', headers: readHeaders })).json().events
  t.same(ev.delivery, { status: 'delivered', attempts: 3, status_code: 200, error: null, completed_at: '2026-04-01T10:00:00.000Z' })
  const metrics = (await built.app.inject({ url: '/metrics' })).body
  t.match(metrics, /llmscope_alert_webhook_deliveries_total\{outcome="delivered"\} 1/)
  t.match(metrics, /llmscope_alert_webhook_attempts_total 3/)
})

t.test('a webhook that keeps failing is given up after 3 attempts, recorded as failed', async (t) => {
  const r = await receiver(t, (_n, res) => res.writeHead(500).end())
  const built = await build(t, new ManualClock(T0))
  await fire(built, { ...costly, webhook_url: r.url }, [event({ timestamp: undefined, cost: 1 })])
  t.equal(r.hits.length, 3)
  const [ev] = (await built.app.inject({ url: '/alerts/events', headers: readHeaders })).json().events
  t.same(ev.delivery, { status: 'failed', attempts: 3, status_code: 500, error: 'HTTP 500', completed_at: '2026-04-01T10:00:00.000Z' })
  t.match((await built.app.inject({ url: '/metrics' })).body, /llmscope_alert_webhook_deliveries_total\{outcome="failed"\} 1/)
})

t.test('a batch alone notifies, without waiting for the tick, once the clock moved on from the last pass', async (t) => {
  const clock = new ManualClock(T0)
  const { app, engine } = await build(t, clock)
  await app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: { name: 'slow', condition: 'avg_latency', threshold: 1000, model: 'gpt-4' } })
  clock.advance(1000)
  await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: [event({ timestamp: undefined, latency_ms: 5000 })] })
  await engine.sync()
  await engine.topology.system.idle()
  await engine.alerting.idle()
  // With an idle pipeline the aggregator handles the batch before the evaluator does (its
  // message was sent first); under load a batch pass can see state one batch old, and the next
  // 1 s tick bounds that.
  t.match((await app.inject({ url: '/alerts/events', headers: readHeaders })).json().events, [{ state: 'firing', value: 5000, at: '2026-04-01T10:00:01.000Z' }])
  t.equal(engine.topology.alerts.alertStats.passes, 2, 'the start tick, then the batch pass')
})

t.test('WebSocket clients receive the alert as {"type":"alert",…}', async (t) => {
  const clock = new ManualClock(T0)
  const built = await build(t, clock)
  const address = await built.app.listen({ port: 0, host: '127.0.0.1' })
  const ws = new WebSocket(`${address.replace('http', 'ws')}/ws`, { headers: { 'x-api-key': READ_KEY } })
  t.teardown(() => ws.terminate())
  const alerts: Array<Record<string, unknown>> = []
  const got = new Promise<void>((resolve) => {
    ws.on('message', (data) => {
      const m = JSON.parse(String(data))
      if (m.type === 'alert') {
        alerts.push(m)
        resolve()
      }
    })
  })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  // The subscription is a message to the broadcaster, sent when the server side of the upgrade
  // runs (not necessarily before the client sees 'open'): wait until it has landed.
  const end = Date.now() + 60_000
  while (built.engine.topology.broadcaster.broadcastStats.subscribers < 1) {
    if (Date.now() > end) throw new Error('timed out waiting for the subscription')
    await new Promise((r) => setTimeout(r, 5))
  }
  await built.engine.topology.system.idle()
  const id = await fire(built, costly, [event({ timestamp: undefined, cost: 1 })])
  await got
  t.same(alerts, [{ type: 'alert', project: 'default', rule_id: id, rule_name: 'Spend', state: 'firing', value: 12, threshold: 10, at: '2026-04-01T10:00:00.000Z', group: null }])
})

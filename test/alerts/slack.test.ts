/**
 * `webhook_format: "slack"`: the webhook gets Slack's `{"text": …}` — one readable line naming
 * the rule, its group, the value, the threshold and the state — instead of our JSON; `json`
 * (the default) keeps our body, which now carries `group`. Received by a local HTTP server.
 */
import t from 'tap'
import { ManualClock } from '../../src/clock.js'
import { slackPayload, type WebhookPayload } from '../../src/alerts/dispatcher.js'
import { adminHeaders, event } from '../helpers/app.js'
import { alertEvents, createRule, evaluate, ingest, receiver, rig } from './rig.js'

const T0 = Date.parse('2026-04-01T10:00:00.000Z')
const now = (over: Record<string, unknown>) => event({ timestamp: undefined, ...over })

t.test('a grouped slack rule posts {"text"} per group: firing, then resolved', async (t) => {
  const clock = new ManualClock(T0)
  const r = await rig(t, clock)
  const hook = await receiver(t)
  const rule = await createRule(r, { name: 'Spend per customer', condition: 'cost_per_hour', threshold: 10, window_seconds: 300, group_by: 'metadata.customer', webhook_format: 'slack', webhook_url: hook.url })
  await ingest(r, [now({ cost: 1, metadata: { customer: 'acme' } }), now({ cost: 0.1, metadata: { customer: 'globex' } })])
  await evaluate(r)
  t.equal(hook.hits.length, 1)
  t.same(Object.keys(hook.hits[0].body), ['text'], 'Slack takes {"text": …} only')
  t.equal(hook.hits[0].headers['content-type'], 'application/json')
  t.equal(hook.hits[0].body.text, `[FIRING] Spend per customer (${rule.id}) metadata.customer=acme: cost_per_hour is 12, threshold > 10 — window 300 s, project default, at 2026-04-01T10:00:00.000Z`)
  t.match((await alertEvents(r))[0], { group: 'acme', delivery: { status: 'delivered', attempts: 1, status_code: 200 } })

  clock.advance(301_000)
  await evaluate(r)
  t.equal(hook.hits.length, 2)
  t.equal(hook.hits[1].body.text, `[RESOLVED] Spend per customer (${rule.id}) metadata.customer=acme: cost_per_hour is 0, threshold > 10 — window 300 s, project default, at 2026-04-01T10:05:01.000Z`)

  // The test endpoint sends the same shape.
  const test = await r.app.inject({ method: 'POST', url: `/alerts/rules/${rule.id}/test`, headers: adminHeaders })
  t.equal(test.statusCode, 200)
  t.match(test.json().payload.text, /^\[TEST\] Spend per customer \(rule_[^)]+\) metadata\.customer=\(none\): cost_per_hour is no data, threshold > 10 — window 300 s/)
  t.same(hook.hits[2].body, test.json().payload)
})

t.test('the default json body carries group; slack names baselines as factors, reminders and reasons', async (t) => {
  const clock = new ManualClock(T0)
  const r = await rig(t, clock)
  const hook = await receiver(t)
  const rule = await createRule(r, { name: 'Spend per user', condition: 'cost_per_hour', threshold: 10, window_seconds: 300, group_by: 'user_id', webhook_url: hook.url })
  await ingest(r, [now({ cost: 1, user_id: 'u1' })])
  await evaluate(r)
  t.match(hook.hits[0].body, { type: 'alert', rule_id: rule.id, state: 'firing', value: 12, threshold: 10, group: 'u1', reason: 'condition' })
  // Switching to slack on a live rule: the next notification (the delete's resolution) is a Slack line.
  await r.app.inject({ method: 'PATCH', url: `/alerts/rules/${rule.id}`, headers: adminHeaders, payload: { webhook_format: 'slack' } })
  await r.app.inject({ method: 'DELETE', url: `/alerts/rules/${rule.id}`, headers: adminHeaders })
  await r.engine.topology.alerts.idle()
  await r.engine.alerting.idle()
  t.equal(hook.hits.length, 2)
  t.equal(hook.hits[1].body.text, `[RESOLVED] Spend per user (${rule.id}) user_id=u1: cost_per_hour is 12, threshold > 10 (rule deleted) — window 300 s, project default, at 2026-04-01T10:00:00.000Z`)

  const p: WebhookPayload = { type: 'alert', rule_id: 'rule_x', rule_name: 'Spike', state: 'firing', value: 3.14159, threshold: 2.5, at: '2026-04-01T10:00:00.000Z', event_id: 'aev_1', condition: 'p95_latency', comparator: 'gte', model: null, window_seconds: 600, samples: 9, since: '2026-04-01T09:00:00.000Z', reminder: true, reason: 'condition', group: null }
  t.equal(slackPayload(p, { group_by: 'tag', baseline: { days: 7 }, project: 'team-a' }).text, '[STILL FIRING] Spike (rule_x) tag=(none): p95_latency is 3.142× its 7-day baseline, threshold ≥ 2.5× — window 600 s, project team-a, at 2026-04-01T10:00:00.000Z')
  t.equal(slackPayload({ ...p, reminder: false, value: null }, { group_by: null, baseline: null }).text, '[FIRING] Spike (rule_x): p95_latency is no data, threshold ≥ 2.5 — window 600 s, project default, at 2026-04-01T10:00:00.000Z')
})

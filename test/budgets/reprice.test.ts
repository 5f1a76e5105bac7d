/**
 * Budgets follow re-pricing (DESIGN §8): spent comes from the analytics answers, so a re-price
 * applied to the period moves `spent`, and a threshold the new prices reach fires (once).
 */
import t from 'tap'
import { loadConfig } from '../../src/config.js'
import { buildApp } from '../../src/app.js'
import { ManualClock } from '../../src/clock.js'
import { ADMIN_KEY, READ_KEY, adminHeaders, readHeaders, event } from '../helpers/app.js'

const T0 = Date.parse('2026-04-01T12:00:00.000Z')

t.test('a re-price of the period moves spent, remaining and forecast, and may fire a threshold', async (t) => {
  const clock = new ManualClock(T0)
  const config = loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), LLMSCOPE_API_KEYS: `${ADMIN_KEY},${READ_KEY}:read`, LLMSCOPE_LOG_LEVEL: 'silent' })
  const { app, engine } = await buildApp(config, { logger: false, clock, inlinePricing: true, alertTickMs: 0 })
  await engine.recover()
  t.teardown(() => app.close())
  const put = async (input: number, output: number) => {
    const res = await app.inject({ method: 'PUT', url: '/prices', headers: adminHeaders, payload: { provider: 'openai', model: 'gpt-4', input, output, effective_from: '2026-01-01T00:00:00.000Z' } })
    if (res.statusCode >= 300) throw new Error(res.body)
  }
  await put(10, 20)
  // 1000 prompt + 500 completion tokens at $10/$20 per 1M: $0.02 each; 4 events: $0.08.
  const res = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: Array.from({ length: 4 }, (_, i) => event({ timestamp: `2026-04-01T0${i + 1}:00:00.000Z`, model: 'gpt-4', provider: 'openai' })) })
  t.equal(res.statusCode, 202, res.body)
  const created = await app.inject({ method: 'POST', url: '/budgets', headers: adminHeaders, payload: { name: 'gpt-4', amount: 0.1, period: 'day', thresholds: [1] } })
  t.equal(created.statusCode, 201, created.body)
  const bud = created.json()
  t.match(bud, { spent: 0.08, remaining: 0.02, forecast: 0.16 })
  // A new version changes no accepted event until a re-price.
  await put(20, 40)
  await engine.budgetEvaluator.tick()
  t.equal((await app.inject({ url: `/budgets/${bud.id}`, headers: readHeaders })).json().spent, 0.08, 'a PUT alone changes nothing')
  const applied = await app.inject({ method: 'POST', url: '/prices/reprice', headers: adminHeaders, payload: { start_time: '2026-04-01T00:00:00.000Z', end_time: '2026-04-02T00:00:00.000Z', dry_run: false } })
  t.equal(applied.statusCode, 200, applied.body)
  t.match((await app.inject({ url: `/budgets/${bud.id}`, headers: readHeaders })).json(), { spent: 0.16, remaining: -0.06, forecast: 0.32 }, 'after the re-price: the new prices')
  await engine.budgetEvaluator.tick()
  await engine.budgetEvaluator.idle()
  const events = (await app.inject({ url: '/alerts/events', headers: readHeaders })).json().events.filter((e: { type?: string }) => e.type === 'budget')
  t.match(events, [{ budget_id: bud.id, threshold: 1, spent: 0.16 }], 'the re-priced spend reached 100%: one event')
})

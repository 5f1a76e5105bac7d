/**
 * Baseline rules (`baseline: {"days": N}`): the value is the window's value divided by the mean
 * of the same window 1…N whole days back, so the threshold is a factor. No verdict
 * (`insufficient_history`) until the project holds N days of events, nor while the mean is 0.
 * Grouped rules take each group's own baseline. Manual clock, ticks by hand.
 */
import t from 'tap'
import { ManualClock } from '../../src/clock.js'
import { judgeBaseline } from '../../src/actors/alert-evaluator.js'
import { createAggregate } from '../../src/analytics/series.js'
import { event } from '../helpers/app.js'
import { alertEvents, createRule, evaluate, ingest, rig, ruleState, trail } from './rig.js'

const DAY = 86_400_000
const T0 = Date.parse('2026-04-08T10:00:00.000Z')
const at = (ms: number, over: Record<string, unknown> = {}) => event({ timestamp: new Date(ms).toISOString(), ...over })

/** Cost per hour over the last hour, above 2.5× its mean over the same hour of the 3 previous days. */
const spike = { name: 'Spend spike', condition: 'cost_per_hour', threshold: 2.5, window_seconds: 3600, cooldown_seconds: 0, baseline: { days: 3 } }

/** $0.5 at 10 and 50 minutes before the hour each of the 3 previous days: $1/h at 10:00, $0.5/h at 10:40 … */
function history(over: Record<string, unknown> = {}): object[] {
  const out: object[] = []
  for (let d = 1; d <= 3; d++) for (const m of [-50, -10]) out.push(at(T0 - d * DAY + m * 60_000, { cost: 0.5, ...over }))
  return out
}

t.test('insufficient_history until N days, then firing at 3× the usual, then resolved', async (t) => {
  const clock = new ManualClock(T0)
  const r = await rig(t, clock)
  const rule = await createRule(r, spike)
  t.same(rule.baseline, { days: 3 })
  t.match(await ruleState(r, rule.id), { state: 'insufficient_history', evaluated_at: null }, 'said at once, before the first evaluation')
  // Today only: $3 in the last hour, but the project has no 3 days of history.
  await ingest(r, [at(T0 - 30 * 60_000, { cost: 3 })])
  await evaluate(r)
  t.same(await alertEvents(r), [], 'no firing without history')
  t.match(await ruleState(r, rule.id), { state: 'insufficient_history', value: null })

  // Two days of history are not three.
  await ingest(r, history().slice(0, 4))
  await evaluate(r)
  t.match(await ruleState(r, rule.id), { state: 'insufficient_history' })
  t.same(await alertEvents(r), [])

  // Three days: mean $1/h, now $3/h = 3× > 2.5×: firing, with the factor as value.
  await ingest(r, history().slice(4))
  await evaluate(r)
  const [fired] = await alertEvents(r)
  t.match(fired, { rule_id: rule.id, state: 'firing', value: 3, threshold: 2.5, group: null })
  t.match(await ruleState(r, rule.id), { state: 'firing', value: 3 })

  // 40 minutes on: the spike is still in the window ($3/h), the baseline hour holds only the
  // −10 min events ($0.5/h each day) → 6×; then past the spike → 0×: resolved.
  clock.set(T0 + 20 * 60_000)
  await evaluate(r)
  t.match(await ruleState(r, rule.id), { state: 'firing', value: 6 })
  clock.set(T0 + 31 * 60_000)
  await evaluate(r)
  t.match(await alertEvents(r), [{ state: 'resolved', value: 0 }, { state: 'firing' }])
  t.match(await ruleState(r, rule.id), { state: 'resolved', value: 0 })
})

t.test('a mean of 0 reads insufficient_history and never fires; per-group baselines', async (t) => {
  const clock = new ManualClock(T0)
  const r = await rig(t, clock)
  // The project has history (gpt-4 for u1), but none for claude: its mean is 0.
  const claude = await createRule(r, { ...spike, name: 'claude spike', model: 'claude-3-5-sonnet' })
  const perUser = await createRule(r, { ...spike, name: 'per user spike', group_by: 'user_id' })
  await ingest(r, history({ user_id: 'u1' }))
  t.match(await ruleState(r, claude.id), { state: 'ok', evaluated_at: null }, 'not evaluated yet, the history is there: ok until the mean is known')
  await ingest(r, [
    at(T0 - 30 * 60_000, { model: 'claude-3-5-sonnet', provider: 'anthropic', cost: 50 }),
    at(T0 - 30 * 60_000, { user_id: 'u1', cost: 3 }),
    at(T0 - 30 * 60_000, { user_id: 'u2', cost: 3 })
  ])
  await evaluate(r)
  t.same(await alertEvents(r, `?rule_id=${claude.id}`), [], 'a zero mean never fires')
  t.match(await ruleState(r, claude.id), { state: 'insufficient_history', value: null })
  // u1: its own mean is $1/h, now $3/h → fires. u2 has no history: not judged, counted.
  t.same(trail(await alertEvents(r, `?rule_id=${perUser.id}`)), ['u1:firing'])
  t.match((await alertEvents(r, `?rule_id=${perUser.id}`))[0], { group: 'u1', value: 3 })
  t.match(await ruleState(r, perUser.id), { state: 'firing', groups: [{ group: 'u1', value: 3 }], groups_without_baseline: 2, groups_capped: 0 }, 'u2 and the claude event (null user) have no baseline')
})

t.test('a grouped baseline rule without history reads insufficient_history', async (t) => {
  const r = await rig(t, new ManualClock(T0))
  const rule = await createRule(r, { ...spike, group_by: 'model' })
  t.match(await ruleState(r, rule.id), { state: 'insufficient_history', evaluated_at: null })
  await ingest(r, [at(T0 - 60_000, { cost: 100 })])
  await evaluate(r)
  t.same(await alertEvents(r), [])
  t.match(await ruleState(r, rule.id), { state: 'insufficient_history', groups: [] })
})

t.test('judgeBaseline: factor, per-request means over days with data, min_samples, no verdict without history or with a zero mean', async (t) => {
  const agg = (requests: number, costNanos: number, latencyUsSum = 0) => {
    const a = createAggregate()
    a.totals.requests = requests
    a.totals.costNanos = costNanos
    a.totals.latencyUsSum = latencyUsSum
    return a
  }
  const cost = { condition: 'cost_per_hour' as const, comparator: 'gt' as const, threshold: 2, window_seconds: 3600, min_samples: 1 }
  t.same(judgeBaseline(cost, agg(1, 3e9), [agg(1, 1e9), agg(2, 2e9), undefined], true), { value: 3, samples: 1, holds: true, insufficient: false }, 'mean (1 + 2 + 0) / 3 = $1/h')
  t.same(judgeBaseline(cost, agg(1, 3e9), [agg(1, 1e9)], false), { value: null, samples: 1, holds: false, insufficient: true })
  t.same(judgeBaseline(cost, agg(1, 3e9), [undefined, agg(0, 0)], true), { value: null, samples: 1, holds: false, insufficient: true })
  const latency = { ...cost, condition: 'avg_latency' as const, min_samples: 2 }
  // Days: 100 ms, none (not counted), 300 ms → mean 200 ms; now 500 ms = 2.5×, but one sample < min_samples.
  t.same(judgeBaseline(latency, agg(1, 0, 500_000), [agg(1, 0, 100_000), undefined, agg(2, 0, 600_000)], true), { value: 2.5, samples: 1, holds: false, insufficient: false })
  t.same(judgeBaseline(latency, agg(2, 0, 1_000_000), [agg(1, 0, 100_000), undefined, agg(2, 0, 600_000)], true).holds, true)
})

/**
 * The queries a rule reads (src/alerts/windows.ts): what cluster mode prefetches must be exactly
 * what the evaluator asks for, so these shapes and keys are pinned here.
 */
import t from 'tap'
import { groupSort, groupWindowKey, historyWindow, MAX_RULE_GROUPS, ruleQueries, ruleWindow, windowGroupsOf, windowKey } from '../../src/alerts/windows.js'
import { createAggregate } from '../../src/analytics/series.js'
import type { Rule } from '../../src/store/rules.js'

const T0 = Date.parse('2026-04-08T10:00:00.000Z')
const DAY = 86_400_000
const rule: Rule = { id: 'rule_w', name: 'w', condition: 'cost_per_hour', threshold: 3, enabled: true, model: 'gpt-4', window_seconds: 300, comparator: 'gt', cooldown_seconds: 0, min_samples: 1, webhook_url: null, project: 'team-a', filters: { user_id: 'u1' }, created_at: '', updated_at: '' }

t.test('a plain rule reads its window (now − W, now] as [start, end)', async (t) => {
  const q = ruleQueries(rule, T0)
  t.same(q.groups, [])
  t.equal(q.windows.length, 1)
  t.match(q.windows[0], { project: 'team-a', start: T0 - 300_000 + 1, end: T0 + 1, filters: { user_id: 'u1' } })
  t.same([...q.windows[0].filters.models!], ['gpt-4'])
  t.same(ruleWindow(rule, T0, 2), { ...ruleWindow(rule, T0), start: T0 - 2 * DAY - 300_000 + 1, end: T0 - 2 * DAY + 1 })
})

t.test('a baseline reads N shifted windows and the history check until it is known', async (t) => {
  const b = { ...rule, baseline: { days: 3 } }
  const q = ruleQueries(b, T0)
  t.same(q.windows.map((w) => [w.start, w.end]), [
    [T0 - 300_000 + 1, T0 + 1],
    [T0 - DAY - 300_000 + 1, T0 - DAY + 1],
    [T0 - 2 * DAY - 300_000 + 1, T0 - 2 * DAY + 1],
    [T0 - 3 * DAY - 300_000 + 1, T0 - 3 * DAY + 1],
    [0, T0 - 3 * DAY + 1]
  ])
  t.same(q.windows[4], historyWindow('team-a', T0, 3), 'the history check has no filters')
  t.same(q.windows[4].filters, {})
  t.equal(ruleQueries(b, T0, (p, d) => p === 'team-a' && d <= 3).windows.length, 4, 'known history is not asked again')
})

t.test('a grouped rule reads groups queries (its own and the shifted ones) sorted by what its condition measures', async (t) => {
  const g = { ...rule, group_by: 'metadata.customer', baseline: { days: 2 } }
  const q = ruleQueries(g, T0)
  t.equal(q.groups.length, 3)
  t.match(q.groups[0], { by: 'metadata.customer', sort: 'cost', limit: MAX_RULE_GROUPS, start: T0 - 300_000 + 1 })
  t.equal(q.windows.length, 1, 'only the history check')
  t.same([groupSort('cost_per_hour'), groupSort('tokens_per_minute'), groupSort('requests_per_minute'), groupSort('avg_latency'), groupSort('p95_latency'), groupSort('error_rate')], ['cost', 'tokens', 'requests', 'requests', 'requests', 'requests'])
  t.not(groupWindowKey(q.groups[0]), groupWindowKey({ ...q.groups[0], sort: 'requests' }))
  t.equal(windowKey({ ...q.groups[0], filters: { models: new Set(['b', 'a']) } }), windowKey({ ...q.groups[0], filters: { models: new Set(['a', 'b']) } }), 'set order does not matter')
})

t.test('windowGroupsOf: capped from the breakdown\'s count; without one, 1 when something was left out', async (t) => {
  const groups = [{ value: 'a', agg: createAggregate() }, { value: null, agg: createAggregate() }]
  const b = { by: 'user_id', groups, other: createAggregate(), total: createAggregate() }
  t.same(windowGroupsOf({ ...b, count: 7 }, 2), { groups, capped: 5 })
  t.same(windowGroupsOf(b, 2).capped, 1)
  t.same(windowGroupsOf({ ...b, other: null }, 2).capped, 0)
  t.same(windowGroupsOf({ ...b, count: 2, other: null }, 1000).capped, 0)
})

t.test('the evaluator remembers a project\'s history once seen, and forgets it with the project\'s last rule', async (t) => {
  const { AlertEvaluator } = await import('../../src/actors/alert-evaluator.js')
  const { ManualClock } = await import('../../src/clock.js')
  const asked: Array<[number, number]> = []
  const ev = new AlertEvaluator({
    clock: new ManualClock(T0),
    window: (q) => {
      asked.push([q.start, q.end])
      const a = createAggregate()
      a.totals.requests = 1
      return a
    },
    emit: () => {}
  })
  const b = { ...rule, baseline: { days: 3 } }
  ev.send({ type: 'rules', rules: [b] })
  ev.send({ type: 'tick' })
  await ev.idle()
  t.ok(asked.some(([s]) => s === 0), 'the history check was asked')
  t.ok(ev.historyKnown('team-a', 3) && ev.historyKnown('team-a', 1) && !ev.historyKnown('team-a', 4))
  asked.length = 0
  ev.send({ type: 'tick' })
  await ev.idle()
  t.notOk(asked.some(([s]) => s === 0), 'not asked again')
  ev.send({ type: 'rules', rules: [] })
  await ev.idle()
  t.notOk(ev.historyKnown('team-a', 1))
})

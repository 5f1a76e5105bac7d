/**
 * The queries a rule reads (src/alerts/windows.ts): what cluster mode prefetches must be exactly
 * what the evaluator asks for, so these shapes and keys are pinned here.
 */
import t from 'tap'
import { groupSort, groupWindowKey, historyWindow, MAX_RULE_GROUPS, ruleQueries, ruleWindow, windowGroupsMany, windowGroupsOf, windowKey } from '../../src/alerts/windows.js'
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

t.test('breakdownMany answers each sort exactly as breakdown() does, from one pass; the evaluator asks a tick\'s groups queries at once', async (t) => {
  const { breakdown, breakdownMany } = await import('../../src/queries.js')
  const { ManualClock } = await import('../../src/clock.js')
  const { event } = await import('../helpers/app.js')
  const { rig, ingest, createRule, evaluate } = await import('./rig.js')
  const clock = new ManualClock(T0)
  const r = await rig(t, clock)
  const events: object[] = []
  // 1,030 users with varied cost, tokens and latency; some events without a user, some tagged.
  for (let i = 0; i < 3000; i++) {
    const u = i % 7 === 0 ? undefined : `u${(i * 37) % 1030}`
    events.push(event({ timestamp: new Date(T0 - (i % 280) * 1000).toISOString(), user_id: u, cost: ((i * 13) % 17) / 1000, prompt_tokens: (i * 7) % 900, latency_ms: (i * 31) % 5000, tags: i % 3 === 0 ? ['a', `t${i % 5}`] : undefined }))
  }
  await ingest(r, events)
  await r.engine.sync()
  const source = r.engine.source
  const q = { project: 'default', start: T0 - 300_000 + 1, end: T0 + 1 }
  const render = (gs: Array<{ value: string | null; agg: { totals: object; sketch: { count: number; quantile(x: number): number } } }>) => gs.map((g) => [g.value, g.agg.totals, g.agg.sketch.count, g.agg.sketch.count === 0 ? null : g.agg.sketch.quantile(0.95)])
  // The whole range by user takes the all-time-totals path; a part of it, or by tag, scans the rows.
  const part = { ...q, start: T0 - 100_000 + 1 }
  for (const [range, label] of [[q, 'whole'], [part, 'part']] as const) {
    for (const by of ['user_id', 'tag']) {
      for (const limit of [1000, 3]) {
        const many = breakdownMany(source, range, by, ['cost', 'requests', 'tokens'], limit, true)
        for (const sort of ['cost', 'requests', 'tokens'] as const) {
          const one = breakdown(source, range, by, sort, limit)
          t.same(render(many.bySort.get(sort)!), render(one.groups), `${label} ${by} ${sort} limit ${limit}`)
          t.equal(many.count, one.count, `${label} ${by} count`)
        }
      }
    }
  }
  t.equal(breakdownMany(source, part, 'user_id', ['cost'], 10, false).bySort.get('cost')![0].agg.sketch.count, 0, 'no sketches unless asked')

  // Rules of three conditions over one window and dimension: one pass (the prefetch), then nothing more.
  for (const condition of ['cost_per_hour', 'requests_per_minute', 'tokens_per_minute', 'p95_latency']) await createRule(r, { name: condition, condition, threshold: 1e12, window_seconds: 300, group_by: 'user_id' })
  const before = r.engine.topology.alerts.alertStats.groupEvaluations
  await evaluate(r)
  t.equal(r.engine.topology.alerts.alertStats.groupEvaluations - before, 4 * 1000, 'each rule judged its 1,000 groups')
  t.equal(r.engine.topology.alerts.alertStats.evaluationErrors, 0)
  const st = (await r.app.inject({ url: '/alerts/rules', headers: { 'x-api-key': 'test-read-key-0001' } })).json().rules
  t.equal(st.length, 4)
})

t.test('windowGroupsMany: one pass per (window, filters, dimension, limit) with the union of sorts and sketches', async (t) => {
  const passes: Array<[string, string[], boolean]> = []
  const g = (value: string, n: number) => {
    const a = createAggregate()
    a.totals.requests = n
    return { value, agg: a }
  }
  const pass = (_q: unknown, by: string, sorts: readonly ('cost' | 'requests' | 'tokens')[], _limit: number, sketches: boolean) => {
    passes.push([by, [...sorts], sketches])
    return { count: 5, bySort: new Map(sorts.map((s) => [s, s === 'cost' ? [g('a', 1), g('b', 2)] : [g('b', 2), g('a', 1)]] as const)) }
  }
  const base = { ...rule, group_by: 'user_id' }
  const qs = [
    ruleQueries(base, T0).groups[0],
    ruleQueries({ ...base, condition: 'requests_per_minute' }, T0).groups[0],
    ruleQueries({ ...base, condition: 'p95_latency' }, T0).groups[0],
    ruleQueries({ ...base, group_by: 'tag' }, T0).groups[0]
  ]
  const answers = windowGroupsMany(qs, pass)
  t.same(passes, [['user_id', ['cost', 'requests'], true], ['tag', ['cost'], false]])
  t.same(answers.map((a) => [a.groups.map((x) => x.value), a.capped]), [[['a', 'b'], 3], [['b', 'a'], 3], [['b', 'a'], 3], [['a', 'b'], 3]])
})

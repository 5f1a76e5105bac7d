/**
 * Grouped alert rules (`group_by`): state and firing per group value, resolution when a group
 * leaves the window, the 1,000-group cap counted, restarts that neither lose nor repeat a
 * group's firing, and the 400s of the new fields. Manual clock, ticks by hand.
 */
import t from 'tap'
import { ManualClock } from '../../src/clock.js'
import { AlertEvaluator } from '../../src/actors/alert-evaluator.js'
import { createAggregate } from '../../src/analytics/series.js'
import { MAX_RULE_GROUPS, type GroupWindowQuery } from '../../src/alerts/windows.js'
import { parseStateKey, stateKey, type AlertTransition } from '../../src/alerts/types.js'
import type { Rule } from '../../src/store/rules.js'
import { adminHeaders, readHeaders, event } from '../helpers/app.js'
import { alertEvents, createRule, evaluate, ingest, rig, ruleState, trail } from './rig.js'

const T0 = Date.parse('2026-04-01T10:00:00.000Z')
const now = (over: Record<string, unknown>) => event({ timestamp: undefined, ...over })

/** $1 in a 300 s window is $12/h: above 10. $0.5 is $6/h: below. */
const perUser = { name: 'Spend per user', condition: 'cost_per_hour', threshold: 10, window_seconds: 300, cooldown_seconds: 0, group_by: 'user_id' }

t.test('fires per user (the null group too) and resolves a group that leaves the window', async (t) => {
  const clock = new ManualClock(T0)
  const r = await rig(t, clock)
  const rule = await createRule(r, perUser)
  t.equal(rule.group_by, 'user_id')
  await ingest(r, [now({ user_id: 'u1', cost: 1 }), now({ user_id: 'u2', cost: 0.5 }), now({ cost: 2 })])
  await evaluate(r)
  const fired = await alertEvents(r)
  t.same(trail(fired).sort(), ['u1:firing', '∅:firing'].sort())
  const u1 = fired.find((e) => e.group === 'u1')!
  t.match(u1, { rule_id: rule.id, group: 'u1', group_by: 'user_id', state: 'firing', value: 12, samples: 1, threshold: 10 })
  t.match(fired.find((e) => e.group === null), { group: null, group_by: 'user_id', value: 24 }, 'events without user_id form the null group')
  t.same(r.frames.map((f) => [f.group, f.state, f.value]).sort(), [['u1', 'firing', 12], [null, 'firing', 24]].sort(), 'frames carry the group')
  const st = await ruleState(r, rule.id)
  t.match(st, { rule_id: rule.id, state: 'firing', group_by: 'user_id', groups_capped: 0 })
  t.same(st.groups.map((g: { group: string | null }) => g.group), ['u1', null], 'firing groups only, null last')

  // u2 crosses too: only u2 notifies; u1 and the null group are still firing (cooldown 0: no reminder).
  clock.advance(10_000)
  await ingest(r, [now({ user_id: 'u2', cost: 0.5 })])
  await evaluate(r)
  t.same(trail(await alertEvents(r)).slice(2), ['u2:firing'])

  // The window slides past every event: each group resolves, once.
  clock.set(T0 + 310_001)
  await evaluate(r)
  await evaluate(r)
  const all = await alertEvents(r)
  t.same(trail(all).slice(3).sort(), ['u1:resolved', 'u2:resolved', '∅:resolved'].sort())
  t.match(all.find((e) => e.group === 'u1' && e.state === 'resolved'), { value: 0, samples: 0 })
  t.match(await ruleState(r, rule.id), { state: 'ok', groups: [] })
  // Ungrouped rules keep their shape, with "group": null on records and frames.
  const plain = await createRule(r, { name: 'All spend', condition: 'cost_per_hour', threshold: 10, window_seconds: 300 })
  t.notOk('group_by' in plain, 'a rule created without the new fields is stored as before')
  await ingest(r, [now({ user_id: 'u3', cost: 1 })])
  await evaluate(r)
  t.match((await alertEvents(r, `?rule_id=${plain.id}`))[0], { group: null, state: 'firing' })
  t.notOk('group_by' in (await alertEvents(r, `?rule_id=${plain.id}`))[0])
  t.match(await ruleState(r, plain.id), { state: 'firing', value: 12, group_by: null })
  t.equal(r.frames.at(-1)?.group, null)
})

t.test('group by tag and by metadata key; filters apply inside each group', async (t) => {
  const clock = new ManualClock(T0)
  const r = await rig(t, clock)
  const byTag = await createRule(r, { ...perUser, name: 'per tag', group_by: 'tag', filters: { 'metadata.env': 'prod' } })
  const byFeature = await createRule(r, { ...perUser, name: 'per feature', group_by: 'metadata.feature', model: 'gpt-4' })
  await ingest(r, [
    now({ tags: ['a', 'b'], cost: 1, metadata: { env: 'prod', feature: 'search' } }),
    now({ tags: ['a'], cost: 1, metadata: { env: 'dev', feature: 'chat' } }),
    now({ model: 'gpt-4o', cost: 5, metadata: { feature: 'chat' } })
  ])
  await evaluate(r)
  t.same(trail(await alertEvents(r, `?rule_id=${byTag.id}`)).sort(), ['a:firing', 'b:firing'], 'an event counts in each of its tags; the dev event is filtered out')
  t.match((await alertEvents(r, `?rule_id=${byTag.id}`)).find((e) => e.group === 'a'), { value: 12 })
  t.same(trail(await alertEvents(r, `?rule_id=${byFeature.id}`)).sort(), ['chat:firing', 'search:firing'])
  t.match((await alertEvents(r, `?rule_id=${byFeature.id}`)).find((e) => e.group === 'chat'), { value: 12 }, 'the gpt-4o event is not the rule\'s model')
})

t.test('at most 1,000 groups are evaluated: the busiest; the rest are counted', async (t) => {
  const clock = new ManualClock(T0)
  const r = await rig(t, clock)
  // 1,005 users: five with two requests, a thousand with one. Two requests in 300 s = 0.4/min.
  const rule = await createRule(r, { name: 'busy users', condition: 'requests_per_minute', threshold: 0.3, window_seconds: 300, group_by: 'user_id' })
  const events: object[] = []
  for (let i = 0; i < 5; i++) events.push(now({ user_id: `heavy${i}` }), now({ user_id: `heavy${i}` }))
  for (let i = 0; i < 1000; i++) events.push(now({ user_id: `light${String(i).padStart(4, '0')}` }))
  await ingest(r, events)
  const before = r.engine.topology.alerts.alertStats.groupEvaluations
  await evaluate(r)
  t.equal(r.engine.topology.alerts.alertStats.groupEvaluations - before, MAX_RULE_GROUPS, 'exactly 1,000 groups judged')
  t.same(trail(await alertEvents(r)).sort(), ['heavy0', 'heavy1', 'heavy2', 'heavy3', 'heavy4'].map((u) => `${u}:firing`), 'the busiest groups are among those judged')
  const st = await ruleState(r, rule.id)
  t.equal(st.groups_capped, 5, 'the groups past the cap are counted')
})

t.test('the evaluator counts groups past the cap exactly and keeps state for firing groups only', async (t) => {
  const clock = new ManualClock(T0)
  const out: AlertTransition[] = []
  const asked: GroupWindowQuery[] = []
  let groups: Array<{ value: string | null; requests: number }> = []
  const agg = (requests: number) => {
    const a = createAggregate()
    a.totals.requests = requests
    return a
  }
  const ev = new AlertEvaluator({
    clock,
    window: () => createAggregate(),
    windowGroups: (q) => {
      asked.push(q)
      return { groups: groups.slice(0, q.limit).map((g) => ({ value: g.value, agg: agg(g.requests) })), capped: Math.max(0, groups.length - q.limit) }
    },
    emit: (x) => out.push(x)
  })
  const r: Rule = { id: 'rule_g', name: 'g', condition: 'requests_per_minute', threshold: 1, enabled: true, model: null, window_seconds: 60, comparator: 'gt', cooldown_seconds: 0, min_samples: 1, webhook_url: null, group_by: 'session_id', created_at: '', updated_at: '' }
  ev.send({ type: 'rules', rules: [r] })
  groups = Array.from({ length: 1200 }, (_, i) => ({ value: `s${i}`, requests: i < 3 ? 5 : 1 }))
  ev.send({ type: 'tick' })
  await ev.idle()
  t.match(asked[0], { by: 'session_id', sort: 'requests', limit: 1000, start: T0 - 60_000 + 1, end: T0 + 1 })
  t.same(out.map((x) => [x.group, x.state]), [['s0', 'firing'], ['s1', 'firing'], ['s2', 'firing']])
  t.match(ev.groupedState('rule_g'), { capped: 200, insufficientHistory: false })
  t.equal(ev.groupedState('rule_g')!.groups.length, 3, 'only firing groups hold state')
  t.equal(ev.alertStats.firing, 3)
  // Batch passes leave grouped rules to the ticks.
  clock.advance(1000)
  ev.send({ type: 'events', events: [] })
  await ev.idle()
  t.equal(asked.length, 1)
  // s1 drops below, s2 leaves the window: both resolve; a group_by change resolves s0 (rule_changed).
  groups = [{ value: 's0', requests: 5 }, { value: 's1', requests: 1 }]
  ev.send({ type: 'tick' })
  await ev.idle()
  t.same(out.slice(3).map((x) => [x.group, x.state, x.value]), [['s1', 'resolved', 1], ['s2', 'resolved', 0]])
  ev.send({ type: 'rules', rules: [{ ...r, group_by: 'user_id' }] })
  await ev.idle()
  t.same(out.slice(5).map((x) => [x.group, x.state, x.reason]), [['s0', 'resolved', 'rule_changed']])
  t.equal(ev.alertStats.firing, 0)
})

t.test('a restart keeps each group firing and does not notify it again', async (t) => {
  const clock = new ManualClock(T0)
  const first = await rig(t, clock)
  const rule = await createRule(first, { ...perUser, window_seconds: 3600, cooldown_seconds: 300 })
  // $1 in 3600 s = $1/h: threshold 0.5.
  await first.app.inject({ method: 'PATCH', url: `/alerts/rules/${rule.id}`, headers: adminHeaders, payload: { threshold: 0.5 } })
  await ingest(first, [now({ user_id: 'u1', cost: 1 }), now({ user_id: 'u2', cost: 1 })])
  await evaluate(first)
  t.same(trail(await alertEvents(first)).sort(), ['u1:firing', 'u2:firing'])
  await first.close()

  // A graceful restart (snapshot): inside the cooldown nothing new; the state says both fire.
  clock.advance(100_000)
  const second = await rig(t, clock, first.dir)
  t.equal(second.engine.recovery?.snapshot, 'loaded')
  await evaluate(second)
  t.equal((await alertEvents(second)).length, 2, 'no second firing after the restart')
  t.same(second.frames, [])
  t.same((await ruleState(second, rule.id)).groups.map((g: { group: string; since: string }) => [g.group, g.since]), [['u1', '2026-04-01T10:00:00.000Z'], ['u2', '2026-04-01T10:00:00.000Z']])
  // Past the cooldown: one reminder per group.
  clock.set(T0 + 300_000)
  await evaluate(second)
  t.same(trail(await alertEvents(second)).slice(2).sort(), ['u1:firing:reminder', 'u2:firing:reminder'])
  // u3 fires now, then a crash before any snapshot knows it: the records restore it.
  await second.engine.snapshotNow()
  await ingest(second, [now({ user_id: 'u3', cost: 1 })])
  await evaluate(second)
  t.equal(trail(await alertEvents(second)).at(-1), 'u3:firing')
  await second.engine.destroy()
  await second.close()

  clock.advance(1000)
  const third = await rig(t, clock, first.dir)
  await evaluate(third)
  t.equal((await alertEvents(third)).length, 5, 'nothing fired twice after the crash')
  t.same((await ruleState(third, rule.id)).groups.map((g: { group: string }) => g.group), ['u1', 'u2', 'u3'])
})

t.test('the new fields: zod 400s name the field; PATCH sets and clears them', async (t) => {
  const r = await rig(t, new ManualClock(T0))
  const base = { name: 'x', condition: 'cost_per_hour', threshold: 1 }
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ ...base, group_by: 'colour' }, 'group_by'],
    [{ ...base, group_by: 'metadata.' }, 'group_by'],
    [{ ...base, group_by: 7 }, 'group_by'],
    [{ ...base, baseline: { days: 0 } }, 'baseline.days'],
    [{ ...base, baseline: { days: 31 } }, 'baseline.days'],
    [{ ...base, baseline: { days: 1.5 } }, 'baseline.days'],
    [{ ...base, baseline: { weeks: 1 } }, 'baseline'],
    [{ ...base, baseline: 7 }, 'baseline'],
    [{ ...base, webhook_format: 'xml' }, 'webhook_format']
  ]
  for (const [payload, field] of cases) {
    const res = await r.app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload })
    t.equal(res.statusCode, 400, `${field}: ${JSON.stringify(payload)}`)
    t.ok(res.json().details.some((d: { path: string }) => d.path === field || d.path.startsWith(`${field}.`)), `${field}: ${JSON.stringify(res.json().details)}`)
  }
  t.same((await r.app.inject({ url: '/alerts/rules', headers: readHeaders })).json().rules, [], 'nothing created')
  const ok = await createRule(r, { ...base, group_by: 'metadata.customer', baseline: { days: 7 }, webhook_format: 'slack' })
  t.match(ok, { group_by: 'metadata.customer', baseline: { days: 7 }, webhook_format: 'slack' })
  const cleared = await r.app.inject({ method: 'PATCH', url: `/alerts/rules/${ok.id}`, headers: adminHeaders, payload: { group_by: null, baseline: null, webhook_format: 'json' } })
  t.equal(cleared.statusCode, 200)
  t.match(cleared.json(), { group_by: null, baseline: null, webhook_format: 'json' })
  const bad = await r.app.inject({ method: 'PATCH', url: `/alerts/rules/${ok.id}`, headers: adminHeaders, payload: { baseline: { days: 99 } } })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json().details[0].path, 'baseline.days')
  t.equal((await r.app.inject({ url: `/alerts/rules/${ok.id}/state`, headers: readHeaders })).json().state, 'ok')
  t.equal((await r.app.inject({ url: '/alerts/rules/rule_nope/state', headers: readHeaders })).statusCode, 404)
})

t.test('reconcile: a group\'s newer record wins (firing sets it, resolved clears it); strays of changed rules are dropped', async (t) => {
  const clock = new ManualClock(T0)
  const out: AlertTransition[] = []
  const snapshot = { v: 2 as const, seen: 0, rules: [], groups: [{ id: 'rule_g', capped: 0, groups: [{ group: 'a', state: 'firing' as const, since: T0, lastNotifiedAt: T0, lastValue: 5, lastEvalAt: T0 }, { group: 'b', state: 'firing' as const, since: T0, lastNotifiedAt: T0 + 50, lastValue: 5, lastEvalAt: T0 }] }] }
  const recorded = new Map([
    [stateKey('rule_g', 'a'), { state: 'resolved' as const, since: T0 + 10, at: T0 + 10, value: 0, group: 'a' }],
    [stateKey('rule_g', 'b'), { state: 'firing' as const, since: T0, at: T0 + 20, value: 4, group: 'b' }],
    [stateKey('rule_g', null), { state: 'firing' as const, since: T0 + 30, at: T0 + 30, value: 9, group: null }],
    ['rule_g', { state: 'firing' as const, since: T0 - 99, at: T0 + 40, value: 1 }]
  ])
  const ev = new AlertEvaluator({ clock, window: () => createAggregate(), windowGroups: () => ({ groups: [], capped: 0 }), emit: (x) => out.push(x), recorded }, snapshot)
  const groups = () => ev.groupedState('rule_g')!.groups.map((g) => [g.group, g.since, g.lastNotifiedAt])
  t.same(groups(), [['b', T0, T0 + 50], [null, T0 + 30, T0 + 30]], 'a resolved newer record clears a; b\'s record is older than the snapshot; the null group is restored')
  t.same(parseStateKey(stateKey('rule_g', null)), { ruleId: 'rule_g', group: null })
  t.same(parseStateKey(stateKey('rule_g', '=x')), { ruleId: 'rule_g', group: '=x' })
  t.same(parseStateKey('rule_g'), { ruleId: 'rule_g' })
  const r: Rule = { id: 'rule_g', name: 'g', condition: 'requests_per_minute', threshold: 1, enabled: true, model: null, window_seconds: 60, comparator: 'gt', cooldown_seconds: 0, min_samples: 1, webhook_url: null, group_by: 'user_id', created_at: '', updated_at: '' }
  ev.send({ type: 'rules', rules: [r] })
  await ev.idle()
  t.notOk(ev.ruleStates().has('rule_g'), 'the ungrouped record of a rule now grouped left no state')
  // Another node's records, arriving after the rules: an ungrouped one of this grouped rule is a stray.
  ev.send({ type: 'reconcile', recorded: new Map([['rule_g', { state: 'firing' as const, since: T0 + 60, at: T0 + 60, value: 1 }]]) })
  await ev.idle()
  t.notOk(ev.ruleStates().has('rule_g'))
  t.same(out, [], 'reconciling notifies nothing')
})

t.test('one pass shares groups queries: same window, filters and dimension; the sort only matters when groups were capped', async (t) => {
  const clock = new ManualClock(T0)
  const asked: GroupWindowQuery[] = []
  let count = 3
  const ev = new AlertEvaluator({
    clock,
    window: () => createAggregate(),
    windowGroups: (q) => {
      asked.push(q)
      const groups = Array.from({ length: Math.min(count, q.limit) }, (_, i) => {
        const a = createAggregate()
        a.totals.requests = i + 1
        return { value: `u${i}`, agg: a }
      })
      return { groups, capped: Math.max(0, count - q.limit) }
    },
    emit: () => {}
  })
  const base: Rule = { id: 'r1', name: 'g', condition: 'cost_per_hour', threshold: 1, enabled: true, model: null, window_seconds: 60, comparator: 'gt', cooldown_seconds: 0, min_samples: 1, webhook_url: null, group_by: 'user_id', created_at: '', updated_at: '' }
  const rules: Rule[] = [
    ...Array.from({ length: 50 }, (_, i) => ({ ...base, id: `cost${i}`, threshold: i })),
    ...Array.from({ length: 50 }, (_, i) => ({ ...base, id: `rpm${i}`, condition: 'requests_per_minute' as const, threshold: i })),
    { ...base, id: 'other-window', window_seconds: 120 },
    { ...base, id: 'other-dim', group_by: 'tag' }
  ]
  ev.send({ type: 'rules', rules })
  ev.send({ type: 'tick' })
  await ev.idle()
  t.same(asked.map((q) => [q.by, q.sort, q.end - q.start]), [['user_id', 'cost', 60_000], ['user_id', 'cost', 120_000], ['tag', 'cost', 60_000]], '102 rules, 3 queries: nothing capped, so the request-sorted rules reuse the cost-sorted answer')
  t.equal(ev.alertStats.groupEvaluations, 102 * 3)
  asked.length = 0
  count = 1005
  clock.advance(1000)
  ev.send({ type: 'tick' })
  await ev.idle()
  t.same(asked.map((q) => [q.by, q.sort]), [['user_id', 'cost'], ['user_id', 'requests'], ['user_id', 'cost'], ['tag', 'cost']], 'capped: each sort asks for its own top 1,000')
})

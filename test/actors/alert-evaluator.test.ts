import t from 'tap'
import { AlertEvaluator, reconcile, type AlertState, type RuleAlertState } from '../../src/actors/alert-evaluator.js'
import { toRow } from '../../src/actors/model-aggregator.js'
import { SeriesStore, createAggregate } from '../../src/analytics/series.js'
import { ManualClock } from '../../src/clock.js'
import type { AlertTransition, RecordedAlert } from '../../src/alerts/types.js'
import type { PricedEvent } from '../../src/events.js'
import { pricedEvent } from '../helpers/events.js'
import type { Rule } from '../../src/store/rules.js'

const T0 = Date.parse('2026-03-01T12:00:00.000Z')

function rule(over: Partial<Rule> = {}): Rule {
  return {
    id: 'rule_a',
    name: 'slow',
    condition: 'avg_latency',
    threshold: 100,
    enabled: true,
    model: null,
    window_seconds: 60,
    comparator: 'gt',
    cooldown_seconds: 300,
    min_samples: 1,
    webhook_url: null,
    created_at: new Date(T0).toISOString(),
    updated_at: new Date(T0).toISOString(),
    ...over
  }
}

function ev(over: Partial<PricedEvent> = {}): PricedEvent {
  return pricedEvent({ ts: T0, recv: T0, ...over })
}

/**
 * An evaluator over real series stores (what the aggregators hold), a manual clock and a list of
 * what it emitted. `add()` records events the way the aggregators would, then hands the batch to
 * the evaluator; `tick()` evaluates at the clock's time.
 */
function setup(opts: { restored?: AlertState | null; recorded?: Map<string, RecordedAlert>; batchPassIntervalMs?: number; clock?: ManualClock } = {}) {
  const clock = opts.clock ?? new ManualClock(T0)
  const series = new Map<string, SeriesStore>()
  const out: AlertTransition[] = []
  const windows: Array<[string | null, number, number]> = []
  const actor = new AlertEvaluator(
    {
      clock,
      window: (q) => {
        const model = q.filters.models === undefined ? null : [...q.filters.models][0]
        const { start, end } = q
        windows.push([model, start, end])
        const acc = createAggregate()
        for (const [m, s] of series) if (model === null || m === model) s.aggregate(start, end, acc)
        return acc
      },
      emit: (x) => out.push(x),
      recorded: opts.recorded,
      batchPassIntervalMs: opts.batchPassIntervalMs
    },
    opts.restored
  )
  const record = (events: PricedEvent[]) => {
    for (const e of events) {
      let s = series.get(e.model)
      if (s === undefined) series.set(e.model, (s = new SeriesStore()))
      s.record(toRow(e))
    }
  }
  return {
    clock,
    actor,
    out,
    windows,
    record,
    /** Aggregators got the events, then the evaluator got the batch. */
    async add(events: PricedEvent[]) {
      record(events)
      actor.send({ type: 'events', events })
      await actor.idle()
    },
    async rules(rules: Rule[]) {
      actor.send({ type: 'rules', rules })
      await actor.idle()
    },
    async tick() {
      actor.send({ type: 'tick' })
      await actor.idle()
    },
    /** What was emitted, compactly. */
    log: () => out.map((x) => `${x.rule.id}:${x.state}${x.reminder ? ':reminder' : ''}${x.reason !== 'condition' ? `:${x.reason}` : ''}@${(x.at - T0) / 1000}s`)
  }
}

t.test('fires when the condition starts to hold, with value, samples and times', async (t) => {
  const a = setup()
  await a.rules([rule()])
  await a.tick()
  t.same(a.out, [], 'no data: nothing')
  a.clock.advance(1000)
  await a.add([ev({ ts: T0 + 500, latency: 300 }), ev({ ts: T0 + 600, latency: 100 })])
  await a.tick()
  t.same(a.log(), ['rule_a:firing@1s'])
  const f = a.out[0]
  t.equal(f.value, 200, 'avg latency in ms')
  t.equal(f.samples, 2)
  t.equal(f.since, T0 + 1000)
  t.equal(f.rule.name, 'slow')
  t.same(a.windows.at(-1), [null, T0 + 1000 - 60_000 + 1, T0 + 1001], 'window is (now - window_seconds, now]')
  await a.tick()
  t.equal(a.out.length, 1, 'still firing: no second notification inside the cooldown')
  t.same(a.actor.ruleStates().get('rule_a'), { state: 'firing', since: T0 + 1000, lastNotifiedAt: T0 + 1000, lastValue: 200, lastEvalAt: T0 + 1000 })
  t.equal(a.actor.alertStats.firing, 1)
})

t.test('resolves when traffic stops: the window slides past the events', async (t) => {
  const a = setup()
  await a.rules([rule()])
  await a.tick()
  await a.add([ev({ ts: T0 })])
  await a.tick()
  t.same(a.log(), ['rule_a:firing@0s'], 'an event stamped at the very millisecond of the evaluation counts')
  a.clock.set(T0 + 59_999)
  await a.tick()
  t.same(a.log(), ['rule_a:firing@0s'], 'the event is still inside the 60 s window')
  a.clock.set(T0 + 60_000)
  await a.tick()
  t.same(a.log(), ['rule_a:firing@0s', 'rule_a:resolved@60s'])
  t.equal(a.out[1].value, null, 'no requests left: no average')
  t.equal(a.actor.ruleStates().get('rule_a')?.state, 'resolved')
  // resolved behaves as ok: a new crossing fires again.
  await a.add([ev({ ts: T0 + 60_000 })])
  a.clock.advance(1000)
  await a.tick()
  t.same(a.log().at(-1), 'rule_a:firing@61s')
})

t.test('cooldown: reminders every cooldown_seconds while firing; 0 notifies once', async (t) => {
  const a = setup()
  await a.rules([rule({ cooldown_seconds: 30, window_seconds: 3600 }), rule({ id: 'rule_b', cooldown_seconds: 0, window_seconds: 3600 })])
  await a.add([ev({ ts: T0 - 1 })])
  await a.tick()
  t.same(a.log(), ['rule_a:firing@0s', 'rule_b:firing@0s'])
  a.clock.advance(29_999)
  await a.tick()
  t.equal(a.out.length, 2, 'not yet')
  a.clock.advance(1)
  await a.tick()
  t.same(a.log().slice(2), ['rule_a:firing:reminder@30s'])
  t.equal(a.out[2].since, T0, 'a reminder carries when the firing began')
  a.clock.advance(30_000)
  await a.tick()
  t.same(a.log().slice(2), ['rule_a:firing:reminder@30s', 'rule_a:firing:reminder@60s'])
  t.same(a.actor.alertStats.notifications, { firing: 2, resolved: 0, reminder: 2 })
})

t.test('a disabled rule is silent; disabling or deleting a firing rule resolves it once', async (t) => {
  const a = setup()
  await a.rules([rule({ enabled: false }), rule({ id: 'rule_b' }), rule({ id: 'rule_c' })])
  await a.add([ev({ ts: T0 - 1 })])
  await a.tick()
  t.same(a.log(), ['rule_b:firing@0s', 'rule_c:firing@0s'], 'rule_a is disabled')
  t.notOk(a.actor.ruleStates().has('rule_a'))
  a.clock.advance(5000)
  await a.rules([rule({ enabled: false }), rule({ id: 'rule_b', enabled: false, name: 'renamed' })])
  t.same(a.log().slice(2), ['rule_b:resolved:rule_disabled@5s', 'rule_c:resolved:rule_deleted@5s'])
  t.equal(a.out[2].rule.name, 'renamed', 'a disabled rule resolves under its new version')
  t.equal(a.out[3].rule.name, 'slow', 'a deleted rule resolves under its last version')
  t.equal(a.out[2].value, 500, 'with the last value seen')
  await a.tick()
  t.equal(a.out.length, 4, 'then silent')
  // Re-enabled, it starts at ok and fires again on the next evaluation.
  await a.rules([rule({ id: 'rule_b' })])
  await a.tick()
  t.same(a.log().at(-1), 'rule_b:firing@5s')
})

t.test('model filter: only that model counts', async (t) => {
  const a = setup()
  await a.rules([rule({ model: 'gpt-4o' }), rule({ id: 'rule_b', model: 'gpt-4' })])
  await a.add([ev({ ts: T0 - 10, model: 'gpt-4', latency: 1000 }), ev({ ts: T0 - 10, model: 'gpt-4o', latency: 50 })])
  await a.tick()
  t.same(a.log(), ['rule_b:firing@0s'])
  t.equal(a.out[0].value, 1000)
  t.equal(a.actor.ruleStates().get('rule_a')?.lastValue, 50)
})

t.test('min_samples: below it a rule does not fire (value still reported); volume lt rules are not gated', async (t) => {
  const a = setup()
  await a.rules([
    rule({ min_samples: 3 }),
    rule({ id: 'rule_quiet', condition: 'requests_per_minute', comparator: 'lt', threshold: 1, min_samples: 100 }),
    rule({ id: 'rule_costly', condition: 'cost_per_hour', threshold: 0, min_samples: 3 })
  ])
  await a.tick()
  t.same(a.log(), ['rule_quiet:firing@0s'], 'zero traffic is what a "requests below" rule watches')
  await a.add([ev({ ts: T0 - 5 }), ev({ ts: T0 - 4 })])
  await a.tick()
  t.same(a.log(), ['rule_quiet:firing@0s', 'rule_quiet:resolved@0s'])
  t.equal(a.actor.ruleStates().get('rule_a')?.lastValue, 500, 'value reported below min_samples')
  t.equal(a.actor.ruleStates().get('rule_a')?.state, 'ok')
  await a.add([ev({ ts: T0 - 3 })])
  await a.tick()
  t.same(a.log().slice(2), ['rule_a:firing@0s', 'rule_costly:firing@0s'])
})

t.test('every condition in its unit, with each comparator', async (t) => {
  const a = setup()
  // Window 300 s: 3 requests, 2 errors, 45 tokens, $0.003 (3e6 nano-dollars) → $0.036/h.
  await a.add([
    ev({ ts: T0 - 1000, latency: 100, error: true }),
    ev({ ts: T0 - 2000, latency: 200, error: true }),
    ev({ ts: T0 - 3000, latency: 600 })
  ])
  const cases: Array<[Rule['condition'], number]> = [
    ['cost_per_hour', 0.036],
    ['avg_latency', 300],
    ['error_rate', 2 / 3],
    ['requests_per_minute', 0.6],
    ['tokens_per_minute', 9]
  ]
  const rules: Rule[] = []
  for (const [condition, value] of cases) {
    rules.push(rule({ id: `${condition}_gte`, condition, comparator: 'gte', threshold: value, window_seconds: 300 }))
    rules.push(rule({ id: `${condition}_gt`, condition, comparator: 'gt', threshold: value, window_seconds: 300 }))
    rules.push(rule({ id: `${condition}_lte`, condition, comparator: 'lte', threshold: value, window_seconds: 300 }))
    rules.push(rule({ id: `${condition}_lt`, condition, comparator: 'lt', threshold: value, window_seconds: 300 }))
  }
  // The nearest rank: the ⌈0.95 · 3⌉ = 3rd of [100, 200, 600].
  rules.push(rule({ id: 'p95', condition: 'p95_latency', threshold: 190, window_seconds: 300 }))
  await a.rules(rules)
  await a.tick()
  const fired = new Set(a.out.map((x) => x.rule.id))
  for (const [condition, value] of cases) {
    t.ok(fired.has(`${condition}_gte`) && fired.has(`${condition}_lte`), `${condition} = ${value}`)
    t.notOk(fired.has(`${condition}_gt`) || fired.has(`${condition}_lt`), `${condition} is exactly ${value}`)
    t.equal(a.actor.ruleStates().get(`${condition}_gt`)?.lastValue, value)
  }
  t.ok(fired.has('p95'))
  t.equal(a.actor.ruleStates().get('p95')?.lastValue, 600, 'p95 in ms: the slowest of three')
  t.equal(a.windows.length, 1, 'rules sharing (model, window) share one window query')
})

t.test('dormant until the first tick: events during recovery never notify', async (t) => {
  const a = setup()
  await a.rules([rule()])
  await a.add([ev({ ts: T0 - 1 })])
  t.equal(a.actor.active, false)
  t.same(a.out, [])
  t.equal(a.actor.alertStats.passes, 0)
  await a.tick()
  t.equal(a.actor.active, true)
  t.same(a.log(), ['rule_a:firing@0s'])
})

t.test('batches trigger a pass of the rules watching their models, at most once per interval', async (t) => {
  const a = setup({ batchPassIntervalMs: 100 })
  await a.rules([rule(), rule({ id: 'rule_b', model: 'gpt-4o' }), rule({ id: 'rule_c', model: 'gpt-4' })])
  await a.tick()
  a.clock.advance(99)
  await a.add([ev({ ts: T0 })])
  t.same(a.out, [], 'within 100 ms of the last pass: the batch waits for the tick')
  a.clock.advance(1)
  await a.add([ev({ ts: T0 })])
  t.same(a.log(), ['rule_a:firing@0.1s', 'rule_c:firing@0.1s'], 'no tick needed; rule_b watches another model')
  a.record([ev({ ts: T0, model: 'gpt-4o' })])
  await a.tick()
  t.same(a.log().at(-1), 'rule_b:firing@0.1s', 'the tick evaluates every rule')
})

t.test('one failing rule does not stop the others', async (t) => {
  const clock = new ManualClock(T0)
  const out: AlertTransition[] = []
  const actor = new AlertEvaluator({
    clock,
    window: (q) => {
      if (q.filters.models?.has('broken') === true) throw new Error('boom')
      const s = new SeriesStore()
      s.record(toRow(ev({ ts: T0 - 1 })))
      return s.aggregate(-Infinity, Infinity)
    },
    emit: (x) => out.push(x)
  })
  actor.send({ type: 'rules', rules: [rule({ id: 'rule_x', model: 'broken' }), rule()] })
  actor.send({ type: 'tick' })
  await actor.idle()
  t.same(out.map((x) => x.rule.id), ['rule_a'])
  t.equal(actor.alertStats.evaluationErrors, 1)
  t.equal(actor.stats.failed, 0, 'the message itself did not fail')
})

t.test('snapshot and restore: state, since and last notification survive', async (t) => {
  const a = setup()
  await a.rules([rule({ window_seconds: 3600 })])
  await a.add([ev({ ts: T0 - 1 })])
  await a.tick()
  const state = await new Promise<AlertState>((resolve) => {
    a.actor.send({ type: 'snapshot', reply: resolve })
  })
  t.equal(state.v, 2)
  t.same(state.rules, [{ id: 'rule_a', state: 'firing', since: T0, lastNotifiedAt: T0, lastValue: 500, lastEvalAt: T0 }])

  // "Restart" 100 s later: still firing inside the 300 s cooldown → silent; past it → a reminder.
  const clock = new ManualClock(T0 + 100_000)
  const b = setup({ restored: structuredClone(state), clock })
  b.record([ev({ ts: T0 - 1 })])
  await b.rules([rule({ window_seconds: 3600 })])
  await b.tick()
  t.same(b.out, [], 'no notification after a restart inside the cooldown')
  clock.set(T0 + 300_000)
  await b.tick()
  t.same(b.log(), ['rule_a:firing:reminder@300s'])
})

t.test('restore reads format 1, refuses unknown formats, drops states of rules gone before activation', async (t) => {
  const a = setup({ restored: { v: 1, seen: 42 } as unknown as AlertState })
  t.equal(a.actor.eventsSeen, 42)
  t.throws(() => setup({ restored: { v: 99 } as unknown as AlertState }), /alert evaluator state version 99 is not 2/)
  const b = setup({ restored: { v: 2, seen: 0, rules: [{ id: 'rule_gone', state: 'firing', since: T0, lastNotifiedAt: T0, lastValue: 1, lastEvalAt: T0 }] } })
  await b.rules([rule()])
  await b.tick()
  t.same(b.out, [], 'a rule deleted while the server was down is forgotten without a notification')
  t.notOk(b.actor.ruleStates().has('rule_gone'))
})

t.test('reconcile: a recorded notification newer than the snapshot wins', async (t) => {
  const states = new Map<string, RuleAlertState>([
    ['older', { state: 'ok', since: null, lastNotifiedAt: null, lastValue: 1, lastEvalAt: T0 }],
    ['newer', { state: 'firing', since: T0, lastNotifiedAt: T0 + 500, lastValue: 9, lastEvalAt: T0 + 600 }]
  ])
  const recorded = new Map<string, RecordedAlert>([
    ['older', { state: 'firing', since: T0 + 10, at: T0 + 20, value: 7 }],
    ['newer', { state: 'firing', since: T0, at: T0 + 500, value: 8 }],
    ['unknown', { state: 'resolved', since: T0 + 30, at: T0 + 30, value: null }]
  ])
  reconcile(states, recorded)
  t.same(states.get('older'), { state: 'firing', since: T0 + 10, lastNotifiedAt: T0 + 20, lastValue: 7, lastEvalAt: T0 + 20 })
  t.same(states.get('newer'), { state: 'firing', since: T0, lastNotifiedAt: T0 + 500, lastValue: 9, lastEvalAt: T0 + 600 }, 'the snapshot knew as much')
  t.same(states.get('unknown'), { state: 'resolved', since: T0 + 30, lastNotifiedAt: null, lastValue: null, lastEvalAt: T0 + 30 })
})

/**
 * The budget evaluator's seams (src/budgets/evaluator.ts), without a server: spend from a fake
 * analytics, "am I the evaluator" from outside, the cluster path (fired records are a
 * compare-and-set in a MetaBacking: a lost race records and announces nothing), a failing
 * budget not stopping the others, and the timer's throttle.
 */
import t, { type Test } from 'tap'
import { open } from 'lmdb'
import { BudgetStore, firedId } from '../../src/store/budgets.js'
import { AlertEventStore } from '../../src/store/alert-events.js'
import { WebhookNotifier } from '../../src/alerts/notifier.js'
import { BudgetEvaluator, type BudgetSpend } from '../../src/budgets/evaluator.js'
import { ManualClock } from '../../src/clock.js'
import type { MetaBacking } from '../../src/store/backing.js'
import type { BudgetNotice } from '../../src/actors/broadcaster.js'
import { createAggregate } from '../../src/queries.js'

const T0 = Date.parse('2026-04-01T12:00:00.000Z')

function setup(t: Test, spentNanos: () => number, gate: () => Promise<void> = async () => {}) {
  const root = open({ path: `${t.testdir()}/db.lmdb`, maxDbs: 4 })
  t.teardown(() => root.close())
  const store = new BudgetStore(root.openDB<unknown, string>('budgets', {}))
  const alertEvents = new AlertEventStore(root.openDB<unknown, number>('alert-events', {}))
  const notifier = new WebhookNotifier()
  t.teardown(() => notifier.close())
  const queries: Array<{ project?: string; start: number; end: number; user_id?: string }> = []
  const spend: BudgetSpend = {
    metrics: async (q) => {
      queries.push(q)
      await gate()
      const a = createAggregate()
      a.totals.costNanos = spentNanos()
      return a
    },
    breakdown: async () => {
      throw new Error('breakdown unavailable')
    }
  }
  const notices: BudgetNotice[] = []
  const clock = new ManualClock(T0)
  const evaluator = new BudgetEvaluator({ store, spend, alertEvents, notifier, publish: (n) => notices.push(n), clock })
  return { root, store, alertEvents, evaluator, notices, queries, clock }
}

t.test('spend is asked for [period_start, now) with the filters; isEvaluator false fires nothing', async (t) => {
  const nanos = 6e9
  const s = setup(t, () => nanos)
  const b = await s.store.create({ name: 'b', amount: 10, period: 'day', timezone: 'UTC', filters: { user_id: 'u1' } }, T0, 'p1')
  let evaluating = false
  s.evaluator.attachCluster({ isEvaluator: () => evaluating })
  await s.evaluator.tick()
  t.same(s.alertEvents.size, 0, 'not the evaluator: nothing fires')
  t.same(s.queries, [], 'nor is anything asked')
  const status = await s.evaluator.evaluate(b, { fire: true })
  t.match(status, { spent: 6, remaining: 4, forecast: 12 })
  t.match(s.queries[0], { project: 'p1', user_id: 'u1', start: Date.parse('2026-04-01T00:00:00.000Z'), end: T0 })
  t.equal(s.alertEvents.size, 0, 'a route evaluation on a node that does not evaluate fires nothing either')
  evaluating = true
  await s.evaluator.tick()
  await s.evaluator.idle()
  t.match(s.alertEvents.list({ limit: 10 }), [{ type: 'budget', budget_id: b.id, threshold: 0.5, project: 'p1' }])
  t.match(s.notices, [{ type: 'budget', budget_id: b.id, threshold: 0.5, project: 'p1' }])
  t.equal(s.store.firedCount, 1)
})

t.test('cluster: fired records go through the backing as a compare-and-set; a lost race records and announces nothing', async (t) => {
  const s = setup(t, () => 20e9)
  const written = new Map<string, unknown>()
  const taken = new Set<string>()
  const backing: MetaBacking = {
    put: async (id, v) => {
      written.set(id, v)
      s.store.applyRemote(id, v)
    },
    remove: async (id) => {
      written.delete(id)
      s.store.applyRemote(id, undefined)
    },
    create: async (id, v) => {
      // Another node recorded the 0.8 firing first.
      if (taken.has(id) || written.has(id)) return false
      written.set(id, v)
      s.store.applyRemote(id, v)
      return true
    }
  }
  s.store.attachBacking(backing, { warn() {}, error() {}, info() {}, debug() {} } as never)
  const b = await s.store.create({ name: 'c', amount: 10, period: 'day', timezone: 'UTC' }, T0, 'p1')
  t.ok(written.has(b.id), 'the budget went to the bucket')
  const period = Date.parse('2026-04-01T00:00:00.000Z')
  taken.add(firedId(b.id, period, 0.8, null, null))
  await s.evaluator.tick()
  await s.evaluator.idle()
  t.same(s.alertEvents.list({ limit: 10 }).map((e) => (e as { threshold: number }).threshold).sort(), [0.5, 1], 'the race lost for 0.8: not recorded')
  t.same(s.notices.map((n) => n.threshold).sort(), [0.5, 1], 'nor announced')
  t.ok(written.has(firedId(b.id, period, 0.5, null, null)), 'fired records are in the bucket')
  // A node that loads the bucket knows what fired: nothing fires twice.
  const root2 = open({ path: `${t.testdir()}/other.lmdb`, maxDbs: 4 })
  t.teardown(() => root2.close())
  const other = new BudgetStore(root2.openDB<unknown, string>('budgets', {}))
  other.loadRemote(written)
  t.equal(other.get(b.id)?.name, 'c')
  t.ok(other.hasFired(b.id, firedId(b.id, period, 0.5, null, null)))
  t.equal(other.firedCount, 2)
  // Removing the budget removes its fired records from the bucket.
  await s.store.remove(b.id)
  t.same([...written.keys()], [], 'nothing of it left in the bucket')
})

t.test('a budget that cannot be evaluated is counted and logged; the others go on', async (t) => {
  const s = setup(t, () => 10e9)
  await s.store.create({ name: 'grouped', amount: 1, period: 'day', timezone: 'UTC', group_by: 'user_id' }, T0 - 1, 'p1')
  const ok = await s.store.create({ name: 'plain', amount: 1, period: 'day', timezone: 'UTC' }, T0, 'p1')
  await s.evaluator.tick()
  await s.evaluator.idle()
  t.equal(s.evaluator.stats.errors, 1)
  t.same(new Set(s.alertEvents.list({ limit: 10 }).map((e) => (e as { budget_id: string }).budget_id)), new Set([ok.id]))
})

t.test('the timer throttle: a budget is re-evaluated only once 20× its last evaluation time has passed; hand ticks evaluate all', async (t) => {
  const s = setup(t, () => 0)
  await s.store.create({ name: 'x', amount: 1, period: 'day', timezone: 'UTC' }, T0, 'p1')
  // Make the spend query slow enough to measure: 30 ms.
  const slow = s.evaluator as unknown as { evaluate: (...a: unknown[]) => Promise<unknown> }
  const evaluate = slow.evaluate.bind(s.evaluator)
  slow.evaluate = async (...a: unknown[]) => {
    const r = await evaluate(...a)
    await new Promise((resolve) => setTimeout(resolve, 30))
    return r
  }
  await s.evaluator.tick({ throttle: true })
  const before = s.evaluator.stats.evaluations
  await s.evaluator.tick({ throttle: true })
  t.equal(s.evaluator.stats.evaluations, before, 'right after a 30 ms evaluation: skipped (600 ms must pass)')
  t.equal(s.evaluator.stats.throttled, 1)
  await s.evaluator.tick()
  t.equal(s.evaluator.stats.evaluations, before + 1, 'a hand tick evaluates')
})

t.test('spending exactly a threshold reaches it (0.55 × $3 is 1650000000.0000002 nano-dollars in floats)', async (t) => {
  const s = setup(t, () => 1_650_000_000)
  const b = await s.store.create({ name: 'exact', amount: 3, period: 'day', timezone: 'UTC', thresholds: [0.55, 0.56] }, T0, 'p1')
  await s.evaluator.evaluate(b, { fire: true })
  await s.evaluator.idle()
  t.same(s.alertEvents.list({ limit: 10 }).map((e) => (e as { threshold: number }).threshold), [0.55], '$1.65 of $3 reaches 55%, not 56%')
})

t.test('a budget deleted while its spend was asked fires nothing', async (t) => {
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => (release = resolve))
  const s = setup(t, () => 5e9, () => gate)
  const b = await s.store.create({ name: 'gone', amount: 1, period: 'day', timezone: 'UTC' }, T0, 'p1')
  const evaluation = s.evaluator.evaluate(b, { fire: true })
  // The spend question is pending: the budget goes meanwhile.
  await s.store.remove(b.id)
  release()
  t.match(await evaluation, { spent: 5 }, 'it is still answered')
  await s.evaluator.idle()
  t.equal(s.alertEvents.size, 0, 'no alert event')
  t.equal(s.store.firedCount, 0, 'no orphan fired record')
})

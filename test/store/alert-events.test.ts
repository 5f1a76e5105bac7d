import t from 'tap'
import { openStores } from '../../src/store/db.js'
import { AlertEventStore } from '../../src/store/alert-events.js'
import type { AlertTransition } from '../../src/alerts/types.js'
import type { Rule } from '../../src/store/rules.js'

const T0 = Date.parse('2026-03-01T12:00:00.000Z')

function rule(id: string): Rule {
  return {
    id,
    name: `rule ${id}`,
    condition: 'error_rate',
    threshold: 0.1,
    enabled: true,
    model: 'gpt-4',
    window_seconds: 300,
    comparator: 'gte',
    cooldown_seconds: 60,
    min_samples: 1,
    webhook_url: null,
    created_at: new Date(T0).toISOString(),
    updated_at: new Date(T0).toISOString()
  }
}

function transition(id: string, state: 'firing' | 'resolved', at: number, over: Partial<AlertTransition> = {}): AlertTransition {
  return { rule: rule(id), state, reminder: false, reason: 'condition', value: 0.5, samples: 10, since: at, at, ...over }
}

t.test('records, lists newest first with filters, and keeps delivery outcomes across a reopen', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let store = new AlertEventStore(stores.alertEvents)
  const a1 = store.record(transition('a', 'firing', T0), 'pending')
  store.record(transition('b', 'firing', T0 + 1000), 'none')
  store.record(transition('a', 'firing', T0 + 2000, { reminder: true, since: T0 }), 'none')
  store.record(transition('a', 'resolved', T0 + 3000, { value: 0 }), 'none')
  t.same(a1, {
    id: 'aev_0',
    rule_id: 'a',
    rule_name: 'rule a',
    project: 'default',
    condition: 'error_rate',
    comparator: 'gte',
    threshold: 0.1,
    model: 'gpt-4',
    window_seconds: 300,
    state: 'firing',
    reminder: false,
    reason: 'condition',
    value: 0.5,
    samples: 10,
    group: null,
    since: '2026-03-01T12:00:00.000Z',
    at: '2026-03-01T12:00:00.000Z',
    delivery: { status: 'pending', attempts: 0, status_code: null, error: null, completed_at: null }
  })
  store.setDelivery(a1.id, { status: 'delivered', attempts: 3, status_code: 200, error: null }, T0 + 500)
  const ids = (q: Parameters<AlertEventStore['list']>[0]) => store.list(q).map((r) => r.id)
  t.same(ids({ limit: 100 }), ['aev_3', 'aev_2', 'aev_1', 'aev_0'])
  t.same(ids({ limit: 2 }), ['aev_3', 'aev_2'])
  t.same(ids({ limit: 100, project: 'default' }), ['aev_3', 'aev_2', 'aev_1', 'aev_0'], 'a rule without a project is in default')
  t.same(ids({ limit: 100, project: 'team-a' }), [], 'and in no other project')
  t.same(ids({ limit: 100, ruleId: 'a' }), ['aev_3', 'aev_2', 'aev_0'])
  t.same(ids({ limit: 100, since: T0 + 1000 }), ['aev_3', 'aev_2', 'aev_1'], 'since is inclusive')
  t.same(ids({ limit: 100, ruleId: 'b', since: T0 + 1001 }), [])
  t.same(store.latestByRule(), new Map([
    ['a', { state: 'resolved', since: T0 + 3000, at: T0 + 3000, value: 0 }],
    ['b', { state: 'firing', since: T0 + 1000, at: T0 + 1000, value: 0.5 }]
  ]))
  await store.flushed()
  await stores.close()

  stores = openStores(dir)
  store = new AlertEventStore(stores.alertEvents)
  t.teardown(() => stores.close())
  t.same(ids({ limit: 100 }), ['aev_3', 'aev_2', 'aev_1', 'aev_0'])
  t.same(store.get('aev_0')?.delivery, { status: 'delivered', attempts: 3, status_code: 200, error: null, completed_at: '2026-03-01T12:00:00.500Z' })
  t.equal(store.record(transition('b', 'resolved', T0 + 4000), 'none').id, 'aev_4', 'ids keep increasing after a reopen')
  t.equal(store.get('nope'), undefined)
  t.equal(store.get('aev_zz'), undefined)
})

t.test('bounded: only the newest `max` are kept, in memory and on disk', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let store = new AlertEventStore(stores.alertEvents, { max: 3 })
  for (let i = 0; i < 7; i++) store.record(transition('a', i % 2 === 0 ? 'firing' : 'resolved', T0 + i), 'pending')
  t.equal(store.size, 3)
  t.same(store.list({ limit: 10 }).map((r) => r.id), ['aev_6', 'aev_5', 'aev_4'])
  // An outcome arriving for a record pruned meanwhile is ignored.
  store.setDelivery('aev_0', { status: 'failed', attempts: 3, status_code: 500, error: 'HTTP 500' }, T0)
  await store.flushed()
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  t.equal([...stores.alertEvents.getKeys({})].length, 3, 'pruned records are deleted from LMDB')
  store = new AlertEventStore(stores.alertEvents, { max: 2 })
  t.same(store.list({ limit: 10 }).map((r) => r.id), ['aev_6', 'aev_5'], 'a lower bound prunes on open')
  t.throws(() => new AlertEventStore(stores.alertEvents, { max: 0 }), new RangeError('max must be a positive integer, got 0'))
})

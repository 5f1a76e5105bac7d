/**
 * The per-project indexes built lazily from the aggregators' rows — the postings (cells per user
 * and session: a filter on one user reads only those) and the all-time totals per user and
 * session (breakdowns) — must hold every event whenever they are first built, even by a reader
 * that reads without a barrier (the alert evaluator evaluating a rule with a user filter) while
 * events are on their way into a busy aggregator. Pins the flake of projects-isolation's
 * "DELETE /projects/:id" test (metrics?user_id=u1 answered 0 for 58): the indexes were kept up
 * to date when the topology *sent* events to the aggregators but built from what the
 * aggregators had *applied*, so events sent and not yet applied at the build were in neither and
 * were missing from every later answer that used the index.
 */
import t from 'tap'
import { breakdown, metrics } from '../../src/queries.js'
import { DRAIN_BUDGET_MESSAGES } from '../../src/actors/actor.js'
import type { Rule } from '../../src/store/rules.js'
import type { PendingEvent, StoredEvent } from '../../src/events.js'
import { ManualClock } from '../../src/clock.js'
import { events, topology, T0 } from './topology-helpers.js'

const ALL = { start: -Infinity, end: Infinity }

function rule(over: Partial<Rule> = {}): Rule {
  return {
    id: 'rule_u',
    name: 'one user',
    condition: 'cost_per_hour',
    threshold: 1e9,
    enabled: true,
    model: null,
    window_seconds: 3600,
    comparator: 'gt',
    cooldown_seconds: 300,
    min_samples: 1,
    webhook_url: null,
    created_at: new Date(T0).toISOString(),
    updated_at: new Date(T0).toISOString(),
    ...over
  }
}

let nextSeq = 1
const stored = (list: PendingEvent[]): StoredEvent[] => list.map((e) => ({ ...e, seq: nextSeq, id: `evt_${nextSeq++}` }) as StoredEvent)

/** Every aggregator of `project` gets a drain's budget of barriers first: it yields a turn before the next message, as a drain past its time budget does on a loaded machine. */
function busy(topo: Awaited<ReturnType<typeof topology>>['topo'], project: string): void {
  for (const agg of topo.aggregators()) {
    if (agg.project !== project) continue
    for (let i = 0; i <= DRAIN_BUDGET_MESSAGES; i++) agg.send({ type: 'barrier', reply: () => {} })
  }
}

const usersIn = (list: PendingEvent[]) => [...new Set(list.map((e) => e.user).filter((u): u is string => u !== null))].sort()
const naiveGroups = (list: PendingEvent[]) => {
  const m = new Map<string | null, number>()
  for (const e of list) m.set(e.user, (m.get(e.user) ?? 0) + 1)
  return [...m].sort(([a], [b]) => (a === b ? 0 : a === null ? 1 : b === null ? -1 : a < b ? -1 : 1))
}

t.test('the alert evaluator builds the postings while events wait in a busy aggregator: later user filters count them', async (t) => {
  const { topo } = await topology(t, {
    // As the engine: a rule's window is metrics() over the live state, read between actor messages, no barrier.
    window: (reader, q) => metrics(reader, { ...q.filters, project: q.project, start: q.start, end: q.end })
  })
  const first = events(300, 31, 'p')
  const second = events(300, 32, 'p')
  topo.replay(stored(first))
  await topo.sync()
  const user = usersIn(first)[0]
  topo.alerts.send({ type: 'rules', rules: [rule({ project: 'p', filters: { user_id: user } })] })
  await topo.sync()
  t.equal(topo.project('p')?.dims.users.find(user) !== undefined, true, `${user} is in the dictionary`)

  // One turn: the aggregators are busy, the second batch is emitted behind their barriers, the
  // evaluator's pass (a tick) reads before they apply it.
  busy(topo, 'p')
  topo.replay(stored(second))
  topo.alerts.send({ type: 'tick' })
  await topo.sync()
  t.ok(topo.alerts.alertStats.passes >= 1, 'the evaluator evaluated the rule (and built the postings)')

  const all = [...first, ...second]
  for (const u of usersIn(all)) {
    const want = all.filter((e) => e.user === u).length
    t.equal(metrics(topo, { ...ALL, project: 'p', user_id: u }).totals.requests, want, `metrics user_id=${u}`)
  }
  t.end()
})

t.test('postings and per-user totals first built while events wait in a busy aggregator hold them once applied', async (t) => {
  const { topo } = await topology(t)
  const first = events(300, 41, 'p')
  const second = events(300, 42, 'p')
  const third = events(100, 43, 'p')
  topo.replay(stored(first))
  await topo.sync()

  busy(topo, 'p')
  topo.replay(stored(second))
  // A read without a barrier, after the cost stage emitted the second batch (queued after its
  // drain) and before the aggregators, which yield a turn first, apply it.
  queueMicrotask(() => {
    const view = topo.project('p')!
    view.postings('user')
    view.postings('session')
    view.totals('user')
    view.totals('session')
  })
  await topo.sync()
  topo.replay(stored(third))
  await topo.sync()

  const all = [...first, ...second, ...third]
  for (const u of usersIn(all)) {
    t.equal(metrics(topo, { ...ALL, project: 'p', user_id: u }).totals.requests, all.filter((e) => e.user === u).length, `metrics user_id=${u}`)
  }
  for (const s of [...new Set(all.map((e) => e.session).filter((x): x is string => x !== null))].slice(0, 8)) {
    t.equal(metrics(topo, { ...ALL, project: 'p', session_id: s }).totals.requests, all.filter((e) => e.session === s).length, `metrics session_id=${s}`)
  }
  const b = breakdown(topo, { ...ALL, project: 'p' }, 'user_id', 'requests', 1000)
  const got = b.groups.map((g) => [g.value, g.agg.totals.requests] as [string | null, number]).sort(([a], [c]) => (a === c ? 0 : a === null ? 1 : c === null ? -1 : a < c ? -1 : 1))
  t.same(got, naiveGroups(all), 'breakdown by user_id, all time (from the per-user totals)')
  t.end()
})

t.test("two projects' batches emitted in one turn: a batch pass on the first evaluates the second's user rule before its aggregators apply (the projects-isolation flake, 0 of 58)", async (t) => {
  // As in projects-isolation's DELETE test on a loaded machine: pricing lags (worker tasks), so
  // team-a's and team-b's batches leave the cost stage in one drain, after team-b's rule on one
  // of its users exists. Emitting team-a's first chunk queues the evaluator's turn; team-b's
  // aggregators are queued after it (a later chunk), so the evaluator's batch pass on team-a's
  // events (a rule without a model watches every batch) reads team-b's user rule while every
  // team-b event is known to its dictionary and none is applied: before the fix, every team-b
  // user then answered 0.
  const clock = new ManualClock(T0)
  const { topo } = await topology(t, { clock, window: (reader, q) => metrics(reader, { ...q.filters, project: q.project, start: q.start, end: q.end }) })
  topo.replay(stored(events(50, 51, 'team-a')))
  await topo.sync()
  const a = events(300, 53, 'team-a')
  const b = events(300, 54, 'team-b')
  topo.alerts.send({ type: 'rules', rules: [rule({ project: 'team-b', filters: { user_id: 'victim-user' } })] })
  topo.alerts.send({ type: 'tick' })
  await topo.sync()
  const passes = topo.alerts.alertStats.passes
  clock.advance(60_000)
  // One cost stage message: its chunks are emitted in one run, as a drain after a worker's result does.
  topo.replay(stored([...a, ...b]))
  await topo.sync()
  t.ok(topo.alerts.alertStats.passes > passes, 'a batch pass evaluated the rule')
  for (const u of usersIn(b)) {
    t.equal(metrics(topo, { ...ALL, project: 'team-b', user_id: u }).totals.requests, b.filter((e) => e.user === u).length, `team-b metrics user_id=${u}`)
  }
  t.end()
})

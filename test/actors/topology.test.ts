/**
 * Topology: the wiring, through its read-only project views. Projects are separate (events of
 * two projects land in separate aggregators and rollups), deleteProject retires a project's
 * actors and drops its later events until it is revived, and the model cap counts per project.
 * Events go through the real router, a real LMDB log and the cost stage (priced inline).
 */
import t, { type Test } from 'tap'
import { Topology, type TopologyOptions } from '../../src/actors/topology.js'
import { OVERFLOW_MODEL } from '../../src/actors/model-aggregator.js'
import { openStores } from '../../src/store/db.js'
import { EventLog } from '../../src/store/event-log.js'
import { createAggregate } from '../../src/analytics/series.js'
import { ManualClock } from '../../src/clock.js'
import { silentLog } from '../../src/log.js'
import type { PendingEvent } from '../../src/events.js'

const T0 = Date.parse('2026-03-01T10:00:00.000Z')

async function topology(t: Test, opts: Partial<TopologyOptions> = {}): Promise<Topology> {
  const stores = openStores(t.testdir(), { maxBytes: 1024 ** 3 })
  const log = new EventLog(stores.events)
  const topo = new Topology({
    log,
    pricer: null,
    overrides: {},
    logger: silentLog,
    clock: new ManualClock(T0),
    highWaterEvents: 100_000,
    maxModels: 50,
    costChunk: 256,
    costMaxInFlight: 2,
    price: (e) => ({ ...e, costNanos: 0, unpriced: true }),
    window: () => createAggregate(),
    ...opts
  })
  t.teardown(async () => {
    await topo.close()
    await stores.close()
  })
  return topo
}

let n = 0
function pending(project: string, model: string, over: Partial<PendingEvent> = {}): PendingEvent {
  n++
  return {
    ts: T0 + n,
    recv: T0,
    model,
    provider: 'openai',
    prompt: n,
    completion: 1,
    total: n + 1,
    cached: 0,
    reasoning: 0,
    latency: 100,
    ttft: null,
    error: false,
    cost: 0.001 * n,
    meta: null,
    project,
    user: null,
    session: null,
    tags: null,
    ...over
  }
}

async function ingest(topo: Topology, events: PendingEvent[]): Promise<void> {
  await topo.router.ingest(events)
  await topo.sync()
}

/** A project's requests per model, and the rollup's count, read through its view. */
function counts(topo: Topology, project: string): { models: Record<string, number>; rollup: number } | undefined {
  const view = topo.project(project)
  if (view === undefined) return undefined
  const models: Record<string, number> = {}
  for (const agg of view.aggregators()) {
    let requests = 0
    for (const series of agg.view().values()) requests += series.aggregate(-Infinity, Infinity).totals.requests
    models[agg.model] = requests
  }
  return { models, rollup: view.rollup.aggregate(-Infinity, Infinity).totals.requests }
}

const actorNames = (topo: Topology) => topo.system.stats().map((s) => s.name).sort()

t.test('projects are separate: events of two projects land in separate aggregators and rollups', async (t) => {
  const topo = await topology(t)
  // One batch, interleaved: the same model name in both projects.
  const batch = [pending('a', 'gpt-4'), pending('b', 'gpt-4'), pending('a', 'claude'), pending('a', 'gpt-4'), pending('b', 'mistral'), pending('default', 'gpt-4')]
  const prompt = (project: string, model: string) => batch.filter((e) => e.project === project && e.model === model).reduce((sum, e) => sum + e.prompt, 0)
  await ingest(topo, batch)
  t.same(counts(topo, 'a'), { models: { 'gpt-4': 2, claude: 1 }, rollup: 3 })
  t.same(counts(topo, 'b'), { models: { 'gpt-4': 1, mistral: 1 }, rollup: 2 })
  t.same(counts(topo, 'default'), { models: { 'gpt-4': 1 }, rollup: 1 })
  t.equal(topo.project('c'), undefined, 'a project without events has no state')

  // Costs and tokens follow their project: b's gpt-4 holds only b's event.
  const b = topo.project('b')!.aggregator('gpt-4')!
  const a = topo.project('a')!.aggregator('gpt-4')!
  t.not(a, b)
  t.equal(b.view().get('openai')!.aggregate(-Infinity, Infinity).totals.promptTokens, prompt('b', 'gpt-4'))
  t.equal(a.view().get('openai')!.aggregate(-Infinity, Infinity).totals.promptTokens, prompt('a', 'gpt-4'))

  // Dimension ids are per project: a user of a is unknown to b.
  await ingest(topo, [pending('a', 'gpt-4', { user: 'u-a' }), pending('b', 'gpt-4', { user: 'u-b' })])
  t.same(counts(topo, 'a')!.models['gpt-4'], 3)
  t.same(counts(topo, 'b')!.models['gpt-4'], 2)
  t.not(topo.project('a')!.dims, topo.project('b')!.dims)

  t.same(
    actorNames(topo).filter((x) => x.startsWith('aggregator') || x.startsWith('rollup')),
    ['aggregator:a/claude', 'aggregator:a/gpt-4', 'aggregator:b/gpt-4', 'aggregator:b/mistral', 'aggregator:gpt-4', 'rollup', 'rollup:a', 'rollup:b']
  )
})

t.test('deleteProject retires its actors; its later events are dropped until it is revived', async (t) => {
  const topo = await topology(t)
  await ingest(topo, [pending('a', 'gpt-4'), pending('a', 'claude'), pending('b', 'gpt-4')])
  await topo.deleteProject('a')
  t.equal(topo.project('a'), undefined)
  t.notOk(actorNames(topo).some((x) => x.includes('a/') || x === 'rollup:a'), 'no actor of project a is registered')
  t.same([...topo.projects()].sort(), ['b', 'default'])

  // Events of the deleted project (e.g. replayed after a crash midway) are dropped; others count.
  await ingest(topo, [pending('a', 'gpt-4'), pending('b', 'gpt-4')])
  t.equal(topo.project('a'), undefined, 'dropped on the way in')
  t.same(counts(topo, 'b'), { models: { 'gpt-4': 2 }, rollup: 2 })

  // Created again: it starts empty and counts its new events.
  topo.revive('a')
  await ingest(topo, [pending('a', 'mistral')])
  t.same(counts(topo, 'a'), { models: { mistral: 1 }, rollup: 1 })

  // A delete, then a snapshot: nothing of the project is in it.
  await topo.deleteProject('b')
  const snap = await topo.snapshot(T0)
  t.same(snap.aggregators.map((x) => `${x.project}/${x.model}`).sort(), ['a/mistral'])
  t.same(Object.keys(snap.dimensions ?? {}).sort(), ['a', 'default'])
})

t.test('the model cap counts per project; past it a project\'s models share its overflow aggregator', async (t) => {
  const topo = await topology(t, { maxModels: 2 })
  await ingest(topo, [pending('a', 'm1'), pending('a', 'm2'), pending('a', 'm3'), pending('a', 'm4'), pending('a', 'm3')])
  await ingest(topo, [pending('b', 'm5'), pending('b', 'm6'), pending('a', 'm1')])
  t.same(counts(topo, 'a'), { models: { m1: 2, m2: 1, [OVERFLOW_MODEL]: 3 }, rollup: 6 })
  t.same(counts(topo, 'b'), { models: { m5: 1, m6: 1 }, rollup: 2 }, 'a\'s models do not count against b\'s cap')
  await ingest(topo, [pending('b', 'm7')])
  t.same(counts(topo, 'b'), { models: { m5: 1, m6: 1, [OVERFLOW_MODEL]: 1 }, rollup: 3 })
  t.same(counts(topo, 'default'), { models: {}, rollup: 0 })
})

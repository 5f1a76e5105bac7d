/**
 * RollupAggregator: one per project, every model and provider in hour aggregates only. Seeded
 * from the restored series' hours, then counting events; over whole hours it equals the sum of
 * the series (what queries over every model rely on), and its latency sketch merges theirs.
 */
import t from 'tap'
import fc from 'fast-check'
import { RollupAggregator } from '../../src/actors/rollup.js'
import { toRow } from '../../src/actors/model-aggregator.js'
import { SeriesStore, createAggregate, mergeInto, type Aggregate } from '../../src/analytics/series.js'
import { createTotals, recordTotals, type Totals } from '../../src/analytics/totals.js'
import type { PricedEvent } from '../../src/events.js'
import { pricedEvent } from '../helpers/events.js'

const HOUR = 3_600_000
const T0 = Date.parse('2026-03-01T00:00:00.000Z')

function ev(over: Partial<PricedEvent> = {}): PricedEvent {
  return pricedEvent({ ts: T0, recv: T0, latency: 250, costNanos: 2_000, ...over })
}

function naive(list: readonly PricedEvent[], start: number, end: number): Totals {
  const out = createTotals()
  for (const e of list) if (e.ts >= start && e.ts < end) recordTotals(out, toRow(e))
  return out
}

function seriesOf(list: readonly PricedEvent[]): SeriesStore {
  const s = new SeriesStore()
  for (const e of list) s.record(toRow(e))
  return s
}

/** The series' aggregates over [start, end) merged: what a query over every model would add up. */
function sumOf(series: readonly SeriesStore[], start: number, end: number): Aggregate {
  const out = createAggregate()
  for (const s of series) mergeInto(out, s.aggregate(start, end))
  return out
}

const send = async (rollup: RollupAggregator, events: PricedEvent[]) => {
  t.ok(rollup.send({ type: 'events', events }))
  await rollup.idle()
}

t.test('named per project; counts every event it is sent, of any model and provider', async (t) => {
  const rollup = new RollupAggregator({}, [], 'acme')
  t.teardown(() => rollup.destroy())
  t.equal(rollup.name, 'rollup:acme')
  const plain = new RollupAggregator()
  t.teardown(() => plain.destroy())
  t.equal(plain.name, 'rollup')

  const list = [ev({ ts: T0 + 1 }), ev({ ts: T0 + HOUR + 5, model: 'claude', provider: 'anthropic', error: true }), ev({ ts: T0 + 3 * HOUR, model: 'mistral', provider: 'mistral', costNanos: 7 })]
  await send(rollup, list)
  t.same(rollup.view().aggregate(-Infinity, Infinity).totals, naive(list, -Infinity, Infinity))
  t.same(rollup.view().aggregate(T0, T0 + 2 * HOUR).totals, naive(list, T0, T0 + 2 * HOUR))
  t.same(rollup.view().aggregate(T0 + 2 * HOUR, T0 + 3 * HOUR).totals, createTotals(), 'an empty hour')

  // The barrier replies once everything before it is counted.
  await new Promise<void>((resolve) => rollup.send({ type: 'barrier', reply: resolve }))
  t.equal(rollup.view().aggregate(-Infinity, Infinity).totals.requests, 3)
})

t.test('seeded from the series\' hours, then counting events: over whole hours it equals the sum of the series', async (t) => {
  const event = fc.record({
    hour: fc.integer({ min: 0, max: 71 }),
    ms: fc.integer({ min: 0, max: HOUR - 1 }),
    series: fc.integer({ min: 0, max: 3 }),
    latency: fc.integer({ min: 0, max: 60_000 }),
    cost: fc.integer({ min: 0, max: 1e9 }),
    tokens: fc.integer({ min: 0, max: 10_000 }),
    error: fc.boolean(),
    restored: fc.boolean()
  })
  await fc.assert(
    fc.asyncProperty(fc.array(event, { maxLength: 120 }), fc.array(fc.tuple(fc.integer({ min: -2, max: 75 }), fc.integer({ min: 0, max: 10 })), { minLength: 1, maxLength: 8 }), async (specs, ranges) => {
      const list = specs.map((s) =>
        ev({ ts: T0 + s.hour * HOUR + s.ms, model: `m${s.series}`, provider: s.series % 2 === 0 ? 'openai' : 'acme', latency: s.latency, costNanos: s.cost, prompt: s.tokens, total: s.tokens + 5, error: s.error })
      )
      // The series as restored at start hold some events; the rest arrive after (the log tail).
      const restored = list.filter((_, i) => specs[i].restored)
      const tail = list.filter((_, i) => !specs[i].restored)
      const series = [0, 1, 2, 3].map((k) => seriesOf(restored.filter((e) => e.model === `m${k}`)))
      const rollup = new RollupAggregator({}, series)
      try {
        t.same(rollup.view().aggregate(-Infinity, Infinity).totals, naive(restored, -Infinity, Infinity), 'the seed alone')
        await send(rollup, tail)
        for (const e of tail) series[Number(e.model.slice(1))].record(toRow(e))
        for (const [from, hours] of ranges) {
          const start = T0 + from * HOUR
          const end = start + hours * HOUR
          const got = rollup.view().aggregate(start, end)
          const want = sumOf(series, start, end)
          t.same(got.totals, want.totals, `hours [${from}, ${from + hours})`)
          t.same(got.totals, naive(list, start, end))
          t.equal(got.sketch.count, want.sketch.count)
          if (want.sketch.count > 0) {
            for (const q of [0.5, 0.95, 0.99]) t.equal(got.sketch.quantile(q), want.sketch.quantile(q), `q${q}: the merged sketches agree exactly`)
          }
        }
      } finally {
        await rollup.destroy()
      }
    }),
    { numRuns: 60 }
  )
})

t.test('rehour: the hours a delete changed are rebuilt from the series, their days too', async (t) => {
  const list = Array.from({ length: 200 }, (_, i) => ev({ ts: T0 + i * 13 * 60_000, model: `m${i % 3}`, latency: 10 + i, costNanos: i, seq: i }))
  const series = [0, 1, 2].map((k) => seriesOf(list.filter((e) => e.model === `m${k}`)))
  const rollup = new RollupAggregator({}, series)
  t.teardown(() => rollup.destroy())
  const gone = new Set([0, 1, 2, 50, 51, 199])
  const hours = new Set<number>()
  for (const s of series) s.forget(gone, undefined, (_v, _f, _u, _s, _a, ts) => hours.add(Math.floor(ts / HOUR)))
  await new Promise<void>((resolve, reject) => rollup.send({ type: 'rehour', hours: [...hours], sources: () => series, reply: (err) => (err ? reject(err) : resolve()) }))
  const kept = list.filter((e) => !gone.has(e.seq))
  for (const [start, end] of [[-Infinity, Infinity], [T0, T0 + 24 * HOUR], [T0 + HOUR, T0 + 2 * HOUR], [T0 + 24 * HOUR, T0 + 48 * HOUR]]) {
    const got = rollup.view().aggregate(start, end)
    t.same(got.totals, naive(kept, start, end))
    t.same(got.sketch.toJSON(), sumOf(series, start, end).sketch.toJSON(), 'the sketch as the series\' merged')
  }
})

/**
 * Alert conditions as pure functions of a window's aggregate: each condition's value and
 * units, the comparators (a null value never holds), and min_samples (with the volume
 * conditions compared downwards exempt).
 */
import t from 'tap'
import fc from 'fast-check'
import { compare, conditionValue, gatedBySamples, judge, type Comparator, type Condition } from '../../src/alerts/conditions.js'
import { addRow, createAggregate, type Aggregate } from '../../src/analytics/aggregate.js'
import type { Row } from '../../src/analytics/row.js'

const CONDITIONS: Condition[] = ['cost_per_hour', 'avg_latency', 'p95_latency', 'error_rate', 'requests_per_minute', 'tokens_per_minute']
const COMPARATORS: Comparator[] = ['gt', 'gte', 'lt', 'lte']

function row(over: Partial<Row> = {}): Row {
  return { ts: 0, promptTokens: 10, completionTokens: 5, totalTokens: 15, cachedTokens: 0, reasoningTokens: 0, latencyUs: 100_000, costNanos: 1_000_000, error: false, unpriced: false, ...over }
}

function aggOf(rows: Row[]): Aggregate {
  const a = createAggregate()
  for (const r of rows) addRow(a, r)
  return a
}

t.test('each condition\'s value in its units', async (t) => {
  // Three calls in a 300 s window: 200, 300 and 1000 ms; $0.01, $0.02, $0.03; one error; 15 + 25 + 35 tokens.
  const a = aggOf([
    row({ latencyUs: 200_000, costNanos: 10_000_000, totalTokens: 15 }),
    row({ latencyUs: 300_000, costNanos: 20_000_000, totalTokens: 25, error: true }),
    row({ latencyUs: 1_000_000, costNanos: 30_000_000, totalTokens: 35 })
  ])
  t.equal(conditionValue('cost_per_hour', a, 300), 0.72, 'dollars per hour: $0.06 × 3600 / 300')
  t.equal(conditionValue('requests_per_minute', a, 300), 0.6, '3 × 60 / 300')
  t.equal(conditionValue('tokens_per_minute', a, 300), 15, '75 × 60 / 300')
  t.equal(conditionValue('avg_latency', a, 300), 500, 'ms: (200 + 300 + 1000) / 3')
  t.equal(conditionValue('error_rate', a, 300), 1 / 3)
  const p95 = conditionValue('p95_latency', a, 300)!
  t.ok(Math.abs(p95 - 1000) <= 10, `p95 in ms within the sketch's 1% (the slowest of three): ${p95}`)

  // cost_per_hour stays exact in integer nano-dollars: $0.0003 over 60 s is $0.018 an hour.
  t.equal(conditionValue('cost_per_hour', aggOf([row({ costNanos: 300_000 })]), 60), 0.018)
})

t.test('without requests: the per-request statistics have no value, the volumes are 0', async (t) => {
  const empty = createAggregate()
  for (const c of ['avg_latency', 'p95_latency', 'error_rate'] as const) t.equal(conditionValue(c, empty, 60), null, c)
  for (const c of ['cost_per_hour', 'requests_per_minute', 'tokens_per_minute'] as const) t.equal(conditionValue(c, empty, 60), 0, c)
})

t.test('comparators, at, above and below the threshold; null and NaN never hold', async (t) => {
  const table: Array<[Comparator, boolean, boolean, boolean]> = [
    // comparator, below, equal, above
    ['gt', false, false, true],
    ['gte', false, true, true],
    ['lt', true, false, false],
    ['lte', true, true, false]
  ]
  for (const [c, below, equal, above] of table) {
    t.equal(compare(9, c, 10), below, `${c} below`)
    t.equal(compare(10, c, 10), equal, `${c} equal`)
    t.equal(compare(11, c, 10), above, `${c} above`)
    t.equal(compare(null, c, 10), false, `${c} null`)
    t.equal(compare(Number.NaN, c, 10), false, `${c} NaN`)
  }
  fc.assert(
    fc.property(fc.double({ noNaN: true }), fc.double({ noNaN: true }), (v, th) => {
      t.equal(compare(v, 'gt', th), !compare(v, 'lte', th))
      t.equal(compare(v, 'lt', th), !compare(v, 'gte', th))
      return true
    }),
    { numRuns: 200 }
  )
})

t.test('min_samples gates every condition except a volume compared downwards', async (t) => {
  for (const condition of CONDITIONS) {
    for (const comparator of COMPARATORS) {
      const volume = condition === 'cost_per_hour' || condition === 'requests_per_minute' || condition === 'tokens_per_minute'
      t.equal(gatedBySamples(condition, comparator), !(volume && (comparator === 'lt' || comparator === 'lte')), `${condition} ${comparator}`)
    }
  }

  const two = aggOf([row({ latencyUs: 900_000 }), row({ latencyUs: 1_100_000 })])
  const slow = { condition: 'avg_latency' as const, comparator: 'gt' as const, threshold: 500, window_seconds: 60 }
  t.same(judge({ ...slow, min_samples: 2 }, two), { value: 1000, samples: 2, holds: true }, 'enough samples')
  t.same(judge({ ...slow, min_samples: 3 }, two), { value: 1000, samples: 2, holds: false }, 'too few: the value is still reported')
  t.same(judge({ ...slow, threshold: 1000, min_samples: 1 }, two), { value: 1000, samples: 2, holds: false }, 'gt is strict')
  t.same(judge({ ...slow, comparator: 'gte', threshold: 1000, min_samples: 1 }, two), { value: 1000, samples: 2, holds: true })

  // "Traffic dropped": requests_per_minute < 5 with min_samples 10 fires on an empty window.
  const quiet = { condition: 'requests_per_minute' as const, comparator: 'lt' as const, threshold: 5, window_seconds: 60, min_samples: 10 }
  t.same(judge(quiet, createAggregate()), { value: 0, samples: 0, holds: true })
  t.same(judge(quiet, two), { value: 2, samples: 2, holds: true })
  t.same(judge({ ...quiet, comparator: 'gt', threshold: 1 }, two), { value: 2, samples: 2, holds: false }, 'upwards a volume is gated')
  t.same(judge({ ...quiet, comparator: 'gt', threshold: 1, min_samples: 2 }, two), { value: 2, samples: 2, holds: true })

  // A per-request statistic compared downwards on an empty window: no value, never holds.
  t.same(judge({ condition: 'error_rate', comparator: 'lt', threshold: 0.5, window_seconds: 60, min_samples: 0 }, createAggregate()), { value: null, samples: 0, holds: false })
  t.same(judge({ condition: 'error_rate', comparator: 'lt', threshold: 0.5, window_seconds: 60, min_samples: 0 }, two), { value: 0, samples: 2, holds: true })
})

t.test('judge agrees with conditionValue and compare for any window', async (t) => {
  const rowArb = fc.record({
    latencyUs: fc.integer({ min: 0, max: 10_000_000 }),
    costNanos: fc.integer({ min: 0, max: 1e9 }),
    totalTokens: fc.integer({ min: 0, max: 100_000 }),
    error: fc.boolean()
  })
  fc.assert(
    fc.property(
      fc.array(rowArb, { maxLength: 20 }),
      fc.constantFrom(...CONDITIONS),
      fc.constantFrom(...COMPARATORS),
      fc.double({ min: 0, max: 1e4, noNaN: true }),
      fc.integer({ min: 10, max: 86_400 }),
      fc.integer({ min: 0, max: 25 }),
      (rows, condition, comparator, threshold, window_seconds, min_samples) => {
        const agg = aggOf(rows.map((r) => row(r)))
        const v = judge({ condition, comparator, threshold, window_seconds, min_samples }, agg)
        const value = conditionValue(condition, agg, window_seconds)
        t.equal(v.value, value)
        t.equal(v.samples, rows.length)
        const enough = !gatedBySamples(condition, comparator) || rows.length >= min_samples
        t.equal(v.holds, enough && compare(value, comparator, threshold))
        return true
      }
    ),
    { numRuns: 300 }
  )
})

/**
 * LatencySketch keeps its last quantile answer (a stored hour's p95 is asked by every timeseries
 * bucket sharing it): every change — record, merge, subtract — must clear it, so an answer is
 * always the one a fresh sketch of the same values gives.
 */
import t from 'tap'
import fc from 'fast-check'
import { LatencySketch } from '../../src/analytics/sketch.js'

const fresh = (values: number[]) => {
  const s = new LatencySketch()
  for (const v of values) s.record(v)
  return s
}

t.test('a quantile asked again after any change answers as a fresh sketch of the same values', (t) => {
  const step = fc.oneof(
    fc.record({ kind: fc.constant('record' as const), v: fc.integer({ min: 0, max: 10_000_000 }) }),
    fc.record({ kind: fc.constant('merge' as const), vs: fc.array(fc.integer({ min: 0, max: 10_000_000 }), { maxLength: 50 }) }),
    fc.record({ kind: fc.constant('subtract' as const), k: fc.integer({ min: 0, max: 20 }) })
  )
  fc.assert(
    fc.property(fc.boolean(), fc.array(step, { minLength: 1, maxLength: 30 }), fc.constantFrom(0.5, 0.95, 0.99), (dense, steps, q) => {
      const s = dense ? LatencySketch.dense() : new LatencySketch()
      const held: number[] = []
      for (const x of steps) {
        s.quantile(q) // cache the answer before the change
        if (x.kind === 'record') {
          s.record(x.v)
          held.push(x.v)
        } else if (x.kind === 'merge') {
          s.merge(fresh(x.vs))
          held.push(...x.vs)
        } else {
          // Take out the k most recently added values (all of them recorded here).
          const out = held.splice(Math.max(0, held.length - x.k))
          s.subtract(fresh(out))
        }
        const want = fresh(held)
        // subtract leaves extremes within the accuracy: compare the bucket answer of a rank that is not an extreme.
        const got = s.quantile(q)
        const expect = want.quantile(q)
        if (held.length === 0 ? !Number.isNaN(got) : Math.abs(got - expect) > 0.011 * Math.max(expect, 1)) throw new Error(`q ${q}: ${got} vs fresh ${expect} after ${x.kind}`)
        if (s.count !== held.length) throw new Error('count')
      }
    }),
    { numRuns: 300 }
  )
  t.pass('300 runs agree')
  t.end()
})

t.test('asked twice, the second answer is the first', (t) => {
  const s = fresh([5, 10, 20, 40, 80, 160])
  const a = s.quantile(0.95)
  t.equal(s.quantile(0.95), a)
  s.record(1_000_000)
  t.not(s.quantile(0.95), a, 'a new largest value moves the p95')
  t.equal(s.quantile(0.95), fresh([5, 10, 20, 40, 80, 160, 1_000_000]).quantile(0.95))
  t.end()
})

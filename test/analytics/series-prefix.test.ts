/**
 * Totals-only reads (a DiscardSketch accumulator: cost breakdowns) take a range's whole hours
 * from running sums kept beside the hour nodes. They must equal the full read's totals after
 * every kind of change: rows recorded earlier and later than anything held (the sums' span
 * grows), into hours already summed (stale from there), deletes, retention folds, late rows
 * into a folded hour, and settling.
 */
import t from 'tap'
import fc from 'fast-check'
import { SeriesStore } from '../../src/analytics/series.js'
import { createTotals } from '../../src/analytics/totals.js'
import { DiscardSketch } from '../../src/analytics/sketch.js'
import type { Row } from '../../src/analytics/row.js'
import { DAY, HOUR, MIN, naiveTotals } from './fixtures/naive.js'

const T = 20_000 * DAY

const rowAt = (ts: number, i: number): Row => ({
  ts,
  promptTokens: (i * 37) % 5000,
  completionTokens: (i * 11) % 900,
  totalTokens: ((i * 37) % 5000) + ((i * 11) % 900),
  cachedTokens: i % 3,
  reasoningTokens: 0,
  latencyUs: (i * 7919) % 3_000_000,
  costNanos: i % 10 === 0 ? 2 ** 33 + i : (i * 104_729) % 10_000_000,
  error: i % 17 === 0,
  unpriced: i % 23 === 0,
  seq: i + 1
})

function check(s: SeriesStore, a: number, b: number, label: string): void {
  const only = s.aggregate(a, b, { totals: createTotals(), sketch: new DiscardSketch() }).totals
  const full = s.aggregate(a, b).totals
  if (JSON.stringify(only) !== JSON.stringify(full)) throw new Error(`${label}: totals-only ${JSON.stringify(only)} !== full ${JSON.stringify(full)} for [${a}, ${b})`)
}

const op = fc.oneof(
  fc.record({ kind: fc.constant('record' as const), at: fc.integer({ min: -3 * DAY, max: 6 * DAY }), n: fc.integer({ min: 1, max: 30 }) }),
  fc.record({ kind: fc.constant('forget' as const), every: fc.integer({ min: 2, max: 7 }) }),
  fc.record({ kind: fc.constant('retain' as const), before: fc.integer({ min: -2 * DAY, max: 4 * DAY }) }),
  fc.record({ kind: fc.constant('settle' as const) })
)

t.test('totals-only reads equal full reads through records, deletes, folds and settling', (t) => {
  fc.assert(
    fc.property(fc.array(op, { minLength: 1, maxLength: 12 }), fc.array(fc.tuple(fc.integer({ min: -4 * DAY, max: 7 * DAY }), fc.integer({ min: 0, max: 5 * DAY })), { minLength: 1, maxLength: 6 }), (ops, ranges) => {
      const s = new SeriesStore()
      const held: Row[] = []
      let i = 0
      for (const o of ops) {
        if (o.kind === 'record') {
          for (let k = 0; k < o.n; k++) {
            const row = rowAt(T + o.at + ((k * 7_777_777) % (2 * DAY)), i++)
            s.record(row)
            held.push(row)
          }
        } else if (o.kind === 'forget') {
          const seqs = new Set(held.filter((r) => (r.seq as number) % o.every === 0).map((r) => r.seq as number))
          s.forget(seqs)
        } else if (o.kind === 'retain') {
          s.retain({ before: T + o.before, maxRows: 0, now: T + 10 * DAY })
        } else {
          s.settle()
        }
        for (const [a, len] of ranges) check(s, T + a, T + a + len, `after ${o.kind}`)
        check(s, -Infinity, Infinity, `after ${o.kind}`)
        check(s, T + 5 * MIN + 3, T + 3 * DAY + 7 * HOUR + 11, `after ${o.kind}`)
      }
    }),
    { numRuns: 200 }
  )
  t.pass('200 runs agree')
  t.end()
})

t.test('whole-hour sums agree with the naive totals on a plain store', (t) => {
  const s = new SeriesStore()
  const rows: Row[] = []
  for (let i = 0; i < 2000; i++) {
    const row = rowAt(T + ((i * 7_919_113) % (3 * DAY)), i)
    rows.push(row)
    s.record(row)
  }
  for (const [a, b] of [[T, T + 3 * DAY], [T + 90 * MIN + 1, T + 2 * DAY + 5], [T - DAY, T + 10 * DAY]]) {
    const only = s.aggregate(a, b, { totals: createTotals(), sketch: new DiscardSketch() }).totals
    t.same(only, naiveTotals(rows.filter((r) => r.ts >= a && r.ts < b)), `[${a}, ${b})`)
  }
  t.end()
})

/**
 * BucketSum: several series walked into one set of timeseries buckets (queries.ts timeseries)
 * answers exactly what the naive reference over the union of their rows answers — the same
 * buckets, totals and sketches — including a coarse-only store (the rollup's shape) sharing
 * whole hours, and a bucket that is a shared hour of one series plus rows of another.
 */
import t from 'tap'
import fc from 'fast-check'
import { BucketSum, SeriesStore } from '../../src/analytics/series.js'
import type { Row } from '../../src/analytics/row.js'
import { DAY, HOUR, MIN, naiveSketch, naiveTimeseries, naiveTotals, pointSpec, resolvePoint, rowArb } from './fixtures/naive.js'

const INTERVALS = [MIN, 5 * MIN, HOUR, DAY]

function storeOf(rows: readonly Row[]): SeriesStore {
  const s = new SeriesStore()
  for (const r of rows) if (!s.record(r)) throw new Error(`row refused: ${JSON.stringify(r)}`)
  return s
}

function check(parts: SeriesStore[], rows: readonly Row[], s: number, e: number, iv: number): void {
  const sum = new BucketSum()
  for (const p of parts) {
    const own = p.timeseries(s, e, iv, sum)
    if (own.length !== 0) throw new Error('timeseries into a sum returns no list of its own')
  }
  const got = sum.list()
  const want = naiveTimeseries(rows, s, e, iv)
  const label = `[${s}, ${e}) / ${iv}`
  if (got.length !== want.length) throw new Error(`${label}: ${got.length} buckets, naive ${want.length}`)
  got.forEach((b, i) => {
    if (b.start !== want[i].start) throw new Error(`${label}: bucket ${i} starts ${b.start}, naive ${want[i].start}`)
    const gt = JSON.stringify(b.totals)
    const wt = JSON.stringify(naiveTotals(want[i].rows))
    if (gt !== wt) throw new Error(`${label} bucket ${b.start}: totals ${gt} !== ${wt}`)
    const gs = JSON.stringify(b.sketch)
    const ws = JSON.stringify(naiveSketch(want[i].rows))
    if (gs !== ws) throw new Error(`${label} bucket ${b.start}: sketch ${gs} !== ${ws}`)
  })
}

t.test('several series summed into one BucketSum equal the naive timeseries of all their rows', (t) => {
  fc.assert(
    fc.property(fc.array(fc.array(rowArb(), { maxLength: 40 }), { minLength: 1, maxLength: 4 }), fc.array(fc.tuple(pointSpec, pointSpec), { minLength: 1, maxLength: 4 }), (groups, ranges) => {
      const stores = groups.map(storeOf)
      const rows = groups.flat()
      for (const [a, b] of ranges) {
        const s = resolvePoint(a, rows)
        const e = resolvePoint(b, rows)
        for (const iv of INTERVALS) check(stores, rows, s, e, iv)
      }
    }),
    { numRuns: 150 }
  )
  t.pass('150 runs agree')
  t.end()
})

t.test('a coarse-only store shares whole hours; series add their edges and the same hours beside it', (t) => {
  fc.assert(
    fc.property(fc.array(rowArb({ dense: true }), { minLength: 1, maxLength: 60 }), fc.array(rowArb({ dense: true }), { maxLength: 60 }), fc.tuple(pointSpec, pointSpec), (a, b, [p, q]) => {
      const coarse = SeriesStore.coarseOnly()
      for (const r of a) coarse.record(r)
      const rows = [...a, ...b]
      const s = resolvePoint(p, rows)
      const e = resolvePoint(q, rows)
      // Hour-aligned ranges only: a coarse store is exact there (as the rollup is used).
      const hs = Math.floor(s / HOUR) * HOUR
      const he = Math.ceil(e / HOUR) * HOUR
      check([coarse, storeOf(b)], rows, hs, he, HOUR)
      check([storeOf(b), coarse], rows, hs, he, HOUR)
    }),
    { numRuns: 150 }
  )
  t.pass('150 runs agree')
  t.end()
})

t.test('a shared stored hour is never modified when another part joins its bucket', (t) => {
  const hour = 20_000 * DAY
  const row = (ts: number, latencyUs: number): Row => ({ ts, promptTokens: 1, completionTokens: 2, totalTokens: 3, cachedTokens: 0, reasoningTokens: 0, latencyUs, costNanos: 5, error: false, unpriced: false })
  const a = storeOf([row(hour + 5, 100), row(hour + 6, 200)])
  const b = storeOf([row(hour + 7, 300_000)])
  const before = JSON.stringify(a.timeseries(hour, hour + HOUR, HOUR))
  const sum = new BucketSum()
  a.timeseries(hour, hour + HOUR, HOUR, sum)
  b.timeseries(hour, hour + HOUR, HOUR, sum)
  const [bucket] = sum.list()
  t.equal(bucket.totals.requests, 3)
  t.equal(bucket.sketch.count, 3)
  t.equal(JSON.stringify(a.timeseries(hour, hour + HOUR, HOUR)), before, 'series a still answers its own hour')
  t.end()
})

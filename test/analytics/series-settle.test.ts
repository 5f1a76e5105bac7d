/**
 * SeriesStore.settle: rows that arrived out of time order are laid out again in time order —
 * and nothing a reader can see changes: every range's aggregate, timeseries and rows (values,
 * dimension words, times, seqs) answer exactly as before, a snapshot restores to the same
 * answers, and the naive reference still agrees. Rows arriving in time order never trigger it.
 */
import t from 'tap'
import fc from 'fast-check'
import { SeriesStore, SETTLE_MIN_ROWS } from '../../src/analytics/series.js'
import type { Row } from '../../src/analytics/row.js'
import { DAY, HOUR, MIN, naiveTotals } from './fixtures/naive.js'

const T = 20_000 * DAY

function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

function rows(n: number, seed: number, ordered: boolean): Row[] {
  const r = rng(seed)
  const out: Row[] = []
  for (let i = 0; i < n; i++) {
    const prompt = Math.floor(r() * 5000)
    const completion = Math.floor(r() * 2000)
    out.push({
      ts: T + Math.floor(r() * 2 * DAY),
      promptTokens: prompt,
      completionTokens: completion,
      totalTokens: prompt + completion,
      cachedTokens: r() < 0.1 ? Math.floor(r() * 100) : 0,
      reasoningTokens: 0,
      latencyUs: r() < 0.01 ? 2 ** 33 : Math.floor(r() * 3_000_000),
      costNanos: r() < 0.01 ? 2 ** 35 : Math.floor(r() * 1e7),
      error: r() < 0.05,
      unpriced: r() < 0.02,
      seq: i + 1
    })
  }
  if (ordered) out.sort((a, b) => a.ts - b.ts)
  return out
}

/** Everything a reader sees of `s` over [a, b): aggregate, hourly and 5-minute buckets, every row visited. */
function view(s: SeriesStore, a: number, b: number): string {
  const seen: string[] = []
  s.scanRows(a, b, (v, flags, u, se, at, ts, seq) => seen.push(`${ts}/${seq}/${flags}/${u}/${se}/${at}/${Array.from(v).join(',')}`))
  seen.sort()
  return JSON.stringify([s.aggregate(a, b), s.timeseries(a, b, HOUR), s.timeseries(a, b, 5 * MIN), seen])
}

t.test('settle re-lays scattered rows and every answer stays the same', (t) => {
  const input = rows(3 * SETTLE_MIN_ROWS, 5, false)
  const s = new SeriesStore()
  input.forEach((row, i) => s.record(row, { user: (i % 7) + 2, session: i % 3, attrs: i % 5 }))
  t.ok(s.scatteredRows >= SETTLE_MIN_ROWS, 'rows in random time order count as scattered')
  const r = rng(9)
  const ranges: Array<[number, number]> = [[-Infinity, Infinity]]
  for (let i = 0; i < 30; i++) {
    const a = T + Math.floor(r() * 2 * DAY)
    const b = T + Math.floor(r() * 2 * DAY)
    ranges.push([Math.min(a, b), Math.max(a, b) + 1])
  }
  const before = ranges.map(([a, b]) => view(s, a, b))
  const snapBefore = view(SeriesStore.fromSnapshot(s.toSnapshot()), -Infinity, Infinity)
  t.equal(s.settle(), true, 'settles')
  t.equal(s.scatteredRows, 0)
  t.equal(s.settle(), false, 'nothing left to settle')
  ranges.forEach(([a, b], i) => t.equal(view(s, a, b), before[i], `[${a}, ${b}) answers as before`))
  t.equal(view(SeriesStore.fromSnapshot(s.toSnapshot()), -Infinity, Infinity), snapBefore, 'a snapshot after settling restores the same answers')
  t.same(s.aggregate(-Infinity, Infinity).totals, naiveTotals(input), 'naive totals')
  t.end()
})

t.test('rows arriving in time order are not scattered: settle does nothing', (t) => {
  const s = new SeriesStore()
  for (const row of rows(3 * SETTLE_MIN_ROWS, 6, true)) s.record(row)
  t.ok(s.scatteredRows < SETTLE_MIN_ROWS, `${s.scatteredRows} scattered`)
  t.equal(s.settle(), false)
  t.end()
})

t.test('property: settling between random appends never changes an answer', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 2 * DAY }), fc.integer({ min: 1, max: 2 * DAY }), (seed, rounds, a, len) => {
      const settled = new SeriesStore()
      const plain = new SeriesStore()
      const all = rows(SETTLE_MIN_ROWS + 500, seed, false)
      const step = Math.ceil(all.length / (rounds + 1))
      for (let i = 0; i < all.length; i++) {
        settled.record(all[i])
        plain.record(all[i])
        if (i % step === step - 1) settled.settle()
      }
      settled.settle()
      const lo = T + a
      if (view(settled, lo, lo + len) !== view(plain, lo, lo + len)) throw new Error(`[${lo}, ${lo + len}) differs after settling`)
    }),
    { numRuns: 25 }
  )
  t.pass('25 runs agree')
  t.end()
})

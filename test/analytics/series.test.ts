import t from 'tap'
import fc from 'fast-check'
import { createAggregate, mergeInto, mergeTimeseries, SeriesStore } from '../../src/analytics/series.js'
import type { Aggregate, TimeBucket } from '../../src/analytics/series.js'
import type { Row } from '../../src/analytics/row.js'
import { createTotals } from '../../src/analytics/totals.js'
import { DiscardSketch } from '../../src/analytics/sketch.js'
import {
  DAY,
  HOUR,
  inRange,
  MIN,
  naiveQuantile,
  naiveSketch,
  naiveTimeseries,
  naiveTotals,
  pointSpec,
  resolvePoint,
  rowArb,
  within1pct,
} from './fixtures/naive.js'
import type { PointSpec } from './fixtures/naive.js'

const INTERVALS = [MIN, 5 * MIN, HOUR, DAY]

function storeOf(rows: readonly Row[]): SeriesStore {
  const s = new SeriesStore()
  for (const r of rows) if (!s.record(r)) throw new Error(`row refused: ${JSON.stringify(r)}`)
  return s
}

/** Throws (so fast-check shrinks) unless `got` answers exactly like the naive reference. */
function checkAggregate(got: Aggregate, rows: readonly Row[], label: string): void {
  const want = naiveTotals(rows)
  const g = JSON.stringify(got.totals)
  const w = JSON.stringify(want)
  if (g !== w) throw new Error(`${label}: totals ${g} !== naive ${w}`)
  // Sketch merges are exact, so the sketch equals one built from the selected rows.
  const gs = JSON.stringify(got.sketch)
  const ws = JSON.stringify(naiveSketch(rows))
  if (gs !== ws) throw new Error(`${label}: sketch ${gs} !== naive ${ws}`)
  if (rows.length === 0) return
  const lat = rows.map((r) => r.latencyUs)
  for (const q of [0.5, 0.95, 0.99]) {
    const est = got.sketch.quantile(q)
    const truth = naiveQuantile(lat, q)
    if (!within1pct(est, truth)) throw new Error(`${label}: p${q * 100} ${est} vs naive ${truth}`)
  }
}

function checkTimeseries(got: TimeBucket[], rows: readonly Row[], s: number, e: number, iv: number): void {
  const want = naiveTimeseries(rows, s, e, iv)
  const label = `timeseries [${s}, ${e}) / ${iv}`
  if (got.length !== want.length) {
    throw new Error(`${label}: ${got.length} buckets, naive ${want.length} (${got.map((b) => b.start)} vs ${want.map((b) => b.start)})`)
  }
  got.forEach((b, i) => {
    if (b.start !== want[i].start) throw new Error(`${label}: bucket ${i} starts ${b.start}, naive ${want[i].start}`)
    checkAggregate(b, want[i].rows, `${label} bucket ${b.start}`)
  })
}

function checkStore(store: SeriesStore, rows: readonly Row[], ranges: [PointSpec, PointSpec][]): void {
  checkAggregate(store.aggregate(-Infinity, Infinity), rows, 'all')
  for (const [a, b] of ranges) {
    const s = resolvePoint(a, rows)
    const e = resolvePoint(b, rows)
    checkAggregate(store.aggregate(s, e), inRange(rows, s, e), `[${s}, ${e})`)
    for (const iv of INTERVALS) checkTimeseries(store.timeseries(s, e, iv), rows, s, e, iv)
    checkTotalsOnly(store, s, e)
  }
}

/** A totals-only read (which may subtract the rest of a day or hour) equals the full read's totals. */
function checkTotalsOnly(store: SeriesStore, s: number, e: number): void {
  const only = store.aggregate(s, e, { totals: createTotals(), sketch: new DiscardSketch() }).totals
  if (JSON.stringify(only) !== JSON.stringify(store.aggregate(s, e).totals)) throw new Error(`totals-only read differs for [${s}, ${e})`)
}

const ranges = fc.array(fc.tuple(pointSpec, pointSpec), { minLength: 1, maxLength: 6 })

t.test('aggregate and timeseries equal the naive reference for any rows and range', async (t) => {
  fc.assert(
    fc.property(fc.array(rowArb(), { maxLength: 150 }), ranges, (rows, rs) => {
      checkStore(storeOf(rows), rows, rs)
    }),
    { numRuns: 150 },
  )
  t.pass('matched the naive reference')
})

t.test('timestamps before the epoch bucket correctly (floor, not truncation)', async (t) => {
  fc.assert(
    fc.property(fc.array(rowArb({ negative: true }), { maxLength: 100 }), ranges, (rows, rs) => {
      checkStore(storeOf(rows), rows, rs)
    }),
    { numRuns: 60 },
  )
  t.pass('matched the naive reference')
})

t.test('dense minutes (past the per-minute aggregate threshold) stay exact', async (t) => {
  fc.assert(
    fc.property(fc.array(rowArb({ dense: true }), { minLength: 150, maxLength: 400 }), ranges, (rows, rs) => {
      checkStore(storeOf(rows), rows, rs)
    }),
    { numRuns: 25 },
  )
  t.pass('matched the naive reference')
})

t.test('answers are bit-identical whatever the insertion order', async (t) => {
  fc.assert(
    fc.property(
      fc.array(rowArb(), { maxLength: 120 }),
      fc.array(rowArb({ dense: true }), { maxLength: 150 }),
      ranges,
      (sparse, dense, rs) => {
        const rows = [...sparse, ...dense]
        const inOrder = [...rows].sort((a, b) => a.ts - b.ts)
        const stores = [storeOf(rows), storeOf(inOrder), storeOf([...inOrder].reverse())]
        for (const [a, b] of rs) {
          const s = resolvePoint(a, rows)
          const e = resolvePoint(b, rows)
          const answers = stores.map((st) => JSON.stringify([st.aggregate(s, e), st.timeseries(s, e, 5 * MIN)]))
          if (answers[1] !== answers[0] || answers[2] !== answers[0]) throw new Error(`order changed [${s}, ${e})`)
        }
      },
    ),
    { numRuns: 60 },
  )
  t.pass('order-independent')
})

t.test('ranges exactly on bucket edges are half-open', async (t) => {
  const base = 20_000 * DAY
  const at = (ts: number, latencyUs = 1000): Row => ({
    ts,
    promptTokens: 1,
    completionTokens: 1,
    totalTokens: 2,
    cachedTokens: 0,
    reasoningTokens: 0,
    latencyUs,
    costNanos: 1,
    error: false,
    unpriced: false,
  })
  const store = storeOf([at(base - 1), at(base), at(base + MIN - 1), at(base + MIN), at(base + HOUR), at(base + DAY)])
  const n = (s: number, e: number) => store.aggregate(s, e).totals.requests
  t.equal(n(base, base), 0, 'start == end is empty')
  t.equal(n(base + 5, base), 0, 'start > end is empty')
  t.equal(n(base, base + 1), 1, 'start included')
  t.equal(n(base - 1, base), 1, 'end excluded')
  t.equal(n(base, base + MIN), 2, 'one whole minute')
  t.equal(n(base, base + HOUR), 3, 'one whole hour')
  t.equal(n(base, base + DAY), 4, 'one whole day')
  t.equal(n(base, Infinity), 5)
  t.equal(n(-Infinity, base), 1)
  t.equal(n(-Infinity, Infinity), 6)
  t.equal(n(base - 0.5, base + 0.5), 1, 'fractional bounds select whole ms')
  t.equal(n(Infinity, Infinity), 0)
  t.equal(n(-Infinity, -Infinity), 0)
  t.equal(n(-1e300, 1e300), 6, 'huge finite bounds')
  t.same(
    store.timeseries(base, base + 2 * MIN, MIN).map((b) => [b.start, b.totals.requests]),
    [
      [base, 2],
      [base + MIN, 1],
    ],
  )
  t.same(
    store.timeseries(base - 1, base + DAY + 1, DAY).map((b) => [b.start, b.totals.requests]),
    [
      [base - DAY, 1],
      [base, 4],
      [base + DAY, 1],
    ],
    'buckets start at their epoch-aligned start even when the range starts later',
  )
  t.same(store.timeseries(base + 1, base + MIN - 1, MIN), [], 'a bucket with rows only outside the range is omitted')
})

t.test('a range query reads only the raw rows at its edges', async (t) => {
  const base = 20_000 * DAY
  const store = new SeriesStore()
  const rows: Row[] = []
  // ~100k rows over 10 days, ~7 per minute, in a scrambled order.
  for (let i = 0; i < 100_000; i++) {
    const ts = base + ((i * 7_919_993) % (10 * DAY))
    const r: Row = {
      ts,
      promptTokens: i % 1000,
      completionTokens: i % 333,
      totalTokens: (i % 1000) + (i % 333),
      cachedTokens: i % 7,
      reasoningTokens: i % 5,
      latencyUs: 1000 + ((i * 37) % 2_000_000),
      costNanos: i * 13,
      error: i % 17 === 0,
      unpriced: i % 29 === 0,
    }
    rows.push(r)
    store.record(r)
  }
  t.equal(store.size, 100_000)
  t.same(store.bounds(), { min: Math.min(...rows.map((r) => r.ts)), max: Math.max(...rows.map((r) => r.ts)) })
  const s = base + DAY + 7 * HOUR + 13 * MIN + 17_017
  const e = base + 8 * DAY + 3 * HOUR + 59 * MIN + 1
  const before = store.scannedRows
  const got = store.aggregate(s, e)
  const scanned = store.scannedRows - before
  t.ok(scanned < 1500, `scanned ${scanned} of ${store.size} rows`)
  const sel = inRange(rows, s, e)
  t.same(got.totals, naiveTotals(sel))
  t.same(got.sketch.toJSON(), naiveSketch(sel).toJSON())
  const everything = store.scannedRows
  store.aggregate(base, base + 10 * DAY)
  t.equal(store.scannedRows, everything, 'whole days are answered without reading rows')
  // Snapshot of a multi-chunk store (chunks hold 4096 rows) restores to the same answers.
  const back = SeriesStore.fromSnapshot(store.toSnapshot())
  t.equal(back.size, store.size)
  t.same(back.aggregate(s, e), got)
  t.same(back.timeseries(s, e, HOUR), store.timeseries(s, e, HOUR))
})

t.test('invalid rows are refused, counted, and change nothing', async (t) => {
  const store = new SeriesStore()
  const good: Row = {
    ts: 1000,
    promptTokens: 1,
    completionTokens: 2,
    totalTokens: 3,
    cachedTokens: 0,
    reasoningTokens: 0,
    latencyUs: 10,
    costNanos: 5,
    error: false,
    unpriced: false,
  }
  t.equal(store.record(good), true)
  t.equal(store.record({ ...good, promptTokens: -1 }), false)
  t.equal(store.record({ ...good, ts: NaN }), false)
  t.equal(store.record({ ...good, ts: 9e15 }), false)
  t.equal(store.record({ ...good, costNanos: 0.5 }), false)
  t.equal(store.size, 1)
  t.equal(store.rejected, 4)
  t.same(store.aggregate(-Infinity, Infinity).totals, naiveTotals([good]))
})

t.test('an empty store answers empty', async (t) => {
  const store = new SeriesStore()
  t.equal(store.size, 0)
  t.equal(store.bounds(), null)
  t.same(store.aggregate(-Infinity, Infinity).totals, naiveTotals([]))
  t.ok(Number.isNaN(store.aggregate(0, 1).sketch.quantile(0.5)))
  t.same(store.timeseries(-Infinity, Infinity, MIN), [])
})

t.test('bad query arguments throw RangeError', async (t) => {
  const store = new SeriesStore()
  t.throws(() => store.aggregate(NaN, 1), RangeError)
  t.throws(() => store.aggregate(0, NaN), RangeError)
  t.throws(() => store.timeseries(0, 1, 1000), RangeError, 'sub-minute interval')
  t.throws(() => store.timeseries(0, 1, 0), RangeError)
  t.throws(() => store.timeseries(0, 1, 90_000), RangeError)
  t.throws(() => store.timeseries(0, 1, NaN), RangeError)
  t.throws(() => store.timeseries(NaN, 1, MIN), RangeError)
})

t.test('results of many series combine: aggregate(into), mergeInto, mergeTimeseries', async (t) => {
  fc.assert(
    fc.property(fc.array(rowArb(), { maxLength: 80 }), fc.array(rowArb(), { maxLength: 80 }), ranges, (ra, rb, rs) => {
      const a = storeOf(ra)
      const b = storeOf(rb)
      const all = [...ra, ...rb]
      for (const [p, q] of rs) {
        const s = resolvePoint(p, all)
        const e = resolvePoint(q, all)
        const sel = inRange(all, s, e)
        checkAggregate(b.aggregate(s, e, a.aggregate(s, e)), sel, 'into')
        checkAggregate(mergeInto(mergeInto(createAggregate(), a.aggregate(s, e)), b.aggregate(s, e)), sel, 'mergeInto')
        const ta = a.timeseries(s, e, 5 * MIN)
        const tb = b.timeseries(s, e, 5 * MIN)
        const snapshotA = JSON.stringify(ta)
        checkTimeseries(mergeTimeseries([ta, tb]), all, s, e, 5 * MIN)
        if (JSON.stringify(ta) !== snapshotA) throw new Error('mergeTimeseries modified its input')
      }
    }),
    { numRuns: 60 },
  )
  t.pass('combined results equal the naive reference')
})

// ---- row layout: 32-bit words with exact escapes -----------------------------

const U32 = 2 ** 32
/** Around the 32-bit edge of the row words, and far above it (a few hundred still sum below 2^53). */
const big = fc.oneof(fc.constantFrom(U32 - 1, U32, U32 + 1), fc.integer({ min: U32, max: 2 ** 44 }))
/** Small counts, and the edges of the packed prompt (24 bits) and completion (20 bits). */
const small = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5000 }), fc.constantFrom(2 ** 20 - 1, 2 ** 20, 2 ** 24 - 1, 2 ** 24, U32 - 1))
const WIDE_FIELDS = ['promptTokens', 'completionTokens', 'totalTokens', 'cachedTokens', 'reasoningTokens', 'latencyUs'] as const

/**
 * Rows of every storage class, mixed: typical ones (all in the row's words, total = prompt +
 * completion, no cached/reasoning tokens), ones needing the extension words (cached or
 * reasoning tokens, another total, cost >= 2^32) and wide ones (a count or latency past its
 * bits: prompt >= 2^24, completion >= 2^20, any other >= 2^32).
 */
const layoutRow: fc.Arbitrary<Row> = fc
  .tuple(rowArb(), fc.constantFrom('typical', 'typical', 'cached', 'total', 'cost', 'wide'), small, small, small, big, fc.constantFrom(...WIDE_FIELDS))
  .map(([r, kind, p, c, x, b, field]) => {
    const row: Row = {
      ...r,
      promptTokens: p,
      completionTokens: c,
      totalTokens: p + c,
      cachedTokens: 0,
      reasoningTokens: 0,
      latencyUs: r.latencyUs % U32,
      costNanos: r.costNanos % U32,
    }
    if (kind === 'cached') {
      row.cachedTokens = x
      row.reasoningTokens = c
    } else if (kind === 'total') row.totalTokens = p + c === x ? x + 1 : x
    else if (kind === 'cost') row.costNanos = b
    else if (kind === 'wide') row[field] = b
    return row
  })

/** The rows a snapshot holds, as sorted JSON lines (a multiset to compare). */
function snapshotRows(store: SeriesStore): string[] {
  const snap = store.toSnapshot()
  const out: string[] = []
  for (let i = 0; i < snap.rows; i++) {
    const row: Row = {
      ts: snap.ts[i],
      promptTokens: snap.promptTokens[i],
      completionTokens: snap.completionTokens[i],
      totalTokens: snap.totalTokens[i],
      cachedTokens: snap.cachedTokens[i],
      reasoningTokens: snap.reasoningTokens[i],
      latencyUs: snap.latencyUs[i],
      costNanos: snap.costNanos[i],
      error: snap.error[i] === 1,
      unpriced: snap.unpriced[i] === 1,
    }
    out.push(JSON.stringify(row))
  }
  return out.sort()
}

const rowLines = (rows: readonly Row[]): string[] =>
  rows
    .map((r) =>
      JSON.stringify({
        ts: r.ts,
        promptTokens: r.promptTokens,
        completionTokens: r.completionTokens,
        totalTokens: r.totalTokens,
        cachedTokens: r.cachedTokens,
        reasoningTokens: r.reasoningTokens,
        latencyUs: r.latencyUs,
        costNanos: r.costNanos,
        error: r.error,
        unpriced: r.unpriced,
      }),
    )
    .sort()

t.test('every storage class of a row (packed words, extension words, wide values) reads back exactly', async (t) => {
  fc.assert(
    fc.property(fc.array(layoutRow, { maxLength: 150 }), fc.array(layoutRow.map((r) => ({ ...r, ts: 20_000 * DAY + (r.ts % (3 * MIN)) })), { maxLength: 150 }), ranges, (sparse, dense, rs) => {
      const rows = [...sparse, ...dense]
      const store = storeOf(rows)
      checkStore(store, rows, rs)
      const lines = rowLines(rows)
      const got = snapshotRows(store)
      if (JSON.stringify(got) !== JSON.stringify(lines)) throw new Error('snapshot rows differ from the recorded rows')
    }),
    { numRuns: 120 },
  )
  t.pass('matched the naive reference, and every value read back as recorded')
})

t.test('escaped values stay exact across chunks, first-chunk growth and snapshots (9,000+ rows)', async (t) => {
  const base = 20_000 * DAY
  const rows: Row[] = []
  for (let i = 0; i < 9_500; i++) {
    const p = (i * 7919) % 100_000
    const c = (i * 104_729) % 3000
    const row: Row = {
      ts: base + ((i * 7_919_993) % (2 * DAY)),
      promptTokens: p,
      completionTokens: c,
      totalTokens: p + c,
      cachedTokens: 0,
      reasoningTokens: 0,
      latencyUs: 1000 + ((i * 37) % 3_000_000),
      costNanos: i * 13_001,
      error: i % 17 === 0,
      unpriced: i % 29 === 0,
    }
    // The first escapes land in the first chunk while it is still small (it then grows).
    if (i % 7 === 0) row.cachedTokens = i
    if (i % 11 === 3) row.latencyUs = U32 + i
    if (i % 13 === 5) row.costNanos = 2 ** 40 + i
    if (i % 19 === 1) row.totalTokens = p + c + 5
    if (i % 23 === 2) row.promptTokens = 2 ** 24 - 1 + (i % 2)
    if (i % 37 === 9) row.completionTokens = 2 ** 20 - 1 + (i % 2)
    if (i % 31 === 4) row.reasoningTokens = 2 ** 33 + i
    rows.push(row)
  }
  const store = storeOf(rows)
  t.equal(store.size, rows.length)
  t.same(store.aggregate(-Infinity, Infinity).totals, naiveTotals(rows))
  for (const [s, e] of [
    [base + 3 * HOUR + 7, base + DAY + 5 * HOUR + 13 * MIN + 1],
    [base + 17 * MIN + 59_999, base + 17 * MIN + 60_001],
  ]) {
    t.same(store.aggregate(s, e).totals, naiveTotals(inRange(rows, s, e)), `[${s}, ${e})`)
  }
  t.same(snapshotRows(store), rowLines(rows), 'every value reads back as recorded')
  const back = SeriesStore.fromSnapshot(store.toSnapshot())
  t.same(back.toSnapshot(), store.toSnapshot(), 'a restored store holds the same rows')
})

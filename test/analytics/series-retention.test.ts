/**
 * Retention (SeriesStore.retain): folded hours keep exact totals and sketches without their
 * rows. The reference: the same rows with every row of a coarse hour moved to its hour's start
 * — so ranges aligned to hours answer exactly as without retention, and memory (raw rows)
 * stays bounded under a steady stream.
 */
import t from 'tap'
import fc from 'fast-check'
import { SeriesStore } from '../../src/analytics/series.js'
import type { Aggregate, TimeBucket } from '../../src/analytics/series.js'
import type { Row } from '../../src/analytics/row.js'
import { createTotals } from '../../src/analytics/totals.js'
import { DiscardSketch } from '../../src/analytics/sketch.js'
import { DAY, HOUR, inRange, MIN, naiveSketch, naiveTimeseries, naiveTotals, pointSpec, resolvePoint, rowArb } from './fixtures/naive.js'

const INTERVALS = [MIN, 5 * MIN, HOUR, DAY]
const hourStart = (ts: number) => Math.floor(ts / HOUR) * HOUR

function same(got: Aggregate, rows: readonly Row[], label: string): void {
  const g = JSON.stringify(got.totals)
  const w = JSON.stringify(naiveTotals(rows))
  if (g !== w) throw new Error(`${label}: totals ${g} !== reference ${w}`)
  const gs = JSON.stringify(got.sketch)
  const ws = JSON.stringify(naiveSketch(rows))
  if (gs !== ws) throw new Error(`${label}: sketch differs`)
}

function sameSeries(got: TimeBucket[], rows: readonly Row[], s: number, e: number, iv: number): void {
  const want = naiveTimeseries(rows, s, e, iv)
  const label = `timeseries [${s}, ${e}) / ${iv}`
  if (got.length !== want.length) throw new Error(`${label}: ${got.length} buckets, reference ${want.length}`)
  got.forEach((b, i) => {
    if (b.start !== want[i].start) throw new Error(`${label}: bucket ${i} at ${b.start}, reference ${want[i].start}`)
    same(b, want[i].rows, `${label} bucket ${b.start}`)
  })
}

/** The rows as a store with this horizon must see them. */
const reference = (rows: readonly Row[], horizon: number) => rows.map((r) => (r.ts < horizon ? { ...r, ts: hourStart(r.ts) } : r))

const U32 = 2 ** 32
/**
 * Rows as the store keeps most of them (every value in a 32-bit word, total = prompt +
 * completion, no cached or reasoning tokens), mixed below with `rowArb()` rows, which mostly
 * need the store's escapes (extension words, or wide values up to 2^40): compaction after
 * retention copies both kinds.
 */
const typicalRowArb = (opts: { dense?: boolean } = {}) =>
  rowArb(opts).map((r): Row => {
    const promptTokens = r.promptTokens % U32
    const completionTokens = r.completionTokens % U32
    return { ...r, promptTokens, completionTokens, totalTokens: promptTokens + completionTokens, cachedTokens: 0, reasoningTokens: 0, latencyUs: r.latencyUs % U32, costNanos: r.costNanos % U32 }
  })
const mixedRowArb = (opts: { dense?: boolean } = {}) => fc.oneof(rowArb(opts), typicalRowArb(opts))

const policyArb = fc.record({
  before: pointSpec,
  byAge: fc.boolean(),
  maxRows: fc.constantFrom(0, 0, 1, 5, 20, 60),
  now: pointSpec
})

t.test('after retain, every query answers as if coarse rows sat at their hour start; aligned ranges as without retention', async (t) => {
  fc.assert(
    fc.property(
      fc.array(mixedRowArb(), { maxLength: 120 }),
      fc.array(mixedRowArb({ dense: true }), { maxLength: 80 }),
      policyArb,
      fc.array(mixedRowArb(), { maxLength: 40 }),
      fc.array(fc.tuple(pointSpec, pointSpec), { minLength: 1, maxLength: 4 }),
      (sparse, dense, p, late, ranges) => {
        const rows = [...sparse, ...dense]
        const store = new SeriesStore()
        for (const r of rows) store.record(r)
        const before = p.byAge ? resolvePoint(p.before, rows) : -Infinity
        const now = resolvePoint(p.now, rows)
        const folded = store.retain({ before: Number.isFinite(before) ? before : -Infinity, maxRows: p.maxRows, now: Number.isFinite(now) ? now : 0 })
        // Late rows after retention: into coarse hours they count without a row.
        for (const r of late) store.record(r)
        const all = [...rows, ...late]
        const h = store.coarseBefore
        const ref = reference(all, h)
        const raw = all.filter((r) => r.ts >= h).length
        if (store.size !== raw) throw new Error(`size ${store.size}, raw rows past the horizon ${raw}`)
        if (store.coarseRows !== all.length - raw) throw new Error(`coarseRows ${store.coarseRows} vs ${all.length - raw}`)
        if (folded > rows.length) throw new Error('folded more rows than held')
        same(store.aggregate(-Infinity, Infinity), all, 'all (exact)')
        for (const [a, b] of ranges) {
          const s = resolvePoint(a, all)
          const e = resolvePoint(b, all)
          same(store.aggregate(s, e), inRange(ref, s, e), `[${s}, ${e})`)
          const only = store.aggregate(s, e, { totals: createTotals(), sketch: new DiscardSketch() }).totals
          if (JSON.stringify(only) !== JSON.stringify(store.aggregate(s, e).totals)) throw new Error(`totals-only read differs for [${s}, ${e})`)
          for (const iv of INTERVALS) sameSeries(store.timeseries(s, e, iv), ref, s, e, iv)
          // Hour-aligned ranges: exactly the original rows, coarse or not.
          const hs = Number.isFinite(s) ? hourStart(s) : s
          const he = Number.isFinite(e) ? hourStart(e) : e
          same(store.aggregate(hs, he), inRange(all, hs, he), `aligned [${hs}, ${he})`)
        }
        // Snapshots (whole, or in row-range parts as incremental snapshots write them) restore the same answers.
        const whole = SeriesStore.fromSnapshot(store.toSnapshot())
        const half = store.size >> 1
        const inParts = SeriesStore.fromSnapshots([store.toSnapshotRows(0, half, { coarse: true }), store.toSnapshotRows(half, store.size)])
        for (const back of [whole, inParts]) {
          if (back.size !== store.size || back.coarseBefore > h) throw new Error(`restored size ${back.size} / coarseBefore ${back.coarseBefore}`)
          same(back.aggregate(-Infinity, Infinity), all, 'restored all')
          for (const [a, b] of ranges) {
            const s = resolvePoint(a, all)
            const e = resolvePoint(b, all)
            same(back.aggregate(s, e), inRange(ref, s, e), `restored [${s}, ${e})`)
            sameSeries(back.timeseries(s, e, MIN), ref, s, e, MIN)
          }
        }
      }
    ),
    { numRuns: 150 }
  )
})

t.test('retain by age folds exactly the hours before the horizon', async (t) => {
  const store = new SeriesStore()
  const row = (ts: number): Row => ({ ts, promptTokens: 1, completionTokens: 2, totalTokens: 3, cachedTokens: 0, reasoningTokens: 0, latencyUs: 1000, costNanos: 5, error: false, unpriced: false })
  for (let i = 0; i < 3 * 24 * 6; i++) store.record(row(i * 10 * MIN + 7))
  t.equal(store.size, 432)
  t.equal(store.retain({ before: 2 * DAY, maxRows: 0, now: 3 * DAY }), 288)
  t.equal(store.size, 144)
  t.equal(store.coarseHours, 48)
  t.equal(store.retain({ before: 2 * DAY, maxRows: 0, now: 3 * DAY }), 0, 'nothing more to fold')
  t.equal(store.aggregate(0, 3 * DAY).totals.requests, 432)
  t.equal(store.aggregate(HOUR, 2 * HOUR).totals.requests, 6, 'a coarse hour answers whole')
  t.equal(store.aggregate(HOUR + 1, 2 * HOUR).totals.requests, 0, 'a coarse hour counts at its start')
  t.equal(store.aggregate(2 * DAY + 1, 2 * DAY + 10 * MIN + 7).totals.requests, 1, 'raw days stay exact to the ms')
  // A late event for a folded hour: counted, no row.
  store.record(row(30 * MIN))
  t.equal(store.size, 144)
  t.equal(store.aggregate(0, HOUR).totals.requests, 7)
})

t.test('a steady stream with maxRows keeps raw rows bounded (memory flat) and totals exact', async (t) => {
  const store = new SeriesStore()
  const maxRows = 2000
  let peak = 0
  let n = 0
  // Ten days at one event every 20 s, retention run every 10 simulated minutes.
  for (let ts = 0; ts < 10 * DAY; ts += 20_000) {
    store.record({ ts, promptTokens: 3, completionTokens: 4, totalTokens: 7, cachedTokens: 0, reasoningTokens: 0, latencyUs: 500 + (ts % 977), costNanos: 11, error: false, unpriced: false })
    n++
    if (ts % (10 * MIN) === 0) store.retain({ before: -Infinity, maxRows, now: ts })
    peak = Math.max(peak, store.size)
  }
  t.ok(peak <= maxRows * 1.25 + 1 + 180, `raw rows peaked at ${peak} (limit ${maxRows}, +25% slack, + the current hour)`)
  const agg = store.aggregate(-Infinity, Infinity).totals
  t.equal(agg.requests, n)
  t.equal(agg.totalTokens, 7 * n)
  t.equal(store.size + store.coarseRows, n)
})

t.test('compaction after retention keeps every value of the remaining rows exact, across chunks and escapes', async (t) => {
  const rows: Row[] = []
  // Three days, ~13,000 rows (several chunks), in a scrambled order; escapes spread everywhere.
  for (let i = 0; i < 13_000; i++) {
    const p = (i * 7919) % 200_000
    const c = (i * 104_729) % 4000
    const row: Row = { ts: DAY + ((i * 7_919_993) % (3 * DAY)), promptTokens: p, completionTokens: c, totalTokens: p + c, cachedTokens: 0, reasoningTokens: 0, latencyUs: 500 + ((i * 37) % 3_000_000), costNanos: i * 977, error: i % 13 === 0, unpriced: i % 31 === 0 }
    if (i % 5 === 0) row.cachedTokens = i % 1000
    if (i % 9 === 4) row.costNanos = U32 + i
    if (i % 11 === 2) row.latencyUs = U32 + 7 * i
    if (i % 17 === 6) row.totalTokens = p
    if (i % 29 === 8) row.completionTokens = 2 ** 36 + i
    rows.push(row)
  }
  const store = new SeriesStore()
  for (const r of rows) store.record(r)
  const horizon = 2 * DAY + 5 * HOUR
  const folded = store.retain({ before: horizon, maxRows: 0, now: 4 * DAY })
  const kept = rows.filter((r) => r.ts >= horizon)
  t.equal(folded, rows.length - kept.length)
  t.equal(store.size, kept.length)
  same(store.aggregate(-Infinity, Infinity), rows, 'all rows, folded or not')
  same(store.aggregate(horizon, Infinity), kept, 'the kept rows')
  for (const [s, e] of [
    [horizon + 7 * MIN + 3, 3 * DAY + 11 * HOUR + 17],
    [3 * DAY + 59_999, 3 * DAY + 3 * MIN + 1],
  ]) {
    same(store.aggregate(s, e), inRange(kept, s, e), `[${s}, ${e})`)
    sameSeries(store.timeseries(s, e, MIN), kept, s, e, MIN)
  }
  // The snapshot's rows are exactly the kept rows, value for value.
  const snap = store.toSnapshot()
  const line = (r: Row) => [r.ts, r.promptTokens, r.completionTokens, r.totalTokens, r.cachedTokens, r.reasoningTokens, r.latencyUs, r.costNanos, r.error, r.unpriced].join()
  const got: string[] = []
  for (let i = 0; i < snap.rows; i++) {
    got.push([snap.ts[i], snap.promptTokens[i], snap.completionTokens[i], snap.totalTokens[i], snap.cachedTokens[i], snap.reasoningTokens[i], snap.latencyUs[i], snap.costNanos[i], snap.error[i] === 1, snap.unpriced[i] === 1].join())
  }
  t.same(got.sort(), kept.map(line).sort())
  // Rows recorded after the compaction (into the rebuilt chunks) stay exact too.
  const more = rows.slice(0, 500).map((r) => ({ ...r, ts: 3 * DAY + (r.ts % DAY) }))
  for (const r of more) store.record(r)
  same(store.aggregate(horizon, Infinity), [...kept, ...more], 'kept rows plus later ones')
})

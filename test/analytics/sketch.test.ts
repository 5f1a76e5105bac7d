import t from 'tap'
import fc from 'fast-check'
import { keyOf, LatencySketch, logKey, nearestRank, SKETCH_JSON_VERSION } from '../../src/analytics/sketch.js'
import { naiveQuantile, within1pct } from './fixtures/naive.js'

const QS = [0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1]

const latency = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 1, max: 100 }),
  fc.integer({ min: 0, max: 5_000_000 }),
  fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
)

function sketchOf(values: readonly number[]): LatencySketch {
  const s = new LatencySketch()
  for (const v of values) s.record(v)
  return s
}

t.test('every quantile is within 1% of the naive sorted-list quantile', async (t) => {
  fc.assert(
    fc.property(fc.array(latency, { minLength: 1, maxLength: 400 }), (values) => {
      const s = sketchOf(values)
      for (const q of QS) {
        const truth = naiveQuantile(values, q)
        const est = s.quantile(q)
        if (!within1pct(est, truth)) throw new Error(`q=${q}: estimate ${est}, truth ${truth}`)
      }
      return s.count === values.length
    }),
    { numRuns: 300 },
  )
  t.pass('1% relative error held')
})

/**
 * Naive nearest-rank reference in integer arithmetic (no float rounding to argue about):
 * the q-quantile, q = num/den, of n values is the ⌈num·n/den⌉-th smallest (the first when 0).
 */
function nearestRankRef(values: readonly number[], num: number, den: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.max(1, Math.floor((num * sorted.length + den - 1) / den))
  return sorted[rank - 1]
}

/** Both storage forms of one sample: a sketch dense from the start and a default one. */
function bothForms(values: readonly number[]): LatencySketch[] {
  const dense = LatencySketch.dense()
  dense.recordMany(values)
  return [sketchOf(values), dense]
}

/** Throws (so fast-check shrinks) unless every form answers q = num/den as the reference. */
function checkNearestRank(values: readonly number[], num: number, den: number): void {
  const truth = nearestRankRef(values, num, den)
  const [sparse, dense] = bothForms(values)
  for (const [form, s] of [['default', sparse], ['dense', dense]] as const) {
    const est = s.quantile(num / den)
    if (!within1pct(est, truth)) throw new Error(`${form}, n=${values.length}, q=${num}/${den}: estimate ${est}, nearest rank ${truth}`)
  }
  if (!Object.is(sparse.quantile(num / den), dense.quantile(num / den))) throw new Error('dense and default storage answer differently')
}

t.test('nearestRank: ⌈q·n⌉ - 1, the first for q = 0, decimal q read as meant', async (t) => {
  t.equal(nearestRank(0, 1), 0)
  t.equal(nearestRank(0, 7), 0)
  t.equal(nearestRank(1, 7), 6)
  t.equal(nearestRank(0.5, 2), 0, 'p50 of two is the smaller')
  t.equal(nearestRank(0.5, 3), 1)
  t.equal(nearestRank(0.95, 3), 2)
  t.equal(nearestRank(0.99, 5), 4, 'p99 of five is the slowest')
  t.equal(nearestRank(0.99, 100), 98)
  t.equal(nearestRank(0.99, 101), 99)
  t.equal(nearestRank(0.95, 20), 18)
  t.equal(nearestRank(0.07, 100), 6, '0.07 · 100 is 7.000000000000001 in binary, still rank 7')
  t.equal(nearestRank(0.999, 1_000_000), 998_999)
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 1, max: 50_000_000 }), (num, n) => {
      return nearestRank(num / 10_000, n) === Math.max(1, Math.floor((num * n + 9_999) / 10_000)) - 1
    }),
    { numRuns: 2000 },
  )
})

t.test('regression (issue 11): p95 and p99 of a few calls are the slowest call', async (t) => {
  // 300, 350 and 1200 ms used to give p95 = p99 = 351.6 ms.
  for (const s of bothForms([300_000, 350_000, 1_200_000])) {
    t.equal(s.quantile(0.95), 1_200_000)
    t.equal(s.quantile(0.99), 1_200_000)
    t.ok(within1pct(s.quantile(0.5), 350_000), 'p50 is the middle call')
    t.equal(s.quantile(0), 300_000)
  }
  // Five calls whose slowest took 488 ms used to give p99 = 337.9 ms.
  for (const s of bothForms([150_000, 220_000, 301_000, 338_000, 488_000])) {
    t.equal(s.quantile(0.99), 488_000)
    t.equal(s.quantile(0.95), 488_000)
    t.ok(within1pct(s.quantile(0.8), 338_000), 'p80 of five is the 4th')
    t.ok(within1pct(s.quantile(0.5), 301_000), 'p50 of five is the 3rd')
  }
})

t.test('n = 1..10: every percentile is the nearest rank (exact at the ends), both storage forms', async (t) => {
  for (let n = 1; n <= 10; n++) {
    fc.assert(
      fc.property(fc.array(latency, { minLength: n, maxLength: n }), (values) => {
        for (let pct = 0; pct <= 100; pct++) checkNearestRank(values, pct, 100)
        for (const num of [950, 990, 999]) checkNearestRank(values, num, 1000)
        const max = Math.max(...values)
        const min = Math.min(...values)
        for (const s of bothForms(values)) {
          if (s.quantile(0.99) !== max || s.quantile(1) !== max) throw new Error(`p99 of ${n} is not the exact max ${max}`)
          if (s.quantile(0) !== min) throw new Error(`p0 of ${n} is not the exact min ${min}`)
        }
      }),
      { numRuns: 60 },
    )
  }
  t.pass('nearest rank held for n = 1..10')
})

t.test('large samples: nearest rank within 1% for random q, sparse and dense, recorded or merged', async (t) => {
  // Wide values keep the default sketch sparse; narrow ones (1–300 ms) turn it dense.
  const narrow = fc.oneof(fc.integer({ min: 1000, max: 300_000 }), fc.constant(0), fc.integer({ min: 1, max: 50 }))
  const q = fc.integer({ min: 0, max: 10_000 })
  fc.assert(
    fc.property(
      fc.oneof(fc.array(latency, { minLength: 1, maxLength: 3000 }), fc.array(narrow, { minLength: 1, maxLength: 3000 })),
      fc.array(q, { minLength: 1, maxLength: 20 }),
      fc.integer({ min: 1, max: 8 }),
      (values, nums, parts) => {
        for (const num of nums) checkNearestRank(values, num, 10_000)
        // The same sample merged from parts (the query path) answers the same.
        const merged = LatencySketch.dense()
        const size = Math.ceil(values.length / parts)
        for (let i = 0; i < values.length; i += size) merged.merge(sketchOf(values.slice(i, i + size)))
        const whole = sketchOf(values)
        for (const num of nums) {
          if (!Object.is(merged.quantile(num / 10_000), whole.quantile(num / 10_000))) throw new Error(`merged differs at q=${num}/10000`)
        }
      },
    ),
    { numRuns: 150 },
  )
  t.pass('nearest rank held for large samples')
})

t.test('merging parts equals recording everything, in any merge order', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.array(latency, { maxLength: 60 }), { minLength: 1, maxLength: 6 }),
      fc.boolean(),
      (parts, reverse) => {
        const all = sketchOf(parts.flat())
        const merged = new LatencySketch()
        const order = reverse ? [...parts].reverse() : parts
        for (const p of order) merged.merge(sketchOf(p))
        t.same(merged.toJSON(), all.toJSON())
        // A tree of merges (pairs first) gives the same result too.
        const pairs = new LatencySketch()
        for (let i = 0; i < parts.length; i += 2) {
          pairs.merge(sketchOf(parts[i]).merge(sketchOf(parts[i + 1] ?? [])))
        }
        t.same(pairs.toJSON(), all.toJSON())
      },
    ),
    { numRuns: 100 },
  )
})

t.test('merge covers the in-place paths: into empty, subset keys, self-merge, growth', async (t) => {
  const a = sketchOf([10, 1000, 100000])
  const sub = sketchOf([1000, 10, 0])
  a.merge(sub)
  t.same(a.toJSON(), sketchOf([10, 1000, 100000, 1000, 10, 0]).toJSON(), 'other keys subset of this')
  const empty = new LatencySketch()
  empty.merge(a)
  t.same(empty.toJSON(), a.toJSON(), 'merge into empty copies')
  a.merge(new LatencySketch())
  t.same(a.toJSON(), empty.toJSON(), 'merging an empty sketch changes nothing')
  const twice = sketchOf([5, 50, 500])
  twice.merge(twice)
  t.same(twice.toJSON(), sketchOf([5, 50, 500, 5, 50, 500]).toJSON(), 'self-merge doubles')
  const zerosOnly = sketchOf([0, 0])
  const withZeros = sketchOf([7]).merge(zerosOnly)
  t.equal(withZeros.zeroCount, 2)
  t.equal(withZeros.count, 3)
  const wide = new LatencySketch()
  for (let v = 1; v < 1e12; v *= 3) wide.record(v)
  const interleaved = new LatencySketch()
  for (let v = 2; v < 1e12; v *= 3) interleaved.record(v)
  const expected = sketchOf([...wideValues(1), ...wideValues(2)])
  t.same(wide.clone().merge(interleaved).toJSON(), expected.toJSON(), 'interleaved keys grow and merge')
  function wideValues(from: number): number[] {
    const out: number[] = []
    for (let v = from; v < 1e12; v *= 3) out.push(v)
    return out
  }
})

t.test('dense storage (many close buckets) answers, merges and serialises exactly as sparse', async (t) => {
  // Latencies 1–300 ms: a few hundred buckets close together, so sketches turn dense.
  const narrow = fc.oneof(fc.integer({ min: 1000, max: 300_000 }), fc.constant(0), fc.integer({ min: 1, max: 50 }))
  fc.assert(
    fc.property(fc.array(fc.array(narrow, { maxLength: 300 }), { minLength: 1, maxLength: 6 }), fc.boolean(), (parts, reverse) => {
      const values = parts.flat()
      const all = sketchOf(values)
      const merged = new LatencySketch()
      for (const p of reverse ? [...parts].reverse() : parts) merged.merge(sketchOf(p))
      // Sparse tiny sketches merged into a dense accumulator, and the other way round.
      const mixed = sketchOf(parts[0])
      for (const v of parts.slice(1).flat()) mixed.merge(sketchOf([v]))
      const json = all.toJSON()
      if (JSON.stringify(merged.toJSON()) !== JSON.stringify(json)) throw new Error('merge order changed the sketch')
      if (JSON.stringify(mixed.toJSON()) !== JSON.stringify(json)) throw new Error('one-by-one merges changed the sketch')
      if (JSON.stringify(LatencySketch.fromJSON(json).toJSON()) !== JSON.stringify(json)) throw new Error('JSON round trip changed the sketch')
      for (const q of QS) {
        if (values.length === 0) continue
        const truth = naiveQuantile(values, q)
        for (const s of [all, merged, mixed]) if (!within1pct(s.quantile(q), truth)) throw new Error(`q=${q}: ${s.quantile(q)} vs ${truth}`)
      }
      return all.count === values.length && all.bucketCount === json.keys.length
    }),
    { numRuns: 200 },
  )
  t.pass('dense and sparse agree')

  const dense = new LatencySketch()
  for (let v = 1000; v < 3000; v += 7) dense.record(v)
  const before = dense.bucketCount
  t.ok(before >= 32, 'many buckets')
  // Far keys on both sides grow the dense range; self-merge doubles every count.
  dense.record(3)
  dense.record(9e9)
  t.equal(dense.bucketCount, before + 2)
  t.equal(dense.quantile(0), 3)
  t.ok(within1pct(dense.quantile(1), 9e9), 'max within 1%')
  const copy = dense.clone()
  dense.merge(dense)
  t.equal(dense.count, copy.count * 2)
  t.same(dense.toJSON().keys, copy.toJSON().keys, 'self-merge keeps the keys')
  t.same(dense.toJSON().counts, copy.toJSON().counts.map((c) => c * 2), 'and doubles the counts')
  // A sparse sketch with buckets far apart stays exact when merged into a dense one.
  const far = sketchOf([1, 1e6, 1e12])
  const union = copy.clone().merge(far)
  t.equal(union.count, copy.count + 3)
  t.ok(within1pct(union.quantile(1), 1e12), 'max within 1%')
  const fromSparse = far.clone().merge(copy)
  t.same(fromSparse.toJSON(), union.toJSON(), 'sparse into dense equals dense into sparse')
})

t.test('a sketch dense from the start (query accumulators) answers as a sparse one', async (t) => {
  const empty = LatencySketch.dense()
  t.equal(empty.count, 0)
  t.ok(Number.isNaN(empty.quantile(0.5)), 'empty: NaN')
  t.same(empty.toJSON(), new LatencySketch().toJSON(), 'empty JSON')
  const values = [0, 0, 3, 17, 250, 1_000, 999_999, 1e9]
  const acc = LatencySketch.dense()
  for (const v of values.slice(0, 4)) acc.record(v)
  acc.merge(sketchOf(values.slice(4, 6))).merge(sketchOf(values.slice(6)))
  t.same(acc.toJSON(), sketchOf(values).toJSON(), 'records and merges land as in a sparse sketch')
  const zeros = LatencySketch.dense()
  zeros.record(0)
  t.equal(zeros.quantile(0.5), 0, 'only the zero bucket')
})

t.test('empty sketch: quantile is NaN, min/max NaN, JSON min/max null', async (t) => {
  const s = new LatencySketch()
  t.equal(s.count, 0)
  t.ok(Number.isNaN(s.quantile(0.5)))
  t.ok(Number.isNaN(s.min))
  t.ok(Number.isNaN(s.max))
  t.same(s.toJSON(), {
    version: SKETCH_JSON_VERSION,
    relativeAccuracy: 0.01,
    zeroCount: 0,
    keys: [],
    counts: [],
    min: null,
    max: null,
  })
  t.same(LatencySketch.fromJSON(s.toJSON()).toJSON(), s.toJSON())
})

t.test('zero latencies go to the zero bucket and read back as 0', async (t) => {
  const s = sketchOf([0, 0, 0, 1000])
  t.equal(s.zeroCount, 3)
  t.equal(s.bucketCount, 1)
  t.equal(s.quantile(0), 0)
  t.equal(s.quantile(0.5), 0)
  t.equal(s.quantile(1), 1000, 'max is exact (clamped)')
  const sub = sketchOf([0.25, 0.5])
  t.equal(sub.zeroCount, 2, 'values below 1 µs count as zero')
  t.equal(sub.quantile(0), 0.25, 'clamped to the exact min')
  t.equal(sketchOf([0, 0]).quantile(0.99), 0)
})

t.test('invalid values are ignored, never thrown on', async (t) => {
  const s = new LatencySketch()
  t.equal(s.record(-1), false)
  t.equal(s.record(NaN), false)
  t.equal(s.record(Infinity), false)
  t.equal(s.recordMany([1, 2, -5, 3]), 3)
  t.equal(s.count, 3)
  t.throws(() => s.quantile(1.5), RangeError)
  t.throws(() => s.quantile(-0.1), RangeError)
  t.throws(() => s.quantile(NaN), RangeError)
})

t.test('clone is independent', async (t) => {
  const a = sketchOf([1, 2, 3])
  const b = a.clone()
  b.record(1e6)
  t.equal(a.count, 3)
  t.equal(b.count, 4)
  t.equal(a.min, 1)
  t.equal(a.max, 3)
  t.equal(b.max, 1e6)
})

t.test('toJSON/fromJSON round trip (also through JSON text) answers identically', async (t) => {
  fc.assert(
    fc.property(fc.array(latency, { maxLength: 300 }), (values) => {
      const s = sketchOf(values)
      const back = LatencySketch.fromJSON(JSON.parse(JSON.stringify(s)))
      t.same(back.toJSON(), s.toJSON())
      for (const q of QS) {
        const a = s.quantile(q)
        const b = back.quantile(q)
        if (!(Object.is(a, b))) throw new Error(`q=${q}: ${a} !== ${b}`)
      }
    }),
    { numRuns: 100 },
  )
  const typed = sketchOf([3, 30, 300]).toJSON()
  const fromTyped = LatencySketch.fromJSON({
    ...typed,
    keys: Uint16Array.from(typed.keys),
    counts: Float64Array.from(typed.counts),
  })
  t.same(fromTyped.toJSON(), typed, 'typed arrays are accepted (msgpack may yield them)')
})

t.test('fromJSON rejects unknown versions and malformed data clearly', async (t) => {
  const good = sketchOf([0, 5, 50]).toJSON()
  const bad: [string, unknown, RegExp][] = [
    ['not an object', 42, /not an object/],
    ['null', null, /not an object/],
    ['unknown version', { ...good, version: 2 }, /unsupported version 2/],
    ['missing version', { ...good, version: undefined }, /unsupported version undefined/],
    ['other accuracy', { ...good, relativeAccuracy: 0.02 }, /relativeAccuracy/],
    ['bad zeroCount', { ...good, zeroCount: -1 }, /zeroCount/],
    ['keys not array', { ...good, keys: 'x' }, /arrays of numbers/],
    ['keys with strings', { ...good, keys: ['1', '2'] }, /arrays of numbers/],
    ['length mismatch', { ...good, counts: [1] }, /differ in length/],
    ['unsorted keys', { ...good, keys: [...good.keys].reverse() }, /strictly ascending/],
    ['key out of range', { ...good, keys: [good.keys[0], 70000] }, /out of range/],
    ['fractional key', { ...good, keys: [good.keys[0], good.keys[1] + 0.5] }, /out of range/],
    ['zero count', { ...good, counts: [1, 0] }, /positive integer/],
    ['null min when non-empty', { ...good, min: null }, /min and max/],
    ['min above max', { ...good, min: 60, max: 50 }, /min and max/],
    ['empty with min', { ...good, zeroCount: 0, keys: [], counts: [], min: 1 }, /null min and max/],
    ['bigint array', { ...good, keys: new BigInt64Array(2) }, /out of range/],
  ]
  for (const [name, data, msg] of bad) t.throws(() => LatencySketch.fromJSON(data), msg, name)
})

t.test('DiscardSketch keeps nothing and merges nothing (totals-only queries)', async (t) => {
  const { DiscardSketch } = await import('../../src/analytics/sketch.js')
  const d = new DiscardSketch()
  t.equal(d.record(5), false)
  t.equal(d.recordMany([1, 2, 3]), 0)
  const full = new LatencySketch()
  full.record(10)
  t.equal(d.merge(full), d)
  t.equal(d.count, 0)
  t.ok(Number.isNaN(d.quantile(0.5)))
})

t.test('the bucket of an integer by table is exactly ceil(log_gamma(v)): every v up to 2^22, both sides of every bucket boundary, the top, random ones', async (t) => {
  const wrong: string[] = []
  const check = (v: number) => {
    if (keyOf(v) !== logKey(v) && wrong.length < 10) wrong.push(`${v}: ${keyOf(v)} by table, ${logKey(v)} by log`)
  }
  for (let v = 1; v <= 1 << 22; v++) check(v)
  // The smallest integer of each bucket, found from the definition alone, and its neighbours.
  const top = logKey(0xffffffff)
  let boundaries = 0
  let last = -1
  for (let v = 1; v < 0xffffffff; ) {
    const k = (last = logKey(v))
    // Gallop to the first integer of a higher bucket, then bisect back to it.
    let step = 1
    while (v + step <= 0xffffffff && logKey(v + step) === k) step *= 2
    let lo = v + step / 2
    let hi = Math.min(v + step, 0xffffffff)
    if (logKey(hi) === k) break // the top bucket
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2)
      if (logKey(mid) === k) lo = mid
      else hi = mid
    }
    for (let d = -2; d <= 2; d++) if (hi + d >= 1 && hi + d <= 0xffffffff) check(hi + d)
    boundaries++
    v = hi
  }
  for (const v of [0xffffffff, 0xfffffffe, 2 ** 31, 2 ** 31 - 1, 2 ** 31 + 1]) check(v)
  let seed = 12345
  for (let i = 0; i < 1_000_000; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    check(1 + (seed % 0xfffffffe))
  }
  t.strictSame(wrong, [], 'no integer differs')
  t.equal(last, top, `every bucket boundary below 2^32 looked at, up to the top key ${top} (${boundaries} boundaries)`)
  // Not integers, or beyond 2^32: the definition itself.
  for (const v of [1.5, 123.456, 2 ** 32, 2 ** 40 + 0.5, Number.MAX_SAFE_INTEGER]) t.equal(keyOf(v), logKey(v), `${v} by the definition`)
})

/**
 * fillBuckets (the timeseries route's buckets) reads the totals straight and formats times
 * itself: its JSON must be byte for byte what the plain form gives — the reference below is
 * the form it replaced (totalsJson per bucket, Date.toISOString per time) — for any buckets,
 * intervals and ranges, before 1970 and past 9999 included.
 */
import t from 'tap'
import fc from 'fast-check'
import { createAggregate, fillBuckets, quantileMs, totalsJson } from '../src/queries.js'
import { LatencySketch } from '../src/analytics/sketch.js'
import type { TimeBucket } from '../src/analytics/series.js'

function reference(buckets: TimeBucket[], start: number, end: number, intervalMs: number) {
  const out = []
  const first = Math.floor(start / intervalMs) * intervalMs
  let i = 0
  for (let x = first; x < end; x += intervalMs) {
    while (i < buckets.length && buckets[i].start < x) i++
    const b = i < buckets.length && buckets[i].start === x ? buckets[i] : null
    const agg = b ?? createAggregate()
    const totals = totalsJson(agg.totals)
    out.push({
      timestamp: new Date(x).toISOString(),
      requests: totals.total_requests,
      total_tokens: totals.total_tokens,
      prompt_tokens: totals.prompt_tokens,
      completion_tokens: totals.completion_tokens,
      cost: totals.total_cost,
      avg_latency_ms: totals.avg_latency_ms,
      p95_latency_ms: quantileMs(agg, 0.95),
      errors: totals.error_count,
      unpriced_requests: totals.unpriced_requests
    })
  }
  return out
}

t.test('fillBuckets answers as the plain form, byte for byte', (t) => {
  const interval = fc.constantFrom(60_000, 300_000, 3_600_000)
  const origin = fc.constantFrom(0, Date.parse('2026-01-01T00:00:00Z'), -86_400_000 * 400, 253_402_300_800_000 - 86_400_000, 253_402_300_800_000 + 5 * 3_600_000)
  fc.assert(
    fc.property(interval, origin, fc.integer({ min: 0, max: 3 * 86_400_000 }), fc.integer({ min: 0, max: 200 }), fc.array(fc.record({ k: fc.integer({ min: 0, max: 200 }), n: fc.integer({ min: 1, max: 20 }), lat: fc.integer({ min: 0, max: 5_000_000 }), cost: fc.integer({ min: 0, max: 2 ** 40 }) }), { maxLength: 30 }), (iv, o, off, width, parts) => {
      const start = o + off
      const end = start + width * iv
      const first = Math.floor(start / iv) * iv
      const by = new Map<number, TimeBucket>()
      for (const p of parts) {
        const s = first + p.k * iv
        let b = by.get(s)
        if (b === undefined) by.set(s, (b = { start: s, ...createAggregate() }))
        for (let j = 0; j < p.n; j++) {
          b.totals.requests++
          b.totals.promptTokens += j
          b.totals.completionTokens += 2 * j
          b.totals.totalTokens += 3 * j
          b.totals.latencyUsSum += p.lat + j
          b.totals.costNanos += p.cost
          if (j % 3 === 0) b.totals.errors++
          b.sketch.record(p.lat + j)
        }
      }
      const buckets = [...by.values()].sort((a, b) => a.start - b.start)
      const got = JSON.stringify(fillBuckets(buckets, start, end, iv))
      const want = JSON.stringify(reference(buckets, start, end, iv))
      if (got !== want) throw new Error(`differs for [${start}, ${end}) / ${iv}:\n${got.slice(0, 300)}\n${want.slice(0, 300)}`)
    }),
    { numRuns: 400 }
  )
  t.pass('400 runs agree')
  t.end()
})

t.test('a dense-sketch bucket shared with a stored hour answers its p95 as a fresh one', (t) => {
  const sk = LatencySketch.dense()
  for (let i = 1; i <= 100; i++) sk.record(i * 1000)
  const b: TimeBucket = { start: 0, totals: { ...createAggregate().totals, requests: 100 }, sketch: sk }
  const [x] = fillBuckets([b], 0, 3_600_000, 3_600_000)
  t.equal(x.timestamp, '1970-01-01T00:00:00.000Z')
  t.equal(x.p95_latency_ms, quantileMs(b, 0.95))
  t.end()
})

/** GET /analytics/metrics, /analytics/costs, /analytics/timeseries — from memory only. */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { checkRange, listParam, parseQuery, rangeShape } from '../query.js'
import { costs, fillBuckets, MAX_BUCKETS, metrics, quantileMs, timeseries, totalsJson, type RangeQuery } from '../../queries.js'
import { llmsError } from '../../errors.js'
import { costsSchema, keyedErrors, metricsSchema, timeseriesSchema } from '../openapi.js'
import type { Engine } from '../../engine.js'
import type { Clock } from '../../clock.js'

const rangeQuery = z.strictObject({ ...rangeShape, model: listParam.optional(), provider: listParam.optional() })

/** Parses a range + filter query into a RangeQuery (unbounded sides as ±Infinity). */
function parseRange(query: unknown): RangeQuery {
  const q = parseQuery(rangeQuery, query)
  const start = q.start_time ?? -Infinity
  const end = q.end_time ?? Infinity
  checkRange(start, end)
  return { start, end, models: q.model, providers: q.provider }
}
const INTERVALS = { '1m': 60_000, '5m': 300_000, '1h': 3_600_000 } as const
const timeseriesQuery = z.strictObject({
  ...rangeShape,
  interval: z.enum(['1m', '5m', '1h']).default('1h'),
  model: listParam.optional(),
  provider: listParam.optional()
})

const iso = (ms: number) => (Number.isFinite(ms) ? new Date(ms).toISOString() : null)

export async function analyticsRoutes(app: FastifyInstance, opts: { engine: Engine; clock: Clock }): Promise<void> {
  const { engine, clock } = opts
  const topology = engine.topology

  // The schemas below document the routes (src/http/openapi.ts); the handlers validate.
  const range = 'Half-open `[start_time, end_time)` on the event\'s own timestamp (ISO 8601 with a zone, or epoch ms); `model` and `provider` take comma lists.'
  app.get('/analytics/metrics', {
    config: { scope: 'read' },
    schema: { summary: 'Totals and latency percentiles over a range', description: range, tags: ['analytics'], querystring: rangeQuery, response: { 200: metricsSchema, ...keyedErrors } }
  }, async (request) => {
    const range = parseRange(request.query)
    await engine.sync()
    const agg = metrics(topology, range)
    return {
      ...totalsJson(agg.totals),
      p50_latency_ms: quantileMs(agg, 0.5),
      p95_latency_ms: quantileMs(agg, 0.95),
      p99_latency_ms: quantileMs(agg, 0.99),
      start_time: iso(range.start),
      end_time: iso(range.end)
    }
  })

  app.get('/analytics/costs', {
    config: { scope: 'read' },
    schema: { summary: 'Cost breakdown by (model, provider), most costly first', description: range, tags: ['analytics'], querystring: rangeQuery, response: { 200: costsSchema, ...keyedErrors } }
  }, async (request) => {
    const range = parseRange(request.query)
    await engine.sync()
    const rows = costs(topology, range)
    let total = 0
    const breakdown = rows.map(({ model, provider, agg }) => {
      const t = totalsJson(agg.totals)
      total += agg.totals.costNanos
      return {
        model,
        provider,
        requests: t.total_requests,
        total_cost: t.total_cost,
        prompt_tokens: t.prompt_tokens,
        completion_tokens: t.completion_tokens,
        cached_tokens: t.cached_tokens,
        reasoning_tokens: t.reasoning_tokens,
        total_tokens: t.total_tokens,
        avg_cost_per_request: t.total_requests === 0 ? 0 : t.total_cost / t.total_requests,
        unpriced_requests: t.unpriced_requests,
        unpriced: t.unpriced_requests > 0
      }
    })
    return { breakdown, total_cost: total / 1e9, start_time: iso(range.start), end_time: iso(range.end) }
  })

  app.get('/analytics/timeseries', {
    config: { scope: 'read' },
    schema: {
      summary: 'Buckets for charts',
      description: `${range} Buckets of \`interval\` aligned to the epoch, empty ones as zeros, at most ${MAX_BUCKETS}; default range: the 24 hours up to now.`,
      tags: ['analytics'],
      querystring: timeseriesQuery,
      response: { 200: timeseriesSchema, ...keyedErrors }
    }
  }, async (request) => {
    const q = parseQuery(timeseriesQuery, request.query)
    const intervalMs = INTERVALS[q.interval]
    const end = q.end_time ?? clock.now()
    const start = q.start_time ?? end - 24 * 3_600_000
    checkRange(start, end)
    const n = Math.ceil(end / intervalMs) - Math.floor(start / intervalMs)
    if (n > MAX_BUCKETS) {
      throw llmsError('LLMS_ERR_BAD_QUERY', `range holds ${n} buckets of ${q.interval}; at most ${MAX_BUCKETS}: narrow the range or widen the interval`, {
        details: [{ path: '(query) interval', message: `more than ${MAX_BUCKETS} buckets` }]
      })
    }
    await engine.sync()
    const buckets = timeseries(topology, { start, end, models: q.model, providers: q.provider }, intervalMs)
    return { interval: q.interval, start_time: iso(start), end_time: iso(end), buckets: fillBuckets(buckets, start, end, intervalMs) }
  })
}

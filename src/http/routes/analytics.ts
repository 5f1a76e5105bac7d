/**
 * GET /analytics/metrics, /costs, /timeseries, /breakdown, /dimensions — from memory (the log
 * only for a filter memory cannot answer exactly, README: Dimensions), in the request's project, with
 * the dimension filters on every route.
 */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { checkRange, fastRangeQuery, filterShape, parseQuery, parseWithFilters, rangeShape } from '../query.js'
import { dollars, fillBuckets, isBreakdownDimension, MAX_BUCKETS, quantileMs, totalsJson, type RangeQuery } from '../../queries.js'
import { llmsError } from '../../errors.js'
import { costsSchema, keyedErrors, metricsSchema, timeseriesSchema } from '../openapi.js'
import type { Engine } from '../../engine.js'
import type { Clock } from '../../clock.js'

const rangeQuery = z.looseObject({ ...rangeShape, ...filterShape })

/** Parses a range + filter query into a RangeQuery (unbounded sides as ±Infinity). */
function parseRange(query: unknown, project: string): RangeQuery {
  // The common query (epoch ms, model/provider lists) without zod; anything else through it.
  const fast = fastRangeQuery(query, false)
  if (fast !== null) {
    const start = fast.start_time ?? -Infinity
    const end = fast.end_time ?? Infinity
    checkRange(start, end)
    return { start, end, models: fast.model, providers: fast.provider, project }
  }
  const { q, filters } = parseWithFilters(rangeQuery, query)
  const start = q.start_time ?? -Infinity
  const end = q.end_time ?? Infinity
  checkRange(start, end)
  return { ...filters, start, end, models: q.model, providers: q.provider, project }
}
const INTERVALS = { '1m': 60_000, '5m': 300_000, '1h': 3_600_000 } as const
const timeseriesQuery = z.looseObject({
  ...rangeShape,
  interval: z.enum(['1m', '5m', '1h']).default('1h'),
  ...filterShape
})
const breakdownQuery = z.looseObject({
  ...rangeShape,
  ...filterShape,
  by: z.string().refine(isBreakdownDimension, 'must be model, provider, user_id, session_id, tag or metadata.KEY'),
  limit: z.coerce.number().int().min(1).max(1000).default(20),
  sort: z.enum(['cost', 'requests', 'tokens']).default('cost')
})
const dimensionsQuery = z.strictObject({ api_key: z.string().optional(), project: z.string().optional() })

const iso = (ms: number) => (Number.isFinite(ms) ? new Date(ms).toISOString() : null)

/** One breakdown group's figures (README: Dimensions). */
function groupJson(agg: import('../../analytics/series.js').Aggregate) {
  const t = totalsJson(agg.totals)
  return {
    requests: t.total_requests,
    total_tokens: t.total_tokens,
    prompt_tokens: t.prompt_tokens,
    completion_tokens: t.completion_tokens,
    total_cost: t.total_cost,
    avg_latency_ms: t.avg_latency_ms,
    p95_latency_ms: quantileMs(agg, 0.95),
    error_rate: t.error_rate
  }
}

export async function analyticsRoutes(app: FastifyInstance, opts: { engine: Engine; clock: Clock }): Promise<void> {
  const { engine, clock } = opts
  const analytics = engine.analytics

  // The schemas below document the routes (src/http/openapi.ts); the handlers validate.
  const range = 'Half-open `[start_time, end_time)` on the event\'s own timestamp (ISO 8601 with a zone, or epoch ms); `model` and `provider` take comma lists.'
  app.get('/analytics/metrics', {
    config: { scope: 'read' },
    schema: { summary: 'Totals and latency percentiles over a range', description: range, tags: ['analytics'], querystring: rangeQuery, response: { 200: metricsSchema, ...keyedErrors } }
  }, async (request) => {
    const range = parseRange(request.query, request.project)
    const agg = await analytics.metrics(range)
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
    const range = parseRange(request.query, request.project)
    const rows = await analytics.costs(range)
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
        avg_cost_per_request: t.total_requests === 0 ? 0 : dollars(agg.totals.costNanos / t.total_requests),
        unpriced_requests: t.unpriced_requests,
        unpriced: t.unpriced_requests > 0
      }
    })
    return { breakdown, total_cost: dollars(total), start_time: iso(range.start), end_time: iso(range.end) }
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
    const fast = fastRangeQuery(request.query, true)
    const { q, filters } = fast !== null ? { q: fast as typeof fast & { interval: '1m' | '5m' | '1h' }, filters: {} } : parseWithFilters(timeseriesQuery, request.query)
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
    const buckets = await analytics.timeseries({ ...filters, start, end, models: q.model, providers: q.provider, project: request.project }, intervalMs)
    return { interval: q.interval, start_time: iso(start), end_time: iso(end), buckets: fillBuckets(buckets, start, end, intervalMs) }
  })

  app.get('/analytics/breakdown', {
    config: { scope: 'read' },
    schema: {
      summary: 'Who and what spends: groups by one dimension, largest first',
      description: `${range} \`by\`: model, provider, user_id, session_id, tag or metadata.KEY; filters as on every analytics route. Groups past \`limit\` sum into \`other\`; \`total\` is the whole filtered range (an event counts once in each of its tags' groups, once in total).`,
      tags: ['analytics'],
      querystring: breakdownQuery,
      response: { ...keyedErrors }
    }
  }, async (request) => {
    const { q, filters } = parseWithFilters(breakdownQuery, request.query)
    const start = q.start_time ?? -Infinity
    const end = q.end_time ?? Infinity
    checkRange(start, end)
    const b = await analytics.breakdown({ ...filters, start, end, models: q.model, providers: q.provider, project: request.project }, q.by, q.sort, q.limit)
    return {
      by: b.by,
      groups: b.groups.map((g) => ({ value: g.value, ...groupJson(g.agg) })),
      other: b.other === null ? null : groupJson(b.other),
      total: groupJson(b.total),
      start_time: iso(start),
      end_time: iso(end)
    }
  })

  app.get('/analytics/dimensions', {
    config: { scope: 'read' },
    schema: { summary: 'The dimensions of the project: names for by= and filters, values kept, whether capped', tags: ['analytics'], querystring: dimensionsQuery, response: { ...keyedErrors } }
  }, async (request) => {
    parseQuery(dimensionsQuery, request.query)
    return { dimensions: await analytics.dimensions(request.project) }
  })
}

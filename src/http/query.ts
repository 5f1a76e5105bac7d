/**
 * Query-string parsing shared by the analytics routes: zod schemas, one 400 naming the
 * parameter on any problem, and ranges as half-open epoch-ms pairs.
 */
import { z } from 'zod'
import { llmsError } from '../errors.js'
import { zodDetails } from '../events.js'
import { queryFilters } from '../filters.js'
import type { Filters } from '../analytics/reader.js'

const isoWithZone = z.iso.datetime({ offset: true })

/** ISO 8601 with a zone (`Z` or `±hh:mm`), or epoch milliseconds → epoch ms. */
export const timeParam = z.string().transform((s, ctx) => {
  let ms = NaN
  if (/^-?\d{1,16}$/.test(s)) ms = Number(s)
  else if (isoWithZone.safeParse(s).success) ms = Date.parse(s)
  if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) {
    ctx.addIssue({ code: 'custom', message: 'must be an ISO 8601 time with a zone (e.g. 2026-01-01T00:00:00Z) or epoch milliseconds' })
    return z.NEVER
  }
  return ms
})

/** `a,b,c` → a set of non-empty names. */
export const listParam = z
  .string()
  .transform((s) => s.split(',').map((x) => x.trim()).filter((x) => x !== ''))
  .pipe(z.array(z.string().min(1).max(256)).min(1).max(100))
  .transform((a) => new Set(a))

export const rangeShape = {
  start_time: timeParam.optional(),
  end_time: timeParam.optional(),
  // Accepted and ignored: some clients put the key in the URL.
  api_key: z.string().optional()
}

/** Parses `query` with `schema`, or throws a 400 naming each bad parameter. */
export function parseQuery<S extends z.ZodType>(schema: S, query: unknown): z.output<S> {
  const r = schema.safeParse(query ?? {})
  if (r.success) return r.data
  const details = zodDetails(r.error.issues).map((d) => ({ ...d, path: `(query) ${d.path}` }))
  throw llmsError('LLMS_ERR_BAD_QUERY', `invalid query: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
}

/** Checks `start < end` when both are given; equal is a valid, empty range. */
export function checkRange(start: number, end: number): void {
  if (end < start) {
    throw llmsError('LLMS_ERR_BAD_QUERY', 'end_time is before start_time', { details: [{ path: '(query) end_time', message: 'must not be before start_time' }] })
  }
}

/**
 * What every route reading events by range and filters takes besides the range: model and
 * provider lists, the owner's project choice (the auth hook reads it), and the §6 dimension
 * filters, here for the API documentation only — {@link parseWithFilters} parses them, with
 * `metadata.KEY` (any key, so not listable in a schema).
 */
export const filterShape = {
  model: listParam.optional(),
  provider: listParam.optional(),
  project: z.string().optional(),
  status: z.enum(['success', 'error']).optional().meta({ description: 'success or error (an event sent without a status is success)' }),
  user_id: z.string().min(1).max(256).optional(),
  session_id: z.string().min(1).max(256).optional(),
  tag: z.string().min(1).max(64).optional().meta({ description: 'events having this tag; `metadata.KEY=value` filters on a top-level metadata value' })
}

/** The dimension filters a schema lists for documentation only (queryFilters reads them). */
const DIMENSION_FILTERS = new Set(['status', 'user_id', 'session_id', 'tag'])

/**
 * The route's own parameters with `schema`, and every other one as a dimension filter (`status`,
 * `user_id`, `session_id`, `tag`, `metadata.KEY`); anything else is a 400 naming it.
 */
export function parseWithFilters<S extends z.ZodObject>(schema: S, query: unknown): { q: z.output<S>; filters: Filters } {
  const q = parseQuery(schema, query)
  const { filters, problems } = queryFilters((query ?? {}) as Record<string, unknown>, new Set(Object.keys(schema.shape).filter((k) => !DIMENSION_FILTERS.has(k))))
  if (problems.length > 0) {
    const details = problems.map((p) => ({ path: `(query) ${p.path}`, message: p.message }))
    throw llmsError('LLMS_ERR_BAD_QUERY', `invalid query: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
  }
  return { q, filters }
}

const EPOCH_MS = /^-?\d{1,16}$/
const INTERVAL_KEYS = new Set(['1m', '5m', '1h'])

/** What {@link fastRangeQuery} reads: the range, model and provider lists, and a timeseries interval. */
export interface FastRange {
  start_time?: number
  end_time?: number
  model?: Set<string>
  provider?: Set<string>
  interval?: '1m' | '5m' | '1h'
}

/** `a,b,c` as listParam parses it, or null where listParam would refuse it. */
function fastList(s: string): Set<string> | null {
  const names = s.split(',').map((x) => x.trim()).filter((x) => x !== '')
  if (names.length < 1 || names.length > 100) return null
  for (const x of names) if (x.length > 256) return null
  return new Set(names)
}

/**
 * The common analytics query without zod: only `start_time`/`end_time` as epoch milliseconds,
 * `model`/`provider` lists, `api_key`, `project` and (with `interval`) a timeseries interval,
 * each given once. Returns what the route's zod schema plus {@link parseWithFilters} would give
 * (no dimension filter), or null for anything else — an ISO time, a filter, a repeated or
 * invalid parameter — which the caller parses with zod as before (so every error is zod's).
 * A zod parse costs ~40 µs a request on a loaded machine; this a few.
 */
export function fastRangeQuery(query: unknown, interval: boolean): FastRange | null {
  if (query === null || typeof query !== 'object') return null
  const out: FastRange = {}
  for (const key in query) {
    if (!Object.hasOwn(query, key)) continue
    const v = (query as Record<string, unknown>)[key]
    if (typeof v !== 'string') return null
    switch (key) {
      case 'start_time':
      case 'end_time': {
        if (!EPOCH_MS.test(v)) return null
        const ms = Number(v)
        if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) return null
        out[key] = ms
        break
      }
      case 'model':
      case 'provider': {
        const list = fastList(v)
        if (list === null) return null
        out[key] = list
        break
      }
      case 'api_key':
      case 'project':
        break
      case 'interval':
        if (!interval || !INTERVAL_KEYS.has(v)) return null
        out.interval = v as FastRange['interval']
        break
      default:
        return null
    }
  }
  if (interval && out.interval === undefined) out.interval = '1h'
  return out
}

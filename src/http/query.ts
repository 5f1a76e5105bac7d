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

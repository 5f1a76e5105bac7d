/**
 * Dimension filters (README: Dimensions) as users write them: query-string parameters on every analytics route,
 * `/ws` and `/events`, and one `filters` object in JSON bodies (rules, budgets). Both parse to
 * the {@link Filters} queries take, with a 400 naming the parameter or key on any problem.
 */
import { z } from 'zod'
import type { Filters } from './analytics/reader.js'

const name = z.string().min(1).max(256)
/** A metadata key in `metadata.KEY`: non-empty, bounded. */
const METADATA = /^metadata\.(.{1,256})$/s

/** Filter keys other than `metadata.KEY`, with their value schema. */
const FIXED = {
  model: name,
  provider: z.string().min(1).max(64),
  status: z.enum(['success', 'error']),
  user_id: name,
  session_id: name,
  tag: z.string().min(1).max(64)
} as const

/** The JSON-body form: `{"user_id": "u1", "metadata.feature": "search"}` (one value per key). */
export const filterObjectSchema = z
  .record(z.string(), z.string().min(1).max(256))
  .superRefine((obj, ctx) => {
    const keys = Object.keys(obj)
    if (keys.length > 40) ctx.addIssue({ code: 'custom', message: 'at most 40 filters' })
    for (const key of keys) {
      const fixed = FIXED[key as keyof typeof FIXED]
      if (fixed !== undefined) {
        const r = fixed.safeParse(obj[key])
        if (!r.success) ctx.addIssue({ code: 'custom', path: [key], message: r.error.issues[0]?.message ?? 'invalid' })
      } else if (!METADATA.test(key)) {
        ctx.addIssue({ code: 'custom', path: [key], message: 'is not a filter: use model, provider, status, user_id, session_id, tag or metadata.KEY' })
      }
    }
  })

export type FilterObject = z.output<typeof filterObjectSchema>

/** A filter object (JSON body form) as {@link Filters}; `model`/`provider` of one value each. */
export function filtersOf(obj: FilterObject): Filters {
  const metadata: Record<string, string> = {}
  for (const [k, v] of Object.entries(obj)) {
    const m = METADATA.exec(k)
    if (m !== null) metadata[m[1]] = v
  }
  return {
    models: obj.model === undefined ? undefined : new Set([obj.model]),
    providers: obj.provider === undefined ? undefined : new Set([obj.provider]),
    status: obj.status as Filters['status'],
    user_id: obj.user_id,
    session_id: obj.session_id,
    tag: obj.tag,
    metadata: Object.keys(metadata).length === 0 ? undefined : metadata
  }
}

/**
 * Query-string filters beside a route's own parameters: `known` are the route's (range,
 * interval…), parsed by its own schema; every other parameter must be a filter. Returns the
 * dimension filters (model and provider lists stay with the route's schema) or the
 * problems, as (parameter, message) pairs.
 */
export function queryFilters(query: Record<string, unknown>, known: ReadonlySet<string>): { filters: Filters; problems: Array<{ path: string; message: string }> } {
  const filters: Filters = {}
  const problems: Array<{ path: string; message: string }> = []
  const metadata: Record<string, string> = {}
  for (const [key, raw] of Object.entries(query)) {
    if (known.has(key)) continue
    const value = Array.isArray(raw) ? raw[raw.length - 1] : raw
    if (typeof value !== 'string') {
      problems.push({ path: key, message: 'must be a string' })
      continue
    }
    const m = METADATA.exec(key)
    if (m !== null) {
      if (value.length < 1 || value.length > 256) problems.push({ path: key, message: 'must be 1–256 characters' })
      else metadata[m[1]] = value
      continue
    }
    if (key === 'status' || key === 'user_id' || key === 'session_id' || key === 'tag') {
      const r = FIXED[key].safeParse(value)
      if (!r.success) problems.push({ path: key, message: key === 'status' ? 'must be success or error' : r.error.issues[0]?.message ?? 'invalid' })
      else (filters as Record<string, unknown>)[key] = value
      continue
    }
    problems.push({ path: key, message: 'is not a parameter of this route nor a filter (model, provider, status, user_id, session_id, tag, metadata.KEY)' })
  }
  if (Object.keys(metadata).length > 0) filters.metadata = metadata
  return { filters, problems }
}

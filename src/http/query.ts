/**
 * Query-string parsing shared by the analytics routes: zod schemas, one 400 naming the
 * parameter on any problem, and ranges as half-open epoch-ms pairs.
 */
import { z } from 'zod'
import { llmsError } from '../errors.js'
import { zodDetails } from '../events.js'

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

/**
 * An ExportTraceServiceRequest (already parsed) → the pending events to commit, plus what
 * OTLP's partial-success answer needs. Each produced event is validated with the same zod
 * schema as POST /events/ingest; a span that fails is rejected on its own, the rest go on.
 *
 * One call, one event:
 * - a span sent twice in the request (same trace and span id) counts once, and so does one sent
 *   again in a later request (an exporter's retry): its event id is `${traceId}-${spanId}`
 *   ({@link spanEventId}), which the server's dedupe window holds (DESIGN §7, Idempotency);
 * - an LLM span whose child is also an LLM span in the same request is a wrapper around that
 *   call (a framework span over the provider SDK's span, as OpenLIT's or LangChain's can be):
 *   only the innermost counts. Wrappers and children exported in different requests cannot be
 *   matched; instrumentations normally avoid emitting both (OpenLLMetry suppresses the inner
 *   one).
 */
import { CLIENT_ID_PATTERN, toPending, zodDetails, type eventSchema, type MetadataLimits, type PendingEvent } from '../events.js'
import { readSpans, type SpanView } from './spans.js'
import { spanToEvent } from './convert.js'

export interface OtlpBatch {
  pending: PendingEvent[]
  spans: number
  ignored: number
  rejected: number
  /** The first few rejection reasons (bounded), for `partialSuccess.errorMessage`. */
  reasons: string[]
}

/** Reasons kept for the answer; the count is exact either way. */
export const MAX_REASONS = 5

export function otlpToPending(
  body: unknown,
  opts: {
    schema: ReturnType<typeof eventSchema>
    limits: MetadataLimits
    now: number
    inferProvider: (model: string) => string
    /** The project the request acts in (README: Projects); default: the default project. */
    project?: string
  }
): OtlpBatch {
  const out: OtlpBatch = { pending: [], spans: 0, ignored: 0, rejected: 0, reasons: [] }
  const reject = (reason: string) => {
    out.rejected++
    if (out.reasons.length < MAX_REASONS) out.reasons.push(reason.length > 300 ? `${reason.slice(0, 300)}…` : reason)
  }

  const calls: Array<{ span: SpanView; event: Record<string, unknown> }> = []
  const seen = new Set<string>()
  for (const span of readSpans(body)) {
    out.spans++
    if ('malformed' in span) {
      reject(span.malformed)
      continue
    }
    if (span.traceId !== '' && span.spanId !== '') {
      const key = `${span.traceId}/${span.spanId}`
      if (seen.has(key)) {
        out.ignored++
        continue
      }
      seen.add(key)
    }
    const outcome = spanToEvent(span, opts.limits)
    if (outcome.kind === 'ignored') out.ignored++
    else if (outcome.kind === 'rejected') reject(outcome.reason)
    else calls.push({ span, event: outcome.event })
  }

  const parentsOfCalls = new Set<string>()
  for (const { span } of calls) if (span.parentSpanId !== '') parentsOfCalls.add(`${span.traceId}/${span.parentSpanId}`)

  for (const { span, event } of calls) {
    if (span.spanId !== '' && parentsOfCalls.has(`${span.traceId}/${span.spanId}`)) {
      out.ignored++
      continue
    }
    const id = spanEventId(span.traceId, span.spanId)
    if (id !== null) event.id = id
    const r = opts.schema.safeParse(event)
    if (!r.success) {
      reject(`span ${span.spanId || '(no id)'}: ${zodDetails(r.error.issues).map((d) => `${d.path}: ${d.message}`).join('; ')}`)
      continue
    }
    out.pending.push(toPending(r.data, opts.now, opts.inferProvider, opts.project))
  }
  return out
}

/**
 * The event id (idempotency key) of a span: `${traceId}-${spanId}` in hex, 49 characters for
 * conforming ids (16 and 8 bytes), so a span exported again is a no-op. A non-conforming id
 * (base64 from some senders) has its characters outside `[A-Za-z0-9_-]` replaced by `_`, and
 * the whole is cut to 64 characters. Null when either id is missing: such a span cannot be
 * recognised again, and is stored each time it is sent.
 */
export function spanEventId(traceId: string, spanId: string): string | null {
  if (traceId === '' || spanId === '') return null
  const raw = `${traceId}-${spanId}`
  const id = (CLIENT_ID_PATTERN.test(raw) ? raw : raw.replace(/[^A-Za-z0-9_-]/g, '_')).slice(0, 64)
  return id
}

/**
 * The event: its wire schema (zod), its stored form in the log, and its public JSON.
 *
 * An event id encodes its log position — `evt_<seq base36>_<nanoid>` — so `GET /events/:id`
 * finds it with one keyed read and no secondary index (one LMDB put per micro-batch, not
 * two per event). The random nanoid part makes ids unguessable from the position alone.
 */
import { z } from 'zod'
import { nanoid } from 'nanoid'
import { formatPath, llmsError, type ErrorDetail } from './errors.js'

/** Upper bound on any token count: far above any real call, far below 2^53 so sums stay exact. */
export const MAX_TOKENS = 1e12
/** Upper bound on latency/ttft: one week in ms. */
export const MAX_LATENCY_MS = 7 * 24 * 3600 * 1000
/** Upper bound on a caller-supplied cost, in dollars. */
export const MAX_COST = 1e6

export interface MetadataLimits {
  maxBytes: number
  maxDepth: number
  maxKeys: number
}

const tokens = z.number().int().min(0).max(MAX_TOKENS)
const millis = z.number().min(0).max(MAX_LATENCY_MS)

/** Builds the zod schema of one incoming event for the given metadata limits. */
export function eventSchema(limits: MetadataLimits) {
  return z
    .strictObject({
      timestamp: z.iso.datetime({ offset: true }).optional(),
      model: z.string().min(1).max(256),
      provider: z.string().min(1).max(64).optional(),
      prompt_tokens: tokens.default(0),
      completion_tokens: tokens.default(0),
      total_tokens: tokens.optional(),
      cached_tokens: tokens.optional(),
      reasoning_tokens: tokens.optional(),
      latency_ms: millis.default(0),
      ttft_ms: millis.optional(),
      status: z.enum(['success', 'error']).default('success'),
      cost: z.number().min(0).max(MAX_COST).optional(),
      metadata: z.record(z.string(), z.unknown()).optional()
    })
    .superRefine((e, ctx) => {
      if (e.total_tokens !== undefined && e.total_tokens < e.prompt_tokens + e.completion_tokens) {
        ctx.addIssue({
          code: 'custom',
          path: ['total_tokens'],
          message: `must be at least prompt_tokens + completion_tokens (${e.prompt_tokens + e.completion_tokens})`
        })
      }
      if (e.timestamp !== undefined) {
        const ms = Date.parse(e.timestamp)
        // Date.parse covers years 0..275760; zod already rejected impossible calendar dates.
        if (!Number.isFinite(ms)) ctx.addIssue({ code: 'custom', path: ['timestamp'], message: 'is out of range' })
      }
      if (e.metadata !== undefined) {
        const problem = checkMetadata(e.metadata, limits)
        if (problem !== null) ctx.addIssue({ code: 'custom', path: ['metadata'], message: problem })
      }
    })
}

export type EventInput = z.input<ReturnType<typeof eventSchema>>
export type ParsedEvent = z.output<ReturnType<typeof eventSchema>>

/**
 * Checks metadata size, depth and key count in one walk, stopping at the first excess.
 * Returns the problem or null. Size is the UTF-8 length of its JSON.
 */
export function checkMetadata(meta: Record<string, unknown>, limits: MetadataLimits): string | null {
  let keys = 0
  const walk = (v: unknown, depth: number): string | null => {
    if (v === null || typeof v !== 'object') return null
    if (depth > limits.maxDepth) return `is nested deeper than ${limits.maxDepth} levels`
    if (Array.isArray(v)) {
      for (const item of v) {
        const p = walk(item, depth + 1)
        if (p !== null) return p
      }
      return null
    }
    for (const k of Object.keys(v)) {
      if (++keys > limits.maxKeys) return `has more than ${limits.maxKeys} keys`
      const p = walk((v as Record<string, unknown>)[k], depth + 1)
      if (p !== null) return p
    }
    return null
  }
  const p = walk(meta, 1)
  if (p !== null) return p
  const bytes = Buffer.byteLength(JSON.stringify(meta))
  if (bytes > limits.maxBytes) return `is ${bytes} bytes, more than ${limits.maxBytes}`
  return null
}

/** An accepted event as kept in the log (cost not yet computed: the cost stage prices it). */
export interface StoredEvent {
  seq: number
  id: string
  /** Event time, epoch ms. */
  ts: number
  /** When the server accepted it, epoch ms. */
  recv: number
  model: string
  provider: string
  prompt: number
  completion: number
  total: number
  cached: number
  reasoning: number
  latency: number
  ttft: number | null
  error: boolean
  /** Caller-supplied cost in dollars, or null. */
  cost: number | null
  meta: Record<string, unknown> | null
}

/** A stored event with its price (integer nano-dollars). */
export interface PricedEvent extends StoredEvent {
  costNanos: number
  unpriced: boolean
}

/** An event that passed validation, waiting for its log position. */
export type PendingEvent = Omit<StoredEvent, 'seq' | 'id'>

/** Turns a parsed event into its pending stored form. `inferProvider` fills a missing provider. */
export function toPending(e: ParsedEvent, now: number, inferProvider: (model: string) => string): PendingEvent {
  return {
    ts: e.timestamp === undefined ? now : Date.parse(e.timestamp),
    recv: now,
    model: e.model,
    provider: e.provider ?? inferProvider(e.model),
    prompt: e.prompt_tokens,
    completion: e.completion_tokens,
    total: e.total_tokens ?? e.prompt_tokens + e.completion_tokens,
    cached: e.cached_tokens ?? 0,
    reasoning: e.reasoning_tokens ?? 0,
    latency: e.latency_ms,
    ttft: e.ttft_ms ?? null,
    error: e.status === 'error',
    cost: e.cost ?? null,
    meta: e.metadata ?? null
  }
}

/** Makes the id of the event at log position `seq`. */
export function makeEventId(seq: number): string {
  return `evt_${seq.toString(36)}_${nanoid(12)}`
}

/** Reads the log position out of an id, or null when it is not one of ours. */
export function seqOfEventId(id: string): number | null {
  const m = /^evt_([0-9a-z]{1,11})_[A-Za-z0-9_-]{12}$/.exec(id)
  if (m === null) return null
  const seq = parseInt(m[1], 36)
  return Number.isSafeInteger(seq) ? seq : null
}

/** The public JSON of a priced event (`GET /events/:id`). */
export function toPublic(e: PricedEvent) {
  return {
    id: e.id,
    seq: e.seq,
    timestamp: new Date(e.ts).toISOString(),
    received_at: new Date(e.recv).toISOString(),
    model: e.model,
    provider: e.provider,
    prompt_tokens: e.prompt,
    completion_tokens: e.completion,
    total_tokens: e.total,
    cached_tokens: e.cached,
    reasoning_tokens: e.reasoning,
    latency_ms: e.latency,
    ttft_ms: e.ttft,
    status: e.error ? 'error' : 'success',
    cost: e.costNanos / 1e9,
    cost_source: e.cost !== null ? 'caller' : e.unpriced ? 'unpriced' : 'computed',
    unpriced: e.unpriced,
    metadata: e.meta
  }
}

/** Zod issues → our details list; `prefix` places them inside a batch (`[3]`). */
export function zodDetails(issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }>, prefix: PropertyKey[] = []): ErrorDetail[] {
  return issues.map((i) => ({ path: formatPath([...prefix, ...i.path]) || '(body)', message: i.message }))
}

/** Validates one event or throws a 400 naming each bad field. */
export function parseEvent(schema: ReturnType<typeof eventSchema>, body: unknown): ParsedEvent {
  const r = schema.safeParse(body)
  if (r.success) return r.data
  const details = zodDetails(r.error.issues)
  throw llmsError('LLMS_ERR_VALIDATION', `invalid event: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
}

/**
 * Validates a batch all-or-nothing: the first bad event fails the whole batch with a 400
 * naming its index (and every problem of that event).
 */
export function parseBatch(schema: ReturnType<typeof eventSchema>, items: readonly unknown[]): ParsedEvent[] {
  const out: ParsedEvent[] = new Array(items.length)
  for (let i = 0; i < items.length; i++) {
    const r = schema.safeParse(items[i])
    if (!r.success) {
      const details = zodDetails(r.error.issues, [i])
      throw llmsError('LLMS_ERR_VALIDATION', `invalid event at index ${i}: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
    }
    out[i] = r.data
  }
  return out
}

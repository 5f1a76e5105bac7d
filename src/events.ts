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
/** Most tags on one event (README: Dimensions). */
export const MAX_TAGS = 16
/** The project of events sent by a user who never created one (README: Projects). */
export const DEFAULT_PROJECT = 'default'
/** A client-chosen event id (DESIGN §7, Idempotency): 1–64 letters, digits, `_` or `-`. */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/

/** Whether `v` is a well-formed client id (an exported `evt_…` id is one). */
export const isClientId = (v: unknown): v is string => typeof v === 'string' && CLIENT_ID_PATTERN.test(v)

export interface MetadataLimits {
  maxBytes: number
  maxDepth: number
  maxKeys: number
}

const tokens = z.number().int().min(0).max(MAX_TOKENS)
const millis = z.number().min(0).max(MAX_LATENCY_MS)
const clientId = z.string().regex(CLIENT_ID_PATTERN, 'must be 1 to 64 letters, digits, _ or -')
/** A field the server writes in an exported EVENT: accepted with any value, never stored as sent. */
const serverMade = (what: string) => z.unknown().optional().meta({ description: `${what} (an exported EVENT's own; accepted and ignored)` })

/**
 * Builds the zod schema of one incoming event for the given metadata limits. It also takes an
 * EVENT object as `GET /events/:id` and export write it (DESIGN §7, Import): its `client_id`,
 * else its `id`, is the idempotency key; `cost_source`/`unpriced` keep a cost its first server
 * fixed (see {@link toPending}); `seq` and `received_at` are ignored; the fields it writes as
 * null (`ttft_ms`, `metadata`, `user_id`, `session_id`, `tags`) mean absent.
 */
export function eventSchema(limits: MetadataLimits) {
  return z
    .strictObject({
      id: clientId.optional().meta({ description: 'client-chosen id (idempotency key): an event whose id was accepted in this project within the dedupe window is answered with the first one\'s event_id and counted once' }),
      client_id: clientId.nullable().optional().meta({ description: 'an exported EVENT\'s client id: the idempotency key when present (else `id`)' }),
      seq: serverMade('log position'),
      received_at: serverMade('time received'),
      cost_source: serverMade('`computed` keeps `cost` as a computed cost, `unpriced` keeps the event unpriced'),
      unpriced: serverMade('`true` keeps the event unpriced'),
      timestamp: z.iso.datetime({ offset: true }).optional(),
      model: z.string().min(1).max(256),
      provider: z.string().min(1).max(64).optional(),
      prompt_tokens: tokens.default(0),
      completion_tokens: tokens.default(0),
      total_tokens: tokens.optional(),
      cached_tokens: tokens.optional(),
      cache_write_tokens: tokens.optional().meta({ description: 'tokens written to the provider\'s prompt cache (Anthropic `cache_creation_input_tokens`), priced at the cache-write rate; counted inside or outside prompt_tokens as the provider counts cached tokens (README: Prices)' }),
      reasoning_tokens: tokens.optional(),
      latency_ms: millis.default(0),
      ttft_ms: millis.nullish(),
      status: z.enum(['success', 'error']).default('success'),
      cost: z.number().min(0).max(MAX_COST).optional(),
      metadata: z.record(z.string(), z.unknown()).nullish(),
      user_id: z.string().min(1).max(256).nullish(),
      session_id: z.string().min(1).max(256).nullish(),
      tags: z
        .array(z.string().min(1).max(64))
        .max(MAX_TAGS)
        .refine((t) => new Set(t).size === t.length, 'must not repeat a tag')
        .nullish()
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
      if (e.metadata !== undefined && e.metadata !== null) {
        const problem = checkMetadata(e.metadata, limits)
        if (problem !== null) ctx.addIssue({ code: 'custom', path: ['metadata'], message: problem })
      }
    })
}

export type EventInput = z.input<ReturnType<typeof eventSchema>>
export type ParsedEvent = z.output<ReturnType<typeof eventSchema>>

/**
 * Checks metadata size, depth and key count in one walk, stopping at the first excess of
 * depth or keys. Returns the problem or null. Size is the UTF-8 length of its JSON, counted
 * during the walk ({@link jsonStringBytes} for strings) rather than by stringifying: that stringify was ~0.5 µs
 * of an event's ~4 µs of main-thread time in a batch-ingest profile. Anything that is not
 * plain JSON data (a `toJSON`, a class instance, `undefined`…) is measured by
 * `JSON.stringify` as before, so the size is always exactly that of the JSON.
 */
export function checkMetadata(meta: Record<string, unknown>, limits: MetadataLimits): string | null {
  let keys = 0
  let bytes = 0
  let plain = true
  const walk = (v: unknown, depth: number): string | null => {
    switch (typeof v) {
      case 'string':
        bytes += jsonStringBytes(v)
        return null
      case 'number':
        bytes += Number.isFinite(v) ? String(v).length : 4
        return null
      case 'boolean':
        bytes += v ? 4 : 5
        return null
      case 'object':
        break
      default:
        plain = false
        return null
    }
    if (v === null) {
      bytes += 4
      return null
    }
    if (depth > limits.maxDepth) return `is nested deeper than ${limits.maxDepth} levels`
    const proto = Object.getPrototypeOf(v)
    if (Array.isArray(v)) {
      if (proto !== Array.prototype) plain = false
      // [a,b,c]: brackets and commas.
      bytes += v.length === 0 ? 2 : v.length + 1
      for (const item of v) {
        const p = walk(item, depth + 1)
        if (p !== null) return p
      }
      return null
    }
    if ((proto !== Object.prototype && proto !== null) || typeof (v as { toJSON?: unknown }).toJSON === 'function') plain = false
    const ks = Object.keys(v)
    // {"k":v,…}: braces, commas, and per key its quoted name and a colon.
    bytes += ks.length === 0 ? 2 : ks.length + 1
    for (const k of ks) {
      if (++keys > limits.maxKeys) return `has more than ${limits.maxKeys} keys`
      bytes += jsonStringBytes(k) + 1
      const p = walk((v as Record<string, unknown>)[k], depth + 1)
      if (p !== null) return p
    }
    return null
  }
  const p = walk(meta, 1)
  if (p !== null) return p
  if (!plain) bytes = Buffer.byteLength(JSON.stringify(meta))
  if (bytes > limits.maxBytes) return `is ${bytes} bytes, more than ${limits.maxBytes}`
  return null
}

/**
 * UTF-8 bytes of `JSON.stringify(s)`: the quotes, two-character escapes for `"` `\\` and
 * \b \t \n \f \r, `\u00XX` for other control characters and for lone surrogates
 * (well-formed JSON.stringify), and the UTF-8 length of everything else.
 */
export function jsonStringBytes(s: string): number {
  let n = s.length + 2
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) {
      if (c >= 0x20) {
        if (c === 0x22 || c === 0x5c) n += 1
      } else n += c === 8 || c === 9 || c === 10 || c === 12 || c === 13 ? 1 : 5
    } else if (c < 0x800) n += 1
    else if (c >= 0xd800 && c <= 0xdfff) {
      const d = c <= 0xdbff ? s.charCodeAt(i + 1) : 0
      if (d >= 0xdc00 && d <= 0xdfff) {
        // A pair: two UTF-16 units, four UTF-8 bytes.
        n += 2
        i++
      } else n += 5
    } else n += 2
  }
  return n
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
  /**
   * Tokens written to the provider's prompt cache (public `cache_write_tokens`); absent = 0.
   * Set only when nonzero, like the extras below: an event without cache writes keeps the
   * shape it always had. Read it as `e.cacheWrite ?? 0`.
   */
  cacheWrite?: number
  reasoning: number
  latency: number
  ttft: number | null
  error: boolean
  /** Caller-supplied cost in dollars, or null. */
  cost: number | null
  meta: Record<string, unknown> | null
  /** The project it belongs to (README: Projects). */
  project: string
  /** Dimensions (README: Dimensions): null when the event did not carry them. */
  user: string | null
  session: string | null
  tags: readonly string[] | null
  /**
   * The client's idempotency key (event field `id`, or an imported EVENT's `client_id`/`id`);
   * null or absent: none. Public as `client_id`.
   */
  clientId?: string | null
  /**
   * An imported event's cost as its first server fixed it (DESIGN §7, Import): `computed` —
   * `cost` holds the cost that server computed (counted as computed, not as the caller's);
   * `unpriced` — it stays unpriced (cost 0) whatever this server's prices say. Null or absent
   * for every other event: `cost` is the caller's, or null and priced here.
   */
  costSource?: 'computed' | 'unpriced' | null
  /**
   * The price book's revision when the event was accepted (log record field `pr`; absent or 0
   * for records written before the book): which prices fixed its cost (src/pricing/book.ts).
   */
  priceRev?: number
}

/** A stored event with its price (integer nano-dollars). */
export interface PricedEvent extends StoredEvent {
  costNanos: number
  unpriced: boolean
}

/** An event that passed validation, waiting for its log position. */
export type PendingEvent = Omit<StoredEvent, 'seq' | 'id'>

/**
 * Turns a parsed event into its pending stored form. `inferProvider` fills a missing provider;
 * `project` is the project the request acts in (the route's, from its key).
 *
 * Import (an exported EVENT): `client_id`, else `id`, becomes `clientId`. `unpriced: true` or
 * `cost_source: "unpriced"` keeps the event unpriced (its `cost` dropped: it was 0);
 * `cost_source: "computed"` with a `cost` keeps that cost as a computed one; any other
 * `cost_source` value means nothing (a `cost` is then the caller's, as without it).
 */
export function toPending(e: ParsedEvent, now: number, inferProvider: (model: string) => string, project: string = DEFAULT_PROJECT): PendingEvent {
  const unpriced = isUnpricedImport(e.unpriced, e.cost_source)
  const p: PendingEvent = {
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
    cost: unpriced ? null : e.cost ?? null,
    meta: e.metadata ?? null,
    project,
    user: e.user_id ?? null,
    session: e.session_id ?? null,
    tags: e.tags ?? null
  }
  if (e.cache_write_tokens !== undefined && e.cache_write_tokens > 0) p.cacheWrite = e.cache_write_tokens
  return withExtras(p, e.client_id ?? e.id, unpriced ? 'unpriced' : e.cost_source === 'computed' && e.cost !== undefined ? 'computed' : null)
}

/**
 * Sets the optional fields of an event that has them: an event without a client id or an
 * imported cost keeps the shape it always had (in memory, in the log, in tests).
 */
export function withExtras<T extends PendingEvent>(e: T, clientId: string | null | undefined, costSource: StoredEvent['costSource']): T {
  if (clientId !== null && clientId !== undefined) e.clientId = clientId
  if (costSource !== null && costSource !== undefined) e.costSource = costSource
  return e
}

/** An imported EVENT that was unpriced where it was exported (`unpriced: true`, or `cost_source: "unpriced"`). */
const isUnpricedImport = (unpriced: unknown, source: unknown): boolean => unpriced === true || source === 'unpriced'

/**
 * What `z.iso.datetime({ offset: true })` accepts (the `timestamp` field), as our own regex:
 * a calendar date (February 29th only in leap years, Gregorian century rule), `T`, hours
 * 00–23, minutes and seconds 00–59 (seconds required: RFC 3339), any number of fraction
 * digits, and `Z` or an offset ±HH:MM (HH ≤ 23, colon required). Upper-case `T` and `Z` only;
 * ASCII digits only. test/events.test.ts checks it against zod string by string.
 */
const LEAP_DAY = String.raw`(?:\d\d[2468][048]|\d\d[13579][26]|\d\d0[48]|[02468][048]00|[13579][26]00)-02-29`
const OTHER_DAY = String.raw`\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)|02-(?:0[1-9]|1\d|2[0-8]))`
const TIME = String.raw`(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?`
const ZONE = String.raw`(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)`
const ISO_WITH_ZONE = new RegExp(`^(?:${LEAP_DAY}|${OTHER_DAY})T${TIME}${ZONE}$`)
const KNOWN_FIELDS = new Set([
  'timestamp', 'model', 'provider', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cached_tokens', 'cache_write_tokens', 'reasoning_tokens', 'latency_ms', 'ttft_ms', 'status', 'cost', 'metadata', 'user_id', 'session_id', 'tags',
  'id', 'client_id', 'seq', 'received_at', 'cost_source', 'unpriced'
])

const isTokens = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= MAX_TOKENS
const isMillis = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= MAX_LATENCY_MS
/** Length bounds as zod checks them; a long string with surrogate pairs is left to zod (it counts code points). */
const isName = (v: unknown, max: number): v is string => typeof v === 'string' && v.length >= 1 && v.length <= max

/**
 * The hot-path validator: accepts exactly what {@link eventSchema} accepts and builds the same
 * pending event as `toPending(schema.parse(body))`, without zod's per-field machinery — or
 * returns null, and the caller runs zod to name what is wrong. A null never means "invalid"
 * on its own: anything unusual (a surrogate-heavy long name, say) simply takes the slow path.
 * test/events.test.ts checks the equivalence with fast-check.
 */
export function fastPending(body: unknown, limits: MetadataLimits, now: number, inferProvider: (model: string) => string, project: string = DEFAULT_PROJECT): PendingEvent | null {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return null
  const e = body as Record<string, unknown>
  for (const k in e) if (!KNOWN_FIELDS.has(k)) return null
  const { timestamp, model, provider, prompt_tokens = 0, completion_tokens = 0, total_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, latency_ms = 0, ttft_ms, status = 'success', cost, metadata, user_id, session_id, tags, id, client_id } = e
  if (!isName(model, 256)) return null
  if (provider !== undefined && !isName(provider, 64)) return null
  if (!isTokens(prompt_tokens) || !isTokens(completion_tokens)) return null
  if (total_tokens !== undefined && (!isTokens(total_tokens) || total_tokens < prompt_tokens + completion_tokens)) return null
  if (cached_tokens !== undefined && !isTokens(cached_tokens)) return null
  if (cache_write_tokens !== undefined && !isTokens(cache_write_tokens)) return null
  if (reasoning_tokens !== undefined && !isTokens(reasoning_tokens)) return null
  if (!isMillis(latency_ms)) return null
  if (ttft_ms !== undefined && ttft_ms !== null && !isMillis(ttft_ms)) return null
  if (status !== 'success' && status !== 'error') return null
  if (cost !== undefined && (typeof cost !== 'number' || !Number.isFinite(cost) || cost < 0 || cost > MAX_COST)) return null
  let ts = now
  if (timestamp !== undefined) {
    if (typeof timestamp !== 'string' || !ISO_WITH_ZONE.test(timestamp)) return null
    ts = Date.parse(timestamp)
    if (!Number.isFinite(ts)) return null
  }
  if (metadata !== undefined && metadata !== null) {
    if (typeof metadata !== 'object' || Array.isArray(metadata)) return null
    if (checkMetadata(metadata as Record<string, unknown>, limits) !== null) return null
  }
  if (user_id !== undefined && user_id !== null && !isName(user_id, 256)) return null
  if (session_id !== undefined && session_id !== null && !isName(session_id, 256)) return null
  if (tags !== undefined && tags !== null && !isTags(tags)) return null
  if (id !== undefined && !isClientId(id)) return null
  if (client_id !== undefined && client_id !== null && !isClientId(client_id)) return null
  const unpriced = isUnpricedImport(e.unpriced, e.cost_source)
  const p: PendingEvent = {
    ts,
    recv: now,
    model,
    provider: provider ?? inferProvider(model),
    prompt: prompt_tokens,
    completion: completion_tokens,
    total: total_tokens ?? prompt_tokens + completion_tokens,
    cached: cached_tokens ?? 0,
    reasoning: reasoning_tokens ?? 0,
    latency: latency_ms,
    ttft: ttft_ms ?? null,
    error: status === 'error',
    cost: unpriced ? null : cost ?? null,
    meta: (metadata as Record<string, unknown> | null | undefined) ?? null,
    project,
    user: user_id ?? null,
    session: session_id ?? null,
    tags: (tags as string[] | null | undefined) ?? null
  }
  if (cache_write_tokens !== undefined && cache_write_tokens > 0) p.cacheWrite = cache_write_tokens
  return withExtras(p, (client_id ?? id) as string | null | undefined, unpriced ? 'unpriced' : e.cost_source === 'computed' && cost !== undefined ? 'computed' : null)
}

/** Tags as the schema accepts them: ≤ MAX_TAGS distinct names of 1–64 chars. */
function isTags(v: unknown): v is string[] {
  if (!Array.isArray(v) || v.length > MAX_TAGS) return false
  for (let i = 0; i < v.length; i++) {
    if (!isName(v[i], 64)) return false
    for (let j = 0; j < i; j++) if (v[j] === v[i]) return false
  }
  return true
}

/**
 * Events an ingest answered as duplicates (DESIGN §7, Idempotency): the log marks the event it
 * was given when its client id was already accepted; that object then carries the original's
 * `seq` and `id` and was not stored again. A WeakSet, so the mark costs nothing on events
 * that are not duplicates and goes with the object.
 */
const duplicates = new WeakSet<StoredEvent>()

/** Marks `e` as a duplicate of the event whose `seq` and `id` it now carries. */
export function markDuplicate(e: StoredEvent): void {
  duplicates.add(e)
}

/** Whether an ingest answered `e` as a duplicate (not stored again). */
export function isDuplicate(e: StoredEvent): boolean {
  return duplicates.has(e)
}

/** How many of an ingest's answered events are duplicates. */
export function countDuplicates(events: readonly StoredEvent[]): number {
  let n = 0
  for (const e of events) if (duplicates.has(e)) n++
  return n
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

/**
 * The public JSON of a priced event (`GET /events/:id`): the EVENT object, which
 * `/events/batch` takes back as it is (see {@link eventSchema}).
 */
export function toPublic(e: PricedEvent) {
  return {
    id: e.id,
    client_id: e.clientId ?? null,
    seq: e.seq,
    timestamp: new Date(e.ts).toISOString(),
    received_at: new Date(e.recv).toISOString(),
    model: e.model,
    provider: e.provider,
    prompt_tokens: e.prompt,
    completion_tokens: e.completion,
    total_tokens: e.total,
    cached_tokens: e.cached,
    cache_write_tokens: e.cacheWrite ?? 0,
    reasoning_tokens: e.reasoning,
    latency_ms: e.latency,
    ttft_ms: e.ttft,
    status: e.error ? 'error' : 'success',
    cost: e.costNanos / 1e9,
    cost_source: e.costSource ?? (e.cost !== null ? 'caller' : e.unpriced ? 'unpriced' : 'computed'),
    unpriced: e.unpriced,
    metadata: e.meta,
    user_id: e.user,
    session_id: e.session,
    tags: e.tags
  }
}

/** Zod issues → our details list; `prefix` places them inside a batch (`[3]`). */
export function zodDetails(issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }>, prefix: PropertyKey[] = []): ErrorDetail[] {
  return issues.map((i) => ({ path: formatPath([...prefix, ...i.path]) || '(body)', message: i.message }))
}

/**
 * Validates one event with zod or throws a 400 naming each bad field; with `index`, the event
 * is item `index` of a batch and the paths and message say so (`[3].prompt_tokens`).
 */
export function parseEvent(schema: ReturnType<typeof eventSchema>, body: unknown, index?: number): ParsedEvent {
  const r = schema.safeParse(body)
  if (r.success) return r.data
  const details = zodDetails(r.error.issues, index === undefined ? [] : [index])
  const what = index === undefined ? 'invalid event' : `invalid event at index ${index}`
  throw llmsError('LLMS_ERR_VALIDATION', `${what}: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
}

/**
 * Validates and converts a batch all-or-nothing: the fast path for each event, zod for any it
 * declines (which names the index and fields of the first bad event, or accepts an unusual
 * but valid one).
 */
export function pendingBatch(
  schema: ReturnType<typeof eventSchema>,
  limits: MetadataLimits,
  items: readonly unknown[],
  now: number,
  inferProvider: (model: string) => string,
  project: string = DEFAULT_PROJECT
): PendingEvent[] {
  const out: PendingEvent[] = new Array(items.length)
  for (let i = 0; i < items.length; i++) {
    const fast = fastPending(items[i], limits, now, inferProvider, project)
    out[i] = fast ?? toPending(parseEvent(schema, items[i], i), now, inferProvider, project)
  }
  return out
}

/** One event validated as the single-event route does (the fast path, then zod). */
export function pendingOne(schema: ReturnType<typeof eventSchema>, limits: MetadataLimits, body: unknown, now: number, inferProvider: (model: string) => string, project: string = DEFAULT_PROJECT): PendingEvent {
  return fastPending(body, limits, now, inferProvider, project) ?? toPending(parseEvent(schema, body), now, inferProvider, project)
}

/**
 * One span → one LLMScope event (as the JSON a caller would POST to /events/ingest), or the
 * reason it is not one. Pure: no clock, no engine; the route validates the result with the
 * same zod schema as every other event.
 *
 * ## Token conventions
 *
 * An LLMScope event's `prompt_tokens` follows the provider's own convention (README, "Prices"):
 * OpenAI-shaped providers count cache reads and writes inside it, Anthropic-shaped ones
 * (`anthropic`, `aws`, Claude on `google`/`azure`) count neither. Cache reads go to
 * `cached_tokens`, cache writes to `cache_write_tokens` (priced at the cache-write rate).
 * Instrumentations disagree on `gen_ai.usage.input_tokens`:
 *
 * - **OTel semantic conventions, OpenLLMetry** ("spec" below): input tokens include every kind
 *   of input, cache reads and writes too (the spec says so; OpenLLMetry's Anthropic
 *   instrumentation sends `input + cache_read + cache_creation`, its OpenAI one `prompt_tokens`).
 *   For an Anthropic-shaped provider, prompt = input − cache reads − cache writes.
 * - **OpenLIT** ("native"; recognised by `telemetry.sdk.name = openlit` on the span or resource,
 *   or an `openlit…` scope): input tokens are what the provider reported (its Anthropic code:
 *   "Anthropic's API reports input_tokens exclusive of cache read / creation tokens"). For an
 *   Anthropic-shaped provider, prompt = input.
 * - For OpenAI-shaped providers both mean the same: prompt = input, cached = cache reads,
 *   cache writes inside it too.
 * - Guard: input smaller than cache reads + writes cannot include them, whatever the source
 *   claims (OpenLLMetry's LangChain spans pass Anthropic's raw numbers): it is read as native.
 *
 * Reasoning tokens are inside output tokens (OTel: "SHOULD be included"; OpenAI and Anthropic
 * bill them so). When the span proves otherwise — reasoning larger than output, or a total equal
 * to input + output + reasoning (Gemini's `thoughtsTokenCount` shape) — they are added to
 * `completion_tokens`. `total_tokens` is never copied from the span: it is left to default to
 * prompt + completion, so the same call counts the same whichever instrumentation sent it.
 */
import { findProvider } from '@pydantic/genai-prices'
import { inferProvider, isCacheExclusive } from '../pricing/compute-cost.js'
import { MAX_LATENCY_MS, MAX_TAGS, type MetadataLimits } from '../events.js'
import {
  CACHE_READ_ATTRS,
  CACHE_WRITE_ATTRS,
  INPUT_ATTRS,
  LLM_OPERATIONS,
  METADATA_JSON_ATTRS,
  METADATA_PREFIXES,
  MODEL_ATTRS,
  OPENINFERENCE_CALL_KINDS,
  OUTPUT_ATTRS,
  PROVIDER_ALIASES,
  PROVIDER_ATTRS,
  REASONING_ATTRS,
  SESSION_ID_ATTRS,
  TAGS_ATTRS,
  TOTAL_ATTRS,
  TTFT_SECONDS_ATTRS,
  USER_ID_ATTRS
} from './aliases.js'
import type { AnyValue, SpanView } from './spans.js'

export type SpanOutcome =
  | { kind: 'event'; event: Record<string, unknown> }
  | { kind: 'ignored'; reason: string }
  | { kind: 'rejected'; reason: string }

/** Longest string value copied into metadata. */
export const META_STRING_MAX = 256
/** Most `traceloop.association.properties.*` entries copied into metadata. */
export const META_ASSOCIATION_MAX = 16
/** Most entries of the caller's own metadata (prefixed attributes and JSON objects) copied. */
export const META_CALLER_MAX = 32
/** Longest metadata key taken from an attribute name or a JSON object. */
export const META_KEY_MAX = 64
/** The event schema's bounds on the dimensions (src/events.ts). */
export const ID_MAX = 256
export const TAG_MAX = 64

const ASSOCIATION_PREFIX = 'traceloop.association.properties.'
/** Keys of a Langfuse metadata object that name dimensions (`langfuse.trace.metadata.langfuse_user_id`…). */
const LANGFUSE_DIMENSION_KEYS: ReadonlySet<string> = new Set(['langfuse_user_id', 'langfuse_session_id', 'langfuse_tags'])
/** Attributes read as dimensions, never copied into metadata as well. */
const DIMENSION_ATTRS: ReadonlySet<string> = new Set<string>([...USER_ID_ATTRS, ...SESSION_ID_ATTRS, ...TAGS_ATTRS])

/** A string attribute, or undefined. */
function str(v: AnyValue | undefined): string | undefined {
  if (v === undefined) return undefined
  const s = v.stringValue ?? v.string_value
  return typeof s === 'string' ? s : undefined
}

function firstStr(attrs: ReadonlyMap<string, AnyValue>, keys: readonly string[]): string | undefined {
  for (const k of keys) {
    const s = str(attrs.get(k))
    if (s !== undefined && s !== '') return s
  }
  return undefined
}

type Num = { ok: true; value: number; key: string } | { ok: false; key: string }

/**
 * A whole number from intValue (number or decimal string: OTLP/JSON allows both), an integral
 * doubleValue (JS instrumentations set plain numbers), or a decimal stringValue. Absent → null.
 */
function wholeNumber(attrs: ReadonlyMap<string, AnyValue>, keys: readonly string[]): Num | null {
  for (const key of keys) {
    const v = attrs.get(key)
    if (v === undefined) continue
    const raw = v.intValue ?? v.int_value ?? v.doubleValue ?? v.double_value ?? v.stringValue ?? v.string_value
    if (typeof raw === 'number' && Number.isSafeInteger(raw)) return { ok: true, value: raw, key }
    if (typeof raw === 'string' && /^-?\d{1,16}$/.test(raw.trim())) return { ok: true, value: Number(raw.trim()), key }
    return { ok: false, key }
  }
  return null
}

/** A finite number (int or double), or undefined. */
function anyNumber(attrs: ReadonlyMap<string, AnyValue>, keys: readonly string[]): number | undefined {
  for (const key of keys) {
    const v = attrs.get(key)
    if (v === undefined) continue
    const raw = v.doubleValue ?? v.double_value ?? v.intValue ?? v.int_value
    const n = typeof raw === 'string' ? Number(raw) : raw
    return typeof n === 'number' && Number.isFinite(n) ? n : undefined
  }
  return undefined
}

/** A scalar for metadata: strings truncated, int64 strings as numbers, arrays of scalars joined. */
function scalar(v: AnyValue | undefined): string | number | boolean | undefined {
  if (v === undefined) return undefined
  const s = v.stringValue ?? v.string_value
  if (typeof s === 'string') return s.length > META_STRING_MAX ? s.slice(0, META_STRING_MAX) : s
  const b = v.boolValue ?? v.bool_value
  if (typeof b === 'boolean') return b
  const i = v.intValue ?? v.int_value
  if (typeof i === 'number') return i
  if (typeof i === 'string' && /^-?\d{1,15}$/.test(i)) return Number(i)
  const d = v.doubleValue ?? v.double_value
  if (typeof d === 'number' && Number.isFinite(d)) return d
  const arr = (v.arrayValue ?? v.array_value) as { values?: unknown } | undefined
  if (arr !== undefined && arr !== null && Array.isArray(arr.values)) {
    const parts: string[] = []
    for (const item of arr.values) {
      const p = item !== null && typeof item === 'object' ? scalar(item as AnyValue) : undefined
      if (p !== undefined) parts.push(String(p))
    }
    const joined = parts.join(',')
    return joined.length > META_STRING_MAX ? joined.slice(0, META_STRING_MAX) : joined
  }
  return undefined
}

const knownProviders = new Map<string, boolean>()

/** True when genai-prices has a provider with exactly this id. Memoised (a handful of values). */
function isPricingProvider(id: string): boolean {
  let known = knownProviders.get(id)
  if (known === undefined) {
    try {
      known = findProvider({ providerId: id })?.id === id
    } catch {
      known = false
    }
    if (knownProviders.size >= 256) knownProviders.clear()
    knownProviders.set(id, known)
  }
  return known
}

/**
 * `gen_ai.provider.name` / `gen_ai.system` → our provider id (genai-prices' where it has one).
 * A dotted name that is not an alias is read by its first part when that one is (the Vercel AI
 * SDK writes its provider ids: `openai.chat`, `openai.responses`, `anthropic.messages`).
 */
export function mapProvider(raw: string): string {
  const key = raw.trim().toLowerCase()
  if (Object.hasOwn(PROVIDER_ALIASES, key)) return PROVIDER_ALIASES[key]!
  const dot = key.indexOf('.')
  if (dot > 0 && Object.hasOwn(PROVIDER_ALIASES, key.slice(0, dot))) return PROVIDER_ALIASES[key.slice(0, dot)]!
  return key
}

/** OpenLIT reports provider-native input tokens (see the module header). */
function isOpenLit(span: SpanView): boolean {
  return str(span.attrs.get('telemetry.sdk.name')) === 'openlit' || str(span.resource.get('telemetry.sdk.name')) === 'openlit' || span.scopeName.startsWith('openlit')
}

export interface Tokens {
  prompt: number
  completion: number
  cached: number
  reasoning: number
  /** Cache writes (`cache_write_tokens`): inside prompt for OpenAI-shaped providers, beside it for Anthropic-shaped ones, as cached reads. */
  cacheWrite: number
}

/**
 * Our event's token fields from a span's raw counts (see "Token conventions" above).
 * @param exclusive the provider's prompt_tokens excludes cache reads (Anthropic shape)
 * @param native the instrumentation reports the provider's own input count (OpenLIT)
 */
export function shapeTokens(
  raw: { input: number; output: number; cacheRead: number; cacheWrite: number; reasoning: number; total: number | null },
  exclusive: boolean,
  native: boolean
): Tokens {
  const { input, output, cacheRead, cacheWrite, reasoning, total } = raw
  // Input that is smaller than its cached parts cannot contain them.
  const includesCache = input >= cacheRead + cacheWrite && (!exclusive || !native)
  let prompt: number
  if (exclusive) prompt = includesCache ? input - cacheRead - cacheWrite : input
  else prompt = includesCache ? input : input + cacheRead + cacheWrite
  const reasoningOutside = reasoning > 0 && (reasoning > output || (total !== null && total === input + output + reasoning))
  return { prompt, completion: reasoningOutside ? output + reasoning : output, cached: cacheRead, reasoning, cacheWrite }
}

/** A span's dimensions (README: Dimensions) and where its session came from. */
export interface Dimensions {
  user_id?: string
  session_id?: string
  tags?: string[]
  /** The attribute `session_id` was read from (metadata keeps `conversation_id` otherwise). */
  sessionFrom?: string
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)

/** An attribute that carries something: present and not an empty string. */
function present(v: AnyValue | undefined): v is AnyValue {
  return v !== undefined && str(v) !== ''
}

/** The first of `keys` present on the span, else the first present on its resource. */
function firstPresent(span: SpanView, keys: readonly string[]): { key: string; value: AnyValue } | undefined {
  for (const attrs of [span.attrs, span.resource]) {
    for (const key of keys) {
      const value = attrs.get(key)
      if (present(value)) return { key, value }
    }
  }
  return undefined
}

/** An integer attribute as its decimal text (ids are sometimes numbers), else undefined. */
function intText(v: AnyValue): string | undefined {
  const i = v.intValue ?? v.int_value
  if (typeof i === 'number' && Number.isSafeInteger(i)) return String(i)
  if (typeof i === 'string' && /^-?\d{1,20}$/.test(i)) return i
  return undefined
}

/** A user or session id the schema accepts (1–256 characters), else undefined: never cut. */
function idValue(v: AnyValue): string | undefined {
  const s = str(v) ?? intText(v)
  return s !== undefined && s.length >= 1 && s.length <= ID_MAX ? s : undefined
}

/**
 * Tags from a string list, a JSON array string, or a comma-separated string (as Langfuse
 * reads them): trimmed; empty, longer than 64 characters or repeated ones left out; at most 16.
 */
export function tagList(v: AnyValue): string[] {
  let raw: unknown[] = []
  const arr = (v.arrayValue ?? v.array_value) as { values?: unknown } | undefined
  if (isObj(arr) && Array.isArray(arr.values)) {
    raw = arr.values.map((item) => (isObj(item) ? (str(item) ?? intText(item)) : undefined))
  } else {
    const s = str(v)?.trim()
    if (s === undefined) return []
    let parsed: unknown
    if (s.startsWith('[')) {
      try {
        parsed = JSON.parse(s)
      } catch {
        parsed = undefined
      }
    }
    raw = Array.isArray(parsed) ? parsed.map((x) => (typeof x === 'number' && Number.isFinite(x) ? String(x) : x)) : s.split(',')
  }
  const out: string[] = []
  const seen = new Set<string>()
  for (const r of raw) {
    if (typeof r !== 'string') continue
    const tag = r.trim()
    if (tag.length < 1 || tag.length > TAG_MAX || seen.has(tag)) continue
    seen.add(tag)
    out.push(tag)
    if (out.length >= MAX_TAGS) break
  }
  return out
}

/**
 * `user_id`, `session_id` and `tags` from the attributes real instrumentations write
 * (aliases.ts, `USER_ID_ATTRS` and the others; README "Dimensions"). The first spelling present
 * wins, span before resource; a value the schema would refuse is left out — the span is
 * still an event, only without that dimension.
 */
export function spanDimensions(span: SpanView): Dimensions {
  const out: Dimensions = {}
  const user = firstPresent(span, USER_ID_ATTRS)
  const userId = user === undefined ? undefined : idValue(user.value)
  if (userId !== undefined) out.user_id = userId
  const session = firstPresent(span, SESSION_ID_ATTRS)
  const sessionId = session === undefined ? undefined : idValue(session.value)
  if (sessionId !== undefined) {
    out.session_id = sessionId
    out.sessionFrom = session!.key
  }
  const tags = firstPresent(span, TAGS_ATTRS)
  const list = tags === undefined ? [] : tagList(tags.value)
  if (list.length > 0) out.tags = list
  return out
}

/** A JSON object's top-level scalars (strings cut like other metadata strings). */
function jsonScalars(v: AnyValue): Array<[string, string | number | boolean]> {
  const s = str(v)?.trim()
  if (s === undefined || !s.startsWith('{')) return []
  let parsed: unknown
  try {
    parsed = JSON.parse(s)
  } catch {
    return []
  }
  if (!isObj(parsed)) return []
  const out: Array<[string, string | number | boolean]> = []
  for (const [key, x] of Object.entries(parsed)) {
    if (typeof x === 'string') out.push([key, x.length > META_STRING_MAX ? x.slice(0, META_STRING_MAX) : x])
    else if ((typeof x === 'number' && Number.isFinite(x)) || typeof x === 'boolean') out.push([key, x])
  }
  return out
}

/** What a span becomes. `limits` bounds the metadata so a valid span never fails on it. */
export function spanToEvent(span: SpanView, limits: MetadataLimits): SpanOutcome {
  const a = span.attrs
  const operation = str(a.get('gen_ai.operation.name'))
  if (operation !== undefined && !LLM_OPERATIONS.has(operation)) return { kind: 'ignored', reason: `operation ${operation} is not a model call` }
  // OpenLLMetry's @workflow/@task/@agent/@tool spans (and LangChain chains) wrap model calls;
  // the model call has its own span.
  if (a.has('traceloop.span.kind')) return { kind: 'ignored', reason: 'a traceloop workflow/task span' }
  const oiKind = str(a.get('openinference.span.kind'))
  if (oiKind !== undefined && !OPENINFERENCE_CALL_KINDS.has(oiKind.toUpperCase())) return { kind: 'ignored', reason: `OpenInference ${oiKind} span is not a model call` }
  const model = firstStr(a, MODEL_ATTRS)
  if (model === undefined) return { kind: 'ignored', reason: 'no gen_ai model attribute' }

  const where = `span ${span.spanId || '(no id)'}${span.name ? ` "${span.name.slice(0, 64)}"` : ''}`
  if (span.start === null || span.start === 0n) return { kind: 'rejected', reason: `${where}: startTimeUnixNano is missing` }
  if (span.end === null || span.end < span.start) return { kind: 'rejected', reason: `${where}: endTimeUnixNano is missing or before the start` }

  const counts: Record<'input' | 'output' | 'cacheRead' | 'cacheWrite' | 'reasoning' | 'total', Num | null> = {
    input: wholeNumber(a, INPUT_ATTRS),
    output: wholeNumber(a, OUTPUT_ATTRS),
    cacheRead: wholeNumber(a, CACHE_READ_ATTRS),
    cacheWrite: wholeNumber(a, CACHE_WRITE_ATTRS),
    reasoning: wholeNumber(a, REASONING_ATTRS),
    total: wholeNumber(a, TOTAL_ATTRS)
  }
  for (const c of Object.values(counts)) {
    if (c !== null && (!c.ok || c.value < 0)) return { kind: 'rejected', reason: `${where}: ${c.key} is not a non-negative integer` }
  }
  const value = (c: Num | null) => (c !== null && c.ok ? c.value : 0)

  const rawProvider = firstStr(a, PROVIDER_ATTRS)
  const provider = rawProvider === undefined ? undefined : mapProvider(rawProvider)
  const conventionId = provider !== undefined && isPricingProvider(provider) ? provider : inferProvider(model)
  const tokens = shapeTokens(
    {
      input: value(counts.input),
      output: value(counts.output),
      cacheRead: value(counts.cacheRead),
      cacheWrite: value(counts.cacheWrite),
      reasoning: value(counts.reasoning),
      total: counts.total === null ? null : value(counts.total)
    },
    isCacheExclusive(conventionId, model),
    isOpenLit(span)
  )

  // At most 20 digits of nanoseconds (year ~5138): always a valid Date; zod then refuses what
  // is not a plausible ISO timestamp, and a week-long latency, like for any event.
  const startMs = Number(span.start / 1_000_000n)
  const event: Record<string, unknown> = {
    timestamp: new Date(startMs).toISOString(),
    model,
    prompt_tokens: tokens.prompt,
    completion_tokens: tokens.completion,
    latency_ms: Number(span.end - span.start) / 1e6,
    status: span.statusCode === 2 ? 'error' : 'success'
  }
  const dims = spanDimensions(span)
  const metadata = spanMetadata(span, tokens, limits, dims)
  if (Object.keys(metadata).length > 0) event.metadata = metadata
  if (dims.user_id !== undefined) event.user_id = dims.user_id
  if (dims.session_id !== undefined) event.session_id = dims.session_id
  if (dims.tags !== undefined) event.tags = dims.tags
  if (provider !== undefined) event.provider = provider
  if (counts.cacheRead !== null) event.cached_tokens = tokens.cached
  if (counts.cacheWrite !== null) event.cache_write_tokens = tokens.cacheWrite
  if (counts.reasoning !== null) event.reasoning_tokens = tokens.reasoning
  const ttftSeconds = anyNumber(a, TTFT_SECONDS_ATTRS)
  // Optional and informational: an unusable value is left out rather than failing the span.
  if (ttftSeconds !== undefined && ttftSeconds >= 0 && ttftSeconds * 1000 <= MAX_LATENCY_MS) event.ttft_ms = ttftSeconds * 1000
  return { kind: 'event', event }
}

/**
 * A bounded selection of the span as flat scalars, most useful first, added only while the
 * configured metadata limits (keys, bytes) allow: the metadata never makes a span invalid.
 * Then the caller's own metadata: OpenLLMetry association properties as `association.NAME`,
 * and, under their own keys, `langfuse.…metadata.KEY` / `ai.telemetry.metadata.KEY` attributes
 * and the top-level scalars of a `metadata` (OpenInference) or `langfuse.…metadata` JSON
 * string. A key already taken keeps its first value (the fixed keys above win). Attributes
 * read as dimensions are not repeated here; `gen_ai.conversation.id` stays `conversation_id`
 * unless it became the `session_id`.
 */
export function spanMetadata(span: SpanView, tokens: Tokens, limits: MetadataLimits, dims: Dimensions = spanDimensions(span)): Record<string, unknown> {
  const a = span.attrs
  const entries: Array<[string, string | number | boolean | undefined]> = [
    ['trace_id', span.traceId || undefined],
    ['span_id', span.spanId || undefined],
    ['span_name', span.name ? span.name.slice(0, META_STRING_MAX) : undefined],
    ['service_name', scalar(span.resource.get('service.name'))],
    ['operation', scalar(a.get('gen_ai.operation.name')) ?? scalar(a.get('llm.request.type')) ?? scalar(a.get('openinference.span.kind'))],
    ['instrumentation', span.scopeName ? span.scopeName.slice(0, META_STRING_MAX) : undefined],
    ['response_id', scalar(a.get('gen_ai.response.id'))],
    ['finish_reasons', scalar(a.get('gen_ai.response.finish_reasons'))],
    ['error_type', scalar(a.get('error.type'))],
    ['status_message', span.statusCode === 2 && span.statusMessage ? span.statusMessage.slice(0, META_STRING_MAX) : undefined],
    ['temperature', scalar(a.get('gen_ai.request.temperature'))],
    ['max_tokens', scalar(a.get('gen_ai.request.max_tokens'))],
    ['top_p', scalar(a.get('gen_ai.request.top_p'))],
    ['top_k', scalar(a.get('gen_ai.request.top_k'))],
    ['frequency_penalty', scalar(a.get('gen_ai.request.frequency_penalty'))],
    ['presence_penalty', scalar(a.get('gen_ai.request.presence_penalty'))],
    ['seed', scalar(a.get('gen_ai.request.seed'))],
    ['conversation_id', dims.sessionFrom === 'gen_ai.conversation.id' ? undefined : scalar(a.get('gen_ai.conversation.id'))],
    ['environment', scalar(span.resource.get('deployment.environment.name')) ?? scalar(span.resource.get('deployment.environment'))]
  ]
  let associations = 0
  for (const [key, v] of a) {
    if (associations >= META_ASSOCIATION_MAX) break
    if (!key.startsWith(ASSOCIATION_PREFIX) || DIMENSION_ATTRS.has(key)) continue
    const name = key.slice(ASSOCIATION_PREFIX.length).slice(0, META_KEY_MAX)
    if (name === '') continue
    entries.push([`association.${name}`, scalar(v)])
    associations++
  }
  let caller = 0
  for (const [key, v] of a) {
    if (caller >= META_CALLER_MAX) break
    const prefix = METADATA_PREFIXES.find((p) => key.startsWith(p))
    if (prefix === undefined || DIMENSION_ATTRS.has(key)) continue
    const name = key.slice(prefix.length).slice(0, META_KEY_MAX)
    if (name === '') continue
    entries.push([name, scalar(v)])
    caller++
  }
  for (const attr of METADATA_JSON_ATTRS) {
    const v = a.get(attr)
    if (v === undefined) continue
    for (const [key, x] of jsonScalars(v)) {
      if (caller >= META_CALLER_MAX) break
      const name = key.slice(0, META_KEY_MAX)
      if (name === '' || LANGFUSE_DIMENSION_KEYS.has(name)) continue
      entries.push([name, x])
      caller++
    }
  }

  const out: Record<string, unknown> = {}
  let keys = 0
  let bytes = 2 // "{}"
  for (const [key, v] of entries) {
    if (v === undefined || Object.hasOwn(out, key)) continue
    if (keys + 1 > limits.maxKeys) break
    // `"key":value` plus a comma after the first entry, in UTF-8 bytes, as checkMetadata counts.
    const add = Buffer.byteLength(JSON.stringify(key)) + 1 + Buffer.byteLength(JSON.stringify(v)) + (keys > 0 ? 1 : 0)
    if (bytes + add > limits.maxBytes) continue
    out[key] = v
    keys++
    bytes += add
  }
  return out
}

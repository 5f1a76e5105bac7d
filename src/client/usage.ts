/**
 * Provider responses → LLMScope events, following the server's token conventions (README,
 * "Prices"):
 *
 * - OpenAI (Chat Completions, Responses, Embeddings): `prompt_tokens` / `input_tokens` already
 *   include cached tokens (`*_tokens_details.cached_tokens`), and `completion_tokens` /
 *   `output_tokens` already include reasoning tokens: both are sent as they are, with
 *   `cached_tokens` and `reasoning_tokens` beside them. OpenAI-compatible APIs that report cache
 *   writes (OpenRouter: `prompt_tokens_details.cache_write_tokens`, inside `prompt_tokens` too)
 *   send them as `cache_write_tokens`.
 * - Anthropic (Messages): `input_tokens` excludes cache reads and writes, and is sent as it is:
 *   cache reads become `cached_tokens`, cache writes (`cache_creation_input_tokens`)
 *   `cache_write_tokens`, priced at the cache-write rate (1.25× input for Claude's 5-minute cache).
 */

/** One LLM call as POST /events/ingest takes it. */
export interface LLMScopeEvent {
  /**
   * Idempotency key, 1–64 of `[A-Za-z0-9_-]`: a copy sent within the server's dedupe window is
   * counted once. The client sets a nanoid when absent.
   */
  id?: string
  model: string
  provider?: string
  /** ISO 8601 with a zone; the client stamps the time of record() when absent. */
  timestamp?: string
  prompt_tokens?: number
  completion_tokens?: number
  total_tokens?: number
  cached_tokens?: number
  /** Tokens written to the prompt cache, counted inside or outside `prompt_tokens` as the provider counts `cached_tokens`. */
  cache_write_tokens?: number
  reasoning_tokens?: number
  latency_ms?: number
  ttft_ms?: number
  status?: 'success' | 'error'
  /** Dollars; overrides the server's computed cost. */
  cost?: number
  /** Who the call was for (1–256 characters): a dimension to break down and filter by. */
  user_id?: string
  /** The conversation or session it belongs to (1–256 characters). */
  session_id?: string
  /** Up to 16 distinct labels, 1–64 characters each (a feature, a team, an experiment arm…). */
  tags?: string[]
  /** Free JSON; its top-level strings, numbers and booleans are dimensions `metadata.KEY`. */
  metadata?: Record<string, unknown>
}

/** The dimensions the helpers and `track()` accept (README: Dimensions), in the client's own spelling. */
export interface DimensionOptions {
  /** Sent as `user_id`. */
  userId?: string
  /** Sent as `session_id`. */
  sessionId?: string
  tags?: string[]
  metadata?: Record<string, unknown>
}

/** What the helpers need besides the response. */
export interface RecordOptions extends DimensionOptions {
  /** Measured wall time of the call, ms. */
  latencyMs: number
  /** Overrides the response's own `model`. */
  model?: string
  /** Default `openai` / `anthropic`; set it for OpenAI-compatible APIs (`groq`, `deepseek`, …) or Bedrock (`aws`). */
  provider?: string
  /** When the call started; default: now − latencyMs. */
  timestamp?: string | Date
  ttftMs?: number
  status?: 'success' | 'error'
}

type Obj = Record<string, unknown>

const obj = (v: unknown): Obj | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : undefined)
/** A usable count: a non-negative safe integer, else undefined. */
const count = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined)

function base(response: unknown, opts: RecordOptions, provider: string): LLMScopeEvent | null {
  const r = obj(response)
  const model = opts.model ?? (typeof r?.model === 'string' ? r.model : undefined)
  if (model === undefined || model === '') return null
  const latency = Number.isFinite(opts.latencyMs) && opts.latencyMs >= 0 ? opts.latencyMs : 0
  let started = opts.timestamp instanceof Date ? opts.timestamp : opts.timestamp !== undefined ? new Date(opts.timestamp) : new Date(Date.now() - latency)
  if (Number.isNaN(started.getTime())) started = new Date(Date.now() - latency)
  const e: LLMScopeEvent = { model, provider: opts.provider ?? provider, timestamp: started.toISOString(), latency_ms: latency, status: opts.status ?? 'success' }
  if (opts.ttftMs !== undefined) e.ttft_ms = opts.ttftMs
  withDimensions(e, opts)
  return e
}

/**
 * Copies the dimension options onto an event as the wire names them. Values are sent as given:
 * the server validates them, and an event it refuses goes to `onError` (kind `rejected`).
 */
export function withDimensions(e: LLMScopeEvent, opts: DimensionOptions): LLMScopeEvent {
  if (opts.userId !== undefined) e.user_id = opts.userId
  if (opts.sessionId !== undefined) e.session_id = opts.sessionId
  if (opts.tags !== undefined) e.tags = opts.tags
  if (opts.metadata !== undefined) e.metadata = opts.metadata
  return e
}

/**
 * An OpenAI-style response (chat completion, Responses API, embeddings) → an event, or null
 * when no model is known.
 */
export function fromOpenAI(response: unknown, opts: RecordOptions): LLMScopeEvent | null {
  const e = base(response, opts, 'openai')
  if (e === null) return null
  const usage = obj(obj(response)?.usage)
  if (usage === undefined) return e
  const prompt = count(usage.prompt_tokens) ?? count(usage.input_tokens)
  const completion = count(usage.completion_tokens) ?? count(usage.output_tokens)
  const cached = count(obj(usage.prompt_tokens_details)?.cached_tokens) ?? count(obj(usage.input_tokens_details)?.cached_tokens)
  const reasoning = count(obj(usage.completion_tokens_details)?.reasoning_tokens) ?? count(obj(usage.output_tokens_details)?.reasoning_tokens)
  const writes = count(obj(usage.prompt_tokens_details)?.cache_write_tokens) ?? count(obj(usage.input_tokens_details)?.cache_write_tokens)
  if (prompt !== undefined) e.prompt_tokens = prompt
  if (completion !== undefined) e.completion_tokens = completion
  if (cached !== undefined) e.cached_tokens = cached
  if (writes !== undefined) e.cache_write_tokens = writes
  if (reasoning !== undefined) e.reasoning_tokens = reasoning
  return e
}

/** An Anthropic Messages response → an event, or null when no model is known. */
export function fromAnthropic(response: unknown, opts: RecordOptions): LLMScopeEvent | null {
  const e = base(response, opts, 'anthropic')
  if (e === null) return null
  const usage = obj(obj(response)?.usage)
  if (usage === undefined) return e
  const input = count(usage.input_tokens)
  const writes = count(usage.cache_creation_input_tokens)
  const reads = count(usage.cache_read_input_tokens)
  const output = count(usage.output_tokens)
  if (input !== undefined) e.prompt_tokens = input
  if (output !== undefined) e.completion_tokens = output
  if (reads !== undefined) e.cached_tokens = reads
  if (writes !== undefined) e.cache_write_tokens = writes
  return e
}

/**
 * Which helper a response needs: Anthropic messages say `type: "message"` (or carry cache
 * fields only Anthropic has), OpenAI objects say `object: "chat.completion"`, `"response"`,
 * `"list"`… or use `prompt_tokens`. Null when the response has no usage at all.
 */
export function detectShape(response: unknown): 'openai' | 'anthropic' | null {
  const r = obj(response)
  const usage = obj(r?.usage)
  if (r === undefined || usage === undefined) return null
  if (r.type === 'message' || 'cache_creation_input_tokens' in usage || 'cache_read_input_tokens' in usage) return 'anthropic'
  if (typeof r.object === 'string' || 'prompt_tokens' in usage || 'input_tokens_details' in usage || 'output_tokens_details' in usage) return 'openai'
  return typeof r.model === 'string' && r.model.toLowerCase().includes('claude') ? 'anthropic' : 'openai'
}

/**
 * LLMScope's TypeScript client: `import { LLMScope } from 'llmscope/client'`. No dependencies
 * beyond Node 20 (global fetch).
 *
 * ```ts
 * const scope = new LLMScope({ url: 'http://127.0.0.1:3000', apiKey: process.env.LLMSCOPE_KEY! })
 * const res = await scope.track(() => openai.chat.completions.create({ model: 'gpt-4o', messages }))
 * scope.recordAnthropic(message, { latencyMs: 840, userId: 'u_1', tags: ['support'], metadata: { feature: 'triage' } })
 * await scope.close() // on shutdown: sends what is buffered
 * ```
 *
 * How it behaves:
 * - `record()` only appends to a bounded in-memory ring and returns; it never throws and never
 *   waits. Batches go to `POST /events/batch` when `batchSize` events are waiting, every
 *   `flushIntervalMs`, on `flush()`, on `close()`, and when the process is about to exit
 *   (`beforeExit`; a process killed by a signal must `await close()` in its handler).
 * - One request at a time, in record order. 429/502/503/504 and network errors are retried with
 *   exponential backoff and jitter, honouring `Retry-After`, up to `maxRetries`; then the batch
 *   is given up and reported to `onError`. A 400 naming one event (`[3].prompt_tokens`) drops
 *   that event and resends the rest at once; a 413 splits the batch.
 * - When the ring is full (server down for long), the OLDEST events are dropped and counted:
 *   recent events are the ones alerts and live dashboards act on when the server returns.
 * - Delivery is exactly once within the server's dedupe window (default 24 h): every event gets
 *   an `id` at record() when it has none (a nanoid, kept across its retries), so a request
 *   whose answer was lost and that is sent again is answered with the first event_ids and
 *   counted once (DESIGN §7, Idempotency). Pass your own `id` to make a resend from elsewhere
 *   (another process, a replay from your own queue) a no-op too.
 */
import { nanoid } from 'nanoid'
import { Ring } from './ring.js'
import { backoffDelay, parseRetryAfter } from '../backoff.js'
import { RETRYABLE_STATUS } from './retry.js'
import { detectShape, fromAnthropic, fromOpenAI, withDimensions, type DimensionOptions, type LLMScopeEvent, type RecordOptions } from './usage.js'

export type { DimensionOptions, LLMScopeEvent, RecordOptions } from './usage.js'
export { fromAnthropic, fromOpenAI, detectShape, withDimensions } from './usage.js'

export interface LLMScopeOptions {
  /** Server base URL, e.g. `http://127.0.0.1:3000`. */
  url: string
  /** A key with the `ingest` scope (safe to ship inside an app). */
  apiKey: string
  /** Events per request (default 100; the server takes up to LLMSCOPE_MAX_BATCH). */
  batchSize?: number
  /** Longest an event waits before being sent, ms (default 1000). */
  flushIntervalMs?: number
  /** Most events buffered; past it the oldest are dropped (default 10,000). */
  maxBuffer?: number
  /** Retries of one batch before it is given up (default 5). */
  maxRetries?: number
  /** First backoff step, ms (default 250; doubles per retry). */
  retryBaseMs?: number
  /** Longest single wait between retries, ms, Retry-After included (default 30,000). */
  retryMaxMs?: number
  /** Per-request timeout, ms (default 10,000); a timeout is retried like a network error. */
  timeoutMs?: number
  /** Send what is buffered when the process empties its event loop (default true). */
  flushOnExit?: boolean
  /** Told about every event not delivered (default: one process warning per failure streak). */
  onError?: (error: LLMScopeClientError) => void
  /** fetch to use (default: the global one). */
  fetch?: typeof fetch
}

/** Why events were not delivered. */
export type ClientErrorKind = 'dropped' | 'rejected' | 'failed' | 'invalid'

export class LLMScopeClientError extends Error {
  readonly kind: ClientErrorKind
  /** Events concerned. */
  readonly events: number
  /** HTTP status, when the server answered. */
  readonly status?: number
  constructor(kind: ClientErrorKind, message: string, events: number, status?: number, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'LLMScopeClientError'
    this.kind = kind
    this.events = events
    if (status !== undefined) this.status = status
  }
}

export interface ClientStats {
  /** Events accepted by record() (and the helpers). */
  recorded: number
  /** Events the server acknowledged (202). */
  sent: number
  /** Events pushed out of a full buffer, or recorded after close(). */
  dropped: number
  /** Events refused: by the server (400 naming them) or before sending (no model). */
  rejected: number
  /** Events given up: retries exhausted, or a status that retrying cannot fix (401, 403, …). */
  failed: number
  /** Requests retried. */
  retries: number
  /** Events waiting now. */
  buffered: number
  /** Events in the request being sent now. */
  inFlight: number
}

/** What `track()` should know besides the call (and the dimensions to record it with). */
export interface TrackOptions extends DimensionOptions {
  /** Which response shape to read; default: detected. */
  shape?: 'openai' | 'anthropic'
  /** Needed to record a call that throws; otherwise read from the response. */
  model?: string
  provider?: string
}

interface Item {
  seq: number
  event: LLMScopeEvent
}

function positiveInt(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback
  if (!Number.isInteger(v) || v < 1) throw new TypeError(`LLMScope: options.${name} must be an integer >= 1, got ${String(v)}`)
  return v
}

function nonNegativeInt(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback
  if (!Number.isInteger(v) || v < 0) throw new TypeError(`LLMScope: options.${name} must be an integer >= 0, got ${String(v)}`)
  return v
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The index a 400's first detail names (`[3].prompt_tokens` → 3), else null. */
function rejectedIndex(body: unknown): number | null {
  const details = (body as { details?: Array<{ path?: unknown }> } | null)?.details
  const path = Array.isArray(details) ? details[0]?.path : undefined
  const m = typeof path === 'string' ? /^\[(\d+)\]/.exec(path) : null
  return m === null ? null : Number(m[1])
}

export class LLMScope {
  readonly #endpoint: string
  readonly #headers: Record<string, string>
  readonly #batchSize: number
  readonly #maxRetries: number
  readonly #retryBaseMs: number
  readonly #retryMaxMs: number
  readonly #timeoutMs: number
  readonly #fetch: typeof fetch
  readonly #onError: (error: LLMScopeClientError) => void
  readonly #buffer: Ring<Item>
  readonly #timer: NodeJS.Timeout
  readonly #onBeforeExit: (() => void) | null
  #seq = 0
  #inflight: Promise<void> | null = null
  #inflightCount = 0
  #closing: Promise<void> | null = null
  #kickQueued = false
  #warned = false
  #stats = { recorded: 0, sent: 0, dropped: 0, rejected: 0, failed: 0, retries: 0 }

  /** Checks the options (throws a TypeError naming a bad one) and starts the flush timer. */
  constructor(options: LLMScopeOptions) {
    if (options === null || typeof options !== 'object') throw new TypeError('LLMScope: options must be an object')
    let url: URL
    try {
      url = new URL(options.url)
    } catch {
      throw new TypeError(`LLMScope: options.url must be an absolute URL, got ${JSON.stringify(options.url)}`)
    }
    if (typeof options.apiKey !== 'string' || options.apiKey === '') throw new TypeError('LLMScope: options.apiKey must be a non-empty string')
    this.#endpoint = new URL('events/batch', url.href.endsWith('/') ? url.href : `${url.href}/`).href
    this.#headers = { 'content-type': 'application/json', 'x-api-key': options.apiKey }
    this.#batchSize = positiveInt('batchSize', options.batchSize, 100)
    const flushIntervalMs = positiveInt('flushIntervalMs', options.flushIntervalMs, 1000)
    this.#buffer = new Ring(positiveInt('maxBuffer', options.maxBuffer, 10_000))
    this.#maxRetries = nonNegativeInt('maxRetries', options.maxRetries, 5)
    this.#retryBaseMs = positiveInt('retryBaseMs', options.retryBaseMs, 250)
    this.#retryMaxMs = positiveInt('retryMaxMs', options.retryMaxMs, 30_000)
    this.#timeoutMs = positiveInt('timeoutMs', options.timeoutMs, 10_000)
    if (options.onError !== undefined && typeof options.onError !== 'function') throw new TypeError('LLMScope: options.onError must be a function')
    this.#onError = options.onError ?? ((err) => this.#warnOnce(err))
    const f = options.fetch ?? globalThis.fetch
    if (typeof f !== 'function') throw new TypeError('LLMScope: no fetch available (Node 18+), pass options.fetch')
    this.#fetch = f

    // The timer never keeps the process alive; beforeExit sends what it left behind.
    this.#timer = setInterval(() => this.#drain(true), flushIntervalMs)
    this.#timer.unref()
    if (options.flushOnExit !== false) {
      this.#onBeforeExit = () => {
        if (this.#buffer.size > 0) void this.flush()
      }
      process.on('beforeExit', this.#onBeforeExit)
    } else {
      this.#onBeforeExit = null
    }
  }

  /**
   * Buffers one event. Returns false when it was not taken (no model, or the client is
   * closed); never throws. A missing `timestamp` is set to now, a missing `id` to a new nanoid
   * (the idempotency key its retries carry).
   */
  record(event: LLMScopeEvent): boolean {
    try {
      if (this.#closing !== null) {
        this.#stats.dropped++
        this.#report(new LLMScopeClientError('dropped', 'event recorded after close()', 1))
        return false
      }
      if (event === null || typeof event !== 'object' || typeof event.model !== 'string' || event.model === '') {
        this.#stats.rejected++
        this.#report(new LLMScopeClientError('invalid', 'event needs a non-empty string model', 1))
        return false
      }
      const copy: LLMScopeEvent = { ...event }
      if (copy.timestamp === undefined) copy.timestamp = new Date().toISOString()
      if (copy.id === undefined) copy.id = nanoid()
      this.#stats.recorded++
      const dropped = this.#buffer.push({ seq: this.#seq++, event: copy })
      if (dropped !== undefined) {
        this.#stats.dropped++
        this.#report(new LLMScopeClientError('dropped', `buffer full (${this.#buffer.capacity} events): dropped the oldest`, 1))
      }
      if (this.#buffer.size >= this.#batchSize && this.#inflight === null && !this.#kickQueued) {
        // Sent after the caller's synchronous code: record() itself stays an append.
        this.#kickQueued = true
        queueMicrotask(() => {
          this.#kickQueued = false
          this.#drain(false)
        })
      }
      return true
    } catch {
      return false
    }
  }

  /** Records an OpenAI-style response (Chat Completions, Responses, Embeddings) and its latency. */
  recordOpenAI(response: unknown, options: RecordOptions): boolean {
    return this.#recordWith(fromOpenAI, response, options)
  }

  /** Records an Anthropic Messages response and its latency (cache writes counted as input). */
  recordAnthropic(response: unknown, options: RecordOptions): boolean {
    return this.#recordWith(fromAnthropic, response, options)
  }

  /**
   * Runs `call`, measures it, records its response's usage (shape detected, or
   * `options.shape`), and returns the response untouched. A call that throws is recorded as
   * an error (when `options.model` says which model) and the error is rethrown.
   */
  async track<T>(call: () => Promise<T> | T, options: TrackOptions = {}): Promise<T> {
    const startedAt = new Date()
    const t0 = performance.now()
    let response: T
    try {
      response = await call()
    } catch (err) {
      if (options.model !== undefined) {
        this.record(withDimensions({ model: options.model, provider: options.provider, timestamp: startedAt.toISOString(), latency_ms: performance.now() - t0, status: 'error' }, options))
      }
      throw err
    }
    const opts: RecordOptions = {
      latencyMs: performance.now() - t0,
      timestamp: startedAt,
      model: options.model,
      provider: options.provider,
      userId: options.userId,
      sessionId: options.sessionId,
      tags: options.tags,
      metadata: options.metadata
    }
    const shape = options.shape ?? detectShape(response)
    if (shape === 'anthropic') this.recordAnthropic(response, opts)
    else if (shape === 'openai' || options.model !== undefined) this.recordOpenAI(response, opts)
    else this.#report(new LLMScopeClientError('invalid', 'track(): the response has no usage and no model was given', 1))
    return response
  }

  /**
   * Sends everything recorded before this call; resolves once it is acknowledged or given up
   * (see `onError`). Never rejects.
   */
  async flush(): Promise<void> {
    const target = this.#seq
    try {
      for (;;) {
        if (this.#inflight !== null) {
          await this.#inflight
          continue
        }
        const head = this.#buffer.peek()
        if (head === undefined || head.seq >= target) return
        this.#drain(true)
      }
    } catch {
      // #send never rejects; nothing to do.
    }
  }

  /** Stops the timer, sends what is buffered, detaches from the process. Safe twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#timer)
      if (this.#onBeforeExit !== null) process.off('beforeExit', this.#onBeforeExit)
      await this.flush()
    })()
    return this.#closing
  }

  stats(): ClientStats {
    return { ...this.#stats, buffered: this.#buffer.size, inFlight: this.#inflightCount }
  }

  #recordWith(convert: (r: unknown, o: RecordOptions) => LLMScopeEvent | null, response: unknown, options: RecordOptions): boolean {
    try {
      const event = convert(response, options)
      if (event === null) {
        this.#stats.rejected++
        this.#report(new LLMScopeClientError('invalid', 'response has no model: pass options.model', 1))
        return false
      }
      return this.record(event)
    } catch {
      return false
    }
  }

  /** Starts sending one batch unless one is in flight; `all`: also a partial batch. */
  #drain(all: boolean): void {
    if (this.#inflight !== null) return
    const n = this.#buffer.size
    if (n === 0 || (!all && n < this.#batchSize)) return
    const batch = this.#buffer.take(this.#batchSize)
    this.#inflightCount = batch.length
    this.#inflight = this.#send(batch).finally(() => {
      this.#inflight = null
      this.#inflightCount = 0
      // Full batches follow at once; a partial one waits for the timer, flush() or close().
      this.#drain(false)
    })
  }

  /** Delivers a batch or gives it up. Never rejects. */
  async #send(batch: Item[]): Promise<void> {
    let items = batch
    let attempt = 0
    while (items.length > 0) {
      let status: number | undefined
      let retryAfter: string | null = null
      let answer: unknown = null
      let networkError: unknown
      try {
        const res = await this.#fetch(this.#endpoint, {
          method: 'POST',
          headers: this.#headers,
          body: JSON.stringify(items.map((i) => i.event)),
          signal: AbortSignal.timeout(this.#timeoutMs)
        })
        status = res.status
        retryAfter = res.headers.get('retry-after')
        const text = await res.text()
        if (status >= 400) {
          try {
            answer = JSON.parse(text)
          } catch {
            answer = null
          }
        }
      } catch (err) {
        networkError = err
      }

      if (status !== undefined && status >= 200 && status < 300) {
        this.#stats.sent += items.length
        this.#warned = false
        return
      }
      if (status === 400) {
        const i = rejectedIndex(answer)
        if (i !== null && i < items.length) {
          // One bad event must not sink the batch: drop it, resend the rest now.
          this.#stats.rejected++
          this.#report(new LLMScopeClientError('rejected', `server rejected an event: ${String((answer as { message?: unknown }).message ?? '')}`, 1, 400))
          items = items.filter((_, j) => j !== i)
          continue
        }
      }
      if (status === 413 && items.length > 1) {
        const half = Math.ceil(items.length / 2)
        await this.#send(items.slice(0, half))
        await this.#send(items.slice(half))
        return
      }
      const retryable = networkError !== undefined || (status !== undefined && RETRYABLE_STATUS.has(status))
      if (!retryable || attempt >= this.#maxRetries) {
        this.#stats.failed += items.length
        const why =
          networkError !== undefined
            ? `network error: ${(networkError as Error)?.message ?? String(networkError)}`
            : `HTTP ${status}${typeof (answer as { message?: unknown } | null)?.message === 'string' ? `: ${(answer as { message: string }).message}` : ''}`
        this.#report(new LLMScopeClientError('failed', `gave up on ${items.length} event(s) after ${attempt} retr${attempt === 1 ? 'y' : 'ies'}: ${why}`, items.length, status, networkError))
        return
      }
      const wait = backoffDelay(attempt, { baseMs: this.#retryBaseMs, maxMs: this.#retryMaxMs }, parseRetryAfter(retryAfter, Date.now()))
      attempt++
      this.#stats.retries++
      // A referenced timer: a retry pending at exit keeps the process up until it is settled.
      await sleep(wait)
    }
  }

  #report(err: LLMScopeClientError): void {
    try {
      this.#onError(err)
    } catch {
      // A throwing onError must not reach the caller of record().
    }
  }

  #warnOnce(err: LLMScopeClientError): void {
    if (this.#warned) return
    this.#warned = true
    process.emitWarning(`${err.message} (further LLMScope errors are silent until a batch succeeds; pass onError to see them all)`, { type: 'LLMScopeWarning', code: `LLMSCOPE_CLIENT_${err.kind.toUpperCase()}` })
  }
}

/**
 * WebhookNotifier: POSTs alert notifications as JSON, off the ingest path, with a timeout per
 * attempt and bounded retries with the shared backoff policy (`../backoff.ts`).
 *
 *   deliver() ──► queue (≤ maxQueue; past it: failed at once, counted) ──► ≤ concurrency in flight
 *                   attempt 1 ─fail─► wait ≤ backoffMs ─► attempt 2 ─fail─► wait ≤ 2·backoffMs ─► … attempts
 *
 * Each wait is full jitter over its window (capped at maxBackoffMs), so receivers that failed
 * together are not hit again in lockstep; a receiver's `Retry-After` (seconds or HTTP-date)
 * replaces the window, still capped.
 *
 * Retried: network errors, timeouts, 408, 425, 429 and 5xx. Not retried: other statuses (a 4xx
 * will not heal by itself; 3xx are not followed, so a webhook cannot be bounced elsewhere).
 * A URL's `user:password@` becomes a Basic `Authorization` header (fetch refuses credentials in
 * URLs). Neither the URL nor its credentials ever appear in a log line or an error message:
 * logs name the host only.
 *
 * `close()` aborts what is in flight or waiting: those deliveries end as failed
 * (`notifier closed`). Safe twice.
 */
import { backoffDelay, parseRetryAfter } from '../backoff.js'
import { silentLog, type Log } from '../log.js'
import type { DeliveryOutcome } from './types.js'

export interface NotifierOptions {
  /** Attempts per delivery (1 = no retry). Default 3. */
  attempts?: number
  /** Time allowed per attempt, ms. Default 5000. */
  timeoutMs?: number
  /** Backoff window before the second attempt, ms (the wait is random within it); doubled for each further one. Default 1000. */
  backoffMs?: number
  /** Cap on one wait, ms, a receiver's Retry-After included. Default 30000. */
  maxBackoffMs?: number
  /** Deliveries in flight at once. Default 8. */
  concurrency?: number
  /** Deliveries waiting to start, past which new ones fail at once. Default 1000. */
  maxQueue?: number
  log?: Log
  /** For tests: the fetch to use. Default the global one. */
  fetch?: typeof fetch
  /** For tests: how to wait; must resolve early when `signal` aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>
  /** For tests: the jitter source, in [0, 1). Default Math.random. */
  random?: () => number
  /** For tests: the clock an HTTP-date Retry-After is read against, epoch ms. Default Date.now. */
  now?: () => number
}

export interface NotifierStats {
  /** Deliveries that ended delivered. */
  delivered: number
  /** Deliveries that ended failed (all attempts, a permanent status, queue full or closed). */
  failed: number
  /** HTTP requests made. */
  attempts: number
  /** Attempts after a failed one. */
  retries: number
  /** Deliveries refused because the queue was full (also counted in `failed`). */
  dropped: number
  inFlight: number
  queued: number
}

const DEFAULTS = { attempts: 3, timeoutMs: 5000, backoffMs: 1000, maxBackoffMs: 30_000, concurrency: 8, maxQueue: 1000 }

interface Job {
  url: string
  body: string
  attempts: number
  resolve: (o: DeliveryOutcome) => void
}

function positiveInt(name: string, v: number, min: number): number {
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${String(v)}`)
  return v
}

const defaultSleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve()
    const onAbort = () => {
      clearTimeout(timer)
      resolve()
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })

/** Splits `user:password@` out of a URL into a Basic Authorization header value. */
export function splitCredentials(url: string): { url: string; authorization: string | null } {
  const u = new URL(url)
  if (u.username === '' && u.password === '') return { url: u.href, authorization: null }
  const pair = `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`
  u.username = ''
  u.password = ''
  return { url: u.href, authorization: `Basic ${Buffer.from(pair).toString('base64')}` }
}

/** The host of a URL, for logs (never the path, query or credentials). */
function hostOf(url: string): string {
  try {
    return new URL(url).host
  } catch {
    return '(invalid url)'
  }
}

/** A short reason for a failed fetch, without the URL. */
function describe(err: unknown, timedOut: boolean, timeoutMs: number): string {
  if (timedOut) return `timed out after ${timeoutMs} ms`
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } }
  if (e?.cause?.code !== undefined) return `network error: ${e.cause.code}`
  if (e?.name === 'AbortError') return 'aborted'
  // undici's messages ("fetch failed", …) name no URL; cut to a line anyway.
  return `network error: ${String(e?.cause?.message ?? e?.message ?? err).split('\n')[0].slice(0, 200)}`
}

const retryable = (status: number) => status === 408 || status === 425 || status === 429 || status >= 500

export class WebhookNotifier {
  readonly #o: typeof DEFAULTS
  readonly #log: Log
  readonly #fetch: typeof fetch
  readonly #sleep: (ms: number, signal: AbortSignal) => Promise<void>
  readonly #random: () => number
  readonly #now: () => number
  readonly #queue: Job[] = []
  readonly #closing = new AbortController()
  #inFlight = 0
  #idleWaiters: (() => void)[] = []
  #closed: Promise<void> | undefined
  readonly #stats = { delivered: 0, failed: 0, attempts: 0, retries: 0, dropped: 0 }

  /** @throws RangeError naming the option when one is out of range. */
  constructor(opts: NotifierOptions = {}) {
    this.#o = {
      attempts: positiveInt('attempts', opts.attempts ?? DEFAULTS.attempts, 1),
      timeoutMs: positiveInt('timeoutMs', opts.timeoutMs ?? DEFAULTS.timeoutMs, 1),
      backoffMs: positiveInt('backoffMs', opts.backoffMs ?? DEFAULTS.backoffMs, 0),
      maxBackoffMs: positiveInt('maxBackoffMs', opts.maxBackoffMs ?? DEFAULTS.maxBackoffMs, 0),
      concurrency: positiveInt('concurrency', opts.concurrency ?? DEFAULTS.concurrency, 1),
      maxQueue: positiveInt('maxQueue', opts.maxQueue ?? DEFAULTS.maxQueue, 0)
    }
    this.#log = opts.log ?? silentLog
    this.#fetch = opts.fetch ?? fetch
    this.#sleep = opts.sleep ?? defaultSleep
    this.#random = opts.random ?? Math.random
    this.#now = opts.now ?? Date.now
  }

  /**
   * POSTs `payload` as JSON to `url`; resolves with the outcome once delivered or given up.
   * Never rejects. `attempts` overrides the configured count (the test endpoint uses 1).
   */
  deliver(url: string, payload: unknown, opts: { attempts?: number } = {}): Promise<DeliveryOutcome> {
    if (this.#closed !== undefined) return Promise.resolve(this.#fail(0, null, 'notifier closed'))
    if (this.#queue.length >= this.#o.maxQueue && this.#inFlight >= this.#o.concurrency) {
      this.#stats.dropped++
      this.#log.warn({ host: hostOf(url) }, 'webhook queue full: notification dropped')
      return Promise.resolve(this.#fail(0, null, 'delivery queue full'))
    }
    return new Promise((resolve) => {
      this.#queue.push({ url, body: JSON.stringify(payload), attempts: Math.max(1, Math.min(opts.attempts ?? this.#o.attempts, this.#o.attempts)), resolve })
      this.#pump()
    })
  }

  /** Resolves when nothing is queued or in flight. */
  idle(): Promise<void> {
    if (this.#inFlight === 0 && this.#queue.length === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }

  get stats(): NotifierStats {
    return { ...this.#stats, inFlight: this.#inFlight, queued: this.#queue.length }
  }

  /** Aborts in-flight and queued deliveries (they end failed) and resolves when all ended. Safe twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing.abort()
      for (const job of this.#queue.splice(0)) job.resolve(this.#fail(0, null, 'notifier closed'))
      await this.idle()
    })()
    return this.#closed
  }

  #pump(): void {
    while (this.#inFlight < this.#o.concurrency && this.#queue.length > 0) {
      const job = this.#queue.shift() as Job
      this.#inFlight++
      // #run does not throw by design; the catch keeps "deliver() never rejects" true regardless.
      void this.#run(job)
        .catch((err: unknown) => this.#fail(0, null, `internal error: ${String((err as Error)?.message ?? err).slice(0, 200)}`))
        .then((outcome) => {
          this.#inFlight--
          job.resolve(outcome)
          this.#pump()
          if (this.#inFlight === 0 && this.#queue.length === 0) {
            const waiters = this.#idleWaiters
            this.#idleWaiters = []
            for (const w of waiters) w()
          }
        })
    }
  }

  async #run(job: Job): Promise<DeliveryOutcome> {
    let target: { url: string; authorization: string | null }
    try {
      target = splitCredentials(job.url)
    } catch {
      return this.#fail(0, null, 'invalid webhook url')
    }
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'llmscope-webhook/1' }
    if (target.authorization !== null) headers.authorization = target.authorization
    let statusCode: number | null = null
    let error = ''
    let retryAfterMs: number | null = null
    let attempt = 0
    const policy = { baseMs: this.#o.backoffMs, maxMs: this.#o.maxBackoffMs }
    while (attempt < job.attempts) {
      if (attempt > 0) {
        this.#stats.retries++
        await this.#sleep(backoffDelay(attempt - 1, policy, retryAfterMs, this.#random), this.#closing.signal)
      }
      if (this.#closing.signal.aborted) return this.#fail(attempt, statusCode, 'notifier closed')
      attempt++
      this.#stats.attempts++
      const r = await this.#attempt(target.url, headers, job.body)
      statusCode = r.status
      if (r.ok) {
        this.#stats.delivered++
        return { status: 'delivered', attempts: attempt, status_code: statusCode, error: null }
      }
      error = r.error
      retryAfterMs = r.retryAfterMs
      this.#log.warn({ host: hostOf(job.url), attempt, of: job.attempts, status: statusCode, error }, 'webhook delivery attempt failed')
      if (!r.retry) break
    }
    return this.#fail(attempt, statusCode, error)
  }

  async #attempt(url: string, headers: Record<string, string>, body: string): Promise<{ ok: boolean; retry: boolean; status: number | null; error: string; retryAfterMs: number | null }> {
    const ctl = new AbortController()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      ctl.abort()
    }, this.#o.timeoutMs)
    const onClose = () => ctl.abort()
    this.#closing.signal.addEventListener('abort', onClose, { once: true })
    try {
      const res = await this.#fetch(url, { method: 'POST', headers, body, redirect: 'manual', signal: ctl.signal })
      // The body is not needed; cancel it so the connection is released.
      await res.body?.cancel().catch(() => {})
      if (res.status >= 200 && res.status < 300) return { ok: true, retry: false, status: res.status, error: '', retryAfterMs: null }
      const retry = retryable(res.status)
      const retryAfterMs = retry ? parseRetryAfter(res.headers.get('retry-after'), this.#now()) : null
      return { ok: false, retry, status: res.status, error: `HTTP ${res.status}`, retryAfterMs }
    } catch (err) {
      return { ok: false, retry: !this.#closing.signal.aborted, status: null, error: this.#closing.signal.aborted ? 'notifier closed' : describe(err, timedOut, this.#o.timeoutMs), retryAfterMs: null }
    } finally {
      clearTimeout(timer)
      this.#closing.signal.removeEventListener('abort', onClose)
    }
  }

  #fail(attempts: number, statusCode: number | null, error: string): DeliveryOutcome {
    this.#stats.failed++
    return { status: 'failed', attempts, status_code: statusCode, error }
  }
}

/**
 * Security plugins, registered on the root instance before the auth hook:
 *
 * - **Headers** (helmet, computed once) on every answer, errors included. The CSP lets the dashboard
 *   run from this origin only: scripts, styles, fonts and images from 'self' (images also as
 *   data: URLs), API calls and the live stream to 'self' plus ws:/wss:, no inline scripts, no
 *   frames of us elsewhere. HSTS and upgrade-insecure-requests are off: LLMScope serves plain
 *   HTTP and does not know whether a TLS proxy sits in front (set HSTS there).
 * - **CORS** (@fastify/cors) only when LLMSCOPE_CORS_ORIGINS is set; otherwise no CORS headers
 *   at all, so browsers keep other origins out (same-origin only). `Retry-After` is exposed
 *   so browser clients can back off.
 * - **Rate limits** (@fastify/rate-limit over {@link WindowStore}: in memory, fixed windows,
 *   bounded) as a {@link Limiter} the auth hook calls once it knows who is asking: per API key
 *   for valid keys, per client IP for requests with a missing or unknown key. The two never share a bucket, so a burst of wrong keys from
 *   one address exhausts only its own failure bucket and cannot starve real clients — not even
 *   ones behind the same address.
 */
import helmet from 'helmet'
import cors from '@fastify/cors'
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Config } from '../config.js'
import type { KeyEntry } from '../keys.js'

/** Content-Security-Policy directives (helmet's camelCase form). */
export const CSP_DIRECTIVES = {
  defaultSrc: ["'self'"],
  baseUri: ["'self'"],
  scriptSrc: ["'self'"],
  scriptSrcAttr: ["'none'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'data:'],
  fontSrc: ["'self'", 'data:'],
  connectSrc: ["'self'", 'ws:', 'wss:'],
  objectSrc: ["'none'"],
  frameAncestors: ["'self'"],
  formAction: ["'self'"],
  upgradeInsecureRequests: null
}

/** Headers browsers may read on cross-origin answers. */
export const EXPOSED_HEADERS = ['retry-after']

/** The outcome of one rate-limit check. */
export type LimitResult = { limited: false } | { limited: true; retryAfterS: number; max: number }

/** Rate limits the auth hook applies. A limit that is off answers at once, without a promise. */
export interface Limiter {
  /** A request with a valid key: counted against that key. */
  key(request: FastifyRequest, entry: KeyEntry): LimitResult | Promise<LimitResult>
  /** A request with a missing or unknown key: counted against the client's address. */
  failure(request: FastifyRequest): LimitResult | Promise<LimitResult>
}

const NOT_LIMITED: LimitResult = Object.freeze({ limited: false })

/**
 * The client's address for rate limiting. `request.ip` is undefined under `injectWS` (no
 * socket), so fall back to the socket, then to one shared bucket.
 */
export function clientAddress(request: FastifyRequest): string {
  return request.ip ?? request.socket?.remoteAddress ?? 'unknown'
}

/**
 * A fixed-window counter store for @fastify/rate-limit, bounded to `cache` keys (the oldest
 * window is forgotten first). Its own rather than the plugin's LocalStore because LocalStore
 * answers with its live, mutable counter object: concurrent requests in one tick all read the
 * final count, so a burst of N requests to a fresh bucket was refused whole instead of the
 * first `max` passing (regression test: "a burst of wrong keys…" in test/http/security.test.ts).
 * This one answers a copy.
 */
export class WindowStore {
  readonly #windows = new Map<string, { count: number; start: number }>()
  readonly #cache: number

  constructor(options: { cache?: number } = {}) {
    this.#cache = options.cache ?? 10_000
  }

  incr(key: string, cb: (err: Error | null, res: { current: number; ttl: number }) => void, timeWindow: number): void {
    const now = Date.now()
    let w = this.#windows.get(key)
    if (w === undefined || w.start + timeWindow <= now) {
      w = { count: 0, start: now }
      this.#windows.delete(key)
      this.#windows.set(key, w)
      if (this.#windows.size > this.#cache) this.#windows.delete(this.#windows.keys().next().value as string)
    }
    w.count++
    cb(null, { current: w.count, ttl: w.start + timeWindow - now })
  }

  read(key: string, cb: (err: Error | null, res: { current: number; ttl: number }) => void, timeWindow: number): void {
    const now = Date.now()
    const w = this.#windows.get(key)
    if (w === undefined || w.start + timeWindow <= now) cb(null, { current: 0, ttl: 0 })
    else cb(null, { current: w.count, ttl: w.start + timeWindow - now })
  }

  /** A fresh store of the same size for each limiter (buckets are never shared between them). */
  child(): WindowStore {
    return new WindowStore({ cache: this.#cache })
  }
}

type Check = (req: FastifyRequest) => Promise<{ isAllowed: true } | { isAllowed: false; isExceeded: boolean; ttlInSeconds: number; max: number }>

async function limit(check: Check, request: FastifyRequest): Promise<LimitResult> {
  const r = await check(request)
  if (r.isAllowed || !r.isExceeded) return { limited: false }
  return { limited: true, retryAfterS: Math.max(1, r.ttlInSeconds), max: r.max }
}

/** The headers helmet sets for these options, captured once from its middleware. */
export function helmetHeaders(options: Parameters<typeof helmet>[0]): Record<string, string> {
  const out: Record<string, string> = {}
  const res = {
    setHeader: (name: string, value: string | number | readonly string[]) => {
      out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value)
    },
    removeHeader: () => {},
    getHeader: () => undefined
  }
  helmet(options)({} as never, res as never, () => {})
  return out
}

/** Registers headers, CORS and the rate-limit store; returns the limiter for the auth hook. */
export async function registerSecurity(app: FastifyInstance, config: Config): Promise<Limiter> {
  const origins = config.corsOrigins
  // helmet's headers do not depend on the request: compute them once (the fastify plugin
  // rebuilds the whole middleware, CSP parsing included, on every request — 5% of CPU in a
  // single-event ingest profile) and set them in one call per answer.
  const headers = helmetHeaders({
    contentSecurityPolicy: { useDefaults: false, directives: CSP_DIRECTIVES },
    hsts: false,
    crossOriginResourcePolicy: { policy: origins.length > 0 ? 'cross-origin' : 'same-origin' }
  })
  // A callback hook, not an async one: no promise and no microtask hop per request.
  app.addHook('onRequest', (_request, reply, done) => {
    reply.headers(headers)
    done()
  })
  if (origins.length > 0) {
    await app.register(cors, {
      origin: origins.includes('*') ? '*' : [...origins],
      methods: ['GET', 'HEAD', 'POST', 'PATCH', 'DELETE'],
      allowedHeaders: ['content-type', 'content-encoding', 'x-api-key', 'x-llmscope-project'],
      exposedHeaders: EXPOSED_HEADERS,
      maxAge: 600
    })
  }

  const { max, windowMs, authFailureMax } = config.rateLimit
  if (max === 0 && authFailureMax === 0) return { key: () => NOT_LIMITED, failure: () => NOT_LIMITED }
  // global: false — no per-route hook; the auth hook calls the checks below itself, once it
  // knows whether the key is valid (that decides the bucket).
  await app.register(rateLimit, { global: false, max: Math.max(max, 1), timeWindow: windowMs, store: WindowStore })
  const byKey: Check | null =
    max === 0 ? null : app.createRateLimit({ max, timeWindow: windowMs, keyGenerator: (req) => `key:${req.apiKey?.id ?? clientAddress(req)}` })
  const byAddress: Check | null =
    authFailureMax === 0 ? null : app.createRateLimit({ max: authFailureMax, timeWindow: windowMs, keyGenerator: (req) => `anon:${clientAddress(req)}` })
  return {
    key: (request, entry) => {
      if (byKey === null) return NOT_LIMITED
      request.apiKey = entry
      return limit(byKey, request)
    },
    failure: (request) => (byAddress === null ? NOT_LIMITED : limit(byAddress, request))
  }
}

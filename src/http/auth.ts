/**
 * Auth: routes declare `config.scope` (`ingest`, `read` or `admin`); an onRequest hook checks
 * `X-API-Key` (or `?api_key=` where the route allows it: browsers cannot set WS headers).
 * 401 for a missing or unknown key, 403 for a key without the scope, 429 past a rate limit.
 *
 * onRequest runs before the body is read or parsed, so a refused request costs one SHA-256 and
 * a constant-time compare per known key — never a body parse or a log write. Rate limits are
 * checked here too (see security.ts): a valid key counts against its own bucket, a missing or
 * unknown one against the client address's failure bucket.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { llmsError } from '../errors.js'
import { allows, type KeyRing, type KeyEntry } from '../keys.js'
import type { Scope } from '../config.js'
import type { Limiter, LimitResult } from './security.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Scope a key needs for this route; absent = public. */
    scope?: Scope
    /** Accept the key as `?api_key=` too. */
    keyInQuery?: boolean
    /** Public even before recovery finished (health, ready, metrics). */
    alwaysOpen?: boolean
  }
  interface FastifyRequest {
    apiKey: KeyEntry | null
  }
}

function presentedKey(request: FastifyRequest, allowQuery: boolean): string | undefined {
  const header = request.headers['x-api-key']
  if (typeof header === 'string') return header
  if (allowQuery) {
    const q = request.query as Record<string, unknown> | undefined
    if (q !== undefined && typeof q.api_key === 'string') return q.api_key
  }
  return undefined
}

function rateLimited(r: LimitResult & { limited: true }, who: string) {
  return llmsError('LLMS_ERR_RATE_LIMITED', `rate limit exceeded for ${who}: at most ${r.max} requests per window; retry in ${r.retryAfterS} s`, {
    retryAfter: r.retryAfterS,
    details: [{ path: '(header) x-api-key', message: 'rate limited' }]
  })
}

export function registerAuth(app: FastifyInstance, keys: KeyRing, limiter?: Limiter): void {
  app.decorateRequest('apiKey', null)
  /** The outcome once the rate limit (if any) answered: an error, or null to let the request in. */
  const decide = (request: FastifyRequest, need: Scope, presented: string | undefined, entry: KeyEntry | null, r: LimitResult | null): Error | null => {
    if (r !== null && r.limited) return rateLimited(r, entry === null ? 'requests without a valid key from this address' : 'this key')
    if (presented === undefined) return llmsError('LLMS_ERR_UNAUTHORIZED', 'missing API key: send it in the X-API-Key header', { details: [{ path: '(header) x-api-key', message: 'required' }] })
    if (entry === null) return llmsError('LLMS_ERR_UNAUTHORIZED', 'invalid API key', { details: [{ path: '(header) x-api-key', message: 'not a known key' }] })
    if (!allows(entry.scope, need)) return llmsError('LLMS_ERR_FORBIDDEN', `this key has scope "${entry.scope}"; this route needs "${need}"`, { details: [{ path: '(header) x-api-key', message: `needs scope ${need}` }] })
    request.apiKey = entry
    return null
  }
  // A callback hook: with the rate limits off (or answering at once) a request pays no
  // promise and no microtask hop here.
  app.addHook('onRequest', (request, _reply, done) => {
    const cfg = request.routeOptions.config
    const need = cfg?.scope
    if (need === undefined) return done()
    const presented = presentedKey(request, cfg?.keyInQuery === true)
    const entry = presented === undefined ? null : keys.check(presented)
    const finish = (r: LimitResult | null) => {
      const err = decide(request, need, presented, entry, r)
      if (err === null) done()
      else done(err)
    }
    const r = limiter === undefined ? null : entry === null ? limiter.failure(request) : limiter.key(request, entry)
    if (r instanceof Promise) r.then(finish, done)
    else finish(r)
  })
}

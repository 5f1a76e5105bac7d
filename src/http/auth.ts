/**
 * Auth: routes declare `config.scope` (`ingest`, `read` or `admin`); an onRequest hook checks
 * `X-API-Key` (or `?api_key=` where the route allows it: browsers cannot set WS headers).
 * 401 for a missing or unknown key, 403 for a key without the scope.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { llmsError } from '../errors.js'
import { allows, type KeyRing, type KeyEntry } from '../keys.js'
import type { Scope } from '../config.js'

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

export function registerAuth(app: FastifyInstance, keys: KeyRing): void {
  app.decorateRequest('apiKey', null)
  app.addHook('onRequest', async (request) => {
    const cfg = request.routeOptions.config
    const need = cfg?.scope
    if (need === undefined) return
    const presented = presentedKey(request, cfg?.keyInQuery === true)
    if (presented === undefined) throw llmsError('LLMS_ERR_UNAUTHORIZED', 'missing API key: send it in the X-API-Key header', { details: [{ path: '(header) x-api-key', message: 'required' }] })
    const entry = keys.check(presented)
    if (entry === null) throw llmsError('LLMS_ERR_UNAUTHORIZED', 'invalid API key', { details: [{ path: '(header) x-api-key', message: 'not a known key' }] })
    if (!allows(entry.scope, need)) throw llmsError('LLMS_ERR_FORBIDDEN', `this key has scope "${entry.scope}"; this route needs "${need}"`, { details: [{ path: '(header) x-api-key', message: `needs scope ${need}` }] })
    request.apiKey = entry
  })
}

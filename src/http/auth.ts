/**
 * Auth: routes declare `config.scope` (`ingest`, `read`, `admin` or `owner`); an onRequest
 * hook checks `X-API-Key` (or `?api_key=` where the route allows it: browsers cannot set WS
 * headers) and decides the project the request acts in (README: Projects), `request.project`:
 *
 * - a project-bound key (`ingest`, `read`, `admin`) acts in its own project; naming another
 *   with `X-LLMScope-Project` or `?project=` is a 403 — whether that project exists or not, so
 *   a key learns nothing about other projects;
 * - an `owner` key acts in the project it names, `default` when it names none; 404 for a
 *   project that does not exist;
 * - a malformed project id is a 400; a key whose project was deleted is a 401, as an unknown
 *   key is (it stays refused until an owner creates the project again);
 * - routes with scope `owner` are instance-level (projects): the project header is not read.
 *
 * 401 for a missing or unknown key, 403 for a key without the scope, 429 past a rate limit.
 * onRequest runs before the body is read or parsed, so a refused request costs one SHA-256 and
 * a Map lookup — never a body parse or a log write. Rate limits are checked here too (see
 * security.ts): a valid key counts against its own bucket, a missing or unknown one against
 * the client address's failure bucket.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { llmsError } from '../errors.js'
import { allows, type KeyRing, type KeyEntry } from '../keys.js'
import { DEFAULT_PROJECT, PROJECT_ID_PATTERN, type Scope } from '../config.js'
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
    /**
     * The project the request acts in, set by the auth hook on every route with a `scope`
     * (on `owner` routes, which are instance-level: the owner key's default, `default`).
     * Empty on public routes.
     */
    project: string
  }
}

/** The header an owner key names a project with (`?project=` in a URL). */
export const PROJECT_HEADER = 'x-llmscope-project'

/** What auth needs to know of projects: whether one exists now (deleted ones do not). */
export interface ProjectDirectory {
  exists(id: string): boolean
}

export interface AuthOptions {
  keys: KeyRing
  projects: ProjectDirectory
  limiter?: Limiter
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

/**
 * The project a request names, or undefined; an Error for a malformed or contradictory one.
 * Either may name it; both, naming two different projects, is a 400.
 */
function namedProject(request: FastifyRequest): { id: string; path: string } | undefined | Error {
  const h = request.headers[PROJECT_HEADER]
  const q = (request.query as Record<string, unknown> | undefined)?.project
  const bad = (path: string, code: 'LLMS_ERR_VALIDATION' | 'LLMS_ERR_BAD_QUERY', message: string) => llmsError(code, `invalid project: ${message}`, { details: [{ path, message }] })
  const slug = `must be a project id (${PROJECT_ID_PATTERN.source})`
  let fromHeader: string | undefined
  if (h !== undefined) {
    if (typeof h !== 'string' || !PROJECT_ID_PATTERN.test(h)) return bad(`(header) ${PROJECT_HEADER}`, 'LLMS_ERR_VALIDATION', slug)
    fromHeader = h
  }
  if (q !== undefined) {
    if (typeof q !== 'string' || !PROJECT_ID_PATTERN.test(q)) return bad('(query) project', 'LLMS_ERR_BAD_QUERY', slug)
    if (fromHeader !== undefined && q !== fromHeader) return bad('(query) project', 'LLMS_ERR_BAD_QUERY', `names another project than the ${PROJECT_HEADER} header`)
    if (fromHeader === undefined) return { id: q, path: '(query) project' }
  }
  return fromHeader === undefined ? undefined : { id: fromHeader, path: `(header) ${PROJECT_HEADER}` }
}

export function registerAuth(app: FastifyInstance, opts: AuthOptions): void {
  const { keys, projects, limiter } = opts
  app.decorateRequest('apiKey', null)
  app.decorateRequest('project', '')
  /** The outcome once the rate limit (if any) answered: an error, or null to let the request in. */
  const decide = (request: FastifyRequest, need: Scope, presented: string | undefined, entry: KeyEntry | null, r: LimitResult | null): Error | null => {
    if (r !== null && r.limited) return rateLimited(r, entry === null ? 'requests without a valid key from this address' : 'this key')
    if (presented === undefined) return llmsError('LLMS_ERR_UNAUTHORIZED', 'missing API key: send it in the X-API-Key header', { details: [{ path: '(header) x-api-key', message: 'required' }] })
    if (entry === null) return llmsError('LLMS_ERR_UNAUTHORIZED', 'invalid API key', { details: [{ path: '(header) x-api-key', message: 'not a known key' }] })
    if (entry.project !== null && !projects.exists(entry.project)) {
      return llmsError('LLMS_ERR_UNAUTHORIZED', "invalid API key: its project was deleted", { details: [{ path: '(header) x-api-key', message: "the key's project was deleted" }] })
    }
    if (!allows(entry.scope, need)) return llmsError('LLMS_ERR_FORBIDDEN', `this key has scope "${entry.scope}"; this route needs "${need}"`, { details: [{ path: '(header) x-api-key', message: `needs scope ${need}` }] })
    if (need === 'owner') {
      request.project = entry.project ?? DEFAULT_PROJECT
    } else {
      const named = namedProject(request)
      if (named instanceof Error) return named
      if (entry.project !== null) {
        if (named !== undefined && named.id !== entry.project) {
          return llmsError('LLMS_ERR_FORBIDDEN', 'this key acts in one project only, and the request names another', { details: [{ path: named.path, message: "not this key's project" }] })
        }
        request.project = entry.project
      } else {
        const id = named?.id ?? DEFAULT_PROJECT
        if (!projects.exists(id)) {
          return llmsError('LLMS_ERR_NOT_FOUND', `project ${id} not found`, { details: [{ path: named?.path ?? `(header) ${PROJECT_HEADER}`, message: 'no such project' }] })
        }
        request.project = id
      }
    }
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

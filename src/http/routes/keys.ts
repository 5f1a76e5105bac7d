/**
 * API key administration (README: Projects): POST /keys makes a key and shows it once, GET /keys
 * lists keys without secrets, DELETE /keys/:id revokes one at once.
 *
 * Who may do what: an `owner` key manages keys of every project (and owner keys); a project
 * `admin` key manages the keys of its own project only — it never makes an `owner` key, never
 * names another project (403), and another project's key id answers 404, as if it did not
 * exist. Without `project` in the body, a key is made in the request's project (for an owner:
 * `X-LLMScope-Project`, else `default`).
 *
 * Keys from the configuration (LLMSCOPE_API_KEYS, or the generated `api-key` file) are listed
 * with `source: "config"` and cannot be revoked here: they live in the environment, so a
 * revoke would not survive a restart. DELETE on one answers 403 saying so.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { llmsError } from '../../errors.js'
import { zodDetails } from '../../events.js'
import { keyCreateSchema, MAX_API_KEYS, type ApiKeyStore } from '../../store/api-keys.js'
import type { KeyEntry, KeyRing } from '../../keys.js'
import type { ProjectDirectory } from '../auth.js'
import { z } from 'zod'
import { errorSchema, keyedErrors, withExamples } from '../openapi.js'
import type { Clock } from '../../clock.js'

export interface KeyRouteOptions {
  store: ApiKeyStore
  ring: KeyRing
  projects: ProjectDirectory
  clock: Clock
}

const keyInfoSchema = z.looseObject({ id: z.string(), name: z.string().nullable(), scope: z.string(), project: z.string().nullable(), source: z.string() })

export async function keyRoutes(app: FastifyInstance, opts: KeyRouteOptions): Promise<void> {
  const { store, ring, projects, clock } = opts
  const caller = (request: FastifyRequest): KeyEntry => request.apiKey!
  /** Whether the caller may see and manage a key acting in `project` (null: an owner key). */
  const manages = (request: FastifyRequest, project: string | null) => caller(request).scope === 'owner' || project === request.project

  // Documentation only (src/http/openapi.ts): the handlers validate.
  const tags = ['keys']
  app.post('/keys', {
    config: { scope: 'admin' },
    schema: {
      summary: 'Make an API key (shown once)',
      description: 'An owner key may make keys of any scope in any existing project; a project admin key makes `ingest`, `read` and `admin` keys in its own project only.',
      tags,
      body: withExamples(keyCreateSchema, [{ name: 'checkout service', scope: 'ingest' }]),
      response: { 201: keyInfoSchema.extend({ key: z.string() }).meta({ description: 'The key: `key` is shown this once' }), ...keyedErrors, 404: errorSchema }
    }
  }, async (request, reply) => {
    const r = keyCreateSchema.safeParse(request.body)
    if (!r.success) {
      const details = zodDetails(r.error.issues)
      throw llmsError('LLMS_ERR_VALIDATION', `invalid key request: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
    }
    const body = r.data
    let project: string | null
    if (caller(request).scope !== 'owner') {
      if (body.scope === 'owner') {
        throw llmsError('LLMS_ERR_FORBIDDEN', 'only an owner key may make owner keys', { details: [{ path: 'scope', message: 'needs an owner key' }] })
      }
      if (body.project !== undefined && body.project !== request.project) {
        throw llmsError('LLMS_ERR_FORBIDDEN', "a project admin key makes keys in its own project only", { details: [{ path: 'project', message: "not this key's project" }] })
      }
      project = request.project
    } else if (body.scope === 'owner') {
      if (body.project !== undefined) {
        throw llmsError('LLMS_ERR_VALIDATION', 'invalid key request: project: an owner key acts in every project; leave project out', { details: [{ path: 'project', message: 'an owner key has no project' }] })
      }
      project = null
    } else {
      project = body.project ?? request.project
      if (!projects.exists(project)) {
        throw llmsError('LLMS_ERR_NOT_FOUND', `project ${project} not found`, { details: [{ path: 'project', message: 'no such project' }] })
      }
    }
    if (store.countIn(project) >= MAX_API_KEYS) {
      throw llmsError('LLMS_ERR_VALIDATION', `at most ${MAX_API_KEYS} API keys ${project === null ? 'with scope owner' : `in project ${project}`}; revoke unused ones`, { details: [{ path: '(body)', message: 'too many keys' }] })
    }
    const { key, info } = await store.create({ scope: body.scope, project, name: body.name ?? null }, clock.now())
    reply.code(201).header('cache-control', 'no-store')
    return { ...info, key }
  })

  app.get('/keys', {
    config: { scope: 'admin' },
    schema: { summary: 'List API keys (without secrets)', description: 'An owner key sees every key; a project admin key the keys of its project.', tags, response: { 200: z.object({ keys: z.array(keyInfoSchema) }), ...keyedErrors, 404: errorSchema } }
  }, async (request) => {
    const owner = caller(request).scope === 'owner'
    return {
      keys: [
        ...ring.configured.filter((e) => owner || e.project === request.project).map((e) => ({ id: e.id, name: null, scope: e.scope, project: e.project, last4: null, created_at: null, source: 'config' as const })),
        ...store.list(owner ? undefined : request.project)
      ]
    }
  })

  app.delete<{ Params: { id: string } }>('/keys/:id', {
    config: { scope: 'admin' },
    schema: { summary: 'Revoke an API key at once', description: "Keys from the configuration cannot be revoked here (403). A project admin key revokes its project's keys only: another project's key answers 404.", tags, params: z.object({ id: z.string() }), response: { 204: z.undefined().meta({ description: 'Revoked' }), ...keyedErrors, 404: errorSchema } }
  }, async (request, reply) => {
    const id = request.params.id
    const notFound = () => llmsError('LLMS_ERR_NOT_FOUND', `key ${id.slice(0, 64)} not found`, { details: [{ path: '(params) id', message: 'no such key' }] })
    const configured = ring.configured.find((e) => e.id === id)
    if (configured !== undefined) {
      if (!manages(request, configured.project)) throw notFound()
      throw llmsError('LLMS_ERR_FORBIDDEN', `key ${id} comes from the configuration (LLMSCOPE_API_KEYS or the data dir's api-key file); remove it there and restart`, {
        details: [{ path: '(params) id', message: 'a configured key cannot be revoked through the API' }]
      })
    }
    const made = store.get(id)
    if (made === undefined || !manages(request, made.project)) throw notFound()
    if (!(await store.revoke(id))) throw notFound()
    reply.code(204)
  })
}

/**
 * API key administration (admin scope): POST /keys makes a key and shows it once, GET /keys
 * lists keys without secrets, DELETE /keys/:id revokes one at once.
 *
 * Keys from the configuration (LLMSCOPE_API_KEYS, or the generated `api-key` file) are listed
 * with `source: "config"` and cannot be revoked here: they live in the environment, so a
 * revoke would not survive a restart. DELETE on one answers 403 saying so.
 */
import type { FastifyInstance } from 'fastify'
import { llmsError } from '../../errors.js'
import { zodDetails } from '../../events.js'
import { keyCreateSchema, MAX_API_KEYS, type ApiKeyStore } from '../../store/api-keys.js'
import type { KeyRing } from '../../keys.js'
import { z } from 'zod'
import { errorSchema, keyedErrors, withExamples } from '../openapi.js'
import type { Clock } from '../../clock.js'

export async function keyRoutes(app: FastifyInstance, opts: { store: ApiKeyStore; ring: KeyRing; clock: Clock }): Promise<void> {
  const { store, ring, clock } = opts

  // Documentation only (src/http/openapi.ts): the handlers validate.
  const tags = ['keys']
  app.post('/keys', {
    config: { scope: 'admin' },
    schema: { summary: 'Make an API key (shown once)', tags, body: withExamples(keyCreateSchema, [{ name: 'checkout service', scope: 'ingest' }]), response: { 201: z.looseObject({ id: z.string(), name: z.string(), scope: z.string(), key: z.string() }).meta({ description: 'The key: `key` is shown this once' }), ...keyedErrors } }
  }, async (request, reply) => {
    const r = keyCreateSchema.safeParse(request.body)
    if (!r.success) {
      const details = zodDetails(r.error.issues)
      throw llmsError('LLMS_ERR_VALIDATION', `invalid key request: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
    }
    if (store.size >= MAX_API_KEYS) {
      throw llmsError('LLMS_ERR_VALIDATION', `at most ${MAX_API_KEYS} API keys; revoke unused ones`, { details: [{ path: '(body)', message: 'too many keys' }] })
    }
    const { key, info } = await store.create(r.data, clock.now())
    reply.code(201).header('cache-control', 'no-store')
    return { ...info, key }
  })

  app.get('/keys', { config: { scope: 'admin' }, schema: { summary: 'List API keys (without secrets)', tags, response: { 200: z.object({ keys: z.array(z.looseObject({ id: z.string(), scope: z.string(), source: z.string() })) }), ...keyedErrors } } }, async () => ({
    keys: [
      ...ring.configured.map((e) => ({ id: e.id, name: null, scope: e.scope, last4: null, created_at: null, source: 'config' as const })),
      ...store.list()
    ]
  }))

  app.delete<{ Params: { id: string } }>('/keys/:id', {
    config: { scope: 'admin' },
    schema: { summary: 'Revoke an API key at once', description: 'Keys from the configuration cannot be revoked here (403).', tags, params: z.object({ id: z.string() }), response: { 204: z.undefined().meta({ description: 'Revoked' }), ...keyedErrors, 404: errorSchema } }
  }, async (request, reply) => {
    const id = request.params.id
    if (ring.configured.some((e) => e.id === id)) {
      throw llmsError('LLMS_ERR_FORBIDDEN', `key ${id} comes from the configuration (LLMSCOPE_API_KEYS or the data dir's api-key file); remove it there and restart`, {
        details: [{ path: '(params) id', message: 'a configured key cannot be revoked through the API' }]
      })
    }
    if (!(await store.revoke(id))) {
      throw llmsError('LLMS_ERR_NOT_FOUND', `key ${id.slice(0, 64)} not found`, { details: [{ path: '(params) id', message: 'no such key' }] })
    }
    reply.code(204)
  })
}

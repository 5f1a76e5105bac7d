/** Alert rules CRUD: GET/POST /alerts/rules, GET/PATCH/DELETE /alerts/rules/:id. */
import type { FastifyInstance } from 'fastify'
import { MAX_RULES, ruleCreateSchema, rulePatchSchema } from '../../store/rules.js'
import { llmsError } from '../../errors.js'
import { zodDetails } from '../../events.js'
import type { Engine } from '../../engine.js'
import type { Clock } from '../../clock.js'

function parseBody<T>(schema: { safeParse(x: unknown): { success: true; data: T } | { success: false; error: { issues: Array<{ path: PropertyKey[]; message: string }> } } }, body: unknown): T {
  const r = schema.safeParse(body)
  if (r.success) return r.data
  const details = zodDetails(r.error.issues)
  throw llmsError('LLMS_ERR_VALIDATION', `invalid rule: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
}

export async function alertRoutes(app: FastifyInstance, opts: { engine: Engine; clock: Clock }): Promise<void> {
  const { engine, clock } = opts
  const rules = engine.rules
  const notFound = (id: string) => llmsError('LLMS_ERR_NOT_FOUND', `rule ${id} not found`, { details: [{ path: '(params) id', message: 'no such rule' }] })

  app.get('/alerts/rules', { config: { scope: 'read' } }, async () => ({ rules: rules.list() }))

  app.post('/alerts/rules', { config: { scope: 'admin' } }, async (request, reply) => {
    const input = parseBody(ruleCreateSchema, request.body)
    if (rules.size >= MAX_RULES) throw llmsError('LLMS_ERR_VALIDATION', `at most ${MAX_RULES} rules`, { details: [{ path: '(body)', message: 'too many rules' }] })
    const rule = await rules.create(input, clock.now())
    reply.code(201)
    return rule
  })

  app.get<{ Params: { id: string } }>('/alerts/rules/:id', { config: { scope: 'read' } }, async (request) => {
    const rule = rules.get(request.params.id)
    if (rule === undefined) throw notFound(request.params.id)
    return rule
  })

  app.patch<{ Params: { id: string } }>('/alerts/rules/:id', { config: { scope: 'admin' } }, async (request) => {
    if (rules.get(request.params.id) === undefined) throw notFound(request.params.id)
    const patch = parseBody(rulePatchSchema, request.body)
    const rule = await rules.update(request.params.id, patch, clock.now())
    if (rule === undefined) throw notFound(request.params.id)
    return rule
  })

  app.delete<{ Params: { id: string } }>('/alerts/rules/:id', { config: { scope: 'admin' } }, async (request, reply) => {
    if (!(await rules.remove(request.params.id))) throw notFound(request.params.id)
    reply.code(204)
  })
}

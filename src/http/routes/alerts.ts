/**
 * Alert rules CRUD: GET/POST /alerts/rules, GET/PATCH/DELETE /alerts/rules/:id;
 * POST /alerts/rules/:id/test (a test webhook); GET /alerts/events (the recorded history).
 */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { parseQuery, timeParam } from '../query.js'
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

/** Most alert events one request lists. */
export const MAX_EVENTS_LIMIT = 1000

const eventsQuery = z.strictObject({
  rule_id: z.string().min(1).max(64).optional(),
  since: timeParam.optional(),
  limit: z
    .string()
    .regex(/^\d{1,7}$/, 'must be an integer')
    .transform(Number)
    .pipe(z.number().int().min(1).max(MAX_EVENTS_LIMIT))
    .default(100),
  // Accepted and ignored: some clients put the key in the URL.
  api_key: z.string().optional()
})

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

  // A test notification: one attempt, not recorded in /alerts/events; the outcome is the answer.
  app.post<{ Params: { id: string } }>('/alerts/rules/:id/test', { config: { scope: 'admin' } }, async (request) => {
    const rule = rules.get(request.params.id)
    if (rule === undefined) throw notFound(request.params.id)
    const url = rule.webhook_url
    if (url === null) {
      throw llmsError('LLMS_ERR_VALIDATION', `rule ${rule.id} has no webhook_url to test`, { details: [{ path: 'webhook_url', message: 'is not set' }] })
    }
    const value = engine.topology.alerts.ruleStates().get(rule.id)?.lastValue ?? null
    const { payload, delivery } = await engine.alerting.test({ ...rule, webhook_url: url }, value)
    return { rule_id: rule.id, delivery, payload }
  })

  app.get('/alerts/events', { config: { scope: 'read' } }, async (request) => {
    const q = parseQuery(eventsQuery, request.query)
    return { events: engine.alertEvents.list({ ruleId: q.rule_id, since: q.since, limit: q.limit }) }
  })

  app.delete<{ Params: { id: string } }>('/alerts/rules/:id', { config: { scope: 'admin' } }, async (request, reply) => {
    if (!(await rules.remove(request.params.id))) throw notFound(request.params.id)
    reply.code(204)
  })
}

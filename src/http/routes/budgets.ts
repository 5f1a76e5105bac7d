/**
 * Budgets (DESIGN §8): GET/POST /budgets, GET/PATCH/DELETE /budgets/:id. Every answer carries
 * the current period's figures (src/budgets/evaluator.ts); a create or a change evaluates the
 * budget's thresholds at once, so one already reached fires without waiting for the tick.
 */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { budgetCreateSchema, budgetPatchSchema, MAX_BUDGETS } from '../../store/budgets.js'
import { llmsError } from '../../errors.js'
import { zodDetails } from '../../events.js'
import { budgetSchema, budgetsSchema, errorSchema, keyedErrors, withExamples } from '../openapi.js'
import type { Engine } from '../../engine.js'
import type { Clock } from '../../clock.js'

function parseBody<T>(schema: { safeParse(x: unknown): { success: true; data: T } | { success: false; error: { issues: Array<{ path: PropertyKey[]; message: string }> } } }, body: unknown): T {
  const r = schema.safeParse(body)
  if (r.success) return r.data
  const details = zodDetails(r.error.issues)
  throw llmsError('LLMS_ERR_VALIDATION', `invalid budget: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
}

export async function budgetRoutes(app: FastifyInstance, opts: { engine: Engine; clock: Clock }): Promise<void> {
  const { engine, clock } = opts
  const budgets = engine.budgets
  const evaluator = engine.budgetEvaluator
  /** The budget, when it belongs to the request's project (another project's id answers 404). */
  const budgetIn = (id: string, project: string) => {
    const b = budgets.get(id)
    return b !== undefined && b.project === project ? b : undefined
  }
  const notFound = (id: string) => llmsError('LLMS_ERR_NOT_FOUND', `budget ${id.slice(0, 64)} not found`, { details: [{ path: '(params) id', message: 'no such budget' }] })

  const tags = ['budgets']
  const idParams = z.object({ id: z.string().meta({ description: 'a budget id, bud_…' }) })
  const notFoundErrors = { ...keyedErrors, 404: errorSchema }

  app.get('/budgets', { config: { scope: 'read' }, schema: { summary: 'List budgets with their current period', tags, response: { 200: budgetsSchema, ...keyedErrors } } }, async (request) => {
    const out = []
    for (const b of budgets.listIn(request.project)) out.push(await evaluator.evaluate(b, { fire: false }))
    return { budgets: out }
  })

  app.post('/budgets', {
    config: { scope: 'admin' },
    schema: {
      summary: 'Create a budget',
      description:
        'A spending limit per day, week (from Monday) or month in `timezone` (IANA, default UTC), over the events matching `filters`, per `group_by` value when given. Each threshold (a fraction of `amount`) reached fires one alert event per period and group: in GET /alerts/events, on /ws and to `webhook_url`.',
      tags,
      body: withExamples(budgetCreateSchema, [{ name: 'Team spend', amount: 500, period: 'month', timezone: 'Europe/Berlin', filters: { 'metadata.team': 'search' }, thresholds: [0.5, 0.8, 1] }, { name: 'Per customer', amount: 20, period: 'day', group_by: 'user_id' }]),
      response: { 201: budgetSchema, ...keyedErrors }
    }
  }, async (request, reply) => {
    const input = parseBody(budgetCreateSchema, request.body)
    // Per project: one project cannot use up the others' budgets.
    if (budgets.countIn(request.project) >= MAX_BUDGETS) throw llmsError('LLMS_ERR_VALIDATION', `at most ${MAX_BUDGETS} budgets in a project`, { details: [{ path: '(body)', message: 'too many budgets' }] })
    const budget = await budgets.create(input, clock.now(), request.project)
    reply.code(201)
    return evaluator.evaluate(budget, { fire: true })
  })

  app.get<{ Params: { id: string } }>('/budgets/:id', { config: { scope: 'read' }, schema: { summary: 'Read a budget with its current period', tags, params: idParams, response: { 200: budgetSchema, ...notFoundErrors } } }, async (request) => {
    const b = budgetIn(request.params.id, request.project)
    if (b === undefined) throw notFound(request.params.id)
    return evaluator.evaluate(b, { fire: false })
  })

  app.patch<{ Params: { id: string } }>('/budgets/:id', {
    config: { scope: 'admin' },
    schema: { summary: 'Change a budget (any subset of its fields)', description: 'A threshold the changed budget has reached fires at once (once per period and group, as always).', tags, params: idParams, body: withExamples(budgetPatchSchema, [{ amount: 750 }]), response: { 200: budgetSchema, ...notFoundErrors } }
  }, async (request) => {
    if (budgetIn(request.params.id, request.project) === undefined) throw notFound(request.params.id)
    const patch = parseBody(budgetPatchSchema, request.body)
    const b = await budgets.update(request.params.id, patch, clock.now())
    if (b === undefined) throw notFound(request.params.id)
    return evaluator.evaluate(b, { fire: true })
  })

  app.delete<{ Params: { id: string } }>('/budgets/:id', {
    config: { scope: 'admin' },
    schema: { summary: 'Delete a budget', description: 'Its alert events stay in GET /alerts/events.', tags, params: idParams, response: { 204: z.undefined().meta({ description: 'Deleted' }), ...notFoundErrors } }
  }, async (request, reply) => {
    if (budgetIn(request.params.id, request.project) === undefined || !(await budgets.remove(request.params.id))) throw notFound(request.params.id)
    reply.code(204)
  })
}

/**
 * Alert rules CRUD: GET/POST /alerts/rules, GET/PATCH/DELETE /alerts/rules/:id;
 * POST /alerts/rules/:id/test (a test webhook); GET /alerts/events (the recorded history).
 */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { parseQuery, timeParam } from '../query.js'
import { MAX_RULES, ruleCreateSchema, rulePatchSchema, type Rule } from '../../store/rules.js'
import { llmsError } from '../../errors.js'
import { historyWindow } from '../../alerts/windows.js'
import { zodDetails } from '../../events.js'
import { alertEventsSchema, errorSchema, keyedErrors, ruleSchema, rulesSchema, ruleTestSchema, withExamples } from '../openapi.js'
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
  api_key: z.string().optional(),
  // An owner's project choice, for browsers (the auth hook reads it).
  project: z.string().optional()
})

const isoOrNull = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

const ruleStateSchema = z
  .looseObject({
    rule_id: z.string(),
    state: z.enum(['ok', 'firing', 'resolved', 'insufficient_history']),
    since: z.string().nullable(),
    value: z.number().nullable(),
    evaluated_at: z.string().nullable(),
    group_by: z.string().nullable(),
    groups: z.array(z.object({ group: z.string().nullable(), state: z.literal('firing'), since: z.string().nullable(), value: z.number().nullable(), last_notified_at: z.string().nullable() })).optional(),
    groups_capped: z.number().int().optional(),
    groups_without_baseline: z.number().int().optional()
  })
  .meta({ description: 'A rule\'s alert state' })

/**
 * Whether a baseline rule not evaluated yet lacks its history: the project has no event at or
 * before now − N days (what the evaluator will find on its first tick, asked now).
 */
async function lacksHistory(rule: Rule, engine: Engine, now: number): Promise<boolean> {
  const days = rule.baseline?.days
  if (days === undefined || engine.topology.alerts.historyKnown(rule.project ?? 'default', days)) return false
  const q = historyWindow(rule.project ?? 'default', now, days)
  return (await engine.analytics.metrics({ project: q.project, start: q.start, end: q.end })).totals.requests === 0
}

/**
 * GET /alerts/rules/:id/state: what the evaluator holds of the rule. A rule not evaluated yet
 * reads ok — or insufficient_history for a baseline rule whose project lacks the history.
 */
async function ruleStateAnswer(rule: Rule, engine: Engine, now: number) {
  const alerts = engine.topology.alerts
  if (rule.group_by != null) {
    const g = alerts.groupedState(rule.id)
    if (g === undefined && rule.enabled && (await lacksHistory(rule, engine, now))) {
      return { rule_id: rule.id, state: 'insufficient_history', since: null, value: null, evaluated_at: null, group_by: rule.group_by, groups: [], groups_capped: 0, groups_without_baseline: 0 }
    }
    const groups = (g?.groups ?? []).map((x) => ({ group: x.group, state: 'firing' as const, since: isoOrNull(x.since), value: x.lastValue, last_notified_at: isoOrNull(x.lastNotifiedAt) }))
    groups.sort((a, b) => (a.group === b.group ? 0 : a.group === null ? 1 : b.group === null ? -1 : a.group < b.group ? -1 : 1))
    const state = groups.length > 0 ? 'firing' : g?.insufficientHistory === true ? 'insufficient_history' : 'ok'
    return { rule_id: rule.id, state, since: null, value: null, evaluated_at: isoOrNull(g?.lastEvalAt ?? null), group_by: rule.group_by, groups, groups_capped: g?.capped ?? 0, groups_without_baseline: g?.groupsWithoutBaseline ?? 0 }
  }
  const s = engine.ruleState(rule.id)
  const base = s?.state ?? 'ok'
  const insufficient = s === undefined ? rule.enabled && (await lacksHistory(rule, engine, now)) : alerts.insufficientHistory(rule.id)
  const state = base !== 'firing' && rule.baseline != null && insufficient ? 'insufficient_history' : base
  return { rule_id: rule.id, state, since: isoOrNull(s?.since ?? null), value: s?.lastValue ?? null, evaluated_at: isoOrNull(s?.lastEvalAt ?? null), group_by: null }
}

export async function alertRoutes(app: FastifyInstance, opts: { engine: Engine; clock: Clock }): Promise<void> {
  const { engine, clock } = opts
  const rules = engine.rules
  /** The rule, when it belongs to the request's project (another project's id answers 404; README: Projects). */
  const ruleIn = (id: string, project: string) => {
    const rule = rules.get(id)
    return rule !== undefined && (rule.project ?? 'default') === project ? rule : undefined
  }
  const notFound = (id: string) => llmsError('LLMS_ERR_NOT_FOUND', `rule ${id} not found`, { details: [{ path: '(params) id', message: 'no such rule' }] })

  // The schemas below document the routes (src/http/openapi.ts); the handlers validate.
  const tags = ['alerts']
  const idParams = z.object({ id: z.string().meta({ description: 'a rule id, rule_…' }) })
  const notFoundErrors = { ...keyedErrors, 404: errorSchema }
  app.get('/alerts/rules', { config: { scope: 'read' }, schema: { summary: 'List alert rules', tags, response: { 200: rulesSchema, ...keyedErrors } } }, async (request) => ({ rules: rules.listIn(request.project) }))

  app.post('/alerts/rules', {
    config: { scope: 'admin' },
    schema: {
      summary: 'Create an alert rule',
      description: 'Conditions: cost_per_hour, avg_latency, p95_latency, error_rate, requests_per_minute, tokens_per_minute; the value over the last `window_seconds` is compared with `threshold`.',
      tags,
      body: withExamples(ruleCreateSchema, [{ name: 'High cost', condition: 'cost_per_hour', threshold: 10, enabled: true }]),
      response: { 201: ruleSchema, ...keyedErrors }
    }
  }, async (request, reply) => {
    const input = parseBody(ruleCreateSchema, request.body)
    // The cap counts per project: one project cannot use up the others' rules.
    if (rules.countIn(request.project) >= MAX_RULES) throw llmsError('LLMS_ERR_VALIDATION', `at most ${MAX_RULES} rules in a project`, { details: [{ path: '(body)', message: 'too many rules' }] })
    const rule = await rules.create(input, clock.now(), request.project)
    reply.code(201)
    return rule
  })

  app.get<{ Params: { id: string } }>('/alerts/rules/:id', { config: { scope: 'read' }, schema: { summary: 'Read an alert rule', tags, params: idParams, response: { 200: ruleSchema, ...notFoundErrors } } }, async (request) => {
    const rule = ruleIn(request.params.id, request.project)
    if (rule === undefined) throw notFound(request.params.id)
    return rule
  })

  app.patch<{ Params: { id: string } }>('/alerts/rules/:id', {
    config: { scope: 'admin' },
    schema: { summary: 'Change an alert rule (any subset of its fields)', tags, params: idParams, body: withExamples(rulePatchSchema, [{ enabled: false }]), response: { 200: ruleSchema, ...notFoundErrors } }
  }, async (request) => {
    if (ruleIn(request.params.id, request.project) === undefined) throw notFound(request.params.id)
    const patch = parseBody(rulePatchSchema, request.body)
    const rule = await rules.update(request.params.id, patch, clock.now())
    if (rule === undefined) throw notFound(request.params.id)
    return rule
  })

  // The rule's alert state as the evaluator holds it (README: Alert rules).
  app.get<{ Params: { id: string } }>('/alerts/rules/:id/state', {
    config: { scope: 'read' },
    schema: {
      summary: 'Read an alert rule\'s state',
      description: '`state`: ok, firing, resolved (≡ ok, it fired before) or insufficient_history (a baseline rule without N days of history, or whose baseline mean is 0: it cannot fire). A grouped rule lists its firing groups, `groups_capped` (groups past the 1,000 evaluated) and `groups_without_baseline`.',
      tags,
      params: idParams,
      response: { 200: ruleStateSchema, ...notFoundErrors }
    }
  }, async (request) => {
    const rule = ruleIn(request.params.id, request.project)
    if (rule === undefined) throw notFound(request.params.id)
    return ruleStateAnswer(rule, engine, clock.now())
  })

  // A test notification: one attempt, not recorded in /alerts/events; the outcome is the answer.
  app.post<{ Params: { id: string } }>('/alerts/rules/:id/test', {
    config: { scope: 'admin' },
    schema: { summary: 'Send a test notification to the rule\'s webhook', description: 'One attempt, not recorded; 200 whether or not it was delivered, 400 when the rule has no webhook_url.', tags, params: idParams, response: { 200: ruleTestSchema, ...notFoundErrors } }
  }, async (request) => {
    const rule = ruleIn(request.params.id, request.project)
    if (rule === undefined) throw notFound(request.params.id)
    const url = rule.webhook_url
    if (url === null) {
      throw llmsError('LLMS_ERR_VALIDATION', `rule ${rule.id} has no webhook_url to test`, { details: [{ path: 'webhook_url', message: 'is not set' }] })
    }
    const value = engine.ruleState(rule.id)?.lastValue ?? null
    const { payload, delivery } = await engine.alerting.test({ ...rule, webhook_url: url }, value)
    return { rule_id: rule.id, delivery, payload }
  })

  app.get('/alerts/events', {
    config: { scope: 'read' },
    schema: { summary: 'History of alert firings and resolutions, newest first', tags, querystring: eventsQuery, response: { 200: alertEventsSchema, ...keyedErrors } }
  }, async (request) => {
    const q = parseQuery(eventsQuery, request.query)
    return { events: engine.alertEvents.list({ ruleId: q.rule_id, since: q.since, limit: q.limit, project: request.project }) }
  })

  app.delete<{ Params: { id: string } }>('/alerts/rules/:id', {
    config: { scope: 'admin' },
    schema: { summary: 'Delete an alert rule', description: 'A firing rule is resolved first (reason rule_deleted).', tags, params: idParams, response: { 204: z.undefined().meta({ description: 'Deleted' }), ...notFoundErrors } }
  }, async (request, reply) => {
    if (ruleIn(request.params.id, request.project) === undefined || !(await rules.remove(request.params.id))) throw notFound(request.params.id)
    reply.code(204)
  })
}

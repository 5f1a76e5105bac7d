/**
 * DELETE /events (admin): deletes the request's project's events matching the filters
 * (DESIGN §7; the protocol is in src/forget.ts) and answers `{"deleted": N}` once they are
 * gone everywhere. GET /events/deletes (read): the project's running and recent deletes with
 * their progress — counts and times only, never the filters.
 */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { checkRange, filterShape, parseQuery, parseWithFilters, rangeShape } from '../query.js'
import { errorSchema, keyedErrors } from '../openapi.js'
import { FORGET_FILTERS, filterNames, noFilterError } from '../../forget.js'
import type { RangeQuery } from '../../queries.js'
import type { Engine } from '../../engine.js'

const forgetQuery = z.looseObject({
  ...rangeShape,
  ...filterShape
})

/** The delete's range and filters, or a 400 naming each bad parameter (or the missing filter). */
export function parseForgetQuery(query: unknown, project: string): RangeQuery {
  const { q, filters } = parseWithFilters(forgetQuery, query)
  const start = q.start_time ?? -Infinity
  const end = q.end_time ?? Infinity
  checkRange(start, end)
  const range: RangeQuery = { ...filters, start, end, models: q.model, providers: q.provider, project }
  if (filterNames(range).length === 0) throw noFilterError()
  return range
}

const deletedSchema = z.object({ deleted: z.number().int() }).meta({ description: 'Every matching event is gone: from search, export, GET /events/:id, since_seq replays, every analytics figure and the log', examples: [{ deleted: 97 }] })
const deleteStatusSchema = z.object({
  id: z.string(),
  project: z.string(),
  state: z.enum(['running', 'finishing', 'done', 'failed']),
  matched: z.number().int(),
  deleted: z.number().int(),
  started_at: z.string(),
  finished_at: z.string().nullable()
})
const deletesSchema = z.object({ deletes: z.array(deleteStatusSchema) })

export async function forgetRoutes(app: FastifyInstance, opts: { engine: Engine }): Promise<void> {
  const { engine } = opts

  app.delete('/events', {
    config: { scope: 'admin' },
    schema: {
      summary: 'Delete the events matching the filters',
      description: `At least one filter other than time is required (${FORGET_FILTERS.join(', ')}); \`start_time\`/\`end_time\` narrow it, half-open. Answers once the events are gone from every answer, from memory, the snapshot and the log. Events accepted after the request arrived are not matched. Progress: GET /events/deletes.`,
      tags: ['events'],
      querystring: forgetQuery,
      response: { 200: deletedSchema, ...keyedErrors, 500: errorSchema }
    }
  }, async (request) => {
    const q = parseForgetQuery(request.query, request.project)
    return engine.forgetEvents(request.project, q)
  })

  app.get('/events/deletes', {
    config: { scope: 'read' },
    schema: {
      summary: 'Running and recent deletes of events, with progress',
      description: 'The project\'s deletes, newest first: `matched` events found so far, `deleted` of them gone from every answer; the filters are never shown.',
      tags: ['events'],
      querystring: z.strictObject({ api_key: z.string().optional(), project: z.string().optional() }),
      response: { 200: deletesSchema, ...keyedErrors }
    }
  }, async (request) => {
    parseQuery(z.strictObject({ api_key: z.string().optional(), project: z.string().optional() }), request.query)
    return { deletes: engine.deletes.list(request.project) }
  })
}

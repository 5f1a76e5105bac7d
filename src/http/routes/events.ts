/** POST /events/ingest, POST /events/batch (JSON array or NDJSON), GET /events/:id. */
import type { FastifyInstance } from 'fastify'
import { eventSchema, pendingBatch, pendingOne, toPublic } from '../../events.js'
import { llmsError } from '../../errors.js'
import type { Engine } from '../../engine.js'
import type { Clock } from '../../clock.js'

/** Parses an NDJSON body into an array; a bad line is a 400 naming its line number. */
export function parseNdjson(body: string, maxItems: number): unknown[] {
  const out: unknown[] = []
  let line = 0
  let pos = 0
  while (pos <= body.length) {
    let nl = body.indexOf('\n', pos)
    if (nl === -1) nl = body.length
    line++
    const text = body.slice(pos, nl).trim()
    pos = nl + 1
    if (text === '') continue
    if (out.length >= maxItems) {
      throw llmsError('LLMS_ERR_BATCH_TOO_LARGE', `a batch holds at most ${maxItems} events`, { details: [{ path: `line ${line}`, message: `more than ${maxItems} events` }] })
    }
    try {
      out.push(JSON.parse(text))
    } catch (err) {
      throw llmsError('LLMS_ERR_BAD_JSON', `line ${line} (event index ${out.length}) is not valid JSON: ${(err as Error).message}`, { details: [{ path: `[${out.length}]`, message: `line ${line} is not valid JSON` }] })
    }
  }
  return out
}

export async function eventRoutes(app: FastifyInstance, opts: { engine: Engine; clock: Clock }): Promise<void> {
  const { engine, clock } = opts
  const limits = engine.config.metadata
  const schema = eventSchema(limits)
  const maxBatch = engine.config.maxBatch
  const infer = (m: string) => engine.inferProvider(m)

  app.addContentTypeParser('application/x-ndjson', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, parseNdjson(body as string, maxBatch))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  app.post('/events/ingest', { config: { scope: 'ingest' } }, async (request, reply) => {
    if (request.body === null || typeof request.body !== 'object' || Array.isArray(request.body)) {
      throw llmsError('LLMS_ERR_VALIDATION', 'body must be one JSON event object (send arrays to /events/batch)', { details: [{ path: '(body)', message: 'expected an object' }] })
    }
    const [stored] = await engine.ingest([pendingOne(schema, limits, request.body, clock.now(), infer)])
    reply.code(202)
    return { status: 'accepted', event_id: stored.id }
  })

  app.post('/events/batch', { config: { scope: 'ingest' } }, async (request, reply) => {
    const body = request.body
    if (!Array.isArray(body)) {
      throw llmsError('LLMS_ERR_VALIDATION', 'body must be a JSON array of events or NDJSON (application/x-ndjson)', { details: [{ path: '(body)', message: 'expected an array' }] })
    }
    if (body.length === 0) throw llmsError('LLMS_ERR_VALIDATION', 'batch is empty', { details: [{ path: '(body)', message: 'expected at least one event' }] })
    if (body.length > maxBatch) {
      throw llmsError('LLMS_ERR_BATCH_TOO_LARGE', `a batch holds at most ${maxBatch} events, got ${body.length}`, { details: [{ path: '(body)', message: `more than ${maxBatch} events` }] })
    }
    const stored = await engine.ingest(pendingBatch(schema, limits, body, clock.now(), infer))
    reply.code(202)
    return { status: 'accepted', accepted: stored.length, event_ids: stored.map((e) => e.id) }
  })

  app.get<{ Params: { id: string } }>('/events/:id', { config: { scope: 'read' } }, async (request) => {
    const e = engine.getEvent(request.params.id)
    if (e === undefined) throw llmsError('LLMS_ERR_NOT_FOUND', `event ${request.params.id} not found`, { details: [{ path: '(params) id', message: 'no such event' }] })
    return toPublic(e)
  })
}

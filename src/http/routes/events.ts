/** POST /events/ingest, POST /events/batch (JSON array or NDJSON), GET /events/:id. */
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { acceptedBatchSchema, acceptedOneSchema, errorSchema, keyedErrors, storedEventSchema, withExamples } from '../openapi.js'
import { eventSchema, pendingBatch, pendingOne, toPublic } from '../../events.js'
import { llmsError } from '../../errors.js'
import { ingestLogLevel } from '../metrics.js'
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
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (err) {
      throw llmsError('LLMS_ERR_BAD_JSON', `line ${line} (event index ${out.length}) is not valid JSON: ${(err as Error).message}`, { details: [{ path: `[${out.length}]`, message: `line ${line} is not valid JSON` }] })
    }
    // As fastify's JSON parser does for JSON bodies: a line that could poison a prototype is
    // refused (the cheap text check keeps the walk off the common path).
    if ((text.includes('__proto__') || text.includes('constructor') || text.includes('\\u')) && hasPoisonKey(value)) {
      throw llmsError('LLMS_ERR_BAD_JSON', `line ${line} (event index ${out.length}) has a forbidden "__proto__" or "constructor.prototype" key`, { details: [{ path: `[${out.length}]`, message: `line ${line} has a forbidden prototype key` }] })
    }
    out.push(value)
  }
  return out
}

/**
 * Whether a parsed JSON value has a `__proto__` key, or a `constructor` object with a
 * `prototype` key, at any depth. Iterative: a hostile line may nest deeper than the stack.
 */
function hasPoisonKey(root: unknown): boolean {
  const stack: unknown[] = [root]
  while (stack.length > 0) {
    const v = stack.pop()
    if (v === null || typeof v !== 'object') continue
    if (Array.isArray(v)) {
      for (const item of v) stack.push(item)
      continue
    }
    for (const k of Object.keys(v)) {
      const child = (v as Record<string, unknown>)[k]
      if (k === '__proto__') return true
      if (k === 'constructor' && child !== null && typeof child === 'object' && Object.prototype.hasOwnProperty.call(child, 'prototype')) return true
      stack.push(child)
    }
  }
  return false
}

export async function eventRoutes(app: FastifyInstance, opts: { engine: Engine; clock: Clock }): Promise<void> {
  const { engine, clock } = opts
  const limits = engine.config.metadata
  const schema = eventSchema(limits)
  const maxBatch = engine.config.maxBatch
  const infer = (m: string) => engine.inferProvider(m)
  const logLevel = ingestLogLevel(app.log.level)

  app.addContentTypeParser('application/x-ndjson', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, parseNdjson(body as string, maxBatch))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  // The schemas below document the routes (src/http/openapi.ts); the handlers validate.
  const oneExample = { model: 'gpt-4', provider: 'openai', prompt_tokens: 150, completion_tokens: 50, latency_ms: 1200, metadata: { user_id: 'u_123' } }
  const batchExample = [
    { model: 'gpt-4o', prompt_tokens: 1200, completion_tokens: 300, cached_tokens: 1000, latency_ms: 900 },
    { model: 'claude-3-5-sonnet-20241022', prompt_tokens: 200, completion_tokens: 80, latency_ms: 1500 }
  ]
  const ingestSchema = {
    summary: 'Send one event',
    description: 'Answers 202 only after the event is committed to the log. Unknown fields are refused (400).',
    tags: ['events'],
    body: withExamples(schema, [oneExample]),
    response: { 202: acceptedOneSchema, ...keyedErrors, 413: errorSchema, 415: errorSchema }
  }
  const batchSchema = {
    summary: 'Send a batch of events (all or nothing)',
    description: `A JSON array, or NDJSON (\`application/x-ndjson\`, one event per line), of up to ${maxBatch} events. One bad event fails the whole batch with a 400 naming its index (\`[2].prompt_tokens\`); nothing of it is stored.`,
    tags: ['events'],
    consumes: ['application/json', 'application/x-ndjson'],
    body: withExamples(z.array(schema).min(1).max(maxBatch), [batchExample]),
    response: { 202: acceptedBatchSchema, ...keyedErrors, 413: errorSchema, 415: errorSchema }
  }
  const getSchema = {
    summary: 'Read a stored event with its cost',
    tags: ['events'],
    params: z.object({ id: z.string().meta({ description: 'an event id, evt_…', examples: ['evt_0_V1StGXR8_Z5j'] }) }),
    response: { 200: storedEventSchema, ...keyedErrors, 404: errorSchema }
  }

  app.post('/events/ingest', { config: { scope: 'ingest' }, logLevel, schema: ingestSchema }, async (request, reply) => {
    if (request.body === null || typeof request.body !== 'object' || Array.isArray(request.body)) {
      throw llmsError('LLMS_ERR_VALIDATION', 'body must be one JSON event object (send arrays to /events/batch)', { details: [{ path: '(body)', message: 'expected an object' }] })
    }
    const [stored] = await engine.ingest([pendingOne(schema, limits, request.body, clock.now(), infer)])
    reply.code(202)
    return { status: 'accepted', event_id: stored.id }
  })

  app.post('/events/batch', { config: { scope: 'ingest' }, logLevel, schema: batchSchema }, async (request, reply) => {
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

  app.get<{ Params: { id: string } }>('/events/:id', { config: { scope: 'read' }, schema: getSchema }, async (request) => {
    const e = engine.getEvent(request.params.id)
    if (e === undefined) throw llmsError('LLMS_ERR_NOT_FOUND', `event ${request.params.id} not found`, { details: [{ path: '(params) id', message: 'no such event' }] })
    return toPublic(e)
  })
}

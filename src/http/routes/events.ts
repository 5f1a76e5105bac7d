/**
 * POST /events/ingest, POST /events/batch (JSON array or NDJSON), GET /events/:id, and
 * GET /events: search with the §6 filters, a range, a sort and a cursor, or with
 * `format=ndjson|csv` (or an Accept header) the export of every match (src/http/export.ts).
 */
import type { FastifyInstance } from 'fastify'
import secureJson from 'secure-json-parse'
import { z } from 'zod'
import { acceptedBatchSchema, acceptedOneSchema, errorSchema, eventsPageSchema, keyedErrors, storedEventSchema, withExamples } from '../openapi.js'
import { countDuplicates, eventSchema, pendingBatch, pendingOne, toPublic, type PricedEvent } from '../../events.js'
import { llmsError } from '../../errors.js'
import { checkRange, filterShape, parseWithFilters, rangeShape } from '../query.js'
import { SEARCH_SORTS } from '../../analytics/search.js'
import { decodeCursor, encodeCursor, priceEpoch, repricedCheck } from '../cursor.js'
import { EXPORT_FORMATS, EXPORT_TYPES, exportFilename, exportStream, type ExportFormat } from '../export.js'
import type { RangeQuery } from '../../queries.js'
import { ingestLogLevel } from '../metrics.js'
import { bodyLimits } from '../body-limits.js'
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
      // fastify's own parser for JSON bodies (secure-json-parse): a line with a `__proto__` key
      // or a `constructor.prototype`, escaped or not, at any depth, is refused like bad JSON.
      value = secureJson.parse(text)
    } catch {
      throw lineError(text, line, out.length)
    }
    out.push(value)
  }
  return out
}

/** The 400 for an NDJSON line secure-json-parse refused: bad JSON, or a prototype key. */
function lineError(text: string, line: number, index: number): Error {
  try {
    JSON.parse(text)
  } catch (err) {
    return llmsError('LLMS_ERR_BAD_JSON', `line ${line} (event index ${index}) is not valid JSON: ${(err as Error).message}`, { details: [{ path: `[${index}]`, message: `line ${line} is not valid JSON` }] })
  }
  return llmsError('LLMS_ERR_BAD_JSON', `line ${line} (event index ${index}) has a forbidden "__proto__" or "constructor.prototype" key`, { details: [{ path: `[${index}]`, message: `line ${line} has a forbidden prototype key` }] })
}

/**
 * `GET /events`'s own parameters; every other one must be a §6 filter (queryFilters). The
 * dimension filters are listed for the API documentation only (queryFilters parses them, with
 * `metadata.KEY`, which no schema can list), as the analytics routes do.
 */
const searchQuery = z.looseObject({
  ...rangeShape,
  ...filterShape,
  limit: z.coerce.number().int().min(1).max(1000).default(50).meta({ description: 'events per page (an export ignores it: it streams every match)' }),
  cursor: z.string().optional().meta({ description: 'the `next_cursor` of the previous page (same filters, range and sort)' }),
  sort: z.enum(SEARCH_SORTS as [string, ...string[]]).default('time').meta({ description: 'time: newest event time first; latency, cost: largest first; ties by newer id first' }),
  format: z.enum(EXPORT_FORMATS as [string, ...string[]]).optional().meta({ description: 'export every match as a download (also `Accept: application/x-ndjson` or `text/csv`)' })
})

/** The export format an Accept header asks for (the first of ours it names), or null for JSON. */
export function acceptedFormat(accept: string | undefined): ExportFormat | null {
  if (accept === undefined) return null
  for (const part of accept.split(',')) {
    const type = part.split(';')[0].trim().toLowerCase()
    if (type === 'application/json') return null
    for (const f of EXPORT_FORMATS) if (type === EXPORT_TYPES[f]) return f
  }
  return null
}

/** Hits per search call of an export: a time walk stops at its page; latency/cost pages each read the whole range. */
const EXPORT_PAGE = { time: 20_000, latency: 50_000, cost: 50_000 } as const
/**
 * Events per log read of an export: with events ingested out of time order, a page's events
 * lie in many records, each read once per batch, so larger batches read fewer records per
 * event; an export holds one batch's lines (~600 bytes an event). 20,000 against 5,000, when
 * batches still held their decoded events: an export of 300,000 events in random time order
 * went from 93,000–100,000 to 103,000–121,000 events/s (/tmp script); bench/RESULTS.md has the
 * bench with lines kept instead.
 */
const EXPORT_READ_BATCH = 20_000

export async function eventRoutes(app: FastifyInstance, opts: { engine: Engine; clock: Clock }): Promise<void> {
  const { engine, clock } = opts
  const limits = engine.config.metadata
  const schema = eventSchema(limits)
  const maxBatch = engine.config.maxBatch
  const infer = (m: string) => engine.inferProvider(m)
  const logLevel = ingestLogLevel(app.log.level)
  // Each route's own limit: a single event is refused unread past what one valid event can be.
  const routeLimits = bodyLimits(engine.config)

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

  app.post('/events/ingest', { config: { scope: 'ingest' }, logLevel, bodyLimit: routeLimits.event, schema: ingestSchema }, async (request, reply) => {
    if (request.body === null || typeof request.body !== 'object' || Array.isArray(request.body)) {
      throw llmsError('LLMS_ERR_VALIDATION', 'body must be one JSON event object (send arrays to /events/batch)', { details: [{ path: '(body)', message: 'expected an object' }] })
    }
    const [stored] = await engine.ingest([pendingOne(schema, limits, request.body, clock.now(), infer, request.project)])
    reply.code(202)
    return { status: 'accepted', event_id: stored.id }
  })

  app.post('/events/batch', { config: { scope: 'ingest' }, logLevel, bodyLimit: routeLimits.batch, schema: batchSchema }, async (request, reply) => {
    const body = request.body
    if (!Array.isArray(body)) {
      throw llmsError('LLMS_ERR_VALIDATION', 'body must be a JSON array of events or NDJSON (application/x-ndjson)', { details: [{ path: '(body)', message: 'expected an array' }] })
    }
    if (body.length === 0) throw llmsError('LLMS_ERR_VALIDATION', 'batch is empty', { details: [{ path: '(body)', message: 'expected at least one event' }] })
    if (body.length > maxBatch) {
      throw llmsError('LLMS_ERR_BATCH_TOO_LARGE', `a batch holds at most ${maxBatch} events, got ${body.length}`, { details: [{ path: '(body)', message: `more than ${maxBatch} events` }] })
    }
    const stored = await engine.ingest(pendingBatch(schema, limits, body, clock.now(), infer, request.project))
    reply.code(202)
    // A duplicate (its id accepted before, DESIGN §7) answers its original's id and is not counted as accepted.
    const duplicates = countDuplicates(stored)
    return { status: 'accepted', accepted: stored.length - duplicates, event_ids: stored.map((e) => e.id), duplicates }
  })

  app.get('/events', {
    config: { scope: 'read' },
    schema: {
      summary: 'Find events (filters, range, sort, cursor) or export every match',
      description:
        'Half-open `[start_time, end_time)` on the event\'s own timestamp, the dimension filters of the analytics routes (`metadata.KEY=value` included). ' +
        'Pages of `limit` events in the `sort` order with `next_cursor`; no event that existed at the first page is skipped or repeated while events arrive. ' +
        'With `format=ndjson|csv` (or `Accept: application/x-ndjson` / `text/csv`) every match is streamed as an attachment.',
      tags: ['events'],
      querystring: searchQuery,
      produces: ['application/json', 'application/x-ndjson', 'text/csv'],
      response: { 200: eventsPageSchema, ...keyedErrors }
    }
  }, async (request, reply) => {
    const { q: p, filters } = parseWithFilters(searchQuery, request.query)
    const start = p.start_time ?? -Infinity
    const end = p.end_time ?? Infinity
    checkRange(start, end)
    const range: RangeQuery = { ...filters, start, end, models: p.model, providers: p.provider, project: request.project }
    const sort = p.sort as (typeof SEARCH_SORTS)[number]
    const after = p.cursor === undefined ? null : decodeCursor(p.cursor, range, sort, repricedCheck(engine.book, range))
    // Before the page is read: a re-pricing landing meanwhile makes its next page a 409, never a silent skip.
    const epoch = priceEpoch(engine.book, range)
    const format = (p.format as ExportFormat | undefined) ?? acceptedFormat(request.headers.accept)
    const own = (e: PricedEvent | undefined): e is PricedEvent => e !== undefined && e.project === request.project

    if (format === null) {
      // One hit more than the page: whether a next page exists (no empty last page).
      const hits = await engine.analytics.search(range, sort, after, p.limit + 1)
      const page = hits.slice(0, p.limit)
      const events = await engine.eventsBySeq(page.map((h) => h.seq))
      const last = page[page.length - 1]
      return { events: events.filter(own).map(toPublic), next_cursor: hits.length > p.limit ? encodeCursor(range, sort, last, epoch) : null }
    }

    const pageSize = EXPORT_PAGE[sort]
    // The first page before any byte: a failure there is still a proper error answer.
    const first = await engine.analytics.search(range, sort, after, pageSize)
    const body = exportStream(
      { search: (a, limit) => engine.analytics.search(range, sort, a, limit), each: (seqs, visit) => engine.eachEventBySeq(seqs, visit) },
      // Events read in batches of a whole time page: a record is read once per batch, and with
      // events ingested out of time order a page's events are spread over many records.
      { format, project: request.project, pageSize, first, readBatch: EXPORT_READ_BATCH }
    )
    reply
      .header('content-type', `${EXPORT_TYPES[format]}; charset=utf-8`)
      .header('content-disposition', `attachment; filename="${exportFilename(request.project, clock.now(), format)}"`)
      .header('cache-control', 'no-store')
    return reply.send(body)
  })

  app.get<{ Params: { id: string } }>('/events/:id', { config: { scope: 'read' }, schema: getSchema }, async (request) => {
    const found = await engine.getEvent(request.params.id)
    // Another project's event answers as if it did not exist (README: Projects).
    const e = found?.project === request.project ? found : undefined
    if (e === undefined) throw llmsError('LLMS_ERR_NOT_FOUND', `event ${request.params.id} not found`, { details: [{ path: '(params) id', message: 'no such event' }] })
    return toPublic(e)
  })
}

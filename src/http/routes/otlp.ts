/**
 * POST /v1/traces — the OTLP/HTTP trace receiver. GenAI spans become events; everything else is
 * counted and dropped.
 *
 * - `application/json` (OTLP/JSON) answers JSON, `application/x-protobuf` answers protobuf.
 * - `Content-Encoding: gzip` is accepted; the inflated body is bounded by the same body limit as
 *   the compressed one (413 beyond), so a small bomb cannot grow memory.
 * - 200 with an empty ExportTraceServiceResponse when every span was taken or ignored; with
 *   `partialSuccess { rejectedSpans, errorMessage }` when some GenAI spans were invalid. Per the
 *   OTLP spec the sender must not retry those. A request that is not an export request at all
 *   is a 400; the pipeline being overloaded is a 503 with Retry-After, which OTLP exporters
 *   retry.
 * - All events of one request are committed together (one engine.ingest call, one commit).
 */
import { gunzip } from 'node:zlib'
import { errorCodes, type FastifyInstance } from 'fastify'
import { countDuplicates, eventSchema } from '../../events.js'
import { llmsError } from '../../errors.js'
import { decodeTraceRequest, encodeTraceResponse } from '../../otlp/proto.js'
import { otlpToPending } from '../../otlp/ingest.js'
import { otlpStats } from '../../otlp/stats.js'
import { errorSchema, keyedErrors, otlpRequestSchema, otlpResponseSchema } from '../openapi.js'
import { ingestLogLevel } from '../metrics.js'
import { bodyLimits } from '../body-limits.js'
import type { Engine } from '../../engine.js'
import type { Clock } from '../../clock.js'

const JSON_TYPE = 'application/json'
const PROTOBUF_TYPE = 'application/x-protobuf'

/** Inflates a gzip body up to `limit` bytes; identity passes through; other codings are a 415. */
export function decodeContent(body: Buffer, encoding: string | undefined, limit: number): Promise<Buffer> {
  const coding = (encoding ?? '').trim().toLowerCase()
  if (coding === '' || coding === 'identity') return Promise.resolve(body)
  if (coding !== 'gzip' && coding !== 'x-gzip') {
    return Promise.reject(new errorCodes.FST_ERR_CTP_INVALID_MEDIA_TYPE(`Content-Encoding ${coding.slice(0, 32)} (only gzip is accepted)`))
  }
  return new Promise((resolve, reject) => {
    gunzip(body, { maxOutputLength: limit }, (err, out) => {
      if (err === null) return resolve(out)
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) return reject(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE())
      reject(llmsError('LLMS_ERR_VALIDATION', `body is not valid gzip: ${err.message}`, { details: [{ path: '(body)', message: 'invalid gzip' }] }))
    })
  })
}

/** Parses an (inflated) OTLP body of either encoding into plain objects. */
function parseBody(raw: Buffer, protobuf: boolean): unknown {
  if (protobuf) {
    try {
      return decodeTraceRequest(raw)
    } catch (err) {
      throw llmsError('LLMS_ERR_VALIDATION', `body is not a protobuf ExportTraceServiceRequest: ${(err as Error).message}`, { details: [{ path: '(body)', message: 'invalid protobuf' }] })
    }
  }
  if (raw.length === 0) throw llmsError('LLMS_ERR_BAD_JSON', 'body is empty: send an OTLP/JSON ExportTraceServiceRequest', { details: [{ path: '(body)', message: 'empty' }] })
  try {
    return JSON.parse(raw.toString('utf8'))
  } catch (err) {
    throw llmsError('LLMS_ERR_BAD_JSON', `body is not valid JSON: ${(err as Error).message}`, { details: [{ path: '(body)', message: 'invalid JSON' }] })
  }
}

export async function otlpRoutes(app: FastifyInstance, opts: { engine: Engine; clock: Clock }): Promise<void> {
  const { engine, clock } = opts
  const limits = engine.config.metadata
  const schema = eventSchema(limits)
  const bodyLimit = bodyLimits(engine.config).otlp
  const maxBatch = engine.config.maxBatch
  const stats = otlpStats(engine)
  const inferProvider = (m: string) => engine.inferProvider(m)

  // This plugin is encapsulated: the raw-buffer parsers below replace the JSON parser for its
  // routes only (gzip must be undone before JSON.parse, and protobuf is binary).
  app.removeContentTypeParser(JSON_TYPE)
  app.addContentTypeParser([JSON_TYPE, PROTOBUF_TYPE], { parseAs: 'buffer' }, (_request, body, done) => done(null, body))

  // Documentation only (src/http/openapi.ts): the body is parsed by hand (JSON or protobuf).
  const docs = {
    summary: 'OTLP/HTTP trace receiver',
    description: 'Point an OpenTelemetry exporter here (http/json or http/protobuf; gzip allowed). GenAI spans become events, priced like any other; other spans are counted and dropped. The answer uses the request\'s encoding.',
    tags: ['otlp'],
    consumes: [JSON_TYPE, PROTOBUF_TYPE],
    body: otlpRequestSchema,
    response: { 200: otlpResponseSchema, ...keyedErrors, 413: errorSchema, 415: errorSchema }
  }
  app.post('/v1/traces', { config: { scope: 'ingest' }, logLevel: ingestLogLevel(app.log.level), bodyLimit, schema: docs }, async (request, reply) => {
    const protobuf = (request.headers['content-type'] ?? '').toLowerCase().startsWith(PROTOBUF_TYPE)
    let batch
    try {
      const raw = await decodeContent(request.body as Buffer, request.headers['content-encoding'], bodyLimit)
      batch = otlpToPending(parseBody(raw, protobuf), { schema, limits, now: clock.now(), inferProvider, project: request.project })
      if (batch.pending.length > maxBatch) {
        throw llmsError('LLMS_ERR_BATCH_TOO_LARGE', `one export request may carry at most ${maxBatch} GenAI spans, got ${batch.pending.length}: lower the exporter's batch size`, {
          details: [{ path: '(body)', message: `more than ${maxBatch} GenAI spans` }]
        })
      }
    } catch (err) {
      stats.badRequests++
      throw err
    }
    request.ingestEvents = batch.pending.length
    // A span sent again (an exporter's retry after a lost answer) is a duplicate: not stored again, counted as ignored.
    const duplicates = batch.pending.length > 0 ? countDuplicates(await engine.ingest(batch.pending)) : 0

    stats.requests++
    stats.spans += batch.spans
    stats.ingested += batch.pending.length - duplicates
    stats.ignored += batch.ignored + duplicates
    stats.rejected += batch.rejected
    const message = batch.rejected > 0 ? `${batch.rejected} of ${batch.spans} spans rejected: ${batch.reasons.join('; ')}${batch.rejected > batch.reasons.length ? '; …' : ''}` : ''
    reply.code(200)
    if (protobuf) {
      reply.type(PROTOBUF_TYPE)
      return Buffer.from(encodeTraceResponse(batch.rejected, message))
    }
    // int64 as a decimal string, as the proto3 JSON mapping writes it.
    return batch.rejected > 0 ? { partialSuccess: { rejectedSpans: String(batch.rejected), errorMessage: message } } : {}
  })
}

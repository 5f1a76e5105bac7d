/**
 * WS /ws — the live stream (README: Live stream). Everything that can be refused is refused BEFORE the
 * upgrade, as a plain HTTP error in the usual shape: the app's onRequest hooks answer 503 while
 * recovering and 401/403/404 for the key and project (`X-API-Key`, or `?api_key=` since
 * browsers cannot set headers on a WebSocket; an owner names a project with `?project=`); this
 * route's preValidation answers 400 for a bad query (an unknown parameter included, named) and
 * 503 when the subscriber cap is reached.
 *
 * A subscription lives in the request's project (README: Projects): it gets that project's events
 * that match its dimension filters (`model`, `provider`, `status`, `user_id`, `session_id`, `tag`,
 * `metadata.KEY`), and that project's alerts, nothing else — replays included.
 *
 * After the upgrade the socket becomes a {@link SocketSink} and a `subscribe` message to the
 * Broadcaster actor; frames, filters, backpressure, heartbeat and `since_seq` replay all live
 * there. Messages from the client are ignored (`maxPayload` bounds them).
 *
 * The broadcaster writes pre-framed bytes straight to the upgraded TCP socket
 * (`request.raw.socket`), the same bytes for every subscriber. That is sound because
 * permessage-deflate is off, so ws's sender never queues: each of its own frames (pong,
 * close) is written whole, synchronously, and never interleaves with ours. `bufferedAmount`
 * still counts our bytes (it reads the socket's write buffer). `injectWS()` has no TCP
 * socket and is not supported: tests use real clients on a listening server.
 */
import websocket from '@fastify/websocket'
import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import { listParam, parseQuery } from './query.js'
import { llmsError } from '../errors.js'
import { queryFilters } from '../filters.js'
import type { SocketSink, SubscriptionFilter } from '../actors/broadcaster.js'
import type { Engine } from '../engine.js'

/** The route's own parameters; every other one must be a dimension filter (src/filters.ts). */
const wsQuery = z.looseObject({
  model: listParam.optional(),
  provider: listParam.optional(),
  since_seq: z
    .string()
    .regex(/^(-1|\d{1,15})$/, 'must be an integer >= -1 (the last seq the client has; -1 for the start of the log)')
    .transform(Number)
    .optional(),
  // Read by the auth hook; never logged (app.ts redacts it from URLs).
  api_key: z.string().optional(),
  // The owner's project choice (read and checked by the auth hook).
  project: z.string().optional()
})
const WS_PARAMS: ReadonlySet<string> = new Set(Object.keys(wsQuery.shape))

/**
 * The subscription a query asks for, in `project`, or a 400 naming each bad or unknown
 * parameter.
 */
function parseSubscription(query: unknown, project: string): { filter: SubscriptionFilter; sinceSeq: number | null } {
  const q = parseQuery(wsQuery, query)
  const { filters, problems } = queryFilters((query ?? {}) as Record<string, unknown>, WS_PARAMS)
  if (problems.length > 0) {
    const details = problems.map((p) => ({ path: `(query) ${p.path}`, message: p.message }))
    throw llmsError('LLMS_ERR_BAD_QUERY', `invalid query: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
  }
  const filter: SubscriptionFilter = { ...filters, project, models: q.model ?? null, providers: q.provider ?? null }
  return { filter, sinceSeq: q.since_seq ?? null }
}

/** Largest message a client may send; we ignore them, so this only bounds the damage. */
const MAX_CLIENT_MESSAGE_BYTES = 4096
/** Close code when the server goes away (RFC 6455 §7.4.1). */
const CLOSE_GOING_AWAY = 1001

/**
 * Registers @fastify/websocket on the root instance. Call it BEFORE any onRequest hook that may
 * refuse a request (readiness, auth): the plugin's own onRequest hook marks upgrade requests,
 * and only marked ones get their socket closed after an HTTP error answer. Registered after
 * them, a refused upgrade would leave its socket open and `app.close()` waiting for it.
 */
export async function registerWebSocket(app: FastifyInstance): Promise<void> {
  await app.register(websocket, {
    options: { perMessageDeflate: false, maxPayload: MAX_CLIENT_MESSAGE_BYTES },
    // A client vanishing mid-frame is routine, not an error worth a stack in the log.
    errorHandler(error, socket, request) {
      request.log.debug({ err: error }, 'websocket error')
      socket.terminate()
    },
    preClose(done) {
      for (const client of this.websocketServer.clients) client.close(CLOSE_GOING_AWAY, 'server shutting down')
      this.websocketServer.close()
      done()
    }
  })
}

export async function wsRoutes(app: FastifyInstance, opts: { engine: Engine }): Promise<void> {
  const broadcaster = opts.engine.topology.broadcaster

  app.get(
    '/ws',
    {
      websocket: true,
      config: { scope: 'read', keyInQuery: true },
      // Documentation only (src/http/openapi.ts): preValidation parses the query.
      schema: {
        summary: 'Live stream of events and alerts (WebSocket)',
        description:
          "Upgrade to a WebSocket in the key's project (an owner key names one with `?project=`). Messages: " +
          '`{"type":"event","id","seq","timestamp","model","provider","total_tokens","latency_ms","cost","status","user_id","session_id","tags"}`, ' +
          '`{"type":"alert","project","rule_id","rule_name","state","value","threshold","at"}` (the project\'s rules only), `{"type":"dropped","count"}`. ' +
          'Filters (AND): `model`, `provider` (comma lists), `status` (success|error), `user_id`, `session_id`, `tag`, `metadata.KEY`; they apply to replays too. ' +
          '`since_seq=N` first replays what was missed after N (at most the newest 10,000 log positions). Refusals are plain HTTP errors before the upgrade.',
        tags: ['stream'],
        querystring: wsQuery
      },
      preValidation: async (request) => {
        parseSubscription(request.query, request.project)
        if (broadcaster.broadcastStats.subscribers >= broadcaster.limits.maxSubscribers) {
          throw llmsError('LLMS_ERR_OVERLOADED', `at most ${broadcaster.limits.maxSubscribers} WebSocket subscribers; retry later`, { retryAfter: 5 })
        }
      }
    },
    (socket, request) => {
      const { filter, sinceSeq } = parseSubscription(request.query, request.project)
      const tcp = request.raw.socket
      const sink: SocketSink = {
        get open() {
          return socket.readyState === socket.OPEN
        },
        get buffered() {
          return socket.bufferedAmount
        },
        write(frames) {
          tcp.write(frames)
        },
        ping() {
          socket.ping()
        },
        close(code, reason) {
          socket.close(code, reason)
        },
        terminate() {
          socket.terminate()
        }
      }
      socket.on('pong', () => broadcaster.send({ type: 'pong', sink }))
      socket.on('close', () => broadcaster.send({ type: 'unsubscribe', sink }))
      if (!broadcaster.send({ type: 'subscribe', sink, filter, sinceSeq })) {
        socket.close(1013, 'server busy, retry later')
      }
    }
  )
}

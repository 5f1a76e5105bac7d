/** GET /health (liveness), GET /ready (503 until recovery is done), GET /metrics (Prometheus text). */
import type { FastifyInstance } from 'fastify'
import { llmsError } from '../../errors.js'
import { engineMetrics } from '../metrics.js'
import { healthSchema, readySchema, errorSchema } from '../openapi.js'
import type { Engine } from '../../engine.js'

export async function healthRoutes(app: FastifyInstance, opts: { engine: Engine }): Promise<void> {
  const { engine } = opts
  app.get('/health', { config: { alwaysOpen: true }, schema: { summary: 'Liveness', tags: ['operations'], response: { 200: healthSchema } } }, async () => ({ status: 'ok' }))

  app.get('/ready', { config: { alwaysOpen: true }, schema: { summary: 'Readiness', description: '503 until recovery (snapshot + log replay) is done, then 200. In cluster mode `cluster` shows this node: partitions owned, partitions without a live owner, lag, where its last takeover started.', tags: ['operations'], response: { 200: readySchema, 503: errorSchema } } }, async () => {
    if (!engine.ready) throw llmsError('LLMS_ERR_NOT_READY', engine.config.cluster === null ? 'recovering state from the event log' : 'starting, or not connected to the cluster\'s NATS servers', { retryAfter: 1 })
    const cluster = engine.clusterStatus()
    return cluster === null ? { status: 'ready', recovery: engine.recovery } : { status: 'ready', recovery: engine.recovery, cluster }
  })

  app.get('/metrics', { config: { alwaysOpen: true }, schema: { summary: 'Prometheus metrics', description: 'Prometheus text format 0.0.4: pipeline, log commits, actors, WebSocket, alerts, snapshots, OTLP, ingest latency, process.', tags: ['operations'], produces: ['text/plain'] } }, async (_request, reply) => {
    const metrics = engineMetrics(engine)
    if (metrics === undefined) throw new Error('metrics are not registered for this engine (registerMetrics in buildApp)')
    const { contentType, body } = await metrics.render()
    reply.type(contentType)
    return body
  })
}

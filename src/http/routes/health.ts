/** GET /health (liveness), GET /ready (503 until recovery is done), GET /metrics (Prometheus text). */
import type { FastifyInstance } from 'fastify'
import type { Engine } from '../../engine.js'

/** Escapes a Prometheus label value. */
const label = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')

export async function healthRoutes(app: FastifyInstance, opts: { engine: Engine }): Promise<void> {
  const { engine } = opts
  app.get('/health', { config: { alwaysOpen: true } }, async () => ({ status: 'ok' }))

  app.get('/ready', { config: { alwaysOpen: true } }, async (_request, reply) => {
    if (!engine.ready) {
      reply.code(503).header('retry-after', '1')
      return { statusCode: 503, error: 'Service Unavailable', code: 'LLMS_ERR_NOT_READY', message: 'recovering state from the event log', details: [] }
    }
    return { status: 'ready', recovery: engine.recovery }
  })

  app.get('/metrics', { config: { alwaysOpen: true } }, async (_request, reply) => {
    const s = engine.stats()
    const lines: string[] = []
    const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: Array<[string, number]>) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
      for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`)
    }
    metric('llmscope_ready', 'gauge', '1 once recovery is done.', [['', s.ready ? 1 : 0]])
    metric('llmscope_events_appended_total', 'counter', 'Events committed to the log since start.', [['', s.log.appendedEvents]])
    metric('llmscope_log_appends_total', 'counter', 'Log appends (one put each) since start.', [['', s.log.appends]])
    metric('llmscope_log_next_seq', 'gauge', 'Next log position.', [['', s.log.nextSeq]])
    metric('llmscope_pipeline_in_flight_events', 'gauge', 'Accepted events not yet priced.', [['', s.inFlightEvents]])
    metric('llmscope_ingest_rejected_overload_total', 'counter', 'Events refused with 503 past the high-water mark.', [['', s.router.rejectedOverload]])
    metric('llmscope_cost_worker_failures_total', 'counter', 'Pricing tasks that failed in a worker and were priced inline.', [['', s.costStage.workerFailures]])
    metric('llmscope_models', 'gauge', 'Model aggregator actors.', [['', s.models]])
    metric('llmscope_actor_mailbox_depth', 'gauge', 'Messages waiting per actor.', s.actors.map((a) => [`{actor="${label(a.name)}"}`, a.depth]))
    metric('llmscope_actor_processed_total', 'counter', 'Messages handled per actor.', s.actors.map((a) => [`{actor="${label(a.name)}"}`, a.processed]))
    metric('llmscope_actor_failed_total', 'counter', 'Messages that threw per actor.', s.actors.map((a) => [`{actor="${label(a.name)}"}`, a.failed]))
    if (s.lastSnapshot !== null) {
      metric('llmscope_snapshot_bytes', 'gauge', 'Size of the last snapshot.', [['', s.lastSnapshot.bytes]])
      metric('llmscope_snapshot_duration_ms', 'gauge', 'Time the last snapshot took.', [['', s.lastSnapshot.ms]])
      metric('llmscope_snapshot_seq', 'gauge', 'Log position of the last snapshot.', [['', s.lastSnapshot.seq]])
    }
    reply.type('text/plain; version=0.0.4; charset=utf-8')
    return lines.join('\n') + '\n'
  })
}

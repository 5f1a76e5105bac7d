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
    const ws = s.broadcast
    metric('llmscope_ws_subscribers', 'gauge', 'WebSocket subscribers connected.', [['', ws.subscribers]])
    metric('llmscope_ws_messages_sent_total', 'counter', 'WebSocket messages written (one per socket).', [['', ws.messagesSent]])
    metric('llmscope_ws_bytes_sent_total', 'counter', 'WebSocket bytes written.', [['', ws.bytesSent]])
    metric('llmscope_ws_messages_dropped_total', 'counter', 'WebSocket messages dropped: socket over its buffer cap, or older than a replay bound.', [['', ws.messagesDropped]])
    metric('llmscope_ws_replayed_messages_total', 'counter', 'WebSocket messages replayed from the log for since_seq.', [['', ws.replayedMessages]])
    metric('llmscope_ws_closed_slow_total', 'counter', 'WebSocket subscribers closed with 1013 for staying over their buffer cap.', [['', ws.closedSlow]])
    metric('llmscope_ws_reaped_total', 'counter', 'WebSocket subscribers terminated for not answering a ping.', [['', ws.reapedDead]])
    metric('llmscope_ws_refused_total', 'counter', 'WebSocket subscriptions refused (subscriber cap, failed replay).', [['', ws.refused]])
    const al = s.alerts
    metric('llmscope_alert_evaluations_total', 'counter', 'Alert rule evaluations (one rule over its window).', [['', al.evaluations]])
    metric('llmscope_alert_evaluation_errors_total', 'counter', 'Alert rule evaluations that failed (logged).', [['', al.evaluationErrors]])
    metric('llmscope_alert_rules_firing', 'gauge', 'Alert rules firing now.', [['', al.firing]])
    metric('llmscope_alert_notifications_total', 'counter', 'Alert notifications decided, by kind.', [
      ['{kind="firing"}', al.notifications.firing],
      ['{kind="resolved"}', al.notifications.resolved],
      ['{kind="reminder"}', al.notifications.reminder]
    ])
    metric('llmscope_alert_webhook_deliveries_total', 'counter', 'Webhook deliveries ended, by outcome (failed: after every attempt).', [
      ['{outcome="delivered"}', s.webhooks.delivered],
      ['{outcome="failed"}', s.webhooks.failed]
    ])
    metric('llmscope_alert_webhook_attempts_total', 'counter', 'Webhook HTTP requests made (retries included).', [['', s.webhooks.attempts]])
    metric('llmscope_alert_webhook_dropped_total', 'counter', 'Webhook deliveries refused: delivery queue full.', [['', s.webhooks.dropped]])
    metric('llmscope_alert_event_write_errors_total', 'counter', 'Alert events that could not be written to LMDB.', [['', s.alertEvents.writeErrors]])
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

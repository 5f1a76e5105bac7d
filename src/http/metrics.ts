/**
 * Prometheus metrics with prom-client: one Registry per app (tests build many apps in one
 * process, so never prom-client's global registry), plus the process metrics (CPU, memory,
 * event-loop lag, GC, handles) in one registry per process — they describe the process, and
 * prom-client's default collectors start observers that must not be started once per app.
 *
 * Two kinds of metric:
 * - read at scrape time: gauges and counters whose `collect()` copies the engine's own stats
 *   (actors, log, pipeline, WebSocket, alerts, webhooks, snapshots, OTLP). The hot path pays
 *   nothing for them; `render()` reads `engine.stats()` once per scrape.
 * - observed on the hot path, where no stat exists: ingest requests, events and latency by
 *   route and outcome (an onResponse hook), LMDB commit latency and size (the IngestRouter
 *   publishes each commit on the `llmscope:ingest:commit` diagnostics channel).
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { FastifyInstance, FastifyReply, FastifyRequest, LogLevel } from 'fastify'
import { otlpStats } from '../otlp/stats.js'
import { packageVersion } from '../config.js'
import type { Engine } from '../engine.js'
import type { Clock } from '../clock.js'
import { COMMIT_CHANNEL, type CommitMessage } from '../actors/ingest-router.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Events this ingest request carried, when the handler knows it (OTLP: the GenAI spans). */
    ingestEvents: number | null
  }
}

/** The routes whose requests are timed and counted by outcome. */
export const INGEST_ROUTES: ReadonlySet<string> = new Set(['/events/ingest', '/events/batch', '/v1/traces'])

/**
 * The log level of the ingest routes' request logger, given the server's. fastify writes two
 * `info` lines per request ("incoming request", "request completed"): on the ingest routes,
 * the busiest by far, those lines were a visible share of main-thread time in a single-event
 * profile (figures in bench/RESULTS.md, "Micro-benchmark notes"), and a stdout pipe that fills
 * blocks the event loop. Those routes are
 * counted and timed by outcome here instead (`llmscope_ingest_*`), so their request lines are
 * kept only when asked for (debug, trace); warnings and errors are logged as everywhere else.
 */
export function ingestLogLevel(serverLevel: string): LogLevel {
  switch (serverLevel) {
    case 'fatal':
    case 'error':
    case 'warn':
    case 'silent':
    case 'debug':
    case 'trace':
      return serverLevel
    default:
      // info, or a custom level of an injected logger.
      return 'warn'
  }
}

/** An answer's status as a bounded label. */
export function outcomeOf(status: number): string {
  if (status >= 200 && status < 300) return 'accepted'
  if (status === 401 || status === 403) return 'unauthorized'
  if (status === 429) return 'rate_limited'
  if (status === 503) return 'unavailable'
  if (status >= 400 && status < 500) return 'invalid'
  return 'error'
}

let processRegistry: Registry | null = null

/** Node's process metrics, collected once per process (see the module comment). */
function processMetrics(): Registry {
  if (processRegistry === null) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

export interface AppMetrics {
  /** This app's metrics (process metrics excluded). */
  readonly registry: Registry
  /** The Prometheus text of this app plus the process metrics. */
  render(): Promise<{ contentType: string; body: string }>
}

const byEngine = new WeakMap<Engine, AppMetrics>()

/** The metrics registered for this engine's app by {@link registerMetrics}. */
export function engineMetrics(engine: Engine): AppMetrics | undefined {
  return byEngine.get(engine)
}

type Stats = ReturnType<Engine['stats']>

/**
 * Creates the app's registry and its hooks. Call before the routes are registered (the
 * onResponse hook must reach them).
 */
export function registerMetrics(app: FastifyInstance, engine: Engine, clock: Clock): AppMetrics {
  const registry = new Registry()
  const registers = [registry]
  const startedAt = clock.now()
  let current: Stats | null = null
  const stats = (): Stats => current ?? engine.stats()
  const otlp = otlpStats(engine)

  const gauge = (name: string, help: string, read: (s: Stats) => number) =>
    new Gauge({ name, help, registers, collect() { this.set(read(stats())) } })
  const counter = (name: string, help: string, read: (s: Stats) => number) =>
    new Counter({ name, help, registers, collect() { this.reset(); this.inc(read(stats())) } })
  /** One series per label value; `read` gives [label value, number] pairs. */
  const labelled = (kind: 'gauge' | 'counter', name: string, help: string, label: string, read: (s: Stats) => Array<readonly [string, number]>) => {
    if (kind === 'gauge') {
      return new Gauge({ name, help, labelNames: [label], registers, collect() { this.reset(); for (const [v, n] of read(stats())) this.set({ [label]: v }, n) } })
    }
    return new Counter({ name, help, labelNames: [label], registers, collect() { this.reset(); for (const [v, n] of read(stats())) this.inc({ [label]: v }, n) } })
  }

  new Gauge({ name: 'llmscope_build_info', help: 'Always 1; the version as a label.', labelNames: ['version'], registers }).set({ version: packageVersion() }, 1)
  gauge('llmscope_ready', '1 once recovery is done.', (s) => (s.ready ? 1 : 0))

  // Log and pipeline.
  counter('llmscope_events_appended_total', 'Events committed to the log since start.', (s) => s.log.appendedEvents)
  counter('llmscope_events_duplicates_total', 'Events answered as duplicates of an id accepted within the dedupe window (not stored again).', (s) => s.log.duplicates ?? 0)
  counter('llmscope_log_appends_total', 'Log appends (one put each) since start.', (s) => s.log.appends)
  gauge('llmscope_log_next_seq', 'Next log position.', (s) => s.log.nextSeq)
  counter('llmscope_log_commit_failures_total', 'Log commits that failed (their requests answered 503).', (s) => s.router.commitFailures)
  gauge('llmscope_log_commits_in_flight', 'Log commits not yet resolved.', (s) => s.router.commitsInFlight)
  gauge('llmscope_pipeline_in_flight_events', 'Accepted events not yet priced.', (s) => s.inFlightEvents)
  counter('llmscope_ingest_rejected_overload_total', 'Events refused with 503 past the high-water mark.', (s) => s.router.rejectedOverload)
  gauge('llmscope_cost_pending_events', 'Events waiting to be priced or being priced.', (s) => s.costStage.pendingEvents)
  counter('llmscope_cost_priced_events_total', 'Events priced by the cost stage (replay included).', (s) => s.costStage.pricedEvents)
  counter('llmscope_cost_worker_failures_total', 'Pricing tasks that failed in a worker and were priced inline.', (s) => s.costStage.workerFailures)
  gauge('llmscope_models', 'Model aggregator actors.', (s) => s.models)

  // Cluster mode (README: Cluster mode): this node's partitions, lag and leases; absent on a single node.
  if (engine.config.cluster !== null) {
    type C = { partitions: number; owned: number[]; unowned: number[]; lag: number; nodes: string[]; alerts_lease: boolean; restored_from: string | null; inFlightPublishes: number }
    const c = (s: Stats) => (s as unknown as { cluster?: C }).cluster
    gauge('llmscope_cluster_partitions', 'Partitions of the event stream.', (s) => c(s)?.partitions ?? 0)
    gauge('llmscope_cluster_partitions_owned', 'Partitions this node owns (lease held, state loaded, answering queries).', (s) => c(s)?.owned.length ?? 0)
    gauge('llmscope_cluster_partitions_unowned', 'Partitions without a live owner as this node sees the leases (their queries answer 503).', (s) => c(s)?.unowned.length ?? 0)
    gauge('llmscope_cluster_lag_events', 'Events of the owned partitions in the stream, not yet aggregated here.', (s) => c(s)?.lag ?? 0)
    gauge('llmscope_cluster_nodes', 'Live nodes (heartbeats in the cluster bucket).', (s) => c(s)?.nodes.length ?? 0)
    gauge('llmscope_cluster_alerts_lease', '1 while this node holds the alert-evaluation lease.', (s) => (c(s)?.alerts_lease === true ? 1 : 0))
    gauge('llmscope_cluster_restored_from_snapshot', '1 when this node\'s newest takeover started from a snapshot, 0 from the stream start (or none yet).', (s) => (c(s)?.restored_from === 'snapshot' ? 1 : 0))
    gauge('llmscope_cluster_publishes_in_flight', 'Events published to the stream and not yet acknowledged.', (s) => c(s)?.inFlightPublishes ?? 0)
  }

  // Actors: mailbox depth and failures, per actor kind. The per-(project, model) aggregators
  // and per-project rollups are summed under one label each: this route is unauthenticated, and
  // their names carry project and model names (DESIGN: /metrics shows no project's data).
  const byKind = (pick: (a: Stats['actors'][number]) => number) => (s: Stats): Array<readonly [string, number]> => {
    const sums = new Map<string, number>()
    for (const a of s.actors) {
      const kind = a.name.startsWith('aggregator:') ? 'aggregators' : a.name === 'rollup' || a.name.startsWith('rollup:') ? 'rollups' : a.name
      sums.set(kind, (sums.get(kind) ?? 0) + pick(a))
    }
    return [...sums]
  }
  labelled('gauge', 'llmscope_actor_mailbox_depth', 'Messages waiting per actor kind (aggregators and rollups summed).', 'actor', byKind((a) => a.depth))
  labelled('counter', 'llmscope_actor_processed_total', 'Messages handled per actor kind.', 'actor', byKind((a) => a.processed))
  labelled('counter', 'llmscope_actor_failed_total', 'Messages that threw per actor kind (logged; the actor went on).', 'actor', byKind((a) => a.failed))

  // WebSocket.
  gauge('llmscope_ws_subscribers', 'WebSocket subscribers connected.', (s) => s.broadcast.subscribers)
  counter('llmscope_ws_messages_sent_total', 'WebSocket messages written (one per socket).', (s) => s.broadcast.messagesSent)
  counter('llmscope_ws_bytes_sent_total', 'WebSocket bytes written.', (s) => s.broadcast.bytesSent)
  counter('llmscope_ws_messages_dropped_total', 'WebSocket messages dropped: socket over its buffer cap, or older than a replay bound.', (s) => s.broadcast.messagesDropped)
  counter('llmscope_ws_replayed_messages_total', 'WebSocket messages replayed from the log for since_seq.', (s) => s.broadcast.replayedMessages)
  counter('llmscope_ws_closed_slow_total', 'WebSocket subscribers closed with 1013 for staying over their buffer cap.', (s) => s.broadcast.closedSlow)
  counter('llmscope_ws_reaped_total', 'WebSocket subscribers terminated for not answering a ping.', (s) => s.broadcast.reapedDead)
  counter('llmscope_ws_refused_total', 'WebSocket subscriptions refused (subscriber cap, failed replay).', (s) => s.broadcast.refused)

  // Alerts and webhooks.
  counter('llmscope_alert_evaluations_total', 'Alert rule evaluations (one rule over its window).', (s) => s.alerts.evaluations)
  counter('llmscope_alert_evaluation_errors_total', 'Alert rule evaluations that failed (logged).', (s) => s.alerts.evaluationErrors)
  gauge('llmscope_alert_rules_firing', 'Alert rules firing now.', (s) => s.alerts.firing)
  labelled('counter', 'llmscope_alert_notifications_total', 'Alert notifications decided, by kind.', 'kind', (s) => [
    ['firing', s.alerts.notifications.firing],
    ['resolved', s.alerts.notifications.resolved],
    ['reminder', s.alerts.notifications.reminder]
  ])
  labelled('counter', 'llmscope_alert_webhook_deliveries_total', 'Webhook deliveries ended, by outcome (failed: after every attempt).', 'outcome', (s) => [
    ['delivered', s.webhooks.delivered],
    ['failed', s.webhooks.failed]
  ])
  counter('llmscope_alert_webhook_attempts_total', 'Webhook HTTP requests made (retries included).', (s) => s.webhooks.attempts)
  counter('llmscope_alert_webhook_dropped_total', 'Webhook deliveries refused: delivery queue full.', (s) => s.webhooks.dropped)
  counter('llmscope_alert_event_write_errors_total', 'Alert events that could not be written to LMDB.', (s) => s.alertEvents.writeErrors)

  // Snapshots: 0 until the first one (the age then counts from the start).
  gauge('llmscope_snapshot_age_seconds', 'Seconds since the last snapshot was written (since start before the first).', (s) => Math.max(0, clock.now() - (s.lastSnapshot?.at ?? startedAt)) / 1000)
  gauge('llmscope_snapshot_duration_seconds', 'Time the last snapshot took.', (s) => (s.lastSnapshot?.ms ?? 0) / 1000)
  gauge('llmscope_snapshot_bytes', 'Bytes written by the last snapshot.', (s) => s.lastSnapshot?.bytes ?? 0)
  gauge('llmscope_snapshot_seq', 'Log position of the last snapshot.', (s) => s.lastSnapshot?.seq ?? 0)

  // OTLP receiver (src/otlp/stats.ts).
  counter('llmscope_otlp_requests_total', 'OTLP export requests answered 200 (partial success included).', () => otlp.requests)
  counter('llmscope_otlp_bad_requests_total', 'OTLP export requests refused whole (undecodable, malformed, too large).', () => otlp.badRequests)
  labelled('counter', 'llmscope_otlp_spans_total', 'Spans received, by result: ingested (became events), ignored (not an LLM call), rejected (invalid GenAI span).', 'result', () => [
    ['ingested', otlp.ingested],
    ['ignored', otlp.ignored],
    ['rejected', otlp.rejected]
  ])

  // Observed on the hot path.
  const labelNames = ['route', 'outcome'] as const
  const requests = new Counter({ name: 'llmscope_ingest_requests_total', help: 'Ingest requests answered, by route and outcome (accepted, invalid, unauthorized, rate_limited, unavailable, error).', labelNames, registers })
  const events = new Counter({ name: 'llmscope_ingest_events_total', help: 'Events carried by ingest requests, by route and outcome (OTLP: GenAI spans; unknown for bodies that did not parse).', labelNames, registers })
  const latency = new Histogram({
    name: 'llmscope_ingest_duration_seconds',
    help: 'Ingest request latency, from the request to the answer (202 waits for the LMDB commit), by route and outcome.',
    labelNames,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers
  })
  const commitLatency = new Histogram({
    name: 'llmscope_log_commit_duration_seconds',
    help: 'LMDB log commit latency: from the append to the commit holding it (group commit).',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers
  })
  const commitSize = new Histogram({
    name: 'llmscope_log_commit_events',
    help: 'Events per LMDB log commit (every request of one turn shares a commit).',
    buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000],
    registers
  })
  // Only this engine's commits (tests run many engines in one process).
  const onCommit = (message: unknown) => {
    const m = message as CommitMessage
    if (m.log !== engine.log) return
    commitLatency.observe(m.ms / 1000)
    commitSize.observe(m.events)
  }
  subscribe(COMMIT_CHANNEL, onCommit)
  app.addHook('onClose', (_app, done) => {
    unsubscribe(COMMIT_CHANNEL, onCommit)
    done()
  })

  app.decorateRequest('ingestEvents', null)
  // A callback hook (no promise per request); the hot path never throws (module comment).
  app.addHook('onResponse', (request: FastifyRequest, reply: FastifyReply, done: () => void) => {
    const route = request.routeOptions.url
    if (route !== undefined && INGEST_ROUTES.has(route)) {
      const labels = { route, outcome: outcomeOf(reply.statusCode) }
      requests.inc(labels)
      latency.observe(labels, reply.elapsedTime / 1000)
      const n = request.ingestEvents ?? eventsInBody(route, request.body)
      if (n > 0) events.inc(labels, n)
    }
    done()
  })

  const metrics: AppMetrics = {
    registry,
    async render() {
      current = engine.stats()
      try {
        // Both registries are read in the same turn as `current` (collect() runs synchronously).
        const [app, proc] = await Promise.all([registry.metrics(), processMetrics().metrics()])
        return { contentType: registry.contentType, body: app + '\n' + proc }
      } finally {
        current = null
      }
    }
  }
  byEngine.set(engine, metrics)
  return metrics
}

/** Events in a JSON or NDJSON ingest body (both parse to objects or arrays); 0 when unknown. */
function eventsInBody(route: string, body: unknown): number {
  if (route === '/events/ingest') return body !== null && typeof body === 'object' && !Array.isArray(body) ? 1 : 0
  if (route === '/events/batch') return Array.isArray(body) ? body.length : 0
  return 0
}

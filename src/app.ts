/**
 * buildApp(config): the engine plus the HTTP surface. It never listens — tests use
 * `app.inject()`; `main.ts` listens, recovers and handles signals.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { Engine } from './engine.js'
import { loadKeys, type KeyRing } from './keys.js'
import { registerAuth } from './http/auth.js'
import { registerErrorHandling } from './http/errors.js'
import { registerSecurity } from './http/security.js'
import { keyRoutes } from './http/routes/keys.js'
import { projectRoutes } from './http/routes/projects.js'
import { eventRoutes } from './http/routes/events.js'
import { forgetRoutes } from './http/routes/forget.js'
import { analyticsRoutes } from './http/routes/analytics.js'
import { alertRoutes } from './http/routes/alerts.js'
import { budgetRoutes } from './http/routes/budgets.js'
import { priceRoutes } from './http/routes/prices.js'
import { healthRoutes } from './http/routes/health.js'
import { otlpRoutes } from './http/routes/otlp.js'
import { dashboardRoutes } from './http/routes/dashboard.js'
import { registerWebSocket, wsRoutes } from './http/ws.js'
import { registerOpenApi } from './http/openapi.js'
import { registerMetrics } from './http/metrics.js'
import { bodyLimits } from './http/body-limits.js'
import { llmsError } from './errors.js'
import { systemClock, type Clock } from './clock.js'
import type { Config } from './config.js'
import type { NotifierOptions } from './alerts/notifier.js'
import type { BroadcastLimits } from './actors/broadcaster.js'

export interface BuildOptions {
  clock?: Clock
  /** fastify's logger option; default: pino at config.logLevel with keys redacted. */
  logger?: FastifyServerOptions['logger']
  inlinePricing?: boolean
  onProgress?: (done: number, total: number) => void
  /** Webhook delivery tunables (defaults in alerts/notifier.ts); tests shorten the backoff. */
  webhook?: NotifierOptions
  /** Alert evaluation tick, ms (default 1000; 0 = none: tests send ticks by hand). */
  alertTickMs?: number
  /** WebSocket fan-out tunables (defaults in actors/broadcaster.ts). */
  broadcast?: Partial<BroadcastLimits>
}

export interface Built {
  app: FastifyInstance
  engine: Engine
  keys: KeyRing
  /** The key made on this first start (print it once), else null. */
  createdKey: string | null
}

/** Strips `api_key=…` from a URL before it is logged. */
export function redactUrl(url: string): string {
  return url.replace(/([?&]api_key=)[^&]*/gi, '$1[REDACTED]')
}

export function loggerOptions(level: string): FastifyServerOptions['logger'] {
  return {
    level,
    redact: { paths: ['req.headers["x-api-key"]', 'req.headers.authorization'], censor: '[REDACTED]' },
    serializers: {
      req: (req: { method: string; url: string; hostname?: string; ip?: string }) => ({ method: req.method, url: redactUrl(req.url), hostname: req.hostname, remoteAddress: req.ip })
    }
  }
}

export async function buildApp(config: Config, opts: BuildOptions = {}): Promise<Built> {
  const clock = opts.clock ?? systemClock
  const app = Fastify({
    logger: opts.logger ?? loggerOptions(config.logLevel),
    // Routes without their own limit (admin bodies) take the small one; ingestion routes set
    // theirs (src/http/body-limits.ts): an oversized body is refused unread.
    bodyLimit: bodyLimits(config).other,
    // Our own error shape replaces fastify's default; ids come from the log, not the request.
    return503OnClosing: true,
    forceCloseConnections: 'idle'
  })
  // The logger is created by fastify; the engine logs through it.
  const engineOptions = { config, logger: app.log, clock, inlinePricing: opts.inlinePricing, onProgress: opts.onProgress, broadcast: opts.broadcast, webhook: opts.webhook, alertTickMs: opts.alertTickMs }
  // Cluster mode's code (and the NATS client) loads only when LLMSCOPE_NATS_URL is set.
  const engine: Engine = config.cluster === null ? new Engine(engineOptions) : new (await import('./cluster/engine.js')).ClusterEngine(engineOptions)
  const { ring, created } = loadKeys(config.apiKeys, config.dataDir)
  const apiKeys = engine.apiKeys
  ring.attach(apiKeys)
  await engine.open()
  // Projects named by configured keys exist from the start, unless they were deleted (then
  // their keys answer 401 until an owner creates them again). A delete cut short by a crash
  // may have left its API keys: they go now (the engine finishes the rest of the purge).
  await engine.projects.ensure(ring.configuredProjects, clock.now())
  for (const id of engine.projects.purging()) await apiKeys.deleteProject(id)

  registerErrorHandling(app)
  // Before the hooks below: see registerWebSocket.
  await registerWebSocket(app)
  // Before any route: its onRoute hook makes the routes' zod schemas documentation only.
  await registerOpenApi(app)
  // Before the routes too: its hooks time every ingest request.
  registerMetrics(app, engine, clock)
  // Headers and CORS before the hooks that may refuse a request, so refusals carry them too.
  const limiter = await registerSecurity(app, config)
  // JSON (and NDJSON, registered by the events routes) only: anything else is a 415.
  app.removeContentTypeParser('text/plain')
  // Callback hooks on the request path (here, security.ts, auth.ts): an async hook costs a
  // promise and a microtask hop per request.
  app.addHook('onRequest', (request, _reply, done) => {
    if (!engine.ready && request.routeOptions.config?.alwaysOpen !== true) {
      done(llmsError('LLMS_ERR_NOT_READY', 'recovering state from the event log, retry shortly', { retryAfter: 1 }))
      return
    }
    done()
  })
  registerAuth(app, { keys: ring, projects: engine.projects, limiter })
  await app.register(healthRoutes, { engine })
  await app.register(eventRoutes, { engine, clock })
  await app.register(forgetRoutes, { engine })
  await app.register(otlpRoutes, { engine, clock })
  await app.register(analyticsRoutes, { engine, clock })
  await app.register(alertRoutes, { engine, clock })
  await app.register(budgetRoutes, { engine, clock })
  await app.register(priceRoutes, { engine })
  await app.register(wsRoutes, { engine })
  await app.register(keyRoutes, { store: apiKeys, ring, projects: engine.projects, clock })
  await app.register(projectRoutes, {
    projects: engine.projects,
    apiKeys,
    clock,
    eventCount: (id) => engine.projectEvents(id),
    deleteProject: (id) => engine.deleteProject(id)
  })
  await app.register(dashboardRoutes)
  app.addHook('onClose', async () => {
    await engine.close()
  })
  return { app, engine, keys: ring, createdKey: created }
}

/**
 * The only place actors are created and wired:
 *
 *   IngestRouter ──append──► EventLog (LMDB, group commit) ──► 202 after the commit
 *        │ committed micro-batches, log order
 *        ▼
 *   CostStage ── piscina workers price a whole chunk per task; emits in log order
 *        │ priced events
 *        ├──► ModelAggregator[model]   (spawned on first event; capped, then an overflow actor)
 *        ├──► RollupAggregator         (every model's hours and days: all-model queries)
 *        ├──► AlertEvaluator
 *        └──► Broadcaster
 *
 * Consistency points ride the pipeline as barriers (Chandy–Lamport markers): a barrier
 * passes the cost stage after every earlier event was emitted, then a message goes into each
 * aggregator's FIFO mailbox — so each actor answers with its state exactly through the same
 * log position, without pausing ingestion.
 */
import { ActorSystem } from './system.js'
import { CostStage, type Pricer } from './cost-stage.js'
import { IngestRouter } from './ingest-router.js'
import { ModelAggregator, OVERFLOW_MODEL, type AggregatorState } from './model-aggregator.js'
import { AlertEvaluator, type AlertState } from './alert-evaluator.js'
import { RollupAggregator } from './rollup.js'
import { metrics } from '../queries.js'
import type { AlertTransition, RecordedAlert } from '../alerts/types.js'
import { Broadcaster, type BroadcastLimits } from './broadcaster.js'
import type { EventLog } from '../store/event-log.js'
import type { PricedEvent, StoredEvent } from '../events.js'
import type { SnapshotPayload } from '../store/snapshots.js'
import type { RetentionPolicy } from '../analytics/series.js'
import type { PriceOverrides } from '../pricing/compute-cost.js'
import type { Log } from '../log.js'
import type { Clock } from '../clock.js'

export interface TopologyOptions {
  log: EventLog
  pricer: Pricer | null
  overrides: PriceOverrides
  logger: Log
  clock: Clock
  highWaterEvents: number
  maxModels: number
  costChunk: number
  costMaxInFlight: number
  /** Mailbox capacity (messages) of every actor. */
  mailboxCapacity?: number
  restored?: SnapshotPayload
  /** Receives every alert transition and reminder (after the WebSocket push): records and webhooks. */
  onAlert?: (t: AlertTransition) => void
  /** Newest recorded alert per rule id, reconciled with the snapshot's alert state. */
  recordedAlerts?: ReadonlyMap<string, RecordedAlert>
  /** Prices one stored event exactly as the cost stage does (since_seq replays). */
  price: (e: StoredEvent) => PricedEvent
  /** WebSocket fan-out tunables (defaults in broadcaster.ts). */
  broadcast?: Partial<BroadcastLimits>
}

/** Past this fraction of any mailbox's capacity, ingestion is refused (503) until it drains. */
const MAILBOX_HIGH_WATER = 0.5

export class Topology {
  readonly system = new ActorSystem()
  readonly router: IngestRouter
  readonly costStage: CostStage
  readonly alerts: AlertEvaluator
  readonly broadcaster: Broadcaster
  readonly rollup: RollupAggregator
  readonly #aggregators = new Map<string, ModelAggregator>()
  readonly #opts: TopologyOptions
  readonly #mailboxCapacity: number
  /** Every event with seq < #through+1 has been emitted downstream. */
  #restoredThrough: number
  /** The broadcaster's flush/heartbeat timer (timers live here, not in actors) and when it fires. */
  #broadcastTimer: NodeJS.Timeout | null = null
  #broadcastDue = Infinity

  constructor(opts: TopologyOptions) {
    this.#opts = opts
    this.#mailboxCapacity = opts.mailboxCapacity ?? 100_000
    const actorOpts = { mailboxCapacity: this.#mailboxCapacity, log: opts.logger }
    this.#restoredThrough = opts.restored !== undefined ? opts.restored.seq - 1 : -1

    this.alerts = new AlertEvaluator(
      {
        ...actorOpts,
        clock: opts.clock,
        // Read-only window statistics from the aggregators (between their messages): no event stored twice.
        window: (model, start, end) => metrics(this, { start, end, models: model === null ? undefined : new Set([model]) }),
        emit: (t) => this.#alert(t),
        recorded: opts.recordedAlerts
      },
      opts.restored?.alerts as AlertState | undefined
    )
    this.broadcaster = new Broadcaster({
      ...actorOpts,
      clock: opts.clock,
      schedule: (delayMs) => this.#scheduleBroadcast(delayMs),
      history: (from) => this.#history(from),
      logEnd: () => opts.log.nextSeq,
      startSeq: this.#restoredThrough,
      limits: opts.broadcast
    })
    this.costStage = new CostStage({
      ...actorOpts,
      chunkSize: opts.costChunk,
      maxInFlight: opts.costMaxInFlight,
      pricer: opts.pricer,
      overrides: opts.overrides,
      emit: (events) => this.#emit(events)
    })
    this.router = new IngestRouter({
      ...actorOpts,
      eventLog: opts.log,
      admission: (n) => this.#admission(n),
      forward: (events) => this.costStage.send({ type: 'events', events })
    })
    this.system.register(this.router)
    this.system.register(this.costStage)
    this.system.register(this.alerts)
    this.system.register(this.broadcaster)
    for (const a of opts.restored?.aggregators ?? []) {
      this.#spawn(a.model, a.state as AggregatorState)
    }
    const restoredSeries = [...this.#aggregators.values()].flatMap((a) => [...a.view().values()])
    this.rollup = new RollupAggregator(actorOpts, restoredSeries)
    this.system.register(this.rollup)
  }

  /** Highest seq whose effects are in every downstream actor's mailbox or state. */
  get emittedThrough(): number {
    return Math.max(this.#restoredThrough, this.costStage.emittedThrough)
  }

  /** Events accepted (committing, or committed and not yet priced). */
  get inFlightEvents(): number {
    return this.router.inFlightEvents + this.costStage.pendingEvents
  }

  aggregators(): IterableIterator<ModelAggregator> {
    return this.#aggregators.values()
  }

  aggregator(model: string): ModelAggregator | undefined {
    return this.#aggregators.get(model) ?? undefined
  }

  /** Feeds log events straight to the cost stage (recovery; they are already committed). */
  replay(events: StoredEvent[]): void {
    if (!this.costStage.send({ type: 'events', events })) throw new Error('cost stage mailbox full during replay')
  }

  /** Keeps one timer, due at the earliest time asked for; it sends the broadcaster a tick. */
  #scheduleBroadcast(delayMs: number): void {
    const due = performance.now() + delayMs
    if (this.#broadcastTimer !== null) {
      if (this.#broadcastDue <= due) return
      clearTimeout(this.#broadcastTimer)
    }
    this.#broadcastDue = due
    this.#broadcastTimer = setTimeout(() => {
      this.#broadcastTimer = null
      this.#broadcastDue = Infinity
      // A full mailbox refuses the tick: ask again rather than leave frames unflushed.
      if (!this.broadcaster.send({ type: 'tick' }) && !this.broadcaster.closed) this.#scheduleBroadcast(delayMs)
    }, delayMs)
    this.#broadcastTimer.unref()
  }

  /** Committed events from `from` on, priced on this thread (since_seq replays). */
  *#history(from: number): Generator<PricedEvent[]> {
    for (const batch of this.#opts.log.readFrom(from)) yield batch.map(this.#opts.price)
  }

  /** An alert transition: to WebSocket clients, then to the engine (record + webhook). */
  #alert(t: AlertTransition): void {
    this.broadcaster.send({
      type: 'alert',
      alert: { type: 'alert', rule_id: t.rule.id, rule_name: t.rule.name, state: t.state, value: t.value, threshold: t.rule.threshold, at: new Date(t.at).toISOString() }
    })
    this.#opts.onAlert?.(t)
  }

  #admission(n: number): number {
    if (this.inFlightEvents + n > this.#opts.highWaterEvents) return 1
    return this.system.deepest() > this.#mailboxCapacity * MAILBOX_HIGH_WATER ? 1 : 0
  }

  #spawn(model: string, restored?: AggregatorState): ModelAggregator {
    const agg = new ModelAggregator(model, { mailboxCapacity: this.#mailboxCapacity, log: this.#opts.logger }, restored)
    this.#aggregators.set(model, agg)
    this.system.register(agg)
    return agg
  }

  #aggregatorFor(model: string): ModelAggregator {
    const found = this.#aggregators.get(model)
    if (found !== undefined) return found
    // The overflow actor does not count against the cap.
    const real = this.#aggregators.size - (this.#aggregators.has(OVERFLOW_MODEL) ? 1 : 0)
    if (real >= this.#opts.maxModels) return this.#aggregators.get(OVERFLOW_MODEL) ?? this.#spawn(OVERFLOW_MODEL)
    return this.#spawn(model)
  }

  #emit(events: PricedEvent[]): void {
    const byModel = new Map<ModelAggregator, PricedEvent[]>()
    for (const e of events) {
      const agg = this.#aggregatorFor(e.model)
      const list = byModel.get(agg)
      if (list === undefined) byModel.set(agg, [e])
      else list.push(e)
    }
    for (const [agg, list] of byModel) {
      if (!agg.send({ type: 'events', events: list })) {
        this.#opts.logger.error({ actor: agg.name, events: list.length }, 'aggregator mailbox full: events not aggregated until restart')
      }
    }
    if (!this.rollup.send({ type: 'events', events })) {
      this.#opts.logger.error({ actor: this.rollup.name, events: events.length }, 'rollup mailbox full: events not aggregated until restart')
    }
    this.alerts.send({ type: 'events', events })
    this.broadcaster.send({ type: 'events', events })
  }

  /**
   * Read-your-writes: resolves once every event committed before the call is in the
   * aggregators' state. Cheap when the pipeline is idle.
   */
  async sync(): Promise<void> {
    await this.router.flushed()
    const aggs = [...this.#aggregators.values(), this.rollup]
    if (this.costStage.pendingEvents === 0 && this.costStage.depth === 0 && aggs.every((a) => a.depth === 0)) return
    await new Promise<void>((resolve) => {
      this.costStage.send({
        type: 'barrier',
        run: () => {
          const list = [...this.#aggregators.values(), this.rollup]
          let left = list.length
          if (left === 0) return resolve()
          for (const a of list) a.send({ type: 'barrier', reply: () => --left === 0 && resolve() })
        }
      })
    })
  }

  /**
   * A consistent snapshot of every aggregator and the alert evaluator at one log position.
   * Aggregators hand over only the days that changed since the previous snapshot, unless
   * `full` (after a failed write, whose changed days would otherwise be lost).
   */
  async snapshot(now: number, full = false): Promise<SnapshotPayload> {
    // Take in what was committed already, so the snapshot is as fresh as the acknowledgements.
    await this.router.flushed()
    return new Promise((resolve) => {
      const sent = this.costStage.send({
        type: 'barrier',
        run: () => {
          const seq = this.emittedThrough + 1
          const list = [...this.#aggregators.values()]
          const aggregators: SnapshotPayload['aggregators'] = []
          let alerts: AlertState | undefined
          let left = list.length + 1
          const done = () => {
            if (--left === 0) resolve({ seq, createdAt: now, aggregators, alerts })
          }
          for (const a of list) a.send({ type: 'snapshot', full, reply: (state) => { aggregators.push({ model: a.model, state }); done() } })
          this.alerts.send({ type: 'snapshot', reply: (state) => { alerts = state; done() } })
        }
      })
      if (!sent) throw new Error('cost stage mailbox full: cannot snapshot')
    })
  }

  /**
   * Asks every aggregator to fold rows past retention (see SeriesStore.retain). A message like
   * any other: it runs between events, in each actor, never on the ingest path.
   */
  retain(policy: RetentionPolicy): void {
    for (const a of this.#aggregators.values()) a.send({ type: 'retain', policy })
  }

  /** Raw rows held and rows kept only as hour aggregates, over every aggregator. */
  retentionStats(): { rawRows: number; coarseRows: number; folded: number } {
    const out = { rawRows: 0, coarseRows: 0, folded: 0 }
    for (const a of this.#aggregators.values()) {
      const s = a.retentionStats
      out.rawRows += s.rawRows
      out.coarseRows += s.coarseRows
      out.folded += s.folded
    }
    return out
  }

  /** Stops intake and drains every stage in graph order. Safe twice. */
  async drain(): Promise<void> {
    await this.router.quiesce()
    await this.costStage.settled()
    await this.system.idle()
  }

  /** Closes every actor in graph order. Safe twice. */
  async close(): Promise<void> {
    await this.system.close(['ingest-router', 'cost-stage', ...[...this.#aggregators.values()].map((a) => a.name), 'rollup', 'alert-evaluator', 'broadcaster'])
    // After the broadcaster closed: it can no longer ask for ticks.
    if (this.#broadcastTimer !== null) clearTimeout(this.#broadcastTimer)
    this.#broadcastTimer = null
  }

  stats() {
    return {
      actors: this.system.stats(),
      costStage: this.costStage.costStats,
      alerts: this.alerts.alertStats,
      broadcast: this.broadcaster.broadcastStats,
      router: this.router.routerStats,
      inFlightEvents: this.inFlightEvents,
      emittedThrough: this.emittedThrough,
      models: this.#aggregators.size,
      retention: this.retentionStats()
    }
  }
}

/**
 * The only place actors are created and wired:
 *
 *   IngestRouter ──append──► EventLog (LMDB, group commit) ──► 202 after the commit
 *        │ committed micro-batches, log order
 *        ▼
 *   CostStage ── piscina workers price a whole chunk per task; emits in log order
 *        │ priced events
 *        ├──► ModelAggregator[project, model]  (spawned on first event; capped per project, then an overflow actor)
 *        ├──► RollupAggregator[project]        (every model's hours and days: all-model queries)
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
import { ModelAggregator, OVERFLOW_MODEL, type AggregatorState, type ForgetReply, type RepriceReply } from './model-aggregator.js'
import { AlertEvaluator, type AlertState } from './alert-evaluator.js'
import { RollupAggregator, type RollupMessage as RollupMessageWithReply } from './rollup.js'
import { DimensionDictionary, type DimensionLimits } from '../analytics/dimensions.js'
import { Postings } from '../analytics/postings.js'
import { DimTotals, eventValues } from '../analytics/dim-totals.js'
import type { AnalyticsReader, ProjectView, WindowQuery } from '../analytics/reader.js'
import type { Aggregate, RowDims } from '../analytics/series.js'
import { addDelta, type ChangeNames, type Deltas } from '../analytics/reprice.js'
import type { AlertTransition, RecordedAlert } from '../alerts/types.js'
import type { GroupWindowQuery, WindowGroups } from '../alerts/windows.js'
import { Broadcaster, type AlertNotice, type BroadcastLimits } from './broadcaster.js'
import type { EventLog } from '../store/event-log.js'
import type { PricedEvent, StoredEvent } from '../events.js'
import type { SnapshotPayload } from '../store/snapshots.js'
import type { RetentionPolicy } from '../analytics/series.js'
import type { PriceOverrides } from '../pricing/compute-cost.js'
import { PriceBook } from '../pricing/book.js'
import type { Log } from '../log.js'
import type { Clock } from '../clock.js'

/**
 * What the topology uses of the durable log: the router appends to it, since_seq replays read
 * it and its end. The single node passes its EventLog; a cluster partition (which never
 * ingests through the router) passes a stand-in (src/cluster/partition.ts).
 */
export interface TopologyLog {
  append: EventLog['append']
  readFrom: EventLog['readFrom']
  readonly nextSeq: number
}

export interface TopologyOptions {
  log: TopologyLog
  pricer: Pricer | null
  /** Without a {@link book}: the configuration's overrides, as a book of one layer at revision 0. */
  overrides?: PriceOverrides
  /** The price book the cost stage prices with (src/pricing/book.ts). */
  book?: PriceBook
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
  /** Caps of each project's dimension dictionaries (defaults in analytics/dimensions.ts). */
  dimensionLimits?: DimensionLimits
  /**
   * The alert evaluator's window statistics, read-only from this topology (queries.ts answers
   * it; injected so the topology does not import the queries that read it).
   */
  window: (reader: AnalyticsReader, q: WindowQuery) => Aggregate
  /** The groups of a window, for alert rules with `group_by` (src/alerts/windows.ts); injected like `window`. */
  windowGroups?: (reader: AnalyticsReader, q: GroupWindowQuery) => WindowGroups
  /** Many groups queries at once (one pass per window, filters and dimension); optional, like `windowGroups`. */
  windowGroupsMany?: (reader: AnalyticsReader, qs: readonly GroupWindowQuery[]) => WindowGroups[]
  /**
   * Cluster mode: alert frames go here (published to every node, whose feed hands them to its
   * broadcaster) instead of straight to this topology's broadcaster.
   */
  publishAlert?: (notice: AlertNotice) => void
  /** Projects being deleted: their events are dropped on the way in (replays after a crash midway). */
  dropped?: ReadonlySet<string>
}

/**
 * The events a re-price changes (Topology.reprice), one entry per event, seqs ascending: typed
 * columns (10M entries must fit: no object or Map per event) plus each event's model and
 * provider (which series holds it) as indexes into `names`: a flat JS array of 10M strings
 * took 62 ms to allocate in one turn. `before` is the cost the state counts now (coarse hours
 * subtract it), `after` the new one; the unpriced flags likewise.
 */
export interface CostChanges extends ChangeNames {
  model: Uint32Array
}

/** Events a reader of the log hands to {@link Topology.replay} at a time, with a retention pass between. */
export const REPLAY_CHUNK = 8192
/** Events a reader of the log lets wait to be priced before it waits for the pipeline ({@link Topology.backpressure}). */
const REPLAY_BACKLOG = 4 * REPLAY_CHUNK

/** One project's part of the graph: its aggregators, its rollup and its dictionaries. */
interface ProjectPart {
  readonly id: string
  readonly aggregators: Map<string, ModelAggregator>
  readonly rollup: RollupAggregator
  /** Ids are assigned here, as events are routed, in log order (see analytics/dimensions.ts). */
  readonly dims: DimensionDictionary
  /** Numbers of the project's series (aggregator model + provider) for the postings. */
  readonly seriesRefs: Map<string, number>
  readonly seriesList: Array<{ model: string; provider: string }>
  /** Cells per user and per session: null until a query first filters on them (analytics/postings.ts). */
  users: Postings | null
  sessions: Postings | null
  /** All-time totals per user and per session: null until a breakdown first needs them (analytics/dim-totals.ts). */
  userTotals: DimTotals | null
  sessionTotals: DimTotals | null
}

/** A message that changes the rollup, its reply added when sent. */
type RollupMessage = DistributiveOmit<Extract<RollupMessageWithReply, { type: 'rehour' | 'shift' }>, 'reply'>
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never

/** Re-price entries routed between two looks at the clock; a turn is given after {@link ROUTE_MS}. */
const ROUTE_SLICE = 4096
/** Longest run of re-price routing before a turn (the monotonic clock decides only when to yield). */
const ROUTE_MS = 4

/** Yields one event-loop turn. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** Past this fraction of any mailbox's capacity, ingestion is refused (503) until it drains. */
const MAILBOX_HIGH_WATER = 0.5

export class Topology implements AnalyticsReader {
  readonly system = new ActorSystem()
  readonly router: IngestRouter
  readonly costStage: CostStage
  readonly alerts: AlertEvaluator
  readonly broadcaster: Broadcaster
  readonly #projects = new Map<string, ProjectPart>()
  /** Deleted projects (see TopologyOptions.dropped and deleteProject). */
  readonly #dropped: Set<string>
  readonly #opts: TopologyOptions
  /** Scratch: one event's values in RowVisitor order. */
  readonly #values = new Float64Array(7)
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
        window: (q) => opts.window(this, q),
        windowGroups: opts.windowGroups === undefined ? undefined : (q) => opts.windowGroups!(this, q),
        windowGroupsMany: opts.windowGroupsMany === undefined ? undefined : (qs) => opts.windowGroupsMany!(this, qs),
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
      book: opts.book ?? bookOfOverrides(opts.overrides ?? {}),
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
    const restored = new Map<string, Array<{ model: string; state: AggregatorState }>>()
    this.#dropped = new Set(opts.dropped)
    for (const a of opts.restored?.aggregators ?? []) {
      const project = a.project ?? 'default'
      if (this.#dropped.has(project)) continue
      const list = restored.get(project) ?? []
      list.push({ model: a.model, state: a.state as AggregatorState })
      restored.set(project, list)
    }
    for (const [project, list] of restored) {
      const dims = opts.restored?.dimensions?.[project]
      this.#part(project, dims === undefined ? undefined : DimensionDictionary.fromJSON(dims, opts.dimensionLimits), list)
    }
    this.#part('default')
  }

  /** The project's part of the graph, made on its first event (or at restore, from its snapshot). */
  #part(project: string, dims?: DimensionDictionary, restored: Array<{ model: string; state: AggregatorState }> = []): ProjectPart {
    const have = this.#projects.get(project)
    if (have !== undefined) return have
    const actorOpts = { mailboxCapacity: this.#mailboxCapacity, log: this.#opts.logger }
    const aggregators = new Map<string, ModelAggregator>()
    for (const r of restored) {
      const agg = new ModelAggregator(r.model, actorOpts, r.state, project)
      aggregators.set(r.model, agg)
      this.system.register(agg)
    }
    const seed = [...aggregators.values()].flatMap((a) => [...a.view().values()])
    const rollup = this.system.register(new RollupAggregator(actorOpts, seed, project))
    const part: ProjectPart = {
      id: project,
      aggregators,
      rollup,
      dims: dims ?? new DimensionDictionary(this.#opts.dimensionLimits),
      seriesRefs: new Map(),
      seriesList: [],
      users: null,
      sessions: null,
      userTotals: null,
      sessionTotals: null
    }
    this.#projects.set(project, part)
    return part
  }

  /** Read-only view of one project's analytics state, or undefined when it holds no event. */
  project(id: string): ProjectView | undefined {
    const part = this.#projects.get(id)
    if (part === undefined) return undefined
    return {
      id,
      dims: part.dims,
      rollup: part.rollup.view(),
      aggregators: () => part.aggregators.values(),
      aggregator: (model) => part.aggregators.get(model),
      postings: (dim) => this.#postings(part, dim),
      totals: (dim) => this.#totals(part, dim),
      series: (ref) => {
        const s = part.seriesList[ref]
        const store = s === undefined ? undefined : part.aggregators.get(s.model)?.view().get(s.provider)
        return s === undefined || store === undefined ? undefined : { ...s, store }
      }
    }
  }

  /**
   * The project's all-time totals per user or session, built on first use from the rows (null
   * while any series has folded hours: their rows, and so their users, are gone), then kept up
   * to date by #emit.
   */
  #totals(part: ProjectPart, dim: 'user' | 'session'): DimTotals | null {
    const have = dim === 'user' ? part.userTotals : part.sessionTotals
    if (have !== null) return have
    const stores = [...part.aggregators.values()].flatMap((a) => [...a.view().values()])
    if (stores.some((s) => s.coarseHours > 0)) return null
    const totals = DimTotals.build((visit) => {
      for (const store of stores) store.scanRows(-Infinity, Infinity, (v, flags, user, session) => visit(dim === 'user' ? user : session, v, flags))
    })
    if (dim === 'user') part.userTotals = totals
    else part.sessionTotals = totals
    return totals
  }

  #seriesRef(part: ProjectPart, model: string, provider: string): number {
    const key = `${model}\u0000${provider}`
    let ref = part.seriesRefs.get(key)
    if (ref === undefined) {
      ref = part.seriesList.length
      part.seriesList.push({ model, provider })
      part.seriesRefs.set(key, ref)
    }
    return ref
  }

  /**
   * The project's postings for users or sessions, built on first use from the rows the series
   * hold (one pass; callers read after a barrier, so every emitted event is in them), then kept
   * up to date by #emit.
   */
  #postings(part: ProjectPart, dim: 'user' | 'session'): Postings {
    const have = dim === 'user' ? part.users : part.sessions
    if (have !== null) return have
    const postings = new Postings()
    for (const agg of part.aggregators.values()) {
      for (const [provider, store] of agg.view()) {
        const ref = this.#seriesRef(part, agg.model, provider)
        // Every hour from coarseBefore on holds its rows (earlier ones are coarse: no rows to index).
        store.scanRows(store.coarseBefore, Infinity, (_v, _f, user, session, _a, ts) => postings.add(dim === 'user' ? user : session, ref, ts))
      }
    }
    if (dim === 'user') part.users = postings
    else part.sessions = postings
    return postings
  }

  /** A project created again after a delete: its new events count again. */
  revive(id: string): void {
    this.#dropped.delete(id)
  }

  /** Every project with state. */
  projects(): IterableIterator<string> {
    return this.#projects.keys()
  }

  /**
   * Drops every actor and dictionary of a project (DELETE /projects/:id): its aggregators
   * leave the registry at once, so queries no longer see them, and queued messages are dropped.
   */
  async deleteProject(id: string): Promise<void> {
    this.#dropped.add(id)
    const part = this.#projects.get(id)
    if (part === undefined) return
    this.#projects.delete(id)
    await Promise.all([...part.aggregators.values(), part.rollup].map((a) => this.system.retire(a)))
  }

  /** Highest seq whose effects are in every downstream actor's mailbox or state. */
  get emittedThrough(): number {
    return Math.max(this.#restoredThrough, this.costStage.emittedThrough)
  }

  /** Events accepted (committing, or committed and not yet priced). */
  get inFlightEvents(): number {
    return this.router.inFlightEvents + this.costStage.pendingEvents
  }

  /** Every aggregator of every project. */
  *aggregators(): IterableIterator<ModelAggregator> {
    for (const part of this.#projects.values()) yield* part.aggregators.values()
  }

  /** A model's aggregator in project `default` (tests and tools). */
  aggregator(model: string, project = 'default'): ModelAggregator | undefined {
    return this.#projects.get(project)?.aggregators.get(model)
  }

  /** Project `default`'s rollup (tests and tools). */
  get rollup(): RollupAggregator {
    return this.#part('default').rollup
  }

  /**
   * For a reader of the log feeding {@link Topology.replay} (recovery, a cluster partition's
   * follower), between batches: when more than {@link REPLAY_BACKLOG} events wait to be priced
   * (those still in the cost stage's mailbox counted), a promise of the moment the cost stage and
   * every actor downstream have handled everything; else null. Reading the log is far faster
   * than aggregating it: without this, a reader holds the whole log in memory at once.
   */
  backpressure(): Promise<void> | null {
    if (this.costStage.pendingEvents <= REPLAY_BACKLOG) return null
    return this.costStage.settled().then(() => this.system.idle())
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
    const alert: AlertNotice = { type: 'alert', project: t.rule.project ?? 'default', rule_id: t.rule.id, rule_name: t.rule.name, state: t.state, value: t.value, threshold: t.rule.threshold, at: new Date(t.at).toISOString(), group: t.group ?? null }
    if (this.#opts.publishAlert !== undefined) this.#opts.publishAlert(alert)
    else this.broadcaster.send({ type: 'alert', alert })
    this.#opts.onAlert?.(t)
  }

  #admission(n: number): number {
    if (this.inFlightEvents + n > this.#opts.highWaterEvents) return 1
    return this.system.deepest() > this.#mailboxCapacity * MAILBOX_HIGH_WATER ? 1 : 0
  }

  #spawn(part: ProjectPart, model: string): ModelAggregator {
    const agg = new ModelAggregator(model, { mailboxCapacity: this.#mailboxCapacity, log: this.#opts.logger }, undefined, part.id)
    part.aggregators.set(model, agg)
    this.system.register(agg)
    return agg
  }

  #aggregatorFor(part: ProjectPart, model: string): ModelAggregator {
    const found = part.aggregators.get(model)
    if (found !== undefined) return found
    // The cap counts per project; the overflow actor does not count against it.
    const real = part.aggregators.size - (part.aggregators.has(OVERFLOW_MODEL) ? 1 : 0)
    if (real >= this.#opts.maxModels) return part.aggregators.get(OVERFLOW_MODEL) ?? this.#spawn(part, OVERFLOW_MODEL)
    return this.#spawn(part, model)
  }

  #emit(all: PricedEvent[]): void {
    // Priced after close() (a cluster partition stopped without draining): nobody reads them any more.
    if (this.system.closed) return
    const events = this.#dropped.size === 0 ? all : all.filter((e) => !this.#dropped.has(e.project))
    if (events.length === 0) return
    const byAgg = new Map<ModelAggregator, { part: ProjectPart; events: PricedEvent[]; dims: number[] | null }>()
    const byRollup = new Map<RollupAggregator, PricedEvent[]>()
    const rowDims: RowDims = { user: 0, session: 0, attrs: 0 }
    let lastProject = ''
    let part: ProjectPart | undefined
    for (const e of events) {
      if (part === undefined || e.project !== lastProject) {
        lastProject = e.project
        part = this.#part(e.project)
      }
      const agg = this.#aggregatorFor(part, e.model)
      let slot = byAgg.get(agg)
      if (slot === undefined) {
        slot = { part, events: [], dims: null }
        byAgg.set(agg, slot)
      }
      const hasDims = e.user !== null || e.session !== null || e.tags !== null || e.meta !== null
      if (hasDims) {
        part.dims.encode(e.user, e.session, e.tags, e.meta, rowDims)
        // Words only once an event of this batch has any (earlier ones are zeros).
        if (slot.dims === null) slot.dims = new Array(slot.events.length * 3).fill(0)
        slot.dims.push(rowDims.user, rowDims.session, rowDims.attrs)
      } else {
        if (slot.dims !== null) slot.dims.push(0, 0, 0)
      }
      slot.events.push(e)
      const list = byRollup.get(part.rollup)
      if (list === undefined) byRollup.set(part.rollup, [e])
      else list.push(e)
    }
    for (const [agg, slot] of byAgg) {
      const dims = slot.dims === null ? undefined : Uint32Array.from(slot.dims)
      const sent = agg.send({ type: 'events', events: slot.events, dims, applied: this.#appliedTo(slot.part, agg, slot.events, dims) })
      if (sent) this.#unapplied++
      if (!sent) this.#opts.logger.error({ actor: agg.name, events: slot.events.length }, 'aggregator mailbox full: events not aggregated until restart')
    }
    for (const [rollup, list] of byRollup) {
      if (rollup.send({ type: 'events', events: list, applied: this.#applied })) this.#unapplied++
      else {
        this.#opts.logger.error({ actor: rollup.name, events: list.length }, 'rollup mailbox full: events not aggregated until restart')
      }
    }
    this.alerts.send({ type: 'events', events })
    this.broadcaster.send({ type: 'events', events })
  }

  /**
   * The `applied` callback of an aggregator's events message: counts it applied (sync) and adds
   * its events to the project's postings and per-user/session totals built so far. Here, and
   * not when the events are sent: those are built from the rows the aggregators hold, and a
   * build can run while a message is still queued (the alert evaluator reads between actor
   * messages, without a barrier; a read after sync() while ingest flows): events added at the
   * send would be missing from a build made before they were applied, for good. The callback
   * runs in the aggregator's turn right after the rows are in its state, so every row is in a
   * build or added after it, exactly once.
   */
  #appliedTo(part: ProjectPart, agg: ModelAggregator, events: readonly PricedEvent[], dims: Uint32Array | undefined): () => void {
    return () => {
      this.#unapplied--
      const { users, sessions, userTotals, sessionTotals } = part
      if (users === null && sessions === null && userTotals === null && sessionTotals === null) return
      for (let i = 0; i < events.length; i++) {
        const e = events[i]
        const user = dims === undefined ? 0 : dims[3 * i]
        const session = dims === undefined ? 0 : dims[3 * i + 1]
        if (users !== null && user !== 0) users.add(user, this.#seriesRef(part, agg.model, e.provider), e.ts)
        if (sessions !== null && session !== 0) sessions.add(session, this.#seriesRef(part, agg.model, e.provider), e.ts)
        if (userTotals !== null || sessionTotals !== null) {
          const flags = eventValues(e, this.#values)
          userTotals?.add(user, this.#values, flags)
          sessionTotals?.add(session, this.#values, flags)
        }
      }
    }
  }

  /** Every aggregator and rollup, of every project. */
  #readers(): Array<ModelAggregator | RollupAggregator> {
    const out: Array<ModelAggregator | RollupAggregator> = []
    for (const part of this.#projects.values()) out.push(...part.aggregators.values(), part.rollup)
    return out
  }

  /**
   * 'events' messages sent to aggregators and rollups and not applied yet (each carries
   * {@link Topology.#applied}, called once it is in the reader's state): with nothing in the cost
   * stage either, every committed event is readable — an O(1) check per query instead of a
   * depth scan of every reader. A message a reader drops (retired, or its receive threw) leaves
   * this too high: sync() then takes the barrier, which is exact, and sets it right after.
   */
  #unapplied = 0
  readonly #applied = (): void => {
    this.#unapplied--
  }

  /**
   * Read-your-writes: resolves once every event committed before the call is in the
   * aggregators' state. O(1) when the pipeline is idle; else a barrier through the cost stage
   * and every reader.
   */
  async sync(): Promise<void> {
    await this.router.flushed()
    if (this.costStage.pendingEvents === 0 && this.costStage.depth === 0 && this.#unapplied === 0) return
    await new Promise<void>((resolve) => {
      this.costStage.send({
        type: 'barrier',
        run: () => {
          // Not returned: the cost stage would hold its emission until every reader replied.
          void this.#gather(this.#readers(), (a, reply) => a.send({ type: 'barrier', reply: () => reply(undefined) })).then(() => resolve())
        }
      })
    })
    // Every reader has handled everything sent before its barrier; with nothing queued anywhere
    // now, no events message is unapplied (dropped ones included): the count is exact again.
    if (this.#unapplied !== 0 && this.costStage.pendingEvents === 0 && this.costStage.depth === 0 && this.#readers().every((a) => a.depth === 0)) this.#unapplied = 0
  }

  /**
   * The barrier fan-in: `ask` sends each actor a message carrying `reply`, all in this turn;
   * resolves with the replies in the actors' order once every one replied (at once for none).
   */
  #gather<A, R>(actors: readonly A[], ask: (actor: A, reply: (r: R) => void) => void): Promise<R[]> {
    return new Promise((resolve) => {
      const replies: R[] = new Array(actors.length)
      let left = actors.length
      if (left === 0) return resolve(replies)
      actors.forEach((a, i) =>
        ask(a, (r) => {
          replies[i] = r
          if (--left === 0) resolve(replies)
        })
      )
    })
  }

  /**
   * A consistent snapshot of every aggregator and the alert evaluator at one log position.
   * Aggregators hand over only the parts made since the previous snapshot (the rows recorded
   * since, or a series rewritten under fresh part ids), unless `full` (after a failed write,
   * which may have left holes in the stored part ranges).
   */
  async snapshot(now: number, full = false): Promise<SnapshotPayload> {
    // Take in what was committed already, so the snapshot is as fresh as the acknowledgements.
    await this.router.flushed()
    return new Promise((resolve) => {
      const sent = this.costStage.send({
        type: 'barrier',
        run: () => {
          const seq = this.emittedThrough + 1
          const list = [...this.aggregators()]
          // Dictionaries are append-only: taken now (at the cut, or later) they name every id the rows before the cut use.
          const dimensions: Record<string, unknown> = {}
          for (const part of this.#projects.values()) dimensions[part.id] = part.dims.toJSON()
          // Both asked in this turn, at the cut; not returned (see sync).
          const states = this.#gather(list, (a, reply: (state: unknown) => void) => a.send({ type: 'snapshot', full, reply }))
          const alerts = this.#gather([this.alerts], (a, reply: (state: AlertState) => void) => a.send({ type: 'snapshot', reply }))
          void Promise.all([states, alerts]).then(([states, [alerts]]) => {
            const aggregators: SnapshotPayload['aggregators'] = list.map((a, i) => ({ project: a.project, model: a.model, state: states[i] }))
            resolve({ seq, createdAt: now, aggregators, alerts, dimensions })
          })
        }
      })
      if (!sent) throw new Error('cost stage mailbox full: cannot snapshot')
    })
  }

  /**
   * Deletes events from project `project`'s analytics state (DESIGN §7, DELETE /events): the
   * rows whose seq is in `seqs` in every aggregator of the project, recomputing the aggregates
   * they were in. Where rows are looked for: given a Map (seq → the event's ts, as search hits
   * carry), only the minutes of those times — the fast form; given a Set, every row of the
   * project, or with `range` only rows with range.start <= ts < range.end; and `coarse` — events read from the log
   * whose hours retention may have folded: each is taken out of its series' coarse hour
   * (counts and sums exact, once per seq; an event whose hour holds rows is left to `seqs`).
   * Pass in `coarse` only events the state counted (seq below the restored snapshot's, or
   * ingested since). Then the rollup's changed hours are rebuilt from the series' hours, the
   * project's postings and per-user/session totals are dropped (rebuilt on next use),
   * dictionary values no row references any more are blanked (see DimensionDictionary
   * .blankUnreferenced), and aggregators left without any series are retired. Every changed
   * series is rewritten in full by the next snapshot (a snapshot being copied meanwhile fails).
   *
   * Runs at a cut: a barrier through the cost stage, which then emits nothing until the forget
   * is done, so the state holds every event before the cut and none after while it changes.
   * Resolves with the events removed (rows plus coarse events). Idempotent: a seq with no row
   * is a no-op. Rejects (after doing what it could) if an actor could not take its part.
   */
  async forget(project: string, seqs: ReadonlySet<number> | ReadonlyMap<number, number>, range?: { start: number; end: number }, coarse?: readonly PricedEvent[]): Promise<number> {
    return this.#atCut('forget', () => this.#forgetAtCut(project, seqs, range, coarse))
  }

  /**
   * Runs `change` at a cut: a barrier through the cost stage, which holds its emission until
   * the promise `change` returns settles — so the state holds every event before the cut and
   * none after while it changes (what forget and reprice run in).
   */
  async #atCut<T>(what: string, change: () => Promise<T>): Promise<T> {
    // Take in what was committed already: the cut is after every acknowledged event.
    await this.router.flushed()
    return new Promise((resolve, reject) => {
      const sent = this.costStage.send({
        type: 'barrier',
        // Returned: the cost stage holds its emission until the change is done.
        run: () => change().then(resolve, reject)
      })
      if (!sent) reject(new Error(`cost stage mailbox full: cannot ${what} now`))
    })
  }

  /**
   * Sends each of `actors` one message (via `ask`) that changes its state, so that all of them
   * handle it in one go: first waits until each of them, and the project's rollup, is idle
   * (their mailboxes hold nothing from before the cut, and no drain loop is part-way with a
   * turn pending), then sends every message in one synchronous loop. Each actor then starts a
   * fresh drain, as a microtask, that handles just that message — all before any other
   * macrotask (an HTTP query, a timer) runs — so a reader sees every actor before or every
   * actor after, never some of each. Then, still in microtasks, `rollup` brings the rollup in
   * line with the replies (forget: rebuild the hours; reprice: shift them). With `ready`, first
   * checks it once all are idle and, when false, sends nothing and resolves `notReady`.
   * Resolves with the replies (an Error for an actor that could not take its message).
   */
  async #changeAll<R>(
    part: ProjectPart,
    actors: readonly ModelAggregator[],
    ask: (a: ModelAggregator, reply: (r: R | Error) => void) => boolean,
    rollup: (replies: readonly R[]) => RollupMessage | null,
    ready?: () => boolean
  ): Promise<{ replies: Array<R | Error>; failure: Error | null; notReady?: boolean }> {
    await Promise.all([...actors, part.rollup].map((a) => a.idle()))
    // Checked once all are idle, in the same run of microtasks as the sends below.
    if (ready !== undefined && !ready()) return { replies: [], failure: null, notReady: true }
    const replies = await this.#gather(actors, (a, reply: (r: R | Error) => void) => {
      if (!ask(a, reply)) reply(new Error(`${a.name} could not take the change (mailbox full or closed)`))
    })
    const failure = replies.find((r): r is Error => r instanceof Error) ?? null
    const message = rollup(replies.filter((r): r is R => !(r instanceof Error)))
    if (message === null) return { replies, failure }
    const [err] = await this.#gather([part.rollup], (r, reply: (err?: Error) => void) => {
      if (!r.send({ ...message, reply })) reply(new Error(`${r.name} could not take the change (mailbox full or closed)`))
    })
    return { replies, failure: failure ?? err ?? null }
  }

  /**
   * The rollup's part of a forget: rebuild the changed hours from every series of the project
   * (read when the message runs: after the aggregators' change); null when none changed.
   */
  #rehour(part: ProjectPart, replies: readonly ForgetReply[]): RollupMessage | null {
    const hours = new Set<number>()
    for (const r of replies) for (const h of r.hours) hours.add(h)
    if (hours.size === 0) return null
    const stores = () => [...part.aggregators.values()].flatMap((a) => [...a.view().values()])
    return { type: 'rehour', hours: [...hours], sources: stores }
  }

  /**
   * The aggregator a project's events of `model` went to: its own, or the overflow one past the
   * model cap (undefined when neither exists: the project holds no such event).
   */
  #aggregatorOf(part: ProjectPart, model: string): ModelAggregator | undefined {
    return part.aggregators.get(model) ?? part.aggregators.get(OVERFLOW_MODEL)
  }

  /**
   * Drops the project's per-user/session all-time totals (they hold costs) and, with
   * `postings`, its postings: each is rebuilt from the rows on its next use.
   */
  #dropDerived(part: ProjectPart, postings: boolean): void {
    if (postings) {
      part.users = null
      part.sessions = null
    }
    part.userTotals = null
    part.sessionTotals = null
  }

  /**
   * Re-prices events of project `project` already counted (DESIGN §8, POST /prices/reprice):
   * every aggregator holding them sets their rows' cost and unpriced flag and shifts the
   * minute, hour and day totals holding them (coarse hours: − before + after, once per
   * `repriceId`); the rollup's hours shift by what the series' hours moved, and the per-user and
   * per-session totals are dropped (rebuilt from the rows on next use). Search by cost and alert
   * windows read the rows and aggregates, so they follow.
   *
   * The long part runs while events keep coming, changing nothing readers see: the entries are
   * routed to their aggregators (a slice per turn), then each aggregator plans its rows and
   * writes their new costs into chunk copies, a slice per message with events recorded in
   * between (appends leave a plan valid; a fold makes it stale and it is planned again). Only
   * then a cut (the cost stage emits nothing until it is done): every aggregator swaps its
   * copies in and shifts its aggregates, looks again for the entries recorded after its plan
   * began, the rollup shifts its hours and the totals are dropped — all in one run of
   * microtasks (see {@link Topology.#changeAll}), so a reader sees every old cost or every new
   * one. The cut is O(chunks + minutes + hours changed), never O(rows). If a plan went stale
   * before the cut (a fold), the cut is left, that aggregator plans again and the cut is taken
   * again; after three such rounds the cut applies anyway (a stale series is planned whole
   * there: correct, only longer).
   *
   * Idempotent: rows are set, coarse hours keep the ids they applied (in the snapshot too).
   * Resolves with the rows changed plus entries applied to coarse hours. Rejects, having
   * changed nothing, if an aggregator could not plan; after changing what it could if one could
   * not apply (run it again: the rest then follows).
   */
  async reprice(project: string, repriceId: string, changes: CostChanges): Promise<number> {
    const id = repriceId
    const part = this.#projects.get(project)
    const n = changes.seqs.length
    if (part === undefined || n === 0) return 0
    for (const col of [changes.ts, changes.before, changes.beforeUnpriced, changes.after, changes.afterUnpriced, changes.model, changes.provider]) {
      if (col.length !== n) throw new RangeError(`re-price ${id}: every column must hold ${n} entries`)
    }
    // Entries by aggregator: counted first (one Map entry per model), then one index array each;
    // a turn now and then (nothing is held: events and readers go on).
    const aggOf = new Map<number, ModelAggregator | undefined>()
    const counts = new Map<ModelAggregator, number>()
    let lastModel = -1
    let lastAgg: ModelAggregator | undefined
    const route = (i: number): ModelAggregator | undefined => {
      const model = changes.model[i]
      if (model === lastModel) return lastAgg
      lastModel = model
      if (!aggOf.has(model)) aggOf.set(model, this.#aggregatorOf(part, changes.names[model]))
      return (lastAgg = aggOf.get(model))
    }
    let since = performance.now()
    const pause = async (): Promise<void> => {
      if (performance.now() - since < ROUTE_MS) return
      await turn()
      since = performance.now()
    }
    for (let i = 0; i < n; i++) {
      if (i % ROUTE_SLICE === ROUTE_SLICE - 1) await pause()
      const agg = route(i)
      if (agg !== undefined) counts.set(agg, (counts.get(agg) ?? 0) + 1)
    }
    const idx = new Map<ModelAggregator, { idx: Uint32Array; n: number }>()
    for (const [agg, count] of counts) idx.set(agg, { idx: new Uint32Array(count), n: 0 })
    let slot: { idx: Uint32Array; n: number } | undefined
    lastModel = -1
    for (let i = 0; i < n; i++) {
      if (i % ROUTE_SLICE === ROUTE_SLICE - 1) await pause()
      const agg = route(i)
      if (agg === undefined) continue
      slot = idx.get(agg) as { idx: Uint32Array; n: number }
      slot.idx[slot.n++] = i
    }
    const aggs = [...idx.keys()]
    // One aggregator plans at a time: each yields between its slices, so a turn holds one slice.
    const plan = async (a: ModelAggregator): Promise<true | Error> => {
      // Every event up to here is in the aggregator's mailbox ahead of the plan (FIFO).
      const through = this.emittedThrough
      const [r] = await this.#gather([a], (x, reply: (r: true | Error) => void) => {
        if (!x.send({ type: 'reprice-plan', id, changes, idx: (idx.get(x) as { idx: Uint32Array }).idx, through, reply })) reply(new Error(`${x.name} could not take the re-price (mailbox full or closed)`))
      })
      return r
    }
    const discard = (err: Error): never => {
      for (const a of aggs) a.send({ type: 'reprice-apply', id, discard: true, reply: () => {} })
      throw err
    }
    for (const a of aggs) {
      const r = await plan(a)
      if (r instanceof Error) discard(r)
    }
    for (let round = 0; ; round++) {
      const changed = await this.#atCut('reprice', () => this.#repriceAtCut(part, id, aggs, round >= 3))
      if (changed !== null) return changed
      // A plan went stale (a fold) before the cut: plan those again, with events flowing.
      for (const a of aggs) {
        if (a.repriceReady(id)) continue
        const r = await plan(a)
        if (r instanceof Error) discard(r)
      }
    }
  }

  /**
   * {@link Topology.reprice} at its cut: swaps every aggregator's plan in at once. Resolves null,
   * changing nothing, when a plan is not ready (stale) and not `force`.
   */
  async #repriceAtCut(part: ProjectPart, id: string, aggs: readonly ModelAggregator[], force: boolean): Promise<number | null> {
    const { replies, failure, notReady } = await this.#changeAll<RepriceReply>(
      part,
      aggs,
      (a, reply) => a.send({ type: 'reprice-apply', id, reply }),
      (replies) => {
        const shifts: Deltas = new Map()
        for (const r of replies) for (const [h, d] of r.shifts) addDelta(shifts, h, d.cost, d.unpriced, d.n)
        return shifts.size === 0 ? null : { type: 'shift', shifts }
      },
      force ? undefined : () => aggs.every((a) => a.repriceReady(id))
    )
    if (notReady) return null
    let changed = 0
    for (const r of replies) if (!(r instanceof Error)) changed += r.changed
    // Still in the same run of microtasks as the apply: no reader has seen the old totals since.
    if (changed > 0) this.#dropDerived(part, false)
    if (failure !== null) throw failure
    return changed
  }

  /** {@link Topology.forget} at its cut (nothing is emitted downstream until it settles). */
  async #forgetAtCut(project: string, seqs: ReadonlySet<number> | ReadonlyMap<number, number>, range: { start: number; end: number } | undefined, coarse: readonly PricedEvent[] | undefined): Promise<number> {
    const part = this.#projects.get(project)
    if (part === undefined) return 0
    const coarseOf = new Map<ModelAggregator, PricedEvent[]>()
    for (const e of coarse ?? []) {
      const agg = e.project === project ? this.#aggregatorOf(part, e.model) : undefined
      if (agg === undefined) continue
      const list = coarseOf.get(agg)
      if (list === undefined) coarseOf.set(agg, [e])
      else list.push(e)
    }
    const aggs = [...part.aggregators.values()]
    const { replies, failure } = await this.#changeAll<ForgetReply>(
      part,
      aggs,
      (a, reply) => a.send({ type: 'forget', seqs, range, coarse: coarseOf.get(a), reply }),
      (replies) => this.#rehour(part, replies)
    )
    let removed = 0
    const cands = { users: new Set<number>(), sessions: new Set<number>(), attrs: new Set<number>(), values: [] as Array<[number, number]> }
    for (const r of replies) {
      if (r instanceof Error) continue
      removed += r.removed
      for (const id of r.users) cands.users.add(id)
      for (const id of r.sessions) cands.sessions.add(id)
      for (const id of r.attrs) cands.attrs.add(id)
    }
    if (removed > 0) {
      // Built on first use from the rows: the next query rebuilds them without the deleted events.
      this.#dropDerived(part, true)
      const dims = part.dims
      for (const e of coarse ?? []) {
        if (e.project !== project) continue
        const u = e.user === null ? undefined : dims.users.find(e.user)
        if (u !== undefined) cands.users.add(u)
        const s = e.session === null ? undefined : dims.sessions.find(e.session)
        if (s !== undefined) cands.sessions.add(s)
        const set = dims.findSet(e.tags, e.meta)
        if (set !== undefined) cands.attrs.add(set)
        cands.values.push(...dims.valuesOf(e.tags, e.meta))
      }
      if (cands.users.size + cands.sessions.size + cands.attrs.size + cands.values.length > 0) {
        // One pass over the words of every row the project holds: which ids are still used.
        const refs = { users: new Uint8Array(dims.users.ids + 2), sessions: new Uint8Array(dims.sessions.ids + 2), attrs: new Uint8Array(dims.attrSets + 2) }
        for (const a of part.aggregators.values()) for (const store of a.view().values()) store.markDims(refs.users, refs.sessions, refs.attrs)
        dims.blankUnreferenced(cands, refs)
      }
    }
    // An aggregator left without any series goes: no name of it stays in the next snapshot.
    for (const [i, a] of aggs.entries()) {
      const r = replies[i]
      if (r instanceof Error || !r.empty || part.aggregators.get(a.model) !== a) continue
      part.aggregators.delete(a.model)
      await this.system.retire(a)
    }
    if (failure !== null) throw failure
    return removed
  }

  /**
   * Asks every aggregator to fold rows past retention (see SeriesStore.retain). A message like
   * any other: it runs between events, in each actor, never on the ingest path.
   */
  retain(policy: RetentionPolicy): void {
    for (const a of this.aggregators()) a.send({ type: 'retain', policy })
  }

  /** Raw rows held and rows kept only as hour aggregates, over every aggregator. */
  retentionStats(): { rawRows: number; coarseRows: number; folded: number } {
    const out = { rawRows: 0, coarseRows: 0, folded: 0 }
    for (const a of this.aggregators()) {
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
    await this.system.close(['ingest-router', 'cost-stage', ...this.#readers().map((a) => a.name), 'alert-evaluator', 'broadcaster'])
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
      models: [...this.aggregators()].length,
      projects: this.#projects.size,
      retention: this.retentionStats()
    }
  }
}

/** A book holding only `overrides`, from the start of time (a topology given no book). */
function bookOfOverrides(overrides: PriceOverrides): PriceBook {
  const book = new PriceBook()
  book.addOverrideLayer({ rev: 0, created_at: 0, overrides })
  return book
}

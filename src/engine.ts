/**
 * Engine: the stores, the actor topology, the pricing pool and the snapshot writer, with
 * recovery (snapshot + log tail) and an orderly close. HTTP sits on top of it (app.ts).
 */
import { openStores, type Stores } from './store/db.js'
import { EventLog, sortedPositions } from './store/event-log.js'
import { SnapshotStore, type SnapshotPayload } from './store/snapshots.js'
import { RuleStore } from './store/rules.js'
import { ProjectStore } from './store/projects.js'
import { AlertEventStore } from './store/alert-events.js'
import { BudgetStore } from './store/budgets.js'
import { BudgetEvaluator } from './budgets/evaluator.js'
import { ApiKeyStore } from './store/api-keys.js'
import { WebhookNotifier, type NotifierOptions } from './alerts/notifier.js'
import { AlertDispatcher } from './alerts/dispatcher.js'
import { REPLAY_CHUNK, Topology } from './actors/topology.js'
import { PricingPool } from './pricing/pool.js'
import { priceEvent, type PriceBook } from './pricing/book.js'
import { inferProvider, priceInPlace } from './pricing/compute-cost.js'
import { PriceStore } from './store/prices.js'
import { PriceService, seenModels, type PricesHost } from './prices.js'
import { seqOfEventId, type PendingEvent, type PricedEvent, type StoredEvent } from './events.js'
import { breakdown, breakdownMany, metrics, type LogScan, type QuerySource } from './queries.js'
import { windowGroupsMany, windowGroupsOf, type GroupWindowQuery, type WindowGroups } from './alerts/windows.js'
import { localAnalytics, type Analytics } from './analytics/service.js'
import type { Config } from './config.js'
import type { Log } from './log.js'
import type { Clock } from './clock.js'
import type { AlertNotice, BroadcastLimits, BudgetNotice } from './actors/broadcaster.js'
import type { RuleAlertState } from './actors/alert-evaluator.js'
import type { WindowQuery } from './analytics/reader.js'
import type { Aggregate } from './analytics/aggregate.js'
import { DAY_MS } from './analytics/time.js'
import { ForgetTombstones, chunkKey, pendingForgets, type ForgetTombstone, type PendingForget } from './store/tombstones.js'
import { scrubFreePages } from './store/scrub.js'
import { DeleteRegistry, filterNames, noFilterError, runForget, type ForgetTarget, type MatchOptions } from './forget.js'
import type { RangeQuery } from './queries.js'
import { llmsError } from './errors.js'

export interface EngineOptions {
  config: Config
  logger: Log
  clock: Clock
  /** Price on the main thread instead of piscina workers (benchmarks' baseline). */
  inlinePricing?: boolean
  /** Called during recovery with (replayed, total) events. */
  onProgress?: (done: number, total: number) => void
  /** Webhook delivery tunables (attempts, timeout, backoff; defaults in alerts/notifier.ts). */
  webhook?: NotifierOptions
  /** Alert evaluation tick, ms (default 1000; 0 = no timer, tests send ticks by hand). */
  alertTickMs?: number
  /** WebSocket fan-out tunables (defaults in actors/broadcaster.ts). */
  broadcast?: Partial<BroadcastLimits>
  /**
   * Cluster mode: the alert evaluator's windows come from here (merged from every partition,
   * see src/cluster/engine.ts) and its ticks are sent by the caller, not by this engine's timer.
   */
  externalAlerts?: {
    window: (q: WindowQuery) => Aggregate
    /** Grouped rules' windows (src/alerts/windows.ts); absent: grouped rules fail their evaluation (counted). */
    windowGroups?: (q: GroupWindowQuery) => WindowGroups
    publish: (notice: AlertNotice) => void
  }
}

export interface RecoveryInfo {
  snapshot: 'loaded' | 'none' | 'rejected'
  reason?: string
  snapshotSeq: number
  replayed: number
  ms: number
}

export class Engine {
  readonly config: Config
  readonly stores: Stores
  readonly log: EventLog
  readonly snapshots: SnapshotStore
  readonly rules: RuleStore
  /** Projects and tombstones of deleted ones (`default` always exists). */
  readonly projects: ProjectStore
  /** Recorded alert transitions and reminders with their delivery outcomes. */
  readonly alertEvents: AlertEventStore
  /** API keys made through `POST /keys` (configured keys are in the KeyRing). */
  readonly apiKeys: ApiKeyStore
  /** Records alert notifications and delivers their webhooks (off the ingest path). */
  readonly alerting: AlertDispatcher
  /** Budgets and their fired records (DESIGN §8). */
  readonly budgets: BudgetStore
  /** Budgets' figures and once-only threshold alerts, evaluated on the alert tick (src/budgets/evaluator.ts). */
  readonly budgetEvaluator: BudgetEvaluator
  readonly topology: Topology
  /** Tombstones of event deletes not finished yet (DELETE /events; src/forget.ts). */
  readonly forgetTombstones: ForgetTombstones
  /** Running and recent event deletes (GET /events/deletes). */
  readonly deletes: DeleteRegistry
  /** The price book's records (LMDB db `prices`; src/store/prices.ts). */
  readonly priceStore: PriceStore
  /** The price book every pricing path reads (src/pricing/book.ts). */
  readonly book: PriceBook
  /** GET/PUT /prices and re-pricing (src/prices.ts). */
  readonly prices: PriceService
  /**
   * Re-pricings whose changes the in-memory state holds: what a snapshot lists in `reprices`,
   * so a restart re-applies exactly the others (src/prices.ts).
   */
  readonly #repriced = new Set<string>()
  /** A re-pricing's in-memory apply in flight; snapshots wait for it (and it for them). */
  #repricing: Promise<void> | null = null
  /** Tunables of event deletes (chunk size, work per turn; defaults in src/forget.ts). Tests shrink the chunks. */
  forgetOptions: MatchOptions = {}
  /**
   * Seqs of the events of running (or interrupted) deletes: from their chunk's tombstone until
   * their log records are purged, every read passes over them (getEvent, the queries' log path,
   * since_seq replays, eventsBySeq, the recovery replay).
   */
  readonly #forgotten = new Set<number>()
  /** Event deletes run one at a time, in arrival order. */
  #forgetQueue: Promise<unknown> = Promise.resolve()
  /**
   * Delete chunks (tombstoned, see chunkKey) whose topology.forget is in memory: what a snapshot
   * lists in `forgets`, so a restart never subtracts a coarse hour's events twice.
   */
  readonly #applied = new Set<string>()
  /** A chunk's topology.forget in flight; snapshots wait for it (and it for them). */
  #forgetting: Promise<void> | null = null
  /** Log purges (project and event deletes) never overlap: each rewrites records it read. */
  #logPurge: Promise<unknown> = Promise.resolve()
  readonly #pool: PricingPool | null
  readonly #logger: Log
  readonly #clock: Clock
  readonly #onProgress?: (done: number, total: number) => void
  #restored: { payload?: SnapshotPayload; status: RecoveryInfo['snapshot']; reason?: string }
  #ready = false
  #recovery: RecoveryInfo | null = null
  #snapshotTimer: NodeJS.Timeout | null = null
  #snapshotting: Promise<void> | null = null
  #snapshotFailed = false
  #lastSnapshot: { seq: number; at: number; bytes: number; ms: number } | null = null
  #closing: Promise<void> | null = null
  #alertTimer: NodeJS.Timeout | null = null
  readonly #alertTickMs: number
  readonly #externalAlerts: boolean

  constructor(opts: EngineOptions) {
    this.config = opts.config
    this.#logger = opts.logger
    this.#clock = opts.clock
    this.#onProgress = opts.onProgress
    this.stores = openStores(opts.config.dataDir, { maxBytes: opts.config.maxDbBytes, dedupe: { windowMs: opts.config.dedupeWindowMs, now: () => opts.clock.now() } })
    this.log = new EventLog(this.stores.events, { used: this.stores.usedBytes, max: this.stores.maxBytes }, this.stores.dedupe)
    this.snapshots = new SnapshotStore(this.stores.meta)
    this.rules = new RuleStore(this.stores.rules)
    this.projects = new ProjectStore(this.stores.projects, opts.clock.now())
    this.apiKeys = new ApiKeyStore(this.stores.apiKeys)
    this.alertEvents = new AlertEventStore(this.stores.alertEvents, { log: opts.logger })
    // One notifier for rules and budgets: one delivery queue, one set of counters.
    const notifier = new WebhookNotifier({ log: opts.logger, ...opts.webhook })
    this.alerting = new AlertDispatcher({ store: this.alertEvents, notifier, clock: opts.clock, log: opts.logger })
    this.budgets = new BudgetStore(this.stores.budgets)
    this.budgetEvaluator = new BudgetEvaluator({
      store: this.budgets,
      // Looked up at each call: cluster mode's engine replaces `analytics` with merged answers.
      spend: { metrics: (q) => this.analytics.metrics(q), breakdown: (q, by, sort, limit) => this.analytics.breakdown(q, by, sort, limit) },
      alertEvents: this.alertEvents,
      notifier,
      publish: (notice) => this.publishBudget(notice),
      clock: opts.clock,
      log: opts.logger
    })
    this.#alertTickMs = opts.alertTickMs ?? 1000
    this.#externalAlerts = opts.externalAlerts !== undefined
    this.forgetTombstones = ForgetTombstones.open(this.stores.root)
    this.deletes = new DeleteRegistry(() => opts.clock.now())
    // Before anything reads: a delete a crash interrupted stays invisible until recover() finishes it.
    for (const t of this.forgetTombstones.list()) for (const s of t.seqs) this.#forgotten.add(s)

    const read = this.snapshots.read()
    let restored: SnapshotPayload | undefined
    if (read.ok) {
      restored = read.payload
      this.#restored = { payload: restored, status: 'loaded' }
    } else {
      this.#restored = { status: read.reason === 'no snapshot' ? 'none' : 'rejected', reason: read.reason }
      if (this.#restored.status === 'rejected') this.#logger.warn({ reason: read.reason }, 'snapshot unusable: rebuilding state from the event log')
    }

    // The book before anything prices: the topology's cost stage, the replay, every read. A
    // re-pricing the restored snapshot does not hold stays out of it until recover() re-applies it.
    const held = new Set(restored?.reprices ?? [])
    this.priceStore = new PriceStore(this.stores.prices, restored === undefined ? () => true : (id) => held.has(id))
    this.priceStore.syncOverrides(opts.config.priceOverrides, opts.clock.now())
    this.book = this.priceStore.book
    this.log.priceRev = () => this.book.rev
    this.prices = new PriceService(this.#pricesHost)

    this.#pool = opts.inlinePricing === true ? null : new PricingPool({ threads: opts.config.costThreads })
    const build = (payload: SnapshotPayload | undefined) =>
      new Topology({
        log: this.log,
        pricer: this.#pool,
        book: this.book,
        logger: opts.logger,
        clock: opts.clock,
        highWaterEvents: opts.config.highWaterEvents,
        maxModels: opts.config.maxModels,
        costChunk: opts.config.costBatch,
        costMaxInFlight: Math.max(2, opts.config.costThreads * 2),
        restored: payload,
        onAlert: (t) => this.alerting.dispatch(t),
        recordedAlerts: this.alertEvents.latestByRule(),
        price: (e) => this.price(e),
        broadcast: opts.broadcast,
        dimensionLimits: opts.config.dimensionLimits,
        dropped: new Set(this.projects.purging()),
        publishAlert: opts.externalAlerts?.publish,
        window: opts.externalAlerts !== undefined
          ? (_reader, q) => opts.externalAlerts!.window(q)
          : (reader, q) => metrics({ reader, log: this.#logScan }, { ...q.filters, project: q.project, start: q.start, end: q.end }),
        windowGroups: opts.externalAlerts !== undefined
          ? opts.externalAlerts.windowGroups === undefined ? undefined : (_reader, q) => opts.externalAlerts!.windowGroups!(q)
          : (reader, q) => windowGroupsOf(breakdown({ reader, log: this.#logScan }, { ...q.filters, project: q.project, start: q.start, end: q.end }, q.by, q.sort, q.limit), q.limit),
        // One pass over a window's rows for every sort its grouped rules need (cluster mode: the prefetched windowGroups).
        windowGroupsMany: opts.externalAlerts !== undefined
          ? undefined
          : (reader, qs) => windowGroupsMany(qs, (q, by, sorts, limit, sketches) => breakdownMany({ reader, log: this.#logScan }, { ...q.filters, project: q.project, start: q.start, end: q.end }, by, sorts, limit, sketches))
      })
    try {
      this.topology = build(restored)
    } catch (err) {
      // A snapshot that passed its checksum but does not restore (e.g. an aggregator state
      // version we no longer read) is rebuilt from the log, never half-used.
      this.#logger.warn({ err: (err as Error).message }, 'snapshot could not be restored: rebuilding state from the event log')
      this.#restored = { status: 'rejected', reason: (err as Error).message }
      // Rebuilt from the log: every re-pricing prices it from the start.
      for (const r of this.priceStore.pendingReprices()) this.priceStore.applyReprice(r)
      this.topology = build(undefined)
    }
    const pendingReprices = new Set(this.priceStore.pendingReprices().map((r) => r.id))
    for (const r of this.priceStore.reprices()) if (!pendingReprices.has(r.id)) this.#repriced.add(r.id)
    this.projects.onChange((c) => {
      if (c.type === 'created') this.topology.revive(c.project.id)
    })
    this.rules.onChange((rules) => this.topology.alerts.send({ type: 'rules', rules }))
    // First in the broadcaster's mailbox, before any subscriber.
    this.topology.broadcaster.send({ type: 'exclude', forgotten: (seq) => this.#forgotten.has(seq) })
    this.topology.alerts.send({ type: 'rules', rules: this.rules.list() })
  }

  /**
   * Connects what the stores need before the HTTP layer reads them (nothing on a single node;
   * cluster mode attaches them to JetStream KV here, src/cluster/engine.ts).
   */
  async open(): Promise<void> {}

  /** The pricing workers (cluster partitions share them), or null when pricing runs inline. */
  get pricer(): PricingPool | null {
    return this.#pool
  }

  get ready(): boolean {
    return this.#ready
  }

  /** Where analytics queries read: the aggregators, and the log for what memory cannot answer exactly. */
  get source(): QuerySource {
    return { reader: this.topology, log: this.#logScan }
  }

  /** The analytics routes' answers (read-your-writes: each waits for a barrier first). */
  readonly analytics: Analytics = localAnalytics(() => this.source, () => this.sync())

  /**
   * The log path of queries (README, Dimensions: a filter on a value past a dimension cap may scan the
   * log): every stored event of the project in [start, end), priced as the aggregators counted it.
   */
  readonly #logScan: LogScan = (project, start, end, visit) => {
    const forgotten = this.#forgotten
    for (const batch of this.log.readFrom(0)) {
      for (const e of batch) {
        if (e.project === project && e.ts >= start && e.ts < end && (forgotten.size === 0 || !forgotten.has(e.seq))) visit(this.price(e))
      }
    }
  }

  /** Events the project holds (`GET /projects`): its rollup's all-time count, from memory. */
  projectEvents(project: string): number | Promise<number> {
    return this.topology.project(project)?.rollup.aggregate(-Infinity, Infinity).totals.requests ?? 0
  }

  /**
   * Removes every piece of a project's data (DELETE /projects/:id; the route wrote the
   * tombstone first, so a crash midway resumes here at the next start): what the pipeline
   * holds of it, its aggregates and dictionaries, its rules and alert history, its log records
   * (holes, see EventLog.purge), then a snapshot so no copy of its state stays on disk.
   */
  async deleteProject(project: string): Promise<void> {
    // Events already accepted for it reach the aggregators first; from now on they are dropped.
    await this.topology.sync()
    await this.topology.deleteProject(project)
    const rules = this.rules.list().filter((r) => (r.project ?? 'default') === project)
    await this.rules.removeProject(project)
    await this.alertEvents.removeRules(new Set(rules.map((r) => r.id)))
    await this.alertEvents.removeBudgets(new Set(await this.budgets.removeProject(project)))
    const removed = await this.#exclusiveLog(() => this.log.purge((e) => e.project === project))
    for (const r of this.priceStore.reprices(project)) this.#repriced.delete(r.id)
    await this.priceStore.dropProject(project)
    this.#logger.info({ project, events: removed }, 'project deleted')
    // Before the tombstone goes: the stored snapshot must no longer hold the project's state.
    // A snapshot already running may have cut before the project was dropped: wait it out, then
    // write one of our own (joining it would leave the project in the stored snapshot).
    while (this.#snapshotting !== null) await this.#snapshotting.catch(() => {})
    await this.snapshotNow()
  }

  // --- DELETE /events (src/forget.ts) -----------------------------------------------------

  /**
   * Deletes every event of `project` matching `q` (DELETE /events): gone from every answer,
   * from memory, from the stored snapshot and from the log when this resolves, with the number
   * deleted. Deletes run one at a time; progress is in {@link Engine.deletes}.
   * @throws LLMS_ERR_BAD_QUERY when `q` has no filter other than time.
   */
  async forgetEvents(project: string, q: RangeQuery): Promise<{ deleted: number }> {
    if (filterNames(q).length === 0) throw noFilterError()
    const status = this.deletes.start(project)
    const run = this.#forgetQueue.then(async () => {
      // Tombstones a failed finish left behind go first (their events are still excluded).
      await this.#resumeForgets()
      return runForget(this.#forgetTarget, status, { ...q, project }, this.forgetOptions)
    })
    this.#forgetQueue = run.catch(() => {})
    try {
      const r = await run
      this.deletes.end(status, 'done')
      return r
    } catch (err) {
      this.deletes.end(status, 'failed')
      throw err
    }
  }

  /** Whether the event at `seq` belongs to a delete not finished yet (every read passes over it). */
  isForgotten(seq: number): boolean {
    return this.#forgotten.has(seq)
  }

  /** Priced events from `from` on, in log order (a delete's log path). */
  *#pricedFrom(from: number): Generator<PricedEvent[]> {
    for (const batch of this.log.readFrom(from)) yield batch.map((e) => this.price(e))
  }

  /** The delete protocol's steps on this node (src/forget.ts, ForgetTarget). */
  readonly #forgetTarget: ForgetTarget = {
    begin: async () => {
      // Taken before the barrier: every event acknowledged before it is in memory after.
      const cut = this.log.nextSeq
      await this.sync()
      return { cut, source: this.source, readLog: (from) => this.#pricedFrom(from), skip: (seq) => this.#forgotten.has(seq) }
    },
    tombstone: (t) => {
      this.#checkOpen()
      return this.forgetTombstones.put(t)
    },
    apply: async (t, chunk) => {
      this.#checkOpen()
      for (const s of t.seqs) this.#forgotten.add(s)
      // Where each row is (seq → its time): the forget walks only those minutes.
      const at = new Map<number, number>()
      for (let i = 0; i < chunk.seqs.length; i++) at.set(chunk.seqs[i], chunk.ts[i])
      await this.#forgetChunk(t, at, chunk.range, Infinity)
    },
    finish: (p) => this.#finishForget(p)
  }

  /**
   * Finishes deletes whose tombstones are stored (a crash, or a failed finish, interrupted
   * them): their rows out of memory (idempotent), then {@link Engine.#finishForget}.
   */
  async #resumeForgets(below = Infinity): Promise<void> {
    for (const p of pendingForgets(this.forgetTombstones.list())) {
      const status = this.deletes.get(p.id) ?? this.deletes.start(p.project, p.id, p.startedAt)
      status.state = 'finishing'
      status.matched = p.seqs.length
      status.deleted = p.seqs.length
      try {
        for (const t of p.chunks) await this.#forgetChunk(t, null, undefined, below)
        await this.#finishForget(p)
        this.deletes.end(status, 'done')
      } catch (err) {
        this.deletes.end(status, 'failed')
        throw err
      }
    }
  }

  /**
   * Removes chunk `t`'s events from memory (topology.forget; rows by seq, idempotent), looking
   * for each row at its time (`at`: seq → ts; null: read from the log — a seq the log no longer
   * holds was purged after a snapshot without it, so no row of it is left). With retention on,
   * rows may have been folded into coarse hours: the chunk's events (those with seq < `below`,
   * the ones the state holds) go along for their subtraction — unless the chunk is already
   * applied (a restored snapshot listing it), which would subtract them twice.
   * Never beside a snapshot: each waits for the other, so a snapshot's `forgets` is exact.
   */
  async #forgetChunk(t: ForgetTombstone, at: ReadonlyMap<number, number> | null, range: { start: number; end: number } | undefined, below: number): Promise<void> {
    const { days, events } = this.config.retention
    const key = chunkKey(t)
    const coarseWanted = (days > 0 || events > 0) && !this.#applied.has(key)
    let stored: PricedEvent[] | null = null
    if (at === null || coarseWanted) stored = (await this.eventsBySeq(t.seqs, { forgotten: true })).filter((e) => e !== undefined)
    if (at === null) at = new Map(stored!.map((e) => [e.seq, e.ts]))
    const coarse = coarseWanted ? stored!.filter((e) => e.seq < below) : undefined
    while (this.#snapshotting !== null) await this.#snapshotting.catch(() => {})
    const run = this.topology.forget(t.project, at, range, coarse).then(() => {
      this.#applied.add(key)
    })
    this.#forgetting = run.catch(() => {})
    try {
      await run
    } finally {
      this.#forgetting = null
    }
  }

  /**
   * The end of a delete, once its rows left memory: a snapshot begun after that (one already
   * running may hold them: it is waited out, not joined), then the log records purged, a
   * second snapshot, the database's free pages overwritten (src/store/scrub.ts), and only
   * then the tombstones removed and the seqs readable as absent. Each step is idempotent: a crash anywhere
   * leaves the tombstones, and the next start runs it again.
   */
  async #finishForget(p: PendingForget): Promise<void> {
    this.#checkOpen()
    const t0 = performance.now()
    while (this.#snapshotting !== null) await this.#snapshotting.catch(() => {})
    await this.snapshotNow()
    this.#checkOpen()
    const removed = await this.#exclusiveLog(() => this.log.purgeSeqs(p.seqs))
    this.#checkOpen()
    // Once more: LMDB left the previous manifest's bytes (dictionaries: user ids) in the leaf
    // page that held it when it shrank or moved to overflow pages; the next write of that
    // page copies only its used parts (see purgeSeqs), and the old page joins the free list.
    await this.snapshotNow()
    this.#checkOpen()
    const scrub = await scrubFreePages(this.stores.root)
    this.#checkOpen()
    await this.forgetTombstones.remove(p.id)
    for (const s of p.seqs) this.#forgotten.delete(s)
    for (const t of p.chunks) this.#applied.delete(chunkKey(t))
    this.#logger.info({ delete: p.id, project: p.project, events: removed, scrubbedBytes: scrub.bytes, ms: Math.round(performance.now() - t0) }, 'events deleted')
  }

  /** A delete stops at its next step once the engine closes (its tombstones finish it at the next start). */
  #checkOpen(): void {
    if (this.#closing !== null) throw llmsError('LLMS_ERR_SHUTTING_DOWN', 'the server is shutting down; the delete resumes at the next start', { retryAfter: 1 })
  }

  /** Runs `fn` (a log purge) after every purge started before it. */
  #exclusiveLog<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#logPurge.then(fn)
    this.#logPurge = run.catch(() => {})
    return run
  }

  /** Cluster mode's figures for /ready and /metrics (src/cluster/engine.ts); null on a single node. */
  clusterStatus(): object | null {
    return null
  }

  get recovery(): RecoveryInfo | null {
    return this.#recovery
  }

  /** Replays the log tail after the snapshot through the pipeline; then the engine is ready. */
  async recover(): Promise<RecoveryInfo> {
    const started = performance.now()
    const from = this.#restored.status === 'loaded' ? this.#restored.payload!.seq : 0
    const total = this.log.nextSeq - from
    // Before the tail: restored series learn where coarse hours end, so old replayed events fold on arrival.
    this.retain()
    let done = 0
    let pending: StoredEvent[] = []
    const forgotten = this.#forgotten
    for (const batch of this.log.readFrom(from)) {
      // Events of a delete a crash interrupted stay out; it is finished below.
      // One at a time, not push(...batch): a record of a large group commit overflows the stack as arguments.
      if (forgotten.size === 0) for (const e of batch) pending.push(e)
      else for (const e of batch) if (!forgotten.has(e.seq)) pending.push(e)
      if (pending.length >= REPLAY_CHUNK) {
        this.topology.replay(pending)
        done += pending.length
        pending = []
        this.#onProgress?.(done, total)
        // A long replay must not hold more raw rows than retention allows.
        this.retain()
        // At most a few chunks in the pipeline, priced or not, aggregated or not (10M events held at once exceed the heap).
        const wait = this.topology.backpressure()
        if (wait !== null) await wait
      }
    }
    if (pending.length > 0) {
      this.topology.replay(pending)
      done += pending.length
      this.#onProgress?.(done, total)
    }
    await this.topology.costStage.settled()
    this.retain()
    await this.topology.system.idle()
    // Event deletes a crash interrupted: out of the restored rows too (the chunks its snapshot
    // lists are in it already; the others' events below its seq are), then finished.
    for (const key of this.#restored.payload?.forgets ?? []) this.#applied.add(key)
    this.#restored.payload = undefined
    // Re-pricings committed but not in the restored state: re-applied before anyone reads.
    if ((await this.prices.recover()) > 0) await this.snapshotNow()
    await this.#resumeForgets(from)
    // Deletes a crash interrupted: their events were dropped on the way in; finish removing them.
    for (const project of this.projects.purging()) {
      await this.deleteProject(project)
      await this.projects.finishDelete(project)
    }
    this.#recovery = {
      snapshot: this.#restored.status,
      reason: this.#restored.reason,
      snapshotSeq: from,
      replayed: done,
      ms: Math.round(performance.now() - started)
    }
    this.#ready = true
    this.#startAlertTicks()
    return this.#recovery
  }

  /**
   * Alert evaluation clock: the first tick wakes the evaluator (dormant during replay, so a
   * recovery never notifies), then one per `alertTickMs`, so rules resolve when traffic stops.
   * The timer lives here, not in the actor (actors own no timers).
   */
  #startAlertTicks(): void {
    if (this.#externalAlerts) return
    this.topology.alerts.send({ type: 'tick' })
    void this.budgetEvaluator.tick()
    if (this.#alertTickMs <= 0 || this.#alertTimer !== null || this.#closing !== null) return
    this.#alertTimer = setInterval(() => {
      this.topology.alerts.send({ type: 'tick' })
      void this.budgetEvaluator.tick({ throttle: true })
    }, this.#alertTickMs)
    this.#alertTimer.unref()
  }

  /** Starts the periodic snapshot timer. */
  startSnapshots(): void {
    if (this.#snapshotTimer !== null) return
    this.#snapshotTimer = setInterval(() => {
      this.snapshotNow().catch((err: unknown) => this.#logger.error({ err }, 'snapshot failed'))
    }, this.config.snapshotIntervalMs)
    this.#snapshotTimer.unref()
  }

  /**
   * Sends every aggregator the retention policy for now (no-op without LLMSCOPE_RETENTION_*):
   * raw rows of events older than the last `days` UTC days (today included), and past
   * `events` rows per series, fold into hour aggregates. Runs before each snapshot, so a
   * folded series (its rows renumbered) is rewritten in it.
   */
  retain(): void {
    const { days, events } = this.config.retention
    if (days === 0 && events === 0) return
    const now = this.#clock.now()
    const before = days > 0 ? (Math.floor(now / DAY_MS) - days + 1) * DAY_MS : -Infinity
    this.topology.retain({ before, maxRows: events, now })
  }

  /** Writes a snapshot now (one at a time: a call during a write joins it). */
  snapshotNow(): Promise<void> {
    // Never skipped: with nothing new it is a manifest of a few hundred bytes (only rows
    // recorded since the last snapshot are written), and alert state may have moved without
    // new events. The barrier's cut is O(series); the rows are copied and encoded a few ms
    // per event-loop turn inside `snapshots.write`, so a snapshot never stalls ingestion.
    if (this.#snapshotting !== null) return this.#snapshotting
    this.#snapshotting = (async () => {
      const t0 = performance.now()
      const full = this.#snapshotFailed
      // No delete chunk half in memory: `forgets` names exactly the chunks the state holds.
      if (this.#forgetting !== null) await this.#forgetting
      // Nor a re-pricing half in memory: `reprices` names exactly those the state holds.
      if (this.#repricing !== null) await this.#repricing
      const reprices = [...this.#repriced]
      const forgets = [...this.#applied]
      this.retain()
      const payload = await this.topology.snapshot(this.#clock.now(), full)
      if (forgets.length > 0) payload.forgets = forgets
      if (reprices.length > 0) payload.reprices = reprices
      let bytes: number
      try {
        bytes = await this.snapshots.write(payload)
      } catch (err) {
        // The new parts were handed over and maybe not stored: the next snapshot rewrites all.
        this.#snapshotFailed = true
        throw err
      }
      this.#snapshotFailed = false
      this.#lastSnapshot = { seq: payload.seq, at: this.#clock.now(), bytes, ms: Math.round(performance.now() - t0) }
      this.#logger.debug({ seq: payload.seq, bytes }, 'snapshot written')
    })().finally(() => {
      this.#snapshotting = null
    })
    return this.#snapshotting
  }

  get lastSnapshot() {
    return this.#lastSnapshot
  }

  /** Durably accepts events; resolves after their commit. */
  ingest(pending: PendingEvent[]): Promise<StoredEvent[]> {
    return this.topology.router.ingest(pending)
  }

  /** Fills a missing provider from the pricing data (memoised). */
  inferProvider(model: string): string {
    return inferProvider(model)
  }

  /** The stored event with its cost, or undefined. A keyed LMDB read, not an analytics query. */
  getEvent(id: string): PricedEvent | undefined | Promise<PricedEvent | undefined> {
    const seq = seqOfEventId(id)
    if (seq === null || this.#forgotten.has(seq)) return undefined
    const e = this.log.get(seq)
    if (e === undefined || e.id !== id) return undefined
    return this.price(e)
  }

  /**
   * The stored events at these log positions, priced as {@link Engine.getEvent} prices them, in
   * the order asked; undefined where no event is stored (search pages read their events here).
   * See {@link Engine.eachEventBySeq}.
   */
  async eventsBySeq(seqs: readonly number[], opts: { forgotten?: boolean } = {}): Promise<Array<PricedEvent | undefined>> {
    const out: Array<PricedEvent | undefined> = new Array(seqs.length)
    await this.eachEventBySeq(seqs, (i, e) => (out[i] = e), opts)
    return out
  }

  /**
   * Hands over the stored events at these log positions one by one, priced as
   * {@link Engine.getEvent} prices them: `visit(i, e)` for `seqs[i]`, in log order (not the
   * order asked); a position with no event is not visited. Each record (one append, up to 256
   * events) holding asked seqs is read once per call, and only the asked events of it decoded;
   * an event is the caller's (decoded for it) and nothing else holds it, so an export writes its
   * line and drops it. Events of a running delete are left out, unless `forgotten` (the delete
   * itself reads them).
   */
  async eachEventBySeq(seqs: readonly number[], visit: (i: number, e: PricedEvent) => void, opts: { forgotten?: boolean } = {}): Promise<void> {
    const { order, sorted } = sortedPositions(seqs)
    const hide = this.#forgotten.size > 0 && opts.forgotten !== true
    let last = -1
    let lastEvent: PricedEvent | undefined
    for (const [k, e] of this.log.atSeqs(sorted)) {
      // Equal seqs asked twice get the same event.
      if (e.seq !== last) {
        last = e.seq
        lastEvent = this.#priceFresh(e)
      }
      if (hide && this.#forgotten.has(last)) continue
      visit(order[k], lastEvent!)
    }
  }

  /** {@link Engine.price} for an event decoded for this caller alone: priced in place, no copy. */
  #priceFresh(e: StoredEvent): PricedEvent {
    return priceInPlace(e, this.book)
  }

  /**
   * Prices a stored event on the main thread (memoised price tables: well under a µs) with the
   * same pure function and inputs — the event's own time included — as the cost stage, so the
   * answer equals what the aggregators counted.
   */
  price(e: StoredEvent): PricedEvent {
    const p = priceEvent(e, this.book)
    return { ...e, costNanos: p.costNanos, unpriced: p.unpriced }
  }

  // --- prices (src/prices.ts) -------------------------------------------------------------

  /** What the price service uses of this node. */
  get #pricesHost(): PricesHost {
    return {
      store: this.priceStore,
      book: this.priceStore.book,
      now: () => this.#clock.now(),
      seen: (project) => seenModels(this.analytics, project),
      // One at a time with event deletes: both rewrite what memory holds of many events.
      exclusive: (fn) => {
        const run = this.#forgetQueue.then(fn)
        this.#forgetQueue = run.catch(() => {})
        return run
      },
      sync: () => this.sync(),
      readLog: (from) => this.log.readFrom(from),
      skip: (seq) => this.#forgotten.has(seq),
      applyReprice: async (record, changes) => {
        const t0 = performance.now()
        this.#logger.info({ reprice: record.id, project: record.project, events: changes.seqs.length }, 're-pricing recorded; applying')
        // Never beside a snapshot: `reprices` must name exactly what the state holds.
        while (this.#snapshotting !== null) await this.#snapshotting.catch(() => {})
        const run = (async () => {
          await this.topology.reprice(record.project, record.id, changes)
          // Every figure holds the new costs: GET /events/:id, search, export and replays switch now.
          this.priceStore.applyReprice(record)
          this.#repriced.add(record.id)
        })()
        this.#repricing = run.catch(() => {})
        try {
          await run
        } finally {
          this.#repricing = null
        }
        this.#logger.info({ reprice: record.id, ms: Math.round(performance.now() - t0) }, 're-pricing applied')
        // A turn first: the cut and the snapshot's synchronous start (dimensions, cut of every
        // aggregator) would otherwise run in one macrotask (a 250 ms block at 2M events).
        await new Promise<void>((resolve) => setImmediate(resolve))
        // Not needed for correctness (a restart re-applies a record no snapshot lists); keeps restarts short.
        await this.snapshotNow().catch((err: unknown) => this.#logger.warn({ err }, 'snapshot after a re-pricing failed'))
      }
    }
  }

  /**
   * Pushes a budget alert to this project's WebSocket clients (cluster mode overrides it: every
   * node's clients, src/cluster/engine.ts).
   */
  publishBudget(notice: BudgetNotice): void {
    this.topology.broadcaster.send({ type: 'budget', budget: notice })
  }

  /**
   * A copy of one rule's alert state (its last value, firing or not, since when), or
   * undefined before its first evaluation. Routes read it here, never from the evaluator.
   */
  ruleState(id: string): RuleAlertState | undefined {
    return this.topology.alerts.ruleStates().get(id)
  }

  /** Waits until every event acknowledged so far is visible to queries. */
  sync(): Promise<void> {
    return this.topology.sync()
  }

  stats() {
    return {
      ready: this.#ready,
      log: this.log.stats,
      lastSnapshot: this.#lastSnapshot,
      recovery: this.#recovery,
      alertEvents: this.alertEvents.stats,
      budgets: this.budgetEvaluator.stats,
      webhooks: this.alerting.stats,
      ...this.topology.stats()
    }
  }

  /**
   * Stops intake, drains the pipeline, writes a final snapshot, then closes actors, workers
   * and LMDB in that order. Safe twice.
   */
  close(): Promise<void> {
    return this.#shutdown(true)
  }

  /**
   * Stops at once without draining or a final snapshot — what a crash leaves behind (the log
   * and the last snapshot), for tests of recovery. Safe twice; `close()` after it is a no-op.
   */
  destroy(): Promise<void> {
    return this.#shutdown(false)
  }

  #shutdown(graceful: boolean): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#snapshotTimer !== null) clearInterval(this.#snapshotTimer)
      if (this.#alertTimer !== null) clearInterval(this.#alertTimer)
      const t0 = performance.now()
      // No budget pass from here on (a running one ends first: it reads the topology).
      await this.budgetEvaluator.close()
      if (!graceful) {
        await this.#snapshotting?.catch(() => {})
        await this.topology.router.quiesce()
        await this.topology.close()
        await this.alerting.close()
        await this.budgetEvaluator.idle()
        await this.#pool?.destroy()
        await this.stores.close()
        return
      }
      await this.topology.drain()
      this.#logger.info({ ms: Math.round(performance.now() - t0) }, 'pipeline drained')
      if (this.#ready) {
        await this.#snapshotting
        await this.snapshotNow()
        this.#logger.info({ seq: this.#lastSnapshot?.seq, bytes: this.#lastSnapshot?.bytes }, 'final snapshot written')
      }
      await this.topology.close()
      // Aborts webhook deliveries still in flight (recorded as failed) before LMDB closes.
      await this.alerting.close()
      await this.budgetEvaluator.idle()
      await this.#pool?.close()
      await this.stores.close()
      this.#logger.info({ ms: Math.round(performance.now() - t0) }, 'engine closed')
    })()
    return this.#closing
  }
}

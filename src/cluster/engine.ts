/**
 * A cluster node (DESIGN §9, README: Cluster mode): the single-node Engine's HTTP surface, with
 * the durable log, the aggregates and the metadata moved out of this process:
 *
 *   HTTP ingest ──► JetStreamLog.append (publish per event to `${name}.ev.<partition>.<project>`,
 *                   all in flight) ──► 202 after every ack
 *   Membership (KV leases) ──► PartitionRunner per owned partition: snapshot + stream tail ──►
 *                   a Topology of that partition's (project, model) series
 *   Query on any node ──► askAll: every partition's owner answers its partial after catching up
 *                   to the stream's last seq at query start ──► merged (analytics/partials.ts)
 *   ClusterFeed: every event of the stream, in seq order ──► this node's Broadcaster (/ws)
 *   Alerts: the `lease.alerts` holder fetches every rule's window from all partitions each
 *                   tick, then ticks its evaluator; frames go to every node over NATS
 *   ClusterMeta: projects, keys, rules and alert events mirrored from JetStream KV
 *   Search/export (cluster/search.ts): every partition's top hits merged; events read by seq
 *   DELETE /events (cluster/forget.ts): KV tombstone → every owner forgets and snapshots →
 *                   stream messages erased → tombstone removed; the alerts-lease holder
 *                   completes deletes whose node died
 *   Prices (cluster/prices.ts, price-log.ts): the book's records in one log in the meta bucket;
 *                   each event carries the revision it was accepted at (js-log.ts header); each
 *                   partition prices with its own book; POST /prices/reprice puts a record that
 *                   every owner applies at a cut (cluster/reprice.ts). Partial answers carry the
 *                   partition's reprice epoch: only answers of one epoch are merged, else the
 *                   query asks again for the newest (so a query during a reprice never mixes)
 *   Budgets (H5's store and evaluator): budgets and fired records in the meta bucket; evaluated
 *                   on the alerts-lease holder from merged analytics, so each fires once
 *
 * The inherited Engine still opens the node's LMDB (metadata mirror, partition snapshots, the
 * node id) and runs a local topology for the broadcaster and the alert evaluator; its own log
 * stays empty.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Engine, type EngineOptions, type RecoveryInfo } from '../engine.js'
import { connectCluster, type NatsHandles } from './nats.js'
import { JetStreamLog } from './js-log.js'
import { Membership } from './membership.js'
import { ClusterMeta } from './meta.js'
import { PartitionSnapshots } from './snapshots.js'
import { PartitionRunner } from './partition.js'
import { ClusterFeed, publishAlert } from './feed.js'
import { askAll, askPartition, QueryResponder, type PartitionRequest } from './query.js'
import { ForgetTombstones } from './tombstones.js'
import { ClusterForget, type ForgetRequest } from './forget.js'
import { filterNames, noFilterError } from '../forget.js'
import { decodeSearch, encodeHits, mergeHits, readBySeq, searchRequest, type SearchRequest } from './search.js'
import { search } from '../analytics/search.js'
import { decodeQuery } from '../analytics/partials.js'
import type { RangeQuery } from '../queries.js'
import { answerPartial, PartitionMovedError, clusterBreakdown, clusterCosts, clusterDimensions, clusterMetrics, clusterTimeseries, clusterWindows, type PartialRequest } from '../analytics/partials.js'
import type { Aggregate } from '../analytics/aggregate.js'
import { llmsError } from '../errors.js'
import { seqOfEventId, type PendingEvent, type PricedEvent, type StoredEvent } from '../events.js'
import type { Analytics } from '../analytics/service.js'
import type { WindowQuery } from '../analytics/reader.js'
import type { ClusterConfig } from '../config.js'
import type { AlertNotice, BudgetNotice } from '../actors/broadcaster.js'
import { ClusterPrices, PRICE_PREFIX } from './prices.js'
import { partOf, sumParts, type RepricePart, type RepriceRequest } from './reprice.js'
import { PriceService, seenModels, type RepriceBody, type RepriceOut } from '../prices.js'
import { groupWindowKey, ruleQueries, windowGroupsOf, windowKey, type GroupWindowQuery, type WindowGroups } from '../alerts/windows.js'

/** Key prefix of budgets and their fired records in the meta bucket. */
export const BUDGET_PREFIX = 'budget.'
/** Times a query asks again when partitions answered at different reprice epochs. */
const EPOCH_ATTEMPTS = 4

/** What `/ready` and `llmscope cluster status` show of a node. */
export interface ClusterStatus {
  node: string
  partitions: number
  owned: number[]
  unowned: number[]
  /** Events of the owned partitions not yet aggregated here. */
  lag: number
  /** How this node's newest takeover started: from a snapshot, or from the start of the stream. */
  restored_from: 'snapshot' | 'stream' | null
  nodes: string[]
  alerts_lease: boolean
  lease_ms: number
}

/** How often the alerts-lease holder looks for deletes left unfinished. */
const JANITOR_MS = 5_000

/**
 * A call to JetStream from a request: a failure that is not already ours (the stream leader
 * failing over, NATS unreachable) answers 503 with Retry-After rather than 500.
 */
async function streamCall<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (err) {
    if ((err as { statusCode?: unknown }).statusCode !== undefined) throw err
    throw llmsError('LLMS_ERR_UNAVAILABLE', `could not ${what} from the event stream (${(err as Error).message}); retry shortly`, { retryAfter: 1 })
  }
}

/** This node's name: LLMSCOPE_NODE_ID, else one made on first start and kept in the data dir. */
function nodeIdOf(cfg: ClusterConfig, dataDir: string): string {
  if (cfg.nodeId !== null) return cfg.nodeId
  const file = join(dataDir, 'node-id')
  if (existsSync(file)) {
    const id = readFileSync(file, 'utf8').trim()
    if (/^[A-Za-z0-9_-]{1,64}$/.test(id)) return id
  }
  const id = `node-${randomBytes(4).toString('hex')}`
  writeFileSync(file, `${id}\n`)
  return id
}

export class ClusterEngine extends Engine {
  readonly #cfg: ClusterConfig
  readonly #windows: Map<string, Aggregate>
  readonly #groups: Map<string, WindowGroups>
  readonly #opts: EngineOptions
  #prices: ClusterPrices | null = null
  #h: NatsHandles | null = null
  #jsLog: JetStreamLog | null = null
  #meta: ClusterMeta | null = null
  #membership: Membership | null = null
  #responder: QueryResponder | null = null
  #feed: ClusterFeed | null = null
  #snapshots: PartitionSnapshots | null = null
  readonly #runners = new Map<number, PartitionRunner>()
  readonly #starting = new Map<number, Promise<PartitionRunner>>()
  #restoredFrom: 'snapshot' | 'stream' | null = null
  #nodeId = ''
  #inFlight = 0
  #alertTimer: NodeJS.Timeout | null = null
  #alertPass: Promise<void> | null = null
  #snapshotTimer: NodeJS.Timeout | null = null
  #statusSub: { unsubscribe(): void } | null = null
  #stopping = false
  #alertsFailed = 0
  #heldAlerts = false
  #connected = true
  #compactedAt = -Infinity
  /** Breakdowns between their two rounds, by query id: each holds its partition's state (PartitionRunner.hold). */
  readonly #holds = new Map<string, () => void>()
  #tombstones: ForgetTombstones | null = null
  #forget: ClusterForget | null = null
  #forgetSub: { unsubscribe(): void } | null = null
  #janitorTimer: NodeJS.Timeout | null = null

  constructor(opts: EngineOptions) {
    if (opts.config.cluster === null) throw new Error('ClusterEngine needs config.cluster (LLMSCOPE_NATS_URL)')
    const windows = new Map<string, Aggregate>()
    const groups = new Map<string, WindowGroups>()
    let publish: (n: AlertNotice) => void = () => {}
    super({
      ...opts,
      externalAlerts: {
        // A window this tick did not fetch: the rule is skipped (the evaluator counts an
        // evaluation error), never judged on figures that are not the cluster's.
        window: (q) => {
          const agg = windows.get(windowKey(q))
          if (agg === undefined) throw new Error('this window was not fetched from the partitions this tick')
          return agg
        },
        windowGroups: (q) => {
          const g = groups.get(groupWindowKey(q))
          if (g === undefined) throw new Error('these window groups were not fetched from the partitions this tick')
          return g
        },
        publish: (n) => publish(n)
      }
    })
    this.#opts = opts
    this.#cfg = opts.config.cluster
    this.#windows = windows
    this.#groups = groups
    publish = (n) => {
      if (this.#h !== null) publishAlert(this.#h.nc, this.#h.names, n)
    }
  }

  /** Ready once recovered, while connected to NATS (a load balancer moves ingestion elsewhere meanwhile). */
  override get ready(): boolean {
    return super.ready && this.#connected
  }

  get nodeId(): string {
    return this.#nodeId
  }

  /** Connects to NATS and mirrors the metadata before HTTP reads the stores. */
  override async open(): Promise<void> {
    const logger = this.#opts.logger
    this.#nodeId = nodeIdOf(this.#cfg, this.config.dataDir)
    this.#h = await connectCluster(this.#cfg, { log: logger, name: `llmscope ${this.#nodeId}` })
    // Events are stamped with the position this node's price log has applied (the header
    // LLMScope-Price-Rev): every record at or below it is in this node's book, and an owner
    // holding that position prices the event the same (not the book's own revision: its LMDB
    // cache may hold a revision of an older stream that no owner will ever receive).
    this.#jsLog = new JetStreamLog(this.#h, { priceRev: () => this.#prices?.log.pos ?? 0 })
    // Readiness follows the connection: a node cut off from NATS can neither ingest nor answer.
    const nc = this.#h.nc
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect' || s.type === 'close') this.#connected = false
        else if (s.type === 'reconnect') this.#connected = true
      }
    })().catch(() => {})
    this.#meta = new ClusterMeta({ nc: this.#h.nc, metaBucket: this.#h.names.metaBucket, alertsBucket: this.#h.names.alertsBucket, log: logger })
    this.#prices = new ClusterPrices({ store: this.priceStore, log: logger })
    this.priceStore.attachBacking(this.#prices.backing, logger)
    await this.#meta.attach({
      projects: this.projects,
      apiKeys: this.apiKeys,
      rules: this.rules,
      alertEvents: this.alertEvents,
      more: [
        { prefix: PRICE_PREFIX, store: this.#prices.mirrored },
        { prefix: BUDGET_PREFIX, store: this.budgets }
      ]
    })
    // Budgets fire on the alerts-lease holder only; their frames reach every node's /ws.
    this.budgetEvaluator.attachCluster({ isEvaluator: () => this.#membership?.holdsAlerts() === true && !this.#stopping })
    // This node's configured overrides: a new layer when they differ from the cluster's newest.
    await this.#prices.syncOverrides(this.config.priceOverrides, this.#opts.clock.now())
    this.#snapshots = new PartitionSnapshots({ objm: this.#h.objm, names: this.#h.names, db: this.stores.meta, logger })
    this.#tombstones = new ForgetTombstones(this.#h.kvm, this.#h.names.forgetBucket)
    // A delete completed: local copies of partitions this node does not own may hold its rows.
    this.#forgetSub = this.#h.nc.subscribe(this.#h.names.forgetDone, {
      callback: (err) => {
        if (err !== null) return
        const owned = new Set([...this.#runners.keys(), ...this.#starting.keys()])
        const others = Array.from({ length: this.#h!.partitions }, (_, p) => p).filter((p) => !owned.has(p))
        void this.#snapshots!.pruneLocal(others).catch((e: unknown) => logger.warn({ err: e }, 'could not drop local partition snapshots after a delete'))
      }
    })
    // A project deleted on any node: each owner drops its state and rewrites its snapshot.
    this.projects.onChange((c) => {
      if (c.type !== 'deleting') return
      for (const r of this.#runners.values()) {
        void r.topology.deleteProject(c.id).then(() => r.snapshot()).catch((err: unknown) => logger.warn({ err, project: c.id }, 'could not drop a deleted project from a partition'))
      }
    })
  }

  #handles(): NatsHandles {
    if (this.#h === null) throw llmsError('LLMS_ERR_NOT_READY', 'not connected to the cluster yet', { retryAfter: 1 })
    return this.#h
  }

  override async recover(): Promise<RecoveryInfo> {
    const h = this.#handles()
    const logger = this.#opts.logger
    this.#responder = new QueryResponder({ nc: h.nc, names: h.names, node: this.#nodeId, log: logger, handle: (p, r) => this.#answer(p, r) })
    // onDemand: the whole stream is decoded and priced only while this node has a /ws subscriber.
    this.#feed = new ClusterFeed({ h, log: this.#jsLog!, broadcaster: this.topology.broadcaster, price: (e: StoredEvent) => this.price(e), logger, onDemand: true })
    await this.#feed.start()
    const info = await super.recover()
    // A node that was down during a delete: its local copies older than the object store's go.
    await this.#snapshots!.pruneStale(Array.from({ length: h.partitions }, (_, p) => p)).catch((err: unknown) => logger.warn({ err }, 'could not check local partition snapshots against the object store'))
    this.#forget = new ClusterForget({
      h,
      tombstones: this.#tombstones!,
      node: this.#nodeId,
      log: logger,
      lastSeq: () => this.#jsLog!.lastSeq(),
      matchTimeoutMs: Math.max(15_000, 3 * this.#cfg.queryTimeoutMs),
      applyTimeoutMs: Math.max(30_000, 3 * this.#cfg.queryTimeoutMs),
      applyDeadlineMs: Math.max(30_000, 4 * this.#cfg.leaseMs),
      staleMs: Math.max(15_000, 3 * this.#cfg.leaseMs),
      registry: this.deletes
    })
    this.#membership = new Membership({
      nc: h.nc,
      kvm: h.kvm,
      bucket: h.names.clusterBucket,
      nodeId: this.#nodeId,
      partitions: h.partitions,
      leaseMs: this.#cfg.leaseMs,
      log: logger,
      acquire: (p) => this.#acquire(p),
      release: (p, reason) => this.#release(p, reason)
    })
    await this.#membership.start()
    this.#statusSub = h.nc.subscribe(`${h.names.name}.status`, {
      callback: (err, msg) => {
        if (err === null) msg.respond(new TextEncoder().encode(JSON.stringify(this.clusterStatus())))
      }
    })
    this.#alertTimer = setInterval(() => this.#alertTick(), this.#opts.alertTickMs === 0 ? 1000 : (this.#opts.alertTickMs ?? 1000))
    this.#alertTimer.unref()
    this.#janitorTimer = setInterval(() => {
      if (this.#membership?.holdsAlerts() === true && !this.#stopping) void this.#forget?.janitor()
    }, JANITOR_MS)
    this.#janitorTimer.unref()
    return info
  }

  /** Takes over partition p: newest snapshot, then the stream tail; answers its queries once caught up to the start. */
  async #acquire(p: number): Promise<void> {
    const h = this.#handles()
    const started = (async () =>
      PartitionRunner.start({
        h,
        partition: p,
        config: this.config,
        logger: this.#opts.logger,
        clock: this.#opts.clock,
        pricer: this.pricer,
        local: this.#snapshots!,
        price: (e: StoredEvent) => this.price(e),
        dropped: () => new Set(this.projects.purging()),
        // Deletes still under way: applied to the restored state before the partition is served.
        forgets: await this.#tombstones!.pendingFor(p),
        prices: this.#prices ?? undefined
      }))()
    this.#starting.set(p, started)
    try {
      const runner = await started
      this.#runners.set(p, runner)
      this.#restoredFrom = runner.restoredFrom
      this.#responder!.serve(p)
    } finally {
      this.#starting.delete(p)
    }
  }

  async #release(p: number, reason: 'rebalance' | 'lost' | 'stop'): Promise<void> {
    await this.#responder?.unserve(p)
    const runner = this.#runners.get(p) ?? (await this.#starting.get(p)?.catch(() => undefined))
    this.#runners.delete(p)
    // A lost lease may already be someone else's: no snapshot from a state that may be stale.
    await runner?.stop({ snapshot: reason !== 'lost' })
  }

  /** One partition's partial answer (owner side). */
  async #answer(p: number, r: PartitionRequest): Promise<unknown> {
    const runner = this.#runners.get(p)
    if (runner === undefined) throw llmsError('LLMS_ERR_UNAVAILABLE', `partition ${p} is being handed over`, { retryAfter: 1 })
    const req = r.req as PartialRequest | SearchRequest | ForgetRequest | RepriceRequest | { kind: 'release'; qid: string }
    if (req.kind === 'release') {
      // A breakdown that failed after its first round: let the state it held move on now.
      this.#holds.get(`${p}:${req.qid}`)?.()
      return null
    }
    if (req.kind === 'forget-apply') return this.#applyForget(runner, req.id)
    if (req.kind === 'forget-done') {
      runner.forgetDone(req.id)
      return null
    }
    if (req.kind === 'reprice-wait') {
      try {
        const a = await runner.repriced(req.id, Math.max(30_000, 3 * this.#cfg.queryTimeoutMs))
        return { rows: a.rows, changed: a.changed } satisfies RepricePart
      } catch (err) {
        if ((err as { statusCode?: unknown }).statusCode !== undefined) throw err
        throw llmsError('LLMS_ERR_UNAVAILABLE', `partition ${p}: ${(err as Error).message.replace(/^partition \d+:? ?/, '')}`, { retryAfter: 1 })
      }
    }
    // Every other answer is of one state, named by its reprice epoch ({e, d}: see #ask).
    const ask = async (): Promise<unknown> => {
      if (req.kind === 'search') {
        const s = decodeSearch(req)
        const a = await runner.answerAt((source) => encodeHits(search(source, s.q, s.sort, s.after, s.limit)), s.q.project ?? 'default')
        return { e: a.epoch, d: a.data }
      }
      if (req.kind === 'forget-match') {
        const q = decodeQuery(req.q)
        return runner.answer((source) => ({ seqs: search(source, q, 'time', null, Infinity).map((x) => x.seq).filter((seq) => seq <= r.upTo) }), q.project ?? 'default')
      }
      if (req.kind === 'reprice-dry') {
        const part = await runner.repriceDiff(req.scope, req.rev)
        return { e: part.epoch, d: { rows: part.rows, changed: part.changed } satisfies RepricePart }
      }
      const a = await runner.answerAt((source) => answerPartial(source, req))
      return { e: a.epoch, d: a.data }
    }
    const epoch = (r as PartitionRequest & { epoch?: number }).epoch ?? 0
    if (epoch > runner.epoch) {
      // Other partitions answered with a newer reprice applied: this one gets there first.
      try {
        await runner.reachEpoch(epoch, this.#cfg.queryTimeoutMs)
      } catch (err) {
        throw llmsError('LLMS_ERR_UNAVAILABLE', `partition ${p}: ${(err as Error).message.replace(/^partition \d+:? ?/, '')}`, { retryAfter: 1 })
      }
    }
    if (req.kind === 'breakdown-sketches') {
      // Round 2 of a breakdown reads the state round 1 read (held since), then lets it move on.
      const release = this.#holds.get(`${p}:${req.qid}`)
      if (release !== undefined) {
        try {
          return await ask()
        } finally {
          release()
        }
      }
    }
    try {
      await runner.ready(r.upTo, this.#cfg.queryTimeoutMs)
    } catch (err) {
      // Stopped (handed over meanwhile), held past the timeout, aggregators behind: a 503, never a 500.
      if ((err as { statusCode?: unknown }).statusCode !== undefined) throw err
      throw llmsError('LLMS_ERR_UNAVAILABLE', `partition ${p}: ${(err as Error).message.replace(/^partition \d+:? ?/, '')}`, { retryAfter: 1 })
    }
    if (req.kind === 'breakdown') {
      const key = `${p}:${req.qid}`
      // Asked again (another epoch): the first hold goes.
      this.#holds.get(key)?.()
      const release = runner.hold(this.#cfg.queryTimeoutMs)
      const done = () => {
        this.#holds.delete(key)
        release()
      }
      this.#holds.set(key, done)
      setTimeout(done, this.#cfg.queryTimeoutMs).unref()
      await runner.topology.sync()
    }
    // The log path (a value past a dimension cap) reads this partition's events from the stream.
    return ask()
  }

  /**
   * Owner side of a delete's step 3: the tombstone's seqs of this partition leave the state (and
   * whatever is handed over later), then a snapshot cut after that is written.
   */
  async #applyForget(runner: PartitionRunner, id: string): Promise<{ removed: number; gen: number }> {
    const t = this.#tombstones!
    const p = runner.partition
    const header = await streamCall('read the delete record', () => t.header(id))
    // Gone: the delete was completed already (by its node or the janitor).
    if (header === null) return { removed: 0, gen: runner.gen }
    const seqs = await streamCall('read the delete record', () => t.seqs(header, p))
    try {
      const removed = await runner.forget(id, header.project, seqs)
      await runner.snapshotFresh()
      return { removed, gen: runner.gen }
    } catch (err) {
      // Stopped meanwhile (handed over), or the snapshot not stored: the coordinator asks again (the next owner re-applies it).
      throw llmsError('LLMS_ERR_UNAVAILABLE', `partition ${p}: the delete was not applied and stored (${(err as Error).message})`, { retryAfter: 1 })
    }
  }

  /**
   * Asks every partition, counting every event acknowledged before now. Answers are merged only
   * when every partition answered at the same reprice epoch; else every partition is asked again
   * to answer at the newest one seen (a reprice being applied: those behind apply it first).
   */
  readonly #ask = async (req: PartialRequest | SearchRequest | RepriceRequest): Promise<unknown[]> => {
    const h = this.#handles()
    let epoch = 0
    for (let attempt = 1; ; attempt++) {
      const upTo = await streamCall('read the stream position', () => this.#jsLog!.lastSeq())
      const replies = (await askAll(h.nc, h.names, h.partitions, { upTo, req, epoch } as PartitionRequest, this.#cfg.queryTimeoutMs)) as Array<{ e?: unknown; d?: unknown }>
      const epochs = replies.map((x, p) => {
        if (typeof x !== 'object' || x === null || typeof x.e !== 'number') throw llmsError('LLMS_ERR_INTERNAL', `partition ${p}: an answer without its reprice epoch (a node of another version?)`)
        return x.e
      })
      const newest = Math.max(...epochs)
      if (epochs.every((e) => e === newest)) return replies.map((x) => x.d)
      if (req.kind === 'breakdown-sketches') throw new PartitionMovedError('a re-pricing was applied between the two rounds of a breakdown')
      if (attempt >= EPOCH_ATTEMPTS) throw llmsError('LLMS_ERR_UNAVAILABLE', 're-pricings are being applied; retry shortly', { retryAfter: 1 })
      epoch = newest
    }
  }

  override readonly analytics: Analytics = {
    metrics: (q) => clusterMetrics(this.#ask, q),
    costs: (q) => clusterCosts(this.#ask, q),
    timeseries: (q, intervalMs) => clusterTimeseries(this.#ask, q, intervalMs),
    breakdown: async (q, by, sort, limit) => {
      // A partition that moved between the two rounds (handed over meanwhile): ask again, then 503.
      for (let attempt = 1; ; attempt++) {
        const qids = new Set<string>()
        const ask = (req: PartialRequest) => {
          if (req.kind === 'breakdown') qids.add(req.qid)
          return this.#ask(req)
        }
        try {
          return await clusterBreakdown(ask, q, by, sort, limit)
        } catch (err) {
          // Partitions that answered the first round hold their state for the second: release them now.
          for (const qid of qids) void this.#releaseHolds(qid)
          if (!(err instanceof PartitionMovedError)) throw err
          if (attempt === 3) throw llmsError('LLMS_ERR_UNAVAILABLE', `${err.message}; retry shortly`, { retryAfter: 1 })
        }
      }
    },
    dimensions: (project) => clusterDimensions(this.#ask, project),
    // Every partition's first `limit` hits after the cursor, merged (exact: see cluster/search.ts).
    search: async (q, sort, after, limit) => mergeHits(await this.#ask(searchRequest(q, sort, after, limit)), limit)
  }

  /**
   * GET and PUT /prices as on one node (the book is the node's mirror of the cluster's; `models`
   * and `unpriced` come from the cluster's analytics); POST /prices/reprice runs across the
   * partitions (cluster/reprice.ts).
   */
  override readonly prices: PriceService = new ClusterPriceService(this, () => this.#opts.clock.now())

  /** A budget frame goes to every node's /ws (each node's feed hands it to its broadcaster). */
  override publishBudget(notice: BudgetNotice): void {
    if (this.#h !== null) publishAlert(this.#h.nc, this.#h.names, notice)
  }

  /** Dry run or apply of a reprice across the partitions (see cluster/reprice.ts). */
  async repriceCluster(project: string, body: RepriceBody): Promise<RepriceOut> {
    const h = this.#handles()
    const scope = { project, start: body.start_time, end: body.end_time, model: body.model ?? null }
    const rev = this.book.rev
    const dry = (await this.#ask({ kind: 'reprice-dry', scope, rev })).map((x, p) => partOf(x, p))
    if (body.dry_run || dry.every((d) => d.changed === 0)) return sumParts(dry, body.dry_run, null)
    const record = await this.priceStore.putReprice({ ...scope, rev }, this.#opts.clock.now())
    this.#opts.logger.info({ reprice: record.id, project, rev }, 'reprice recorded: every partition applies it')
    const deadline = Date.now() + Math.max(60_000, 4 * this.#cfg.leaseMs)
    const parts = await Promise.all(
      Array.from({ length: h.partitions }, async (_, p) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return partOf(await askPartition(h.nc, h.names, p, { upTo: 0, req: { kind: 'reprice-wait', id: record.id } satisfies RepriceRequest }, Math.max(30_000, 3 * this.#cfg.queryTimeoutMs) + 1000), p)
          } catch (err) {
            // A partition without a live owner (a hand-over): its next owner applies the record when it takes over.
            if ((err as { statusCode?: number }).statusCode !== 503 || Date.now() >= deadline || this.#stopping) {
              throw llmsError('LLMS_ERR_UNAVAILABLE', `the re-pricing ${record.id} is recorded but partition ${p} did not confirm it (${(err as Error).message}); it completes when the partition has an owner`, { retryAfter: 1 })
            }
            await new Promise((r) => setTimeout(r, Math.min(1000, 100 * attempt)))
          }
        }
      })
    )
    return sumParts(parts, false, record.id)
  }

  /** The events at these stream seqs, priced as getEvent prices them (gets in parallel, bounded). */
  override async eventsBySeq(seqs: readonly number[]): Promise<Array<PricedEvent | undefined>> {
    const events = await streamCall('read events', () => readBySeq(seqs, (seq) => this.#jsLog!.get(seq)))
    return events.map((e) => (e === undefined ? undefined : this.price(e)))
  }

  /** {@link Engine.eachEventBySeq} over the stream: the events read as {@link eventsBySeq} reads them, then visited in the order asked. */
  override async eachEventBySeq(seqs: readonly number[], visit: (i: number, e: PricedEvent) => void): Promise<void> {
    const events = await this.eventsBySeq(seqs)
    for (let i = 0; i < events.length; i++) if (events[i] !== undefined) visit(i, events[i]!)
  }

  /**
   * DELETE /events in cluster mode (cluster/forget.ts): answers once every owner forgot the
   * matches and rewrote its snapshot, and their stream messages are erased.
   */
  override async forgetEvents(project: string, q: RangeQuery): Promise<{ deleted: number }> {
    if (filterNames(q).length === 0) throw noFilterError()
    if (this.#forget === null) throw llmsError('LLMS_ERR_NOT_READY', 'the node is not ready yet', { retryAfter: 1 })
    return this.#forget.run(project, q)
  }


  /** Durably accepts events: 202 once JetStream acknowledged every one (no wait for owners). */
  /** Tells every partition to drop a breakdown's hold (best effort: holds also end after the query timeout). */
  async #releaseHolds(qid: string): Promise<void> {
    const h = this.#h
    if (h === null) return
    await askAll(h.nc, h.names, h.partitions, { upTo: 0, req: { kind: 'release', qid } }, 1000).catch(() => {})
  }

  override async ingest(pending: PendingEvent[]): Promise<StoredEvent[]> {
    if (this.#stopping) throw llmsError('LLMS_ERR_SHUTTING_DOWN', 'the server is shutting down', { retryAfter: 1 })
    if (this.#inFlight + pending.length > this.config.highWaterEvents) {
      throw llmsError('LLMS_ERR_OVERLOADED', 'too many events waiting for the stream to acknowledge them, retry later', { retryAfter: 1 })
    }
    const appended = this.#jsLog!.append(pending)
    this.#inFlight += pending.length
    try {
      await appended.committed
    } finally {
      this.#inFlight -= pending.length
    }
    return appended.events
  }

  override async getEvent(id: string): Promise<PricedEvent | undefined> {
    const seq = seqOfEventId(id)
    if (seq === null) return undefined
    const e = await streamCall('read the event', () => this.#jsLog!.get(seq))
    if (e === undefined || e.id !== id) return undefined
    return this.price(e)
  }

  override async projectEvents(project: string): Promise<number> {
    return (await this.analytics.metrics({ project, start: -Infinity, end: Infinity })).totals.requests
  }

  /**
   * Deletes a project cluster-wide: every owner drops its state when it sees the tombstone (see
   * open()); here the stream's messages of the project, its rules and alert history.
   */
  override async deleteProject(project: string): Promise<void> {
    for (const r of this.#runners.values()) await r.topology.deleteProject(project)
    const rules = this.rules.list().filter((r) => (r.project ?? 'default') === project)
    await this.rules.removeProject(project)
    await this.alertEvents.removeRules(new Set(rules.map((r) => r.id)))
    await this.alertEvents.removeBudgets(new Set(await this.budgets.removeProject(project)))
    // Its versions and reprice records: a removal record each in the price log, so every book drops the project.
    await this.priceStore.dropProject(project)
    const removed = await this.#jsLog!.purgeProject(project)
    for (const r of this.#runners.values()) await r.snapshot()
    this.#opts.logger.info({ project, events: removed }, 'project deleted from the cluster')
  }

  /** Waits until every event acknowledged so far is visible to queries here: owners catch up on each query. */
  override async sync(): Promise<void> {}

  /** The evaluator's tick, on the one node holding `lease.alerts`: windows first, from every partition. */
  #alertTick(): void {
    const holds = this.#membership?.holdsAlerts() === true
    if (!holds) this.#heldAlerts = false
    if (this.#alertPass !== null || !holds || this.#stopping) return
    const takeover = !this.#heldAlerts
    this.#alertPass = (async () => {
      if (takeover) {
        // Just took the lease over: every record of the previous holder first (alert ids go on
        // after its), and what it recorded wins over this node's own older view, so nothing
        // fires twice.
        await this.#meta!.caughtUp()
        this.topology.alerts.send({ type: 'reconcile', recorded: this.alertEvents.latestByRule() })
        this.#heldAlerts = true
      }
      // Delete markers of pruned alert events, revoked keys and removed rules: purged hourly by the holder.
      if (this.#opts.clock.now() - this.#compactedAt >= 3_600_000) {
        this.#compactedAt = this.#opts.clock.now()
        await this.#meta!.compact().catch((err: unknown) => this.#opts.logger.warn({ err }, 'metadata compaction failed'))
      }
      const now = this.#opts.clock.now()
      const rules = this.rules.list().filter((r) => r.enabled)
      // Exactly the queries the evaluator makes this tick (src/alerts/windows.ts): windows,
      // groups (group_by), the shifted ones and the history check (baseline).
      const qs = new Map<string, WindowQuery>()
      const gqs = new Map<string, GroupWindowQuery>()
      for (const rule of rules) {
        const need = ruleQueries(rule, now, (p, d) => this.topology.alerts.historyKnown(p, d))
        for (const q of need.windows) qs.set(windowKey(q), q)
        for (const q of need.groups) gqs.set(groupWindowKey(q), q)
      }
      const list = [...qs.values()]
      const glist = [...gqs.values()]
      const [aggs, groups] = await Promise.all([
        list.length === 0 ? [] : clusterWindows(this.#ask, list),
        Promise.all(glist.map(async (q) => windowGroupsOf(await this.analytics.breakdown({ ...q.filters, project: q.project, start: q.start, end: q.end }, q.by as never, q.sort, q.limit), q.limit)))
      ])
      this.#windows.clear()
      this.#groups.clear()
      list.forEach((q, i) => this.#windows.set(windowKey(q), aggs[i]!))
      glist.forEach((q, i) => this.#groups.set(groupWindowKey(q), groups[i]!))
      // The evaluator computes the same windows from the clock it reads now: pin it to `now`.
      this.topology.alerts.send({ type: 'tick', now })
      // Budgets: evaluated here only, from the cluster's merged analytics, so each fires once.
      await this.budgetEvaluator.tick({ throttle: true })
    })()
      .catch((err: unknown) => {
        // A partition that does not answer: no evaluation this tick rather than one on partial figures.
        this.#alertsFailed++
        this.#opts.logger.debug({ err: (err as Error).message }, 'alert windows unavailable this tick')
      })
      .finally(() => {
        this.#alertPass = null
      })
  }

  override startSnapshots(): void {
    super.startSnapshots()
    if (this.#snapshotTimer !== null) return
    this.#snapshotTimer = setInterval(() => {
      for (const r of this.#runners.values()) r.snapshot().catch((err: unknown) => this.#opts.logger.warn({ err, partition: r.partition }, 'partition snapshot failed'))
    }, this.config.snapshotIntervalMs)
    this.#snapshotTimer.unref()
  }

  override clusterStatus(): ClusterStatus {
    const m = this.#membership?.stats()
    let lag = 0
    for (const r of this.#runners.values()) lag += r.lag
    return {
      node: this.#nodeId,
      partitions: this.#h?.partitions ?? this.#cfg.partitions,
      owned: [...this.#runners.keys()].sort((a, b) => a - b),
      unowned: m?.unowned ?? [],
      lag,
      restored_from: this.#restoredFrom,
      nodes: m?.nodes ?? [],
      alerts_lease: m?.alerts ?? false,
      lease_ms: this.#cfg.leaseMs
    }
  }

  override stats() {
    return {
      ...super.stats(),
      cluster: {
        ...this.clusterStatus(),
        inFlightPublishes: this.#inFlight,
        stream: this.#jsLog?.stats,
        queries: this.#responder?.stats,
        alertTicksSkipped: this.#alertsFailed,
        partitionStats: [...this.#runners.values()].map((r) => r.stats())
      }
    }
  }

  override close(): Promise<void> {
    return this.#stop(true)
  }

  override destroy(): Promise<void> {
    return this.#stop(false)
  }

  #stopped: Promise<void> | null = null
  #stop(graceful: boolean): Promise<void> {
    this.#stopped ??= (async () => {
      this.#stopping = true
      if (this.#alertTimer !== null) clearInterval(this.#alertTimer)
      if (this.#snapshotTimer !== null) clearInterval(this.#snapshotTimer)
      if (this.#janitorTimer !== null) clearInterval(this.#janitorTimer)
      this.#forget?.stop()
      this.#forgetSub?.unsubscribe()
      await this.#alertPass
      this.#statusSub?.unsubscribe()
      if (graceful) {
        // SIGTERM releases every lease at once (with a final snapshot of each partition).
        await this.#membership?.stop().catch((err: unknown) => this.#opts.logger.warn({ err }, 'releasing leases failed'))
      } else {
        this.#membership?.crash()
        for (const r of this.#runners.values()) await r.stop({ snapshot: false }).catch(() => {})
      }
      this.#responder?.close()
      await this.#feed?.stop().catch(() => {})
      await this.#meta?.stop().catch(() => {})
      this.#prices?.stop()
      if (graceful) await super.close()
      else await super.destroy()
      await this.#h?.close().catch(() => {})
    })()
    return this.#stopped
  }
}

/**
 * The price service of a cluster node: GET and PUT /prices as the single node's (over this
 * node's mirror of the book, and the cluster's analytics), reprices across the partitions.
 */
class ClusterPriceService extends PriceService {
  readonly #engine: ClusterEngine

  constructor(engine: ClusterEngine, now: () => number) {
    super({
      get store() {
        return engine.priceStore
      },
      get book() {
        return engine.book
      },
      now,
      seen: (project) => seenModels(engine.analytics, project),
      exclusive: (fn) => fn(),
      sync: async () => {},
      readLog: () => [],
      skip: () => false,
      applyReprice: async () => {
        throw new Error('cluster mode applies re-pricings in the partitions')
      }
    })
    this.#engine = engine
  }

  override reprice(project: string, body: RepriceBody): Promise<RepriceOut> {
    return this.#engine.repriceCluster(project, body)
  }

  /** Nothing to recover on the node itself: every partition applies the log's reprices when it takes over. */
  override async recover(): Promise<number> {
    return 0
  }
}

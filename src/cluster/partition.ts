/**
 * One owned partition on one node (DESIGN §9, CLUSTER.md "Behaviour"): a Topology holding the
 * (project, model) series of partition N only, fed from the stream's subject `${name}.ev.N.>`.
 *
 *   object store `p<N>` ─┐ newest (higher seq)
 *   local LMDB copy     ─┴─► Topology(restored) ◄── replay(events) ◄── PartitionFollower(from = snapshot seq)
 *                                  │
 *                                  ├── queries: `topology` is the AnalyticsReader, after ready(upTo)
 *                                  └── snapshot(): full, one buffer → local LMDB + object store
 *
 * - Positions are stream sequences: `payload.seq` of a partition snapshot is the next seq to
 *   replay, as on the single node. The partition's events are not consecutive in the stream (the
 *   other partitions' sit between them), which nothing here relies on.
 * - The topology's ingest router and broadcaster are never used in cluster mode (events come from
 *   the follower; the node's WebSocket feed has its own broadcaster): its log is a stand-in that
 *   refuses appends and replays nothing. Its alert evaluator has no rules (alerts are evaluated by
 *   the alerts-lease holder from fan-out windows), so alert state in the snapshot means nothing.
 * - A snapshot that cannot be restored (damaged, another format, its seq past the stream's end
 *   because the stream was made anew) is skipped with a warning: the partition is rebuilt from
 *   the stream (`restoredFrom: 'stream'`), never half-used.
 * - Deletes (DELETE /events, cluster/forget.ts): forget(id, …) drops the seqs from every
 *   aggregator and from every event handed over later (the follower's, a hold's, the log path's)
 *   until forgetDone(id), when their stream messages are gone. A runner starts with the pending
 *   deletes of its partition (`forgets`: the tombstones in KV), applied to the restored state
 *   before the follower hands over anything, so an owner change mid-delete loses nothing.
 *   `gen` counts the deletes applied to this state; snapshots carry it (see snapshots.ts).
 * - Prices (issue 14, cluster/prices.ts): the partition prices with a book of its own, which
 *   follows the cluster's price log. An event accepted at revision r (its `priceRev`) waits on
 *   the way in until this node's log holds position r (normally at once), so it is priced with
 *   every record that existed when it was accepted. A reprice record is applied at a cut: the
 *   partition's events the topology counts are read from the stream (with nothing held), then
 *   the follower's hand-over is held, the aggregators drained and the tail read; their costs
 *   before (the partition book as it is) and after (with the record) give the change list,
 *   `topology.reprice` applies it, the partition book takes the record, and the hold ends:
 *   events handed over afterwards get the new prices. Queries wait for a cut in progress, and
 *   answer with the partition's reprice epoch (the log position of its newest applied reprice),
 *   so the asking node merges only partials of one epoch. Snapshots list the reprices their
 *   state holds (`clusterReprices`, with each one's diff rows); a runner starting from one
 *   applies the log's other reprice records before it serves.
 */
import { REPLAY_CHUNK, Topology, type TopologyLog } from '../actors/topology.js'
import { llmsError } from '../errors.js'
import type { Pricer } from '../actors/cost-stage.js'
import type { AnalyticsReader, ProjectView } from '../analytics/reader.js'
import { metrics, type LogScan, type QuerySource } from '../queries.js'
import { DAY_MS } from '../analytics/time.js'
import type { SnapshotPayload } from '../store/snapshots.js'
import type { PricedEvent, StoredEvent } from '../events.js'
import type { Config } from '../config.js'
import type { Log } from '../log.js'
import type { Clock } from '../clock.js'
import type { NatsHandles } from './nats.js'
import { JetStreamLog } from './js-log.js'
import { partitionOf } from './names.js'
import { PartitionFollower } from './follower.js'
import { fullPayload, type PartitionSnapshots, type PartitionSnapshotSource } from './snapshots.js'
import type { PartitionForget } from './tombstones.js'
import { readBySeq } from './search.js'
import { priceEvent } from '../pricing/book.js'
import { scanReprice, type CostChanges } from '../prices.js'
import type { ClusterPrices, PartitionBook, PlacedReprice } from './prices.js'

/** One (provider, model) row of a reprice's diff in nanos (summed by the asking node). */
export interface RepriceRowNanos {
  provider: string
  model: string
  requests: number
  before: number
  after: number
}

/** What a partition snapshot keeps of each reprice its state holds. */
export interface AppliedReprice {
  id: string
  pos: number
  rows: RepriceRowNanos[]
  changed: number
}

/** How long a reprice cut may hold the partition's hand-over (a hold otherwise ends after the query timeout). */
const REPRICE_HOLD_MS = 30 * 60_000
/** How long an event waits for the price book revision it was accepted at before it is priced anyway (logged). */
const PRICE_REV_WAIT_MS = 30_000

export interface PartitionRunnerOptions {
  h: NatsHandles
  partition: number
  config: Config
  logger: Log
  clock: Clock
  /** The node's shared PricingPool (src/pricing/pool.ts); null = inline pricing. */
  pricer: Pricer | null
  /** Where the partition's snapshots are read and written. */
  local: PartitionSnapshots
  /** Prices one stored event exactly as the cost stage does (Engine.price). */
  price: (e: StoredEvent) => PricedEvent
  /** Projects being deleted when the runner starts: their events are dropped on the way in. */
  dropped?: () => ReadonlySet<string>
  /** The stream's reader (default: a JetStreamLog of `h`). */
  log?: JetStreamLog
  /** Deletes still pending for this partition (tombstones in KV): applied before anything is served. */
  forgets?: readonly PartitionForget[]
  /** The cluster's price book (issue 14): the partition prices with a book of its own that follows it. Without: `price` and the pricer as given. */
  prices?: ClusterPrices
}

export interface PartitionSnapshotStats {
  /** Next seq to replay after it (payload.seq). */
  seq: number
  at: number
  bytes: number
  ms: number
  /** False when the object store already held a newer one (another owner's). */
  objectStore: boolean
}


/** A Topology whose ingest path is never used: appends refused, nothing to replay. */
function standInLog(end: () => number): TopologyLog {
  return {
    append: () => {
      throw new Error('a cluster partition does not ingest through its topology')
    },
    readFrom: function* () {},
    get nextSeq() {
      return end()
    }
  }
}

/** `p` rejected with `message` when it has not settled within `ms`. */
function within<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), Math.max(0, ms))
    timer.unref()
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

export class PartitionRunner implements AnalyticsReader {
  readonly partition: number
  /** Where this runner's state started: a snapshot (plus the stream tail), or the stream alone. */
  readonly restoredFrom: 'snapshot' | 'stream'
  /** The snapshot it restored (source, seq), or null. */
  readonly restored: { source: PartitionSnapshotSource; seq: number; bytes: number } | null
  /** The reader for queries (after ready()). */
  readonly topology: Topology
  readonly #opts: PartitionRunnerOptions
  readonly #log: JetStreamLog
  readonly #follower: PartitionFollower
  /** Events handed to the topology since start (the tail after the snapshot, then live ones). */
  #fed = 0
  #snapshotting: Promise<void> | null = null
  /** A delete being applied (topology.forget rewrites rows a snapshot copies after its cut: never both at once). */
  #forgetting: Promise<unknown> | null = null
  #lastSnapshot: PartitionSnapshotStats | null = null
  #stopped: Promise<void> | null = null
  #closed = false
  /** Holds in force (see hold()) and the batches the follower handed over meanwhile. */
  #holds = 0
  #held: StoredEvent[][] = []
  #holdWaiters: Array<() => void> = []
  /** Highest seq ready() saw the follower caught up to: every event of the partition up to it was handed over. */
  #readyThrough = 0
  #sinceRetain = 0
  /** Seqs of pending deletes, by delete id: never handed to the topology. */
  readonly #dropped = new Map<string, ReadonlySet<number>>()
  /** Deletes applied to this state since the partition began (restored + applied here). */
  #gen: number
  /** The partition's own price book (null without `prices`). */
  readonly #book: PartitionBook | null
  /** Batches waiting for the price book revision their events were accepted at. */
  #gated: StoredEvent[][] = []
  #gateWait: Promise<void> | null = null
  #gateWaiters: Array<() => void> = []
  /** Highest seq handed to the topology itself (not held, not gated): what a reprice cut re-prices. */
  #inTopology = 0
  /** Reprices applied to this state: restored ones and the ones applied here, with their diff rows. */
  readonly #applied = new Map<string, AppliedReprice>()
  /** Reprice applies run one at a time, in log order. */
  #repriceQueue: Promise<unknown> = Promise.resolve()
  /** A reprice's topology change in flight: queries wait for it. */
  #repricing: Promise<unknown> | null = null
  #epochWaiters: Array<() => void> = []

  private constructor(opts: PartitionRunnerOptions, log: JetStreamLog, restored: PartitionRunner['restored'], topology: Topology, from: number, restoredGen: number, book: PartitionBook | null, applied: readonly AppliedReprice[]) {
    this.#opts = opts
    this.partition = opts.partition
    this.#log = log
    this.restored = restored
    this.restoredFrom = restored === null ? 'stream' : 'snapshot'
    this.topology = topology
    this.#gen = restoredGen
    this.#book = book
    this.#inTopology = from - 1
    for (const a of applied) this.#applied.set(a.id, a)
    for (const f of opts.forgets ?? []) this.#dropped.set(f.id, new Set(f.seqs))
    this.#follower = new PartitionFollower(opts.h, {
      partition: opts.partition,
      from,
      log: opts.logger,
      backpressure: () => this.topology.backpressure(),
      onEvents: (batch) => {
        const events = this.#keep(batch)
        this.#fed += events.length
        if (events.length === 0) return
        this.#gate(events)
        // A long tail must not hold more raw rows than retention allows (as Engine.recover).
        this.#sinceRetain += events.length
        if (this.#sinceRetain >= REPLAY_CHUNK) {
          this.#sinceRetain = 0
          this.#retain()
        }
      }
    })
    book?.onReprice((r) => void this.#enqueueReprice(r))
  }

  /**
   * Hands events on once this node's price log holds the revision they were accepted at
   * (normally at once): batches wait in order behind one that waits.
   */
  #gate(events: StoredEvent[]): void {
    const book = this.#book
    if (book === null || this.#opts.prices === undefined) return this.#handOver(events)
    let need = 0
    for (const e of events) if ((e.priceRev ?? 0) > need) need = e.priceRev ?? 0
    const prices = this.#opts.prices
    if (this.#gated.length === 0 && need <= prices.log.pos) return this.#handOver(events)
    this.#gated.push(events)
    if (this.#gateWait !== null) return
    this.#gateWait = (async () => {
      while (this.#gated.length > 0 && !this.#closed) {
        const batch = this.#gated[0]!
        let want = 0
        for (const e of batch) if ((e.priceRev ?? 0) > want) want = e.priceRev ?? 0
        try {
          await prices.log.waitPos(want, PRICE_REV_WAIT_MS)
        } catch (err) {
          // Never stuck: priced with what this node has (a record lost from the bucket, or a node far behind).
          this.#opts.logger.warn({ partition: this.partition, priceRev: want, have: prices.log.pos, err: (err as Error).message }, 'partition: events priced before their price book revision reached this node')
        }
        if (this.#closed) break
        this.#gated.shift()
        this.#handOver(batch)
      }
    })().finally(() => {
      this.#gateWait = null
      const waiters = this.#gateWaiters
      this.#gateWaiters = []
      for (const w of waiters) w()
    })
  }

  #handOver(events: StoredEvent[]): void {
    if (this.#holds > 0) this.#held.push(events)
    else this.#replay(events)
  }

  #replay(events: StoredEvent[]): void {
    if (events.length === 0) return
    this.topology.replay(events)
    const last = events[events.length - 1]!.seq
    if (last > this.#inTopology) this.#inTopology = last
  }

  /**
   * Restores the newest snapshot of the partition (object store or local copy, whichever has
   * the higher seq; none → empty), then follows the partition's subject from its seq. Resolves
   * once the follower runs (not caught up: see ready()).
   */
  static async start(opts: PartitionRunnerOptions): Promise<PartitionRunner> {
    const { partition: p, logger } = opts
    const log = opts.log ?? new JetStreamLog(opts.h)
    const t0 = performance.now()
    let read = await opts.local.read(p)
    if (read !== null) {
      // A seq past the stream's end: the stream was made anew since; the snapshot is of another log.
      const last = await log.lastSeq()
      if (read.payload.seq > last + 1) {
        logger.warn({ partition: p, seq: read.payload.seq, streamLast: last, source: read.source }, 'partition snapshot is ahead of the event stream (a new stream?): rebuilding from the stream')
        read = null
      }
    }
    let topology: Topology
    let restored: PartitionRunner['restored'] = null
    let gen = 0
    // The stand-in log's end: the runner's position, once it exists.
    let runner: PartitionRunner | undefined
    let book: PartitionBook | null = null
    let applied: AppliedReprice[] = []
    const build = (payload: SnapshotPayload | undefined) => {
      book?.close()
      // The reprices the restored state holds; without a snapshot every event is priced afresh, so all of them.
      applied = payload === undefined ? [] : appliedOf(payload)
      const ids = new Set(applied.map((a) => a.id))
      book = opts.prices?.partitionBook(payload === undefined ? () => true : (id) => ids.has(id)) ?? null
      if (payload === undefined && book !== null && opts.prices !== undefined) {
        applied = opts.prices.reprices().map((r) => ({ id: r.record.id, pos: r.pos, rows: [], changed: 0 }))
      }
      return PartitionRunner.#topology(opts, payload, () => (runner === undefined ? 0 : runner.processedThrough + 1), book)
    }
    try {
      topology = build(read?.payload)
      if (read !== null) {
        restored = { source: read.source, seq: read.payload.seq, bytes: read.bytes }
        gen = read.gen
      }
    } catch (err) {
      logger.warn({ partition: p, err: (err as Error).message }, 'partition snapshot could not be restored: rebuilding from the stream')
      topology = build(undefined)
    }
    const from = restored?.seq ?? 1
    runner = new PartitionRunner(opts, log, restored, topology, from, gen, book, applied)
    // Before the tail: restored series learn where coarse hours end, so old replayed events fold on arrival.
    runner.#retain()
    try {
      // Pending deletes leave the restored state before anything is served (replayed events are
      // dropped on the way in): idempotent, a seq with no row is a no-op.
      for (const f of opts.forgets ?? []) {
        const removed = await topology.forget(f.project, new Set(f.seqs), undefined, await runner.#coarse(f.seqs, Infinity))
        if (removed > 0) logger.info({ partition: p, delete: f.id, removed }, 'partition: a pending delete re-applied to the restored state')
      }
      // Reprices recorded since the snapshot: applied to the restored state before anything is served.
      for (const r of (book as PartitionBook | null)?.pending() ?? []) await runner.#enqueueReprice(r)
      await runner.#follower.start()
    } catch (err) {
      await topology.close()
      throw err
    }
    logger.info({ partition: p, restoredFrom: runner.restoredFrom, source: restored?.source, seq: from, ms: Math.round(performance.now() - t0) }, 'partition taken over')
    return runner
  }

  static #topology(opts: PartitionRunnerOptions, restored: SnapshotPayload | undefined, end: () => number, book: PartitionBook | null): Topology {
    const c = opts.config
    const price = book === null ? opts.price : (e: StoredEvent): PricedEvent => {
      const p = priceEvent(e, book.book)
      return { ...e, costNanos: p.costNanos, unpriced: p.unpriced }
    }
    return new Topology({
      book: book?.book,
      log: standInLog(end),
      pricer: opts.pricer,
      overrides: { ...c.priceOverrides },
      logger: opts.logger,
      clock: opts.clock,
      highWaterEvents: c.highWaterEvents,
      maxModels: c.maxModels,
      costChunk: c.costBatch,
      costMaxInFlight: Math.max(2, c.costThreads * 2),
      restored,
      price,
      dimensionLimits: c.dimensionLimits,
      dropped: opts.dropped?.(),
      // Never asked: this topology's alert evaluator gets no rules (the alerts-lease holder evaluates).
      window: (reader, q) => metrics({ reader }, { ...q.filters, project: q.project, start: q.start, end: q.end })
    })
  }

  /** AnalyticsReader: the partition's state of one project (after ready() for read-your-writes). */
  project(id: string): ProjectView | undefined {
    return this.topology.project(id)
  }

  /** Highest stream seq handed to the topology (every event of the partition up to it is in its pipeline). */
  get processedThrough(): number {
    return this.#follower.processedThrough
  }

  /** Events of the partition in the stream not yet handed to the topology. */
  get lag(): number {
    return this.#follower.lag
  }

  /** Events handed to the topology since start (the tail after the snapshot included). */
  get fed(): number {
    return this.#fed
  }

  /**
   * Resolves once every event of the partition with seq <= upTo is visible to queries (the
   * follower handed it over, then a barrier passed every aggregator); rejects after timeoutMs.
   * `upTo` is a seq the stream already holds (its last seq read before the call, as the query
   * coordinator does): the follower answers a seq past the stream's end as caught up at once.
   */
  async ready(upTo: number, timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs
    if (this.#stopped !== null) throw new Error(`partition ${this.partition} is stopped`)
    await this.#follower.caughtUp(upTo, timeoutMs)
    // Events handed over during a hold are not in the topology yet: wait for it to end.
    while (this.#holds > 0) {
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`partition ${this.partition}: held by another query for ${timeoutMs} ms`)
      await within(new Promise<void>((resolve) => this.#holdWaiters.push(resolve)), left, `partition ${this.partition}: held by another query for ${timeoutMs} ms`)
    }
    // Events waiting for their price book revision are not in the topology yet either.
    while (this.#gateWait !== null) {
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`partition ${this.partition}: events wait for a price book revision this node has not received (${timeoutMs} ms)`)
      await within(new Promise<void>((resolve) => this.#gateWaiters.push(resolve)), left, `partition ${this.partition}: events wait for a price book revision this node has not received (${timeoutMs} ms)`)
    }
    this.#readyThrough = Math.max(this.#readyThrough, upTo)
    await within(this.topology.sync(), deadline - performance.now(), `partition ${this.partition}: its aggregators did not catch up to seq ${upTo} within ${timeoutMs} ms`)
  }

  /**
   * The log path of queries for this partition (a value past a dimension cap, rows folded by
   * retention): the partition's stored events — of `project` only when given — up to what the
   * topology was handed, read from the stream into memory now. queries.ts's LogScan is
   * synchronous, so this is called once per query that needs it; the scan filters by project and
   * time and prices each event as the cost stage did.
   */
  async loadLog(project?: string): Promise<LogScan> {
    const to = this.processedThrough
    const events: StoredEvent[] = []
    if (to >= 1) {
      const { partitions } = this.#opts.h
      for await (const batch of this.#log.read(1, { partition: this.partition, project, to })) {
        // The subject filter selects them already; checked again, so a scan never counts another partition's event.
        for (const e of batch) if (partitionOf(e.project, e.model, partitions) === this.partition) events.push(e)
      }
    }
    const price = (e: StoredEvent) => this.#price(e)
    const kept = this.#keep(events)
    return (p, start, end, visit) => {
      for (const e of kept) if (e.project === p && e.ts >= start && e.ts < end) visit(price(e))
    }
  }

  /**
   * Answers `run` from the topology alone, or, when it needs the log path, again with the
   * partition's log loaded (loadLog): the common case reads nothing from the stream.
   */
  async answer<T>(run: (source: QuerySource) => T, project?: string): Promise<T> {
    try {
      return run({ reader: this.topology })
    } catch (err) {
      if (!/needs the event log/.test((err as Error).message)) throw err
    }
    return run({ reader: this.topology, log: await this.loadLog(project) })
  }

  /** Prices a stored event as this partition's cost stage does (its own book; else the node's `price`). */
  #price(e: StoredEvent): PricedEvent {
    if (this.#book === null) return this.#opts.price(e)
    const p = priceEvent(e, this.#book.book)
    return { ...e, costNanos: p.costNanos, unpriced: p.unpriced }
  }

  /** Resolves once no reprice cut is changing the topology. */
  async #cutDone(): Promise<void> {
    for (let cut = this.#repricing; cut !== null; cut = this.#repricing) await cut.catch(() => {})
  }

  /** The partition's reprice epoch: the log position of the newest reprice its state holds (0: none). */
  get epoch(): number {
    return this.#book?.epoch ?? 0
  }

  /** Reprices this state holds, with their diff rows. */
  get appliedReprices(): AppliedReprice[] {
    return [...this.#applied.values()]
  }

  /**
   * Resolves once this partition's state holds every reprice up to log position `epoch` (a
   * query that must match partials of other partitions already there); rejects after timeoutMs.
   */
  async reachEpoch(epoch: number, timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs
    while (this.epoch < epoch) {
      if (this.#closed) throw new Error(`partition ${this.partition} is stopped`)
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`partition ${this.partition}: re-pricing ${epoch} not applied here within ${timeoutMs} ms (at ${this.epoch})`)
      await within(new Promise<void>((resolve) => this.#epochWaiters.push(resolve)), left, `partition ${this.partition}: re-pricing ${epoch} not applied here within ${timeoutMs} ms (at ${this.epoch})`)
    }
  }

  /**
   * {@link answer} with the epoch of the state it read: a reprice cut in progress is waited for
   * first, so the answer and its epoch are of one state.
   */
  async answerAt<T>(run: (source: QuerySource) => T, project?: string): Promise<{ epoch: number; data: T }> {
    await this.#cutDone()
    const epoch = this.epoch
    try {
      return { epoch, data: run({ reader: this.topology }) }
    } catch (err) {
      if (!/needs the event log/.test((err as Error).message)) throw err
    }
    const log = await this.loadLog(project)
    // Loading the log awaited: a cut may have moved the state meanwhile; read again after it.
    await this.#cutDone()
    return { epoch: this.epoch, data: run({ reader: this.topology, log }) }
  }

  /**
   * The reprice `id` (a record of the log) as applied here: resolves with its diff rows once
   * this partition applied it (at once when it had). Rejects after timeoutMs.
   */
  async repriced(id: string, timeoutMs: number): Promise<AppliedReprice> {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const a = this.#applied.get(id)
      if (a !== undefined) return a
      const placed = this.#opts.prices?.reprice(id)
      if (placed === undefined) throw new Error(`partition ${this.partition}: re-pricing ${id} is not in this node's price book`)
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`partition ${this.partition}: re-pricing ${id} not applied within ${timeoutMs} ms`)
      await within(this.#enqueueReprice(placed), left, `partition ${this.partition}: re-pricing ${id} not applied within ${timeoutMs} ms`)
    }
  }

  /**
   * Dry run of a reprice at revision `rev` on this partition (after ready()): per (provider,
   * model) requests and nanos before and after, of the events the state counts.
   */
  async repriceDiff(scope: { project: string; start: number; end: number; model: string | null }, rev: number): Promise<{ rows: RepriceRowNanos[]; changed: number; epoch: number }> {
    if (this.#book === null) throw new Error('partition: no price book')
    await this.#cutDone()
    const epoch = this.epoch
    const events = await this.#eventsOf(scope.project, this.#inTopology)
    if (this.epoch !== epoch) throw llmsError('LLMS_ERR_UNAVAILABLE', `partition ${this.partition}: a re-pricing was applied during the dry run; retry shortly`, { retryAfter: 1 })
    const scan = await scanReprice(readerOf(events), this.#book.book, scope, rev, { changes: true })
    return { rows: [...scan.rows.values()], changed: scan.changes?.seqs.length ?? 0, epoch }
  }

  /** The partition's events of `project` with seq ≤ `to`, read from the stream (pending deletes left out). */
  async #eventsOf(project: string, to: number, from = 1): Promise<StoredEvent[]> {
    const events: StoredEvent[] = []
    if (to < from) return events
    const { partitions } = this.#opts.h
    for await (const batch of this.#log.read(from, { partition: this.partition, project, to })) {
      for (const e of batch) if (partitionOf(e.project, e.model, partitions) === this.partition) events.push(e)
    }
    return this.#keep(events)
  }

  /** Applies reprice `r` (and any before it not applied yet), one at a time, in log order. */
  #enqueueReprice(r: PlacedReprice): Promise<void> {
    const run = this.#repriceQueue.then(async () => {
      if (this.#closed || this.#book === null) return
      for (const p of this.#book.pending()) {
        if (p.pos > r.pos) break
        await this.#applyReprice(p)
      }
    })
    this.#repriceQueue = run.catch((err: unknown) => this.#opts.logger.error({ partition: this.partition, err: (err as Error).message }, 'partition: a re-pricing could not be applied'))
    return run
  }

  /** One reprice at a cut (see the module comment). */
  async #applyReprice(p: PlacedReprice): Promise<void> {
    const book = this.#book!
    if (book.ids.has(p.record.id)) return
    const t0 = performance.now()
    const r = p.record
    // The long part first, with nothing held (queries and the hand-over go on): the events the
    // topology counts now, read from the stream. Their prices before and after cannot change
    // meanwhile (the partition book takes reprices only here, one at a time; a version added
    // since has a newer revision than theirs).
    let gen = this.#gen
    let through = this.#inTopology
    let events: StoredEvent[] | null = await this.#eventsOf(r.project, through)
    // Alone: a breakdown's two rounds (a hold) must read one state, so the cut waits for them.
    while (this.#holds > 0) await new Promise<void>((resolve) => this.#holdWaiters.push(resolve))
    const release = this.hold(REPRICE_HOLD_MS)
    try {
      // Nothing more reaches the topology; what it was handed is counted after the sync.
      await this.topology.sync()
      let scan: Awaited<ReturnType<typeof scanReprice>>
      for (;;) {
        await this.#quiet()
        if (this.#closed) throw new Error(`partition ${this.partition} is stopped`)
        if (events === null || this.#gen !== gen) {
          // A delete changed the state since the read (or since the last try): read it all again.
          gen = this.#gen
          through = this.#inTopology
          events = await this.#eventsOf(r.project, through)
        } else if (this.#inTopology > through) {
          // The tail the topology took since the first read.
          const tail = await this.#eventsOf(r.project, this.#inTopology, through + 1)
          through = this.#inTopology
          events = events.concat(tail)
        }
        scan = await scanReprice(readerOf(events), book.book, r, r.rev, { changes: true })
        await this.#quiet()
        // No await between this check and the cut's start: the change list is of the state it changes.
        if (this.#gen === gen && this.#inTopology === through) break
        events = null
      }
      if (this.#closed) throw new Error(`partition ${this.partition} is stopped`)
      const changes = scan.changes as CostChanges
      const rows = [...scan.rows.values()]
      const cut = (async () => {
        if (changes.seqs.length > 0) await this.topology.reprice(r.project, r.id, changes)
        book.applied(p)
        this.#applied.set(r.id, { id: r.id, pos: p.pos, rows, changed: changes.seqs.length })
      })()
      this.#repricing = cut
      try {
        await cut
      } finally {
        this.#repricing = null
      }
      this.#opts.logger.info({ partition: this.partition, reprice: r.id, project: r.project, changed: changes.seqs.length, ms: Math.round(performance.now() - t0) }, 'partition: re-pricing applied')
    } finally {
      release()
      const waiters = this.#epochWaiters
      this.#epochWaiters = []
      for (const w of waiters) w()
    }
    // The stored state holds it from now on (a takeover from an older snapshot re-applies it).
    await this.snapshotFresh().catch((err: unknown) => this.#opts.logger.warn({ partition: this.partition, err: (err as Error).message }, 'partition snapshot after a re-pricing failed'))
  }

  /** Resolves once no snapshot is being written and no delete is being applied. */
  async #quiet(): Promise<void> {
    while (this.#snapshotting !== null || this.#forgetting !== null) {
      await this.#snapshotting?.catch(() => {})
      await this.#forgetting?.catch(() => {})
    }
  }

  /**
   * Freezes what queries read (a breakdown's two rounds must read the same state): events the
   * follower hands over from now on wait, the ones already handed over reach the aggregators
   * (await `topology.sync()` after taking the hold), and the release (idempotent; also after
   * `maxMs`) replays the waiting ones in order.
   */
  hold(maxMs: number): () => void {
    this.#holds++
    let released = false
    const release = () => {
      if (released) return
      released = true
      clearTimeout(timer)
      if (--this.#holds > 0) return
      const held = this.#held
      this.#held = []
      // A delete applied during the hold: its seqs leave what was held too.
      if (!this.#closed) for (const events of held) this.#replay(this.#keep(events))
      const waiters = this.#holdWaiters
      this.#holdWaiters = []
      for (const w of waiters) w()
    }
    const timer = setTimeout(release, maxMs)
    timer.unref()
    return release
  }

  /** Sends the aggregators the retention policy for now (as Engine.retain). */
  #retain(): void {
    const { days, events } = this.#opts.config.retention
    if (days === 0 && events === 0) return
    const now = this.#opts.clock.now()
    const before = days > 0 ? (Math.floor(now / DAY_MS) - days + 1) * DAY_MS : -Infinity
    this.topology.retain({ before, maxRows: events, now })
  }

  /**
   * Writes a full snapshot of the partition (one buffer) to the local LMDB and the object store
   * `p<N>`. One at a time: a call during a write joins it.
   */
  snapshot(): Promise<void> {
    if (this.#snapshotting !== null) return this.#snapshotting
    if (this.#closed) return Promise.reject(new Error(`partition ${this.partition} is stopped: no snapshot`))
    this.#snapshotting = (async () => {
      while (this.#forgetting !== null) await this.#forgetting.catch(() => {})
      const t0 = performance.now()
      this.#retain()
      // Every event of the partition up to `handed` is in the pipeline ahead of the cut (the last
      // one handed over, or a seq ready() saw the follower caught up to: nothing of the partition
      // lies between); any handed over meanwhile is in the cut too and then sets its seq. So the
      // snapshot's seq is the larger of the two: a quiet partition's snapshot still moves with
      // the stream as queries come, and a takeover starts from there, not from its last event.
      // ready() trusts its caller that upTo is in the stream: capped by the stream's end, in case not.
      const streamLast = await this.#log.lastSeq().catch(() => 0)
      // A reprice's change in flight: the cut comes after it (and the list below names it).
      await this.#cutDone()
      const handed = Math.max(this.processedThrough, Math.min(this.#readyThrough, streamLast))
      // Read before the cut: a delete counted in it has left the state the cut copies.
      const gen = this.#gen
      const cut = await this.topology.snapshot(this.#opts.clock.now(), true)
      // Events handed over but waiting (a hold, or their price book revision) are not in the cut:
      // the snapshot's seq stops before the first of them, so a restore replays them.
      const waiting = Math.min(this.#held[0]?.[0]?.seq ?? Infinity, this.#gated[0]?.[0]?.seq ?? Infinity)
      // Alerts are evaluated elsewhere in cluster mode: this topology's evaluator state is not kept.
      // The reprices the cut holds: none is applied between the cut and here (a reprice's cut waits for snapshots).
      const clusterReprices = this.appliedReprices
      const payload = await fullPayload({ ...cut, seq: Math.min(Math.max(cut.seq, handed + 1), waiting), alerts: undefined, ...({ clusterReprices, reprices: clusterReprices.map((a) => a.id) } as object) })
      const written = await this.#opts.local.write(this.partition, payload, gen)
      this.#lastSnapshot = { seq: payload.seq, at: this.#opts.clock.now(), bytes: written.bytes, ms: Math.round(performance.now() - t0), objectStore: written.objectStore }
      this.#opts.logger.debug({ partition: this.partition, seq: payload.seq, bytes: written.bytes }, 'partition snapshot written')
    })().finally(() => {
      this.#snapshotting = null
    })
    return this.#snapshotting
  }

  /** `events` without the seqs of pending deletes (the same array when none applies). */
  #keep(events: StoredEvent[]): StoredEvent[] {
    if (this.#dropped.size === 0) return events
    const sets = [...this.#dropped.values()]
    return events.filter((e) => !sets.some((s) => s.has(e.seq)))
  }

  /** Deletes applied to this state (restored ones included): what its snapshots carry. */
  get gen(): number {
    return this.#gen
  }

  /**
   * Applies delete `id`: its seqs are dropped from every event handed over from now on, and
   * their rows leave every aggregator (after a barrier: the events already handed over are in).
   * Resolves with the rows removed (0 when applied before: idempotent). Follow with
   * snapshotFresh() so the stored state no longer holds them.
   */
  async forget(id: string, project: string, seqs: readonly number[]): Promise<number> {
    if (this.#closed) throw new Error(`partition ${this.partition} is stopped`)
    const set = new Set(seqs)
    this.#dropped.set(id, set)
    // Events handed over so far are in the state (the ones after are dropped on the way in).
    const coarse = await this.#coarse(seqs, this.processedThrough)
    // Never beside a snapshot: it copies rows after its cut, and forget rewrites rows.
    while (this.#snapshotting !== null) await this.#snapshotting.catch(() => {})
    if (this.#closed) throw new Error(`partition ${this.partition} is stopped`)
    const run = this.topology.forget(project, set, undefined, coarse)
    this.#forgetting = run
    try {
      const removed = await run
      this.#gen++
      return removed
    } finally {
      if (this.#forgetting === run) this.#forgetting = null
    }
  }

  /**
   * With retention on, rows may have been folded into coarse hours, which forget subtracts the
   * events from: the events of `seqs` the state holds (seq ≤ `through`), read from the stream and
   * priced as the cost stage did (one already erased is left out). Undefined without retention.
   */
  async #coarse(seqs: readonly number[], through: number): Promise<PricedEvent[] | undefined> {
    const { days, events } = this.#opts.config.retention
    if (days === 0 && events === 0) return undefined
    const held = seqs.filter((s) => s <= through)
    const read = await readBySeq(held, (seq) => this.#log.get(seq))
    return read.filter((e): e is StoredEvent => e !== undefined).map((e) => this.#price(e))
  }

  /** Delete `id` is complete (its stream messages are gone): its seqs need no filtering any more. */
  forgetDone(id: string): void {
    this.#dropped.delete(id)
  }

  /** Pending deletes this runner filters (ids). */
  get pendingForgets(): string[] {
    return [...this.#dropped.keys()]
  }

  /** A snapshot whose cut is taken after this call (a snapshot in progress is waited for, not joined). */
  async snapshotFresh(): Promise<void> {
    await this.#snapshotting?.catch(() => {})
    await this.snapshot()
  }

  get lastSnapshot(): PartitionSnapshotStats | null {
    return this.#lastSnapshot
  }

  /**
   * Stops following the stream; with `snapshot`, lets the topology take in what it was handed and
   * writes a final snapshot first (a failed one is logged and rethrown after the close). Then
   * closes the topology. Safe twice.
   */
  stop(opts: { snapshot: boolean }): Promise<void> {
    this.#stopped ??= (async () => {
      await this.#follower.stop()
      let failed: unknown = null
      if (opts.snapshot) {
        await this.#snapshotting?.catch(() => {})
        try {
          await this.snapshot()
        } catch (err) {
          failed = err
          this.#opts.logger.error({ partition: this.partition, err }, 'final partition snapshot failed')
        }
      } else {
        await this.#snapshotting?.catch(() => {})
      }
      this.#closed = true
      this.#book?.close()
      await this.topology.close()
      if (failed !== null) throw failed
    })()
    return this.#stopped
  }

  stats() {
    return {
      partition: this.partition,
      processedThrough: this.processedThrough,
      lag: this.lag,
      consumerReopens: this.#follower.reopens,
      takenByGet: this.#follower.takenByGet,
      restoredFrom: this.restoredFrom,
      restored: this.restored,
      fed: this.#fed,
      gen: this.#gen,
      pendingForgets: this.#dropped.size,
      lastSnapshot: this.#lastSnapshot
    }
  }
}

/** The reprices a partition snapshot says its state holds (none for a snapshot written before them). */
function appliedOf(payload: SnapshotPayload): AppliedReprice[] {
  const list = (payload as { clusterReprices?: unknown }).clusterReprices
  if (!Array.isArray(list)) return []
  return list.filter((a): a is AppliedReprice => typeof a === 'object' && a !== null && typeof (a as AppliedReprice).id === 'string' && Number.isSafeInteger((a as AppliedReprice).pos))
}

/** `events` (seq ascending) as scanReprice reads a log: from a seq on, in batches, never an empty one. */
function readerOf(events: readonly StoredEvent[]): (from: number) => Iterable<StoredEvent[]> {
  return function* (from: number) {
    let lo = 0
    let hi = events.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (events[mid]!.seq < from) lo = mid + 1
      else hi = mid
    }
    for (let i = lo; i < events.length; i += 1000) yield events.slice(i, i + 1000)
  }
}

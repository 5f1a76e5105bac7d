/**
 * The price book on a cluster (DESIGN §8, §9; ISSUE14 "Cluster"): the node's PriceStore
 * (src/store/prices.ts) follows ONE ordered log of records in the meta bucket
 * (cluster/price-log.ts), and each owned partition prices with a book of its own.
 *
 *   PUT /prices, a reprice, DELETE /projects ──► PriceStore ──► backing (here) ──► price log
 *                                                                  `price.<pos>` (create = CAS)
 *   price log, in position order ──► PriceStore.applyRemote (the node's book: GET /events/:id,
 *                                    search, export, /ws, and the revision events are stamped with)
 *                                ──► every partition book (versions, layers, removals at once;
 *                                    a reprice record only when that partition applied it)
 *
 * Revisions: a version or override layer takes its log position as its revision, so every
 * record of revision ≤ r sits at a position ≤ r; an owner that has applied position
 * `e.priceRev` prices the event exactly as the node that accepted it would have. A reprice
 * record keeps the revision it priced with (src/prices.ts), and takes a position of its own.
 *
 * Why a book per partition: a partition's aggregates count each event at the price its book
 * gave when the event reached it. A reprice changes them at a cut (cluster/partition.ts):
 * before it, the partition book lacks the record (its `before` prices are what the aggregates
 * hold); at the cut, the changes are applied and the partition book takes the record, so events
 * handed over afterwards get the new prices. The node's book takes reprice records as they
 * arrive (a GET /events/:id may show the new price a moment before every partition has applied
 * it; analytics never mix: see the epoch in cluster/engine.ts).
 *
 * Configuration overrides (LLMSCOPE_PRICE_OVERRIDES): each node, at start, appends its
 * configured set as a new override layer when it differs from the newest layer in the log. When
 * nodes are configured differently, every start of a node whose set is not the newest adds a
 * layer: events accepted from then on (by any node) are priced with the set of the node that
 * started last, and older events keep the layer of their acceptance revision. Configure every
 * node the same; a difference is logged as a warning at start.
 */
import { PriceBook, type OverrideLayer, type PriceVersion, type RepriceRecord } from '../pricing/book.js'
import type { PriceOverrides } from '../pricing/compute-cost.js'
import { overridesKey, type PriceStore } from '../store/prices.js'
import type { MetaBacking } from '../store/backing.js'
import type { Log } from '../log.js'
import { ClusterPriceLog, PRICE_PREFIX, type BookRecord } from './price-log.js'
import type { MirroredStore } from './meta.js'

export { PRICE_PREFIX }

/** A record as the PriceStore keeps it (src/store/prices.ts `Stored`). */
type StoredRecord =
  | ({ v: 1; kind: 'version' } & PriceVersion)
  | ({ v: 1; kind: 'layer' } & OverrideLayer)
  | ({ v: 1; kind: 'reprice' } & RepriceRecord)

/** A reprice record with its position in the log (partitions apply them in position order). */
export interface PlacedReprice {
  pos: number
  record: RepriceRecord
}

function stored(value: unknown): StoredRecord | null {
  const r = value as StoredRecord
  if (typeof r !== 'object' || r === null || r.v !== 1) return null
  return r.kind === 'version' || r.kind === 'layer' || r.kind === 'reprice' ? r : null
}

function strip<T>(r: StoredRecord): T {
  const { v: _v, kind: _k, ...rest } = r
  return rest as T
}

/** What a partition book follows (see {@link ClusterPrices.partitionBook}). */
export interface PartitionBook {
  readonly book: PriceBook
  /** Reprice records in the log the partition has not applied yet, in position order. */
  pending(): PlacedReprice[]
  /** Marks a reprice applied: the partition book takes it (call at the partition's cut). */
  applied(r: PlacedReprice): void
  /** Ids of the reprices this book holds. */
  readonly ids: ReadonlySet<string>
  /** Position of the newest reprice applied (0: none): the partition's reprice epoch. */
  readonly epoch: number
  /** Called for every reprice record that arrives from now on. */
  onReprice(fn: (r: PlacedReprice) => void): void
  /** Stops following the log. */
  close(): void
}

export class ClusterPrices {
  readonly log: ClusterPriceLog
  readonly #store: PriceStore
  readonly #logger: Log
  /** Every record applied, by id (the removals' projects are read from it). */
  readonly #byId = new Map<string, StoredRecord>()
  /** Reprice records in position order. */
  readonly #reprices: PlacedReprice[] = []
  #loaded = false

  constructor(opts: { store: PriceStore; log: Log }) {
    this.#store = opts.store
    this.#logger = opts.log
    this.log = new ClusterPriceLog({ log: opts.log })
    this.log.onRecord((r) => this.#record(r))
  }

  /** The revision this node stamps events with (the node book's). */
  get rev(): number {
    return this.#store.book.rev
  }

  /** What ClusterMeta mirrors under {@link PRICE_PREFIX}. */
  readonly mirrored: MirroredStore = {
    attachBacking: (b: MetaBacking, log: Log) => this.log.attachBacking(b, log),
    applyRemote: (id, value) => this.log.applyRemote(id, value),
    loadRemote: (records) => {
      this.log.loadRemote(records)
      // The store drops records of its LMDB cache the log does not hold (another cluster's, or deleted).
      const live = new Map<string, unknown>()
      for (const r of this.log.records()) {
        if (r.op === 'put') live.set(r.id, r.value)
        else live.delete(r.id)
      }
      this.#loaded = true
      this.#store.loadRemote(live)
      this.#neutraliseLocalLayers()
      // The node book holds every reprice record (see the module comment).
      for (const p of this.#reprices) this.#store.applyReprice(p.record)
    }
  }

  /** The backing the PriceStore writes through (attach with store.attachBacking). */
  readonly backing: MetaBacking = {
    // The store's own revision counter: the log's positions are the revisions here.
    create: async () => true,
    put: async (id, value) => {
      const r = stored(value)
      if (r === null) throw new Error(`price book record ${id}: not a record this release writes`)
      await this.log.append((pos) => ({ pos, op: 'put', id, value: r.kind === 'reprice' ? r : { ...r, rev: pos } }))
    },
    remove: async (id) => {
      await this.log.append((pos) => ({ pos, op: 'remove', id }))
    }
  }

  /**
   * The node's book may hold override layers of its own LMDB (the engine records the configured
   * set there when it opens, before the cluster's log is read): each becomes the layer the log
   * has in force at its revision (an empty one before the log's first), so this node's book
   * prices every revision as every other node's does.
   */
  #neutraliseLocalLayers(): void {
    const book = this.#store.book
    const logLayers = [...this.#byId.values()].filter((s): s is Extract<StoredRecord, { kind: 'layer' }> => s.kind === 'layer').sort((x, y) => x.rev - y.rev)
    const inLog = new Set(logLayers.map((l) => l.rev))
    for (const l of book.overrideLayers()) {
      if (inLog.has(l.rev)) continue
      let force: PriceOverrides = {}
      for (const x of logLayers) if (x.rev <= l.rev) force = x.overrides
      book.addOverrideLayer({ rev: l.rev, created_at: l.created_at, overrides: force })
    }
  }

  #record(r: BookRecord): void {
    if (r.op === 'put') {
      const s = stored(r.value)
      if (s === null) {
        this.#logger.warn({ pos: r.pos, id: r.id }, 'price book record of an unknown kind: ignored')
        return
      }
      this.#byId.set(r.id, s)
      if (s.kind === 'reprice') this.#reprices.push({ pos: r.pos, record: strip<RepriceRecord>(s) })
    } else {
      const old = this.#byId.get(r.id)
      this.#byId.delete(r.id)
      if (old?.kind === 'reprice') {
        const i = this.#reprices.findIndex((p) => p.record.id === r.id)
        if (i >= 0) this.#reprices.splice(i, 1)
      }
    }
    if (!this.#loaded) return
    this.#store.applyRemote(r.id, r.op === 'put' ? r.value : undefined)
    const s = r.op === 'put' ? stored(r.value) : null
    if (s?.kind === 'reprice') this.#store.applyReprice(strip<RepriceRecord>(s))
  }

  /** Every reprice record in the log, in position order. */
  reprices(): readonly PlacedReprice[] {
    return this.#reprices
  }

  /** The reprice record `id`, with its position, or undefined. */
  reprice(id: string): PlacedReprice | undefined {
    return this.#reprices.find((p) => p.record.id === id)
  }

  /**
   * At start, after the metadata is loaded: the configured override set becomes a new layer
   * when it differs from the newest one. Answers the layer's revision, or null when unchanged.
   */
  async syncOverrides(overrides: PriceOverrides, now: number): Promise<number | null> {
    const want = overridesKey(overrides)
    // The newest layer of the log (not of the node's book: its LMDB cache may hold a layer no other node has).
    let have: OverrideLayer | null = null
    for (const [, s] of this.#byId) if (s.kind === 'layer' && (have === null || s.rev > have.rev)) have = strip<OverrideLayer>(s)
    if (have !== null && overridesKey(have.overrides) === want) return null
    if (have === null && Object.keys(overrides).length === 0) return null
    if (have !== null) this.#logger.warn({ rev: have.rev }, 'LLMSCOPE_PRICE_OVERRIDES differs from the override layer in force on the cluster: adding this node\'s set as a new layer (events accepted from now on are priced with it; configure every node the same)')
    const copy = JSON.parse(JSON.stringify(overrides)) as PriceOverrides
    const r = await this.log.append((pos) => ({ pos, op: 'put', id: `ol_${pos}`, value: { v: 1, kind: 'layer', rev: pos, created_at: now, overrides: copy } satisfies StoredRecord }))
    return r.pos
  }

  /**
   * A book for one partition: every version and layer of the log, and the reprice records
   * `applied` says its restored state holds (the others are `pending()`: the partition applies
   * them). Follows the log until closed.
   */
  partitionBook(applied: (id: string) => boolean): PartitionBook {
    const book = new PriceBook()
    const ids = new Set<string>()
    let epoch = 0
    const listeners = new Set<(r: PlacedReprice) => void>()
    const byId = new Map<string, StoredRecord>()
    const take = (r: BookRecord, initial: boolean) => {
      if (r.op === 'remove') {
        const old = byId.get(r.id)
        byId.delete(r.id)
        if (old !== undefined && old.kind !== 'layer') book.dropProject(old.project)
        return
      }
      const s = stored(r.value)
      if (s === null) return
      byId.set(r.id, s)
      if (s.kind === 'version') book.addVersion(strip<PriceVersion>(s))
      else if (s.kind === 'layer') book.addOverrideLayer(strip<OverrideLayer>(s))
      else if (initial && applied(s.id)) {
        book.addReprice(strip<RepriceRecord>(s))
        ids.add(s.id)
        epoch = Math.max(epoch, r.pos)
      } else if (!initial) {
        const placed = { pos: r.pos, record: strip<RepriceRecord>(s) }
        for (const fn of listeners) fn(placed)
      }
    }
    for (const r of this.log.records()) take(r, true)
    // The book's revision is the node's (records it does not price with still count).
    book.observeRev(this.log.pos)
    const off = this.log.onRecord((r) => {
      take(r, false)
      book.observeRev(r.pos)
    })
    const self = this
    return {
      book,
      ids,
      get epoch() {
        return epoch
      },
      pending: () => self.#reprices.filter((p) => !ids.has(p.record.id)),
      applied: (p) => {
        if (ids.has(p.record.id)) return
        ids.add(p.record.id)
        book.addReprice(p.record)
        epoch = Math.max(epoch, p.pos)
      },
      onReprice: (fn) => {
        listeners.add(fn)
      },
      close: () => {
        off()
        listeners.clear()
      }
    }
  }

  stop(): void {
    this.log.stop()
  }
}

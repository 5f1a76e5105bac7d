/**
 * The price book's durable half (DESIGN §8): price versions PUT in projects, the configuration's
 * override layers, re-pricing records and the book's revision counter, in the LMDB database
 * `prices`; the in-memory {@link PriceBook} (src/pricing/book.ts) mirrors them.
 *
 * Append-only, like the book: a record is never changed, and removed only by DELETE /projects
 * (the project's versions and re-pricings). Keys (valid JetStream KV tokens, see backing.ts):
 *
 *     rev          {v:1, kind:'rev', rev}            the newest revision ever given
 *     pv_<nanoid>  {v:1, kind:'version', …}          a PriceVersion
 *     ol_<rev>     {v:1, kind:'layer', …}            an OverrideLayer (the whole config set)
 *     rp_<nanoid>  {v:1, kind:'reprice', …}          a RepriceRecord
 *
 * Revisions: every version and override layer gets a new one (`rev` + 1), committed in the
 * same transaction as the counter, and only THEN applied to the book, in one synchronous step:
 * an event is stamped with the book's revision when the log assigns its seq (EventLog.append),
 * so an event stamped with revision r is always priced by a book that holds every record of
 * revision ≤ r, and a crash before the commit leaves no event stamped with the lost revision
 * (the counter never goes back, so a revision is never given twice). A re-pricing does not
 * take a new revision: its record carries the revision of the book it priced with (`rev` = the
 * book's at its start), and is applied to the book by its caller once memory holds it
 * (src/prices.ts), not by {@link PriceStore.putReprice}.
 *
 * Writes run one at a time (a queue), so two PUTs never take the same revision.
 *
 * Cluster mode ({@link PriceStore.attachBacking}): the records live in JetStream KV; writes go
 * there and this store follows the bucket through {@link PriceStore.applyRemote} and
 * {@link PriceStore.loadRemote}, exactly like the rule and project stores. The revision
 * counter is the `rev` record, written with `backing.create` (compare-and-set): a node that
 * lost the race sees the winner's record first, and takes the next revision.
 */
import { nanoid } from 'nanoid'
import type { Database, RootDatabase } from 'lmdb'
import type { Log } from '../log.js'
import type { MetaBacking } from './backing.js'
import { PriceBook, type OverrideLayer, type PriceVersion, type RepriceRecord } from '../pricing/book.js'
import type { PriceOverrides } from '../pricing/compute-cost.js'

/** Database name inside the environment. */
const DB_NAME = 'prices'
const REV_KEY = 'rev'

type Stored =
  | ({ v: 1; kind: 'version' } & PriceVersion)
  | ({ v: 1; kind: 'layer' } & OverrideLayer)
  | ({ v: 1; kind: 'reprice' } & RepriceRecord)
  | { v: 1; kind: 'rev'; rev: number }

/** What PUT /prices adds (the store gives id, rev and created_at). */
export type NewVersion = Omit<PriceVersion, 'id' | 'rev' | 'created_at'>
/** What a re-pricing records (the store gives id and created_at; `rev` is the book's the re-pricing priced with). */
export type NewReprice = Omit<RepriceRecord, 'id' | 'created_at'>

/** Canonical text of an override set (key order does not matter), to tell a changed configuration. */
export function overridesKey(o: PriceOverrides): string {
  const canon = (x: unknown): unknown => {
    if (x === null || typeof x !== 'object' || Array.isArray(x)) return x
    const out: Record<string, unknown> = {}
    for (const k of Object.keys(x as object).sort()) {
      const v = (x as Record<string, unknown>)[k]
      if (v !== undefined) out[k] = canon(v)
    }
    return out
  }
  return JSON.stringify(canon(o))
}

export class PriceStore {
  /** The in-memory book every pricing path reads (engine.book). */
  readonly book: PriceBook
  readonly #db: Database<Stored, string>
  /** Every stored record by key (reads never touch the disk). */
  readonly #records = new Map<string, Stored>()
  /** Ids of the re-pricing records the book holds. */
  readonly #inBook = new Set<string>()
  #counter = 0
  #writes: Promise<unknown> = Promise.resolve()
  #backing: MetaBacking | null = null
  #log: Log | null = null
  readonly #repriceListeners = new Set<(r: RepriceRecord) => void>()

  /**
   * Loads every record into a new book: override layers and versions in revision order, and
   * the re-pricing records for which `applied(id)` says memory already holds them (default:
   * all). The others are left for the caller to re-apply ({@link PriceStore.pendingReprices}),
   * which adds them to the book itself (recovery: a re-pricing the restored snapshot does not
   * hold must first be applied to memory, with the book's prices before it).
   * A record of an unknown format stops the start: misreading a price would misprice history.
   */
  constructor(db: Database<unknown, string>, applied: (repriceId: string) => boolean = () => true) {
    this.#db = db as Database<Stored, string>
    this.book = new PriceBook()
    for (const { key, value } of this.#db.getRange({})) {
      if (value === null || typeof value !== 'object' || value.v !== 1) throw new Error(`price book record ${key} has a format this release cannot read`)
      this.#records.set(key, value)
    }
    const rev = this.#records.get(REV_KEY)
    this.#counter = rev?.kind === 'rev' ? rev.rev : 0
    const all = [...this.#records.values()].filter((r) => r.kind !== 'rev').sort(byRev)
    for (const r of all) {
      if (r.kind === 'reprice' && !applied(r.id)) continue
      this.#toBook(r)
    }
    this.#advance(Math.max(this.#counter, ...all.map((r) => (r as { rev: number }).rev)))
  }

  /** Opens (creating if needed) the database `prices` of the environment. */
  static open(root: RootDatabase, applied?: (repriceId: string) => boolean): PriceStore {
    return new PriceStore(root.openDB<unknown, string>(DB_NAME, {}), applied)
  }

  /** The newest revision given (the book's). */
  get rev(): number {
    return this.book.rev
  }

  /** Versions of a project, oldest revision first (copies of the stored records). */
  versions(project: string): PriceVersion[] {
    const out: PriceVersion[] = []
    for (const r of this.#records.values()) if (r.kind === 'version' && r.project === project) out.push(strip(r) as PriceVersion)
    return out.sort(byRev)
  }

  /** Override layers, oldest first. */
  layers(): OverrideLayer[] {
    const out: OverrideLayer[] = []
    for (const r of this.#records.values()) if (r.kind === 'layer') out.push(strip(r) as OverrideLayer)
    return out.sort(byRev)
  }

  /** Re-pricing records (of one project, or all), oldest first (by revision, then creation). */
  reprices(project?: string): RepriceRecord[] {
    const out: RepriceRecord[] = []
    for (const r of this.#records.values()) if (r.kind === 'reprice' && (project === undefined || r.project === project)) out.push(strip(r) as RepriceRecord)
    return out.sort(byRev)
  }

  /**
   * At open (single node, synchronously, before anything is priced): the configuration's
   * override set becomes an override layer when it differs from the newest one. The first
   * layer ever recorded takes revision 0 (the book's start): events logged before the book
   * existed were priced with the configuration of their time, which is the best record of it.
   * Answers the layer added, or null.
   */
  syncOverrides(overrides: PriceOverrides, now: number): OverrideLayer | null {
    const layers = this.layers()
    const newest = layers[layers.length - 1]
    if (newest !== undefined && overridesKey(newest.overrides) === overridesKey(overrides)) return null
    const rev = newest === undefined && this.#counter === 0 ? 0 : this.#counter + 1
    const layer: OverrideLayer = { rev, created_at: now, overrides: JSON.parse(JSON.stringify(overrides)) as PriceOverrides }
    const rec: Stored = { v: 1, kind: 'layer', ...layer }
    const key = `ol_${rev}`
    this.#db.transactionSync(() => {
      this.#db.putSync(key, rec)
      this.#db.putSync(REV_KEY, { v: 1, kind: 'rev', rev: Math.max(rev, this.#counter) })
    })
    this.#records.set(key, rec)
    this.#counter = Math.max(rev, this.#counter)
    this.#toBook(rec)
    this.#advance(this.#counter)
    return layer
  }

  /**
   * Adds a price version at a new revision: committed (with the counter), then applied to the
   * book, so events accepted from then on are priced with it. Resolves with the stored version.
   */
  putVersion(v: NewVersion, now: number): Promise<PriceVersion> {
    return this.#queue(async () => {
      const rev = this.#counter + 1
      const version: PriceVersion = { ...v, id: `pv_${nanoid(16)}`, rev, created_at: now }
      const rec: Stored = { v: 1, kind: 'version', ...version }
      if (this.#backing !== null) {
        await this.#claimRev(rev)
        await this.#backing.put(version.id, rec)
        return version
      }
      await this.#db.transaction(() => {
        this.#db.put(REV_KEY, { v: 1, kind: 'rev', rev })
        this.#db.put(version.id, rec)
      })
      // One synchronous step: the counter, the record and the book's revision move together.
      this.#counter = rev
      this.#records.set(version.id, rec)
      this.#toBook(rec)
      this.#advance(rev)
      return version
    })
  }

  /**
   * Durably records a re-pricing (its `rev`: the book's revision it priced with). The book is
   * NOT told: the caller adds the record to it once memory holds the new costs
   * ({@link PriceBook.addReprice}), so no reader sees new prices before every figure has them.
   */
  putReprice(r: NewReprice, now: number): Promise<RepriceRecord> {
    return this.#queue(async () => {
      const record: RepriceRecord = { ...r, id: `rp_${nanoid(16)}`, created_at: now }
      const rec: Stored = { v: 1, kind: 'reprice', ...record }
      if (this.#backing !== null) {
        await this.#backing.put(record.id, rec)
        return record
      }
      await this.#db.put(record.id, rec)
      this.#records.set(record.id, rec)
      return record
    })
  }

  /** Re-pricing records stored but not in the book (recovery re-applies them, oldest first). */
  pendingReprices(): RepriceRecord[] {
    return this.reprices().filter((r) => !this.#inBook.has(r.id))
  }

  /** Hands a stored re-pricing record to the book (once memory holds its costs). Idempotent. */
  applyReprice(r: RepriceRecord): void {
    if (this.#inBook.has(r.id)) return
    this.#inBook.add(r.id)
    this.book.addReprice(r)
  }

  /**
   * Removes a project's versions and re-pricings (DELETE /projects), from the database and the
   * book. Resolves after the commit. Idempotent. The counter stays: a revision is never reused.
   */
  dropProject(project: string): Promise<void> {
    return this.#queue(async () => {
      const keys: string[] = []
      for (const [k, r] of this.#records) if ((r.kind === 'version' || r.kind === 'reprice') && r.project === project) keys.push(k)
      if (this.#backing !== null) {
        const backing = this.#backing
        await Promise.all(keys.map((k) => backing.remove(k)))
      } else if (keys.length > 0) {
        await this.#db.transaction(() => {
          for (const k of keys) this.#db.remove(k)
        })
        for (const k of keys) this.#records.delete(k)
      }
      for (const k of keys) this.#inBook.delete(k)
      this.book.dropProject(project)
    })
  }

  // --- cluster mode (src/cluster/*): the bucket is the truth -------------------------------

  /** Cluster mode: from now on writes go to `backing` and this store follows {@link applyRemote}. */
  attachBacking(backing: MetaBacking, log: Log): void {
    this.#backing = backing
    this.#log = log
  }

  /**
   * Cluster mode: a re-pricing record arrived from the bucket (any node's). The book is not
   * told (see {@link putReprice}): the listener (the node owning partitions) applies it to
   * memory and then to the book.
   */
  onReprice(fn: (r: RepriceRecord) => void): void {
    this.#repriceListeners.add(fn)
  }

  /** Cluster mode: the bucket's record `id` changed (`undefined`: removed), by any node. */
  applyRemote(id: string, value: unknown): void {
    const r = value as Stored | undefined
    if (r === undefined) {
      const old = this.#records.get(id)
      if (old === undefined) return
      this.#records.delete(id)
      this.#cache(id, undefined)
      // Only DELETE /projects removes records: the book drops the project's whole set.
      if (old.kind === 'version' || old.kind === 'reprice') this.book.dropProject(old.project)
      if (old.kind === 'reprice') this.#inBook.delete(id)
      return
    }
    if (r === null || typeof r !== 'object' || r.v !== 1) {
      this.#log?.warn({ id }, 'price book record of an unknown format ignored')
      return
    }
    if (this.#records.has(id) && r.kind !== 'rev') return // append-only: a record never changes
    this.#records.set(id, r)
    this.#cache(id, r)
    if (r.kind === 'rev') {
      this.#counter = Math.max(this.#counter, r.rev)
      this.#advance(this.#counter)
      return
    }
    if (r.kind === 'reprice') {
      for (const fn of this.#repriceListeners) fn(strip(r) as RepriceRecord)
      return
    }
    this.#toBook(r)
    this.#counter = Math.max(this.#counter, r.rev)
    this.#advance(this.#counter)
  }

  /** Cluster mode, at start: the whole bucket (by id). Records this node has and the bucket does not are dropped. */
  loadRemote(records: ReadonlyMap<string, unknown>): void {
    for (const id of [...this.#records.keys()]) if (!records.has(id)) this.applyRemote(id, undefined)
    const sorted = [...records].sort((a, b) => byRev(a[1] as Stored, b[1] as Stored))
    for (const [id, value] of sorted) this.applyRemote(id, value)
  }

  /** Cluster mode: takes revision `rev` in the bucket (compare-and-set on the counter record). */
  async #claimRev(rev: number): Promise<void> {
    const ok = await this.#backing!.create(REV_KEY, { v: 1, kind: 'rev', rev })
    if (!ok) throw new Error(`price book revision ${rev} was taken by another node; retry`)
  }

  #cache(id: string, r: Stored | undefined): void {
    void (r === undefined ? this.#db.remove(id) : this.#db.put(id, r)).catch((err: unknown) => this.#log?.warn({ err, id }, 'price book cache write failed'))
  }

  // -----------------------------------------------------------------------------------------

  #toBook(r: Stored): void {
    if (r.kind === 'version') this.book.addVersion(strip(r) as PriceVersion)
    else if (r.kind === 'layer') this.book.addOverrideLayer(strip(r) as OverrideLayer)
    else if (r.kind === 'reprice') this.applyReprice(strip(r) as RepriceRecord)
  }

  /** Moves the book's revision up to `rev` (it never goes back). */
  #advance(rev: number): void {
    this.book.observeRev(rev)
  }

  #queue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#writes.then(fn)
    this.#writes = run.catch(() => {})
    return run
  }
}

/** The record without its storage fields. */
function strip(r: Stored): unknown {
  const { v: _v, kind: _k, ...rest } = r
  return rest
}

/** Revision order; at one revision layers, then versions, then re-pricings, then creation time. */
function byRev(a: { rev?: number; kind?: string; created_at?: number }, b: { rev?: number; kind?: string; created_at?: number }): number {
  const order = (k: string | undefined) => (k === 'layer' ? 0 : k === 'version' ? 1 : 2)
  return (a.rev ?? 0) - (b.rev ?? 0) || order(a.kind) - order(b.kind) || (a.created_at ?? 0) - (b.created_at ?? 0)
}

/**
 * The price book of cluster mode (DESIGN §8, §9; ISSUE14 "Cluster"): every record that changes a
 * book — a version PUT in a project, a configuration override layer, a reprice record, a project
 * dropped — is one key of the meta bucket, `price.<rev>`, whose number IS the book revision it
 * was added at. The bucket is the truth; every node mirrors the records into its PriceBook, in
 * revision order.
 *
 *     append(make) ──► create `price.<rev+1>` (fails when the key exists: compare-and-set)
 *                       │ created                          │ taken by another node
 *                       ▼                                  ▼
 *            resolves once mirrored here          mirror it, try rev+2 …
 *
 *     watch of the meta bucket (cluster/meta.ts) ──► remote(rev, record) ──► records applied
 *            in order, from 1 up: `rev` is the highest revision with every record ≤ it applied
 *
 * The revision counter is the set of keys itself: allocating a revision and writing its record
 * are one create, so a revision is never allocated without a record (a node that dies between
 * the two of a separate counter would leave a hole every node waits on forever). A node only
 * creates `rev+1` once it has applied `rev`, so the records have no holes: the contiguous prefix
 * only stalls while a record is in flight between the bucket and this node.
 *
 * Records are never removed (the book is append-only, ISSUE14); DELETE /projects adds a `drop`
 * record, after which the project's earlier records are ignored by the books.
 *
 * An event's `priceRev` (the `LLMScope-Price-Rev` header, cluster/js-log.ts) is the publishing
 * node's `rev` when it accepted the event: every record ≤ it existed then, so a partition owner
 * that has mirrored up to it prices the event as the single node would have (see waitRev).
 */
import { llmsError } from '../errors.js'
import type { Log } from '../log.js'
import type { MetaBacking } from '../store/backing.js'

/** Key prefix of book records in the meta bucket. */
export const PRICE_PREFIX = 'price.'

/** One record of the book. Revisions start at 1. */
export type BookRecord =
  | { kind: 'version'; rev: number; version: Record<string, unknown> & { rev: number } }
  | { kind: 'layer'; rev: number; layer: Record<string, unknown> & { rev: number } }
  | { kind: 'reprice'; rev: number; reprice: Record<string, unknown> & { id: string; project: string; rev: number } }
  | { kind: 'drop'; rev: number; project: string }

/** What a record means without its revision (append assigns it). */
export type BookRecordOf<K extends BookRecord['kind']> = Extract<BookRecord, { kind: K }>

/** How long `append` may take before answering 503 (conflicts included), and waitRev's default. */
const APPEND_TIMEOUT_MS = 10_000
/** Conflicting creates (other nodes writing at once) before `append` gives up. */
const MAX_ATTEMPTS = 50

function isRecord(x: unknown): x is BookRecord {
  const r = x as BookRecord
  if (typeof r !== 'object' || r === null || !Number.isSafeInteger(r.rev) || r.rev < 1) return false
  switch (r.kind) {
    case 'version':
      return typeof r.version === 'object' && r.version !== null
    case 'layer':
      return typeof r.layer === 'object' && r.layer !== null
    case 'reprice':
      return typeof r.reprice === 'object' && r.reprice !== null && typeof r.reprice.id === 'string'
    case 'drop':
      return typeof r.project === 'string'
    default:
      return false
  }
}

interface Waiter {
  rev: number
  resolve: () => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

export class ClusterPriceLog {
  readonly #log: Log
  #backing: MetaBacking | null = null
  /** Records received but not applied yet (a lower revision still missing), by revision. */
  readonly #early = new Map<number, BookRecord>()
  /** Every applied record, in revision order (index rev - 1). */
  readonly #records: BookRecord[] = []
  readonly #listeners = new Set<(r: BookRecord) => void>()
  #waiters: Waiter[] = []
  #stopped: Error | null = null

  constructor(opts: { log: Log }) {
    this.#log = opts.log
  }

  /** Highest revision with every record at or below it applied here (0: none yet). */
  get rev(): number {
    return this.#records.length
  }

  /** Every applied record, in revision order. */
  records(): readonly BookRecord[] {
    return this.#records
  }

  /** Called for every record applied from now on, in revision order (after `load`). Returns the unsubscribe. */
  onRecord(fn: (r: BookRecord) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** Where appends write (the meta bucket's `price.` backing, cluster/meta.ts). */
  attachBacking(backing: MetaBacking, _log?: Log): void {
    this.#backing = backing
  }

  /** The bucket's records at start (key without prefix → value; undefined: a delete marker). */
  loadRemote(records: ReadonlyMap<string, unknown>): void {
    for (const [key, value] of records) this.applyRemote(key, value)
  }

  /** One change of the bucket, from the watcher (this node's own writes included). */
  applyRemote(key: string, value: unknown): void {
    const rev = Number(key)
    if (!Number.isSafeInteger(rev) || rev < 1) return
    if (value === undefined) {
      // Never written by LLMScope: a record removed by hand leaves its revision applied as it was.
      this.#log.warn({ rev }, 'a price book record was removed from the bucket: ignored (the book is append-only)')
      return
    }
    if (!isRecord(value) || value.rev !== rev) {
      this.#log.error({ rev }, 'a price book record is not one this release reads: the book stops at the revision before it')
      return
    }
    if (rev <= this.#records.length) return
    this.#early.set(rev, value)
    while (this.#early.has(this.#records.length + 1)) {
      const next = this.#records.length + 1
      const r = this.#early.get(next)!
      this.#early.delete(next)
      this.#records.push(r)
      for (const fn of this.#listeners) {
        try {
          fn(r)
        } catch (err) {
          this.#log.error({ err, rev: next }, 'applying a price book record failed')
        }
      }
    }
    if (this.#waiters.length > 0) {
      const rev = this.#records.length
      this.#waiters = this.#waiters.filter((w) => {
        if (w.rev > rev) return true
        clearTimeout(w.timer)
        w.resolve()
        return false
      })
    }
  }

  /** Resolves once every record up to `rev` is applied here; rejects with 503 after `timeoutMs`. */
  waitRev(rev: number, timeoutMs = APPEND_TIMEOUT_MS): Promise<void> {
    if (this.#records.length >= rev) return Promise.resolve()
    if (this.#stopped !== null) return Promise.reject(unavailable(`the price book is not being mirrored (${this.#stopped.message})`))
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        rev,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters = this.#waiters.filter((x) => x !== w)
          reject(unavailable(`price book revision ${rev} did not reach this node within ${timeoutMs} ms (it has ${this.#records.length})`))
        }, timeoutMs).unref()
      }
      this.#waiters.push(w)
    })
  }

  /**
   * Adds a record at the next free revision: `make(rev)` builds it (called again with a higher
   * revision when another node took that one first). Resolves with the record once this node's
   * book has it; 503 when the bucket cannot be reached or too many writers race.
   */
  async append<R extends BookRecord>(make: (rev: number) => R): Promise<R> {
    const backing = this.#backing
    if (backing === null) throw new Error('ClusterPriceLog.append: no backing attached')
    const deadline = Date.now() + APPEND_TIMEOUT_MS
    for (let attempt = 0; attempt < MAX_ATTEMPTS && Date.now() < deadline; attempt++) {
      const rev = this.#records.length + 1
      const record = make(rev)
      if (record.rev !== rev) throw new Error('ClusterPriceLog.append: the record must carry the revision it was made for')
      if (await backing.create(String(rev), record)) {
        await this.waitRev(rev, Math.max(1, deadline - Date.now()))
        return record
      }
      // Another node wrote `rev` first; create() mirrored its record: wait until it is applied.
      await this.waitRev(rev, Math.max(1, deadline - Date.now()))
    }
    throw unavailable('the price book is being written by other nodes right now')
  }

  /** Pending waits fail (the node stops). Safe twice. */
  stop(): void {
    this.#stopped ??= new Error('stopped')
    for (const w of this.#waiters) {
      clearTimeout(w.timer)
      w.reject(unavailable('the price book is not being mirrored (stopped)'))
    }
    this.#waiters = []
  }
}

function unavailable(message: string) {
  return llmsError('LLMS_ERR_UNAVAILABLE', `${message}; retry`, { retryAfter: 1 })
}

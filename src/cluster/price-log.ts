/**
 * The price book of cluster mode (DESIGN §8, §9; ISSUE14 "Cluster"): every record of the book
 * (src/store/prices.ts: a version PUT in a project, a configuration override layer, a reprice
 * record; a removal by DELETE /projects) is one key of the meta bucket, `price.<pos>`, at the
 * next free position of one log. The bucket is the truth; every node applies the records to its
 * PriceStore (and so its PriceBook) in position order.
 *
 *     append(make) ──► create `price.<pos+1>` (fails when the key exists: the compare-and-set)
 *                       │ created                          │ taken by another node
 *                       ▼                                  ▼
 *            resolves once applied here           mirror it, try pos+2 …
 *
 *     watch of the meta bucket (cluster/meta.ts) ──► applyRemote(pos, record) ──► records applied
 *            in order, from 1 up: `pos` is the highest position with every record ≤ it applied
 *
 * The book revision counter is this log: a version or override layer takes its position as its
 * revision (`rev`), so allocating a revision and writing its record are one create, and a
 * revision is never allocated without its record (with a separate counter key, a node dying
 * between the two — or two writers' records landing out of order — would let a node stamp
 * events with a revision whose record it does not hold). A node only creates `pos+1` once it
 * has applied `pos`, so the log has no holes: the applied prefix only waits while a record is in
 * flight between the bucket and this node. A reprice record takes a position too but keeps the
 * revision it priced with (ISSUE14: `rev` = the book's at its start), so revisions may skip a
 * number; every record of revision ≤ r is at a position ≤ r.
 *
 * An event's `priceRev` (the `LLMScope-Price-Rev` header, cluster/js-log.ts) is the publishing
 * node's book revision when it accepted the event: a partition owner whose log has applied
 * position `priceRev` holds every record that existed then, so it prices the event as any other
 * node would (waitPos).
 */
import { llmsError } from '../errors.js'
import type { Log } from '../log.js'
import type { MetaBacking } from '../store/backing.js'

/** Key prefix of book records in the meta bucket. */
export const PRICE_PREFIX = 'price.'

/**
 * One record of the log, at position `pos` (1, 2, 3 …): a store record written under `id`
 * (`put`, never changed afterwards) or removed (`remove`: DELETE /projects). Which record means
 * what is the PriceStore's business (src/store/prices.ts); this log only orders them.
 */
export type BookRecord = { pos: number; op: 'put'; id: string; value: unknown } | { pos: number; op: 'remove'; id: string }

/** How long `append` may take before answering 503 (conflicts included), and waitRev's default. */
const APPEND_TIMEOUT_MS = 10_000
/** Conflicting creates (other nodes writing at once) before `append` gives up. */
const MAX_ATTEMPTS = 50

function isRecord(x: unknown): x is BookRecord {
  const r = x as BookRecord
  if (typeof r !== 'object' || r === null || !Number.isSafeInteger(r.pos) || r.pos < 1 || typeof r.id !== 'string') return false
  return r.op === 'remove' || (r.op === 'put' && 'value' in r)
}

interface Waiter {
  pos: number
  resolve: () => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

export class ClusterPriceLog {
  readonly #log: Log
  #backing: MetaBacking | null = null
  /** Records received but not applied yet (a lower position still missing), by position. */
  readonly #early = new Map<number, BookRecord>()
  /** Every applied record, in position order (index pos - 1). */
  readonly #records: BookRecord[] = []
  readonly #listeners = new Set<(r: BookRecord) => void>()
  #waiters: Waiter[] = []
  #stopped: Error | null = null

  constructor(opts: { log: Log }) {
    this.#log = opts.log
  }

  /** Highest position with every record at or below it applied here (0: none yet). */
  get pos(): number {
    return this.#records.length
  }

  /** Every applied record, in position order. */
  records(): readonly BookRecord[] {
    return this.#records
  }

  /** Called for every record applied from now on, in position order. Returns the unsubscribe. */
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
    const pos = Number(key)
    if (!Number.isSafeInteger(pos) || pos < 1) return
    if (value === undefined) {
      // Never written by LLMScope: a record removed by hand leaves what it did applied.
      this.#log.warn({ pos }, 'a price book record was removed from the bucket: ignored (the book is append-only)')
      return
    }
    if (!isRecord(value) || value.pos !== pos) {
      this.#log.error({ pos }, 'a price book record is not one this release reads: the book stops at the position before it')
      return
    }
    if (pos <= this.#records.length) return
    this.#early.set(pos, value)
    while (this.#early.has(this.#records.length + 1)) {
      const next = this.#records.length + 1
      const r = this.#early.get(next)!
      this.#early.delete(next)
      this.#records.push(r)
      for (const fn of this.#listeners) {
        try {
          fn(r)
        } catch (err) {
          this.#log.error({ err, pos: next }, 'applying a price book record failed')
        }
      }
    }
    if (this.#waiters.length > 0) {
      const at = this.#records.length
      this.#waiters = this.#waiters.filter((w) => {
        if (w.pos > at) return true
        clearTimeout(w.timer)
        w.resolve()
        return false
      })
    }
  }

  /** Resolves once every record up to `pos` is applied here; rejects with 503 after `timeoutMs`. */
  waitPos(pos: number, timeoutMs = APPEND_TIMEOUT_MS): Promise<void> {
    if (this.#records.length >= pos) return Promise.resolve()
    if (this.#stopped !== null) return Promise.reject(unavailable(`the price book is not being mirrored (${this.#stopped.message})`))
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        pos,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters = this.#waiters.filter((x) => x !== w)
          reject(unavailable(`price book record ${pos} did not reach this node within ${timeoutMs} ms (it has ${this.#records.length})`))
        }, timeoutMs).unref()
      }
      this.#waiters.push(w)
    })
  }

  /**
   * Adds a record at the next free position: `make(pos)` builds it (called again with a higher
   * position when another node took that one first). Resolves with the record once this node
   * applied it; 503 when the bucket cannot be reached or too many writers race.
   */
  async append(make: (pos: number) => BookRecord): Promise<BookRecord> {
    const backing = this.#backing
    if (backing === null) throw new Error('ClusterPriceLog.append: no backing attached')
    const deadline = Date.now() + APPEND_TIMEOUT_MS
    for (let attempt = 0; attempt < MAX_ATTEMPTS && Date.now() < deadline; attempt++) {
      const pos = this.#records.length + 1
      const record = make(pos)
      if (record.pos !== pos) throw new Error('ClusterPriceLog.append: the record must carry the position it was made for')
      if (await backing.create(String(pos), record)) {
        await this.waitPos(pos, Math.max(1, deadline - Date.now()))
        return record
      }
      // Another node wrote `pos` first; create() mirrored its record: wait until it is applied.
      await this.waitPos(pos, Math.max(1, deadline - Date.now()))
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

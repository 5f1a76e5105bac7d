/**
 * The dedupe index (DESIGN §7, Idempotency): per project, each client id accepted within the
 * window → the event first accepted under it and when it was received.
 *
 * - Durable with the event: `EventLog.append` calls {@link DedupeIndex.record} in the same
 *   event-loop turn as the put of the log record, and lmdb-js commits every write of a turn in
 *   one transaction (`eventTurnBatching`, on by default): after a crash an event is in the log
 *   if and only if its entry is.
 * - Memory holds only the entries of appends whose commit has not resolved yet (bounded by the
 *   events in flight, which the pipeline's high-water mark bounds). Every other lookup is a
 *   keyed LMDB read: memory-mapped, so the OS page cache is the cache, and its size does not
 *   grow with the window.
 * - Window by receive time: an entry counts while `recv + windowMs > at`, `at` being the new
 *   event's receive time. An expired entry is ignored by lookups at once and removed later by
 *   {@link DedupeIndex.sweep} (a background timer, off the hot path), which walks the expiry
 *   journal — one number per append that wrote entries, keyed by its first seq: its latest
 *   receive time — and reads the keys from that append's log record (the log keeps client
 *   ids), so a sweep reads only what expired, never the whole window, and no key is stored
 *   twice.
 *
 * Layout: `dedupe` maps `${project}/${clientId}` (a project slug has no `/`, nor a client id)
 * to `[event id, recv ms]` (ordered-binary); `dedupe-exp` maps an append's first seq to its
 * latest recv.
 */
import type { Database } from 'lmdb'
import { seqOfEventId, type StoredEvent } from '../events.js'

/** An entry: the id of the event first accepted under the key, and when it was received (epoch ms). */
export type DedupeEntry = [id: string, recv: number]
/** An append's expiry record: its latest receive time (the keys are in its log record). */
export type DedupeJournalRecord = number

/** The stored events of the log record at `seq` (an append's first seq), holes left out: where a sweep reads an append's keys. */
export type RecordReader = (seq: number) => Iterable<StoredEvent>

/** The event already accepted under a client id. */
export interface Original {
  id: string
  seq: number
  /** The commit of its append while still in flight (a duplicate waits for it), null once durable. */
  committed: Promise<void> | null
}

export interface DedupeOptions {
  /** How long, in receive time, a client id stays taken. */
  windowMs: number
  /** The clock of the sweep (default Date.now); tests pass a manual one. */
  now?: () => number
  /** Period of the background sweep (default a quarter of the window, at most 10 minutes); 0 = none (call sweep() yourself). */
  sweepEveryMs?: number
}

/** Journal records a sweep reads per batch; it awaits their removal's commit before reading on. */
const SWEEP_CHUNK = 256

/** The index key of a client id in a project. */
export const dedupeKey = (project: string, clientId: string): string => `${project}/${clientId}`

const noop = (): void => {}

export class DedupeIndex {
  readonly #db: Database<DedupeEntry, string>
  readonly #journal: Database<DedupeJournalRecord, number>
  readonly windowMs: number
  readonly #now: () => number
  readonly #sweepEveryMs: number
  /** Keys written by appends whose commit has not resolved: what LMDB reads cannot see yet. */
  readonly #inflight = new Map<string, { event: StoredEvent; committed: Promise<void> }>()
  #records: RecordReader | null = null
  #timer: NodeJS.Timeout | null = null
  #sweeping: Promise<number> | null = null
  #closed = false
  #stats = { lookups: 0, duplicates: 0, written: 0, swept: 0, forgotten: 0, sweepFailures: 0 }

  constructor(db: Database<DedupeEntry, string>, journal: Database<DedupeJournalRecord, number>, opts: DedupeOptions) {
    if (!(opts.windowMs > 0)) throw new RangeError(`DedupeIndex: windowMs must be > 0, got ${opts.windowMs}`)
    this.#db = db
    this.#journal = journal
    this.windowMs = opts.windowMs
    this.#now = opts.now ?? Date.now
    this.#sweepEveryMs = opts.sweepEveryMs ?? Math.min(Math.ceil(opts.windowMs / 4), 10 * 60_000)
    // Entries left by an earlier run expire on the timer too, even if nothing new arrives.
    for (const _ of journal.getKeys({ limit: 1 })) this.#startTimer()
  }

  /** Where sweeps read the keys of an expired append: the log that writes the entries (EventLog attaches itself). */
  attach(records: RecordReader): void {
    this.#records = records
  }

  get stats() {
    return { ...this.#stats, inflight: this.#inflight.size }
  }

  /**
   * The event accepted under `clientId` in `project` that an event received at `at` duplicates:
   * one still in flight, or one committed within the window before `at`. Undefined: none.
   */
  lookup(project: string, clientId: string, at: number): Original | undefined {
    return this.find(dedupeKey(project, clientId), at)
  }

  /** {@link lookup} by index key ({@link dedupeKey}). */
  find(key: string, at: number): Original | undefined {
    this.#stats.lookups++
    const f = this.#inflight.get(key)
    if (f !== undefined) return { id: f.event.id, seq: f.event.seq, committed: f.committed }
    const v = this.#db.get(key)
    if (v === undefined || v[1] + this.windowMs <= at) return undefined
    const seq = seqOfEventId(v[0])
    if (seq === null) return undefined
    return { id: v[0], seq, committed: null }
  }

  /** Counts duplicates answered (stats). */
  countDuplicates(n: number): void {
    this.#stats.duplicates += n
  }

  /**
   * Writes the entries of newly stored events (those with a client id) and their journal
   * record. Call it in the same turn as the log put (one transaction); `committed` is that
   * put's commit: until it resolves, lookups find the events here in memory.
   */
  record(events: readonly StoredEvent[], committed: Promise<void>): void {
    let keys: string[] | null = null
    let latest = -Infinity
    let last: Promise<unknown> | null = null
    for (const e of events) {
      const cid = e.clientId
      if (cid === null || cid === undefined) continue
      const key = dedupeKey(e.project, cid)
      const p = this.#db.put(key, [e.id, e.recv])
      // Every put of a transaction shares its outcome: the log's `committed` reports a failure;
      // these promises are only kept from being unhandled (lmdb-js hands out one per batch).
      if (p !== last) {
        p.catch(noop)
        last = p
      }
      this.#inflight.set(key, { event: e, committed })
      ;(keys ??= []).push(key)
      if (e.recv > latest) latest = e.recv
    }
    if (keys === null) return
    this.#stats.written += keys.length
    this.#journal.put(events[0].seq, latest).catch(noop)
    const written = keys
    const settle = () => {
      for (let i = 0; i < written.length; i++) {
        const f = this.#inflight.get(written[i])
        if (f !== undefined && f.committed === committed) this.#inflight.delete(written[i])
      }
    }
    committed.then(settle, settle)
    this.#startTimer()
  }

  /**
   * Removes the entry of `clientId` in `project` if it still names the event at `seq` (a
   * deleted event: a re-sent copy is then accepted as new). Idempotent; resolves after the
   * commit with whether it removed one.
   */
  async forget(project: string, clientId: string, seq: number): Promise<boolean> {
    const p = this.#forgetOne(dedupeKey(project, clientId), seq)
    if (p === null) return false
    await p
    return true
  }

  /** {@link forget} for each event that has a client id; resolves after the commit with how many entries went. */
  async forgetEvents(events: Iterable<StoredEvent>): Promise<number> {
    let n = 0
    let last: Promise<unknown> | null = null
    for (const e of events) {
      if (e.clientId === null || e.clientId === undefined) continue
      const p = this.#forgetOne(dedupeKey(e.project, e.clientId), e.seq)
      if (p !== null) {
        n++
        last = p
      }
    }
    if (last !== null) await last
    return n
  }

  /**
   * Issues the removal of `key` when its entry names `seq` (synchronously: a caller that also
   * rewrites the log record in this turn commits both together). Skipped while an append of
   * the key is in flight: that write names a newer event and would be removed by this one.
   */
  #forgetOne(key: string, seq: number): Promise<boolean> | null {
    if (this.#inflight.has(key)) return null
    const v = this.#db.get(key)
    if (v === undefined || seqOfEventId(v[0]) !== seq) return null
    this.#stats.forgotten++
    return this.#db.remove(key)
  }

  /** {@link forgetEvents} without waiting: the removals join the transaction of this turn's writes. */
  forgetNow(events: Iterable<StoredEvent>): void {
    for (const e of events) {
      if (e.clientId !== null && e.clientId !== undefined) this.#forgetOne(dedupeKey(e.project, e.clientId), e.seq)?.catch(noop)
    }
  }

  /**
   * Removes every expired entry (receive time at least a window before now): walks the journal
   * from its oldest append until one that has not expired, a chunk per event-loop turn,
   * waiting for each chunk's commit before reading on. Resolves with the entries removed. One
   * sweep at a time (a call during one joins it). Reads keys through the attached log
   * ({@link attach}); with none attached it removes nothing.
   */
  sweep(): Promise<number> {
    this.#sweeping ??= this.#sweep().finally(() => {
      this.#sweeping = null
    })
    return this.#sweeping
  }

  async #sweep(): Promise<number> {
    const now = this.#now()
    let removed = 0
    for (;;) {
      if (this.#closed) return removed
      let last: Promise<unknown> | null = null
      let read = 0
      let done = false
      const records = this.#records
      if (records === null) return removed
      for (const { key: seq, value } of this.#journal.getRange({ limit: SWEEP_CHUNK })) {
        read++
        if (value + this.windowMs > now) {
          // Appends are journalled in log order, which is receive order up to clock steps: the
          // rest is newer (a few out-of-order ones wait for the next sweep).
          done = true
          break
        }
        for (const e of records(seq)) {
          if (e.clientId === null || e.clientId === undefined) continue
          const key = dedupeKey(e.project, e.clientId)
          // An append in flight rewrites the key: its entry is new, whatever LMDB holds now.
          if (this.#inflight.has(key)) continue
          const v = this.#db.get(key)
          if (v !== undefined && v[1] + this.windowMs <= now) {
            last = this.#db.remove(key)
            removed++
          }
        }
        last = this.#journal.remove(seq)
      }
      if (last !== null) await last
      if (done || read < SWEEP_CHUNK) break
      await new Promise((r) => setImmediate(r))
    }
    this.#stats.swept += removed
    return removed
  }

  #startTimer(): void {
    if (this.#timer !== null || this.#closed || this.#sweepEveryMs <= 0) return
    this.#timer = setInterval(() => {
      this.sweep().catch(() => {
        this.#stats.sweepFailures++
      })
    }, this.#sweepEveryMs)
    this.#timer.unref()
  }

  /** Stops the sweep timer and waits for a sweep under way. Safe twice. */
  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    await this.#sweeping?.catch(() => {})
  }
}

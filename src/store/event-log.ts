/**
 * The durable event log. `append()` assigns consecutive log positions (seq) and ids to a
 * group of events and writes them with ONE put keyed by the first seq; the returned promise
 * resolves once LMDB has committed the transaction holding it. Concurrent appends share a
 * commit (lmdb-js batches every write issued in the same turn).
 *
 * Invariant: seqs are assigned synchronously in call order, so positions are unique and
 * increasing. A failed put leaves a gap, which readers skip.
 */
import type { Database } from 'lmdb'
import type { EventRecord } from './db.js'
import { makeEventId, type PendingEvent, type StoredEvent } from '../events.js'

type Row = [
  id: string, ts: number, recv: number, model: string, provider: string,
  prompt: number, completion: number, total: number, cached: number, reasoning: number,
  latency: number, ttft: number | null, error: 0 | 1, cost: number | null, meta: Record<string, unknown> | null
]

function toRow(e: StoredEvent): Row {
  return [e.id, e.ts, e.recv, e.model, e.provider, e.prompt, e.completion, e.total, e.cached, e.reasoning,
    e.latency, e.ttft, e.error ? 1 : 0, e.cost, e.meta]
}

function fromRow(seq: number, r: Row): StoredEvent {
  return {
    seq, id: r[0], ts: r[1], recv: r[2], model: r[3], provider: r[4], prompt: r[5], completion: r[6],
    total: r[7], cached: r[8], reasoning: r[9], latency: r[10], ttft: r[11], error: r[12] === 1, cost: r[13], meta: r[14]
  }
}

export interface Appended {
  events: StoredEvent[]
  /** Resolves after the commit; rejects if LMDB could not write. */
  committed: Promise<void>
}

/** How full the database may get: appends are refused once `used()` reaches `max`. */
export interface SpaceLimit {
  used(): number
  max: number
}

export class EventLog {
  readonly #db: Database<EventRecord, number>
  readonly #space: SpaceLimit | undefined
  #used = 0
  #usedAt = -Infinity
  #nextSeq: number
  #appends = 0
  #appendedEvents = 0

  constructor(db: Database<EventRecord, number>, space?: SpaceLimit) {
    this.#db = db
    this.#space = space
    this.#nextSeq = 0
    for (const { key, value } of db.getRange({ reverse: true, limit: 1 })) {
      this.#nextSeq = key + value.ev.length
    }
  }

  /** The seq the next event will get. */
  get nextSeq(): number {
    return this.#nextSeq
  }

  get stats() {
    return { appends: this.#appends, appendedEvents: this.#appendedEvents, nextSeq: this.#nextSeq }
  }

  /** Assigns positions and ids, enqueues one put, and returns the stored events at once. */
  append(pending: readonly PendingEvent[]): Appended {
    if (this.#space !== undefined) {
      // LMDB's stats cost ~10 µs: read at most every 5 ms (the quota is soft by that much).
      const now = performance.now()
      if (now - this.#usedAt >= 5) {
        this.#used = this.#space.used()
        this.#usedAt = now
      }
      const used = this.#used
      if (used >= this.#space.max) {
        // Refused before any position is assigned: no gap, nothing half-written.
        return { events: [], committed: Promise.reject(new Error(`the database is full (${used} of ${this.#space.max} bytes, LLMSCOPE_MAX_DB_BYTES)`)) }
      }
    }
    const first = this.#nextSeq
    this.#nextSeq += pending.length
    const events: StoredEvent[] = new Array(pending.length)
    const rows: Row[] = new Array(pending.length)
    for (let i = 0; i < pending.length; i++) {
      const seq = first + i
      const e = pending[i] as StoredEvent
      e.seq = seq
      e.id = makeEventId(seq)
      events[i] = e
      rows[i] = toRow(e)
    }
    this.#appends++
    this.#appendedEvents += pending.length
    const committed = this.#db.put(first, { v: 1, ev: rows }).then(
      (ok) => {
        if (!ok) throw new Error('event log put was not applied')
      },
      (err: { commitError?: Promise<unknown> } & Error) => {
        // lmdb-js also rejects a `commitError` promise (the OS error, e.g. ENOSPC) that nobody
        // awaits: left alone it is an unhandled rejection that kills the process.
        if (err.commitError !== undefined) {
          return err.commitError.then(
            () => Promise.reject(err),
            (os: Error) => Promise.reject(new Error(`the event log commit failed: ${os.message.split(':')[0]}`))
          )
        }
        throw err
      }
    )
    return { events, committed }
  }

  /** The event at `seq`, or undefined. A synchronous keyed read (memory-mapped). */
  get(seq: number): StoredEvent | undefined {
    for (const { key, value } of this.#db.getRange({ start: seq, reverse: true, limit: 1 })) {
      const i = seq - key
      if (i < value.ev.length) return fromRow(seq, value.ev[i] as Row)
    }
    return undefined
  }

  /** Every stored event with seq >= `from`, one array per stored append, in log order. */
  *readFrom(from: number): Generator<StoredEvent[]> {
    // The append holding `from` may start before it.
    let start = from
    for (const { key } of this.#db.getRange({ start: from, reverse: true, limit: 1 })) start = key
    for (const { key, value } of this.#db.getRange({ start })) {
      const out: StoredEvent[] = []
      for (let i = 0; i < value.ev.length; i++) {
        const seq = key + i
        if (seq >= from) out.push(fromRow(seq, value.ev[i] as Row))
      }
      if (out.length > 0) yield out
    }
  }

  /** Number of events stored at or after `from` (walks keys only). */
  countFrom(from: number): number {
    let n = 0
    for (const batch of this.readFrom(from)) n += batch.length
    return n
  }
}


/**
 * The durable event log. `append()` assigns consecutive log positions (seq) and ids to a
 * group of events and writes them with ONE put keyed by the first seq; the returned promise
 * resolves once LMDB has committed the transaction holding it. Concurrent appends share a
 * commit (lmdb-js batches every write issued in the same turn).
 *
 * Invariant: seqs are assigned synchronously in call order, so positions are unique and
 * increasing. A failed put leaves a gap, which readers skip.
 *
 * Record formats (`v`), all read, the newest written:
 * - v1: `{ v: 1, ev: Row[] }`, one array per event. Still written for appends of fewer than
 *   {@link COLUMNS_FROM} events (cheaper there) and for an append with more than 65,536
 *   distinct model/provider names, which v2's Uint16 indexes cannot hold.
 * - v2: columns (see EventRecordV2 in db.ts): numbers as typed-array bytes, token counts as
 *   Uint32 when they fit, model/provider as indexes into the record's distinct names, the
 *   ids' random parts in one string, metadata as an array. lmdb-js (msgpackr) copies bytes
 *   where a row costs a type dispatch per field: msgpack of rows was ~10% of main-thread time
 *   in a batch-ingest profile. Measured on Node 20, 300 appends of 1,000 bench events: append
 *   1.0–1.1 µs/event (ids included) against 1.45 for building and putting v1 rows (ids
 *   excluded); reading back (recovery, since_seq replay) 0.48–0.52 against 0.82 µs/event;
 *   the same size on disk (27.1 MB both).
 * A record of a format this release does not know is an error, never misread.
 */
import type { Database } from 'lmdb'
import type { EventRecord, EventRecordV2 } from './db.js'
import { makeEventId, type PendingEvent, type StoredEvent } from '../events.js'
import { intern } from '../intern.js'

type Row = [
  id: string, ts: number, recv: number, model: string, provider: string,
  prompt: number, completion: number, total: number, cached: number, reasoning: number,
  latency: number, ttft: number | null, error: 0 | 1, cost: number | null, meta: Record<string, unknown> | null
]

function fromRow(seq: number, r: Row): StoredEvent {
  return {
    seq, id: r[0], ts: r[1], recv: r[2], model: r[3], provider: r[4], prompt: r[5], completion: r[6],
    total: r[7], cached: r[8], reasoning: r[9], latency: r[10], ttft: r[11], error: r[12] === 1, cost: r[13], meta: r[14]
  }
}

/** Length of an id's random part (`evt_<seq>_<this>`). */
const RND = 12
/**
 * Appends of at least this many events are written as v2 columns, smaller ones as v1 rows.
 * Columns cost a few typed arrays per record: measured with lmdb-js puts on Node 20, per
 * event, v1 vs v2: 1.05 vs 6.0 µs for 1 event, 0.73 vs 2.5 for 4, 1.0 vs 1.1 for 16, 0.55
 * vs 0.49 for 64, 0.56 vs 0.27 for 256, 0.97 vs 0.44 for 1,000. Single-event requests, most
 * of them one event per append, stay on rows.
 */
export const COLUMNS_FROM = 64
/** Distinct model/provider names a v2 record can index (Uint16). */
const MAX_NAMES = 65_536

const bytesOf = (a: Float64Array | Uint32Array | Uint16Array | Uint8Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

/** The v2 record of `events` (consecutive seqs); `rnd` holds their ids' random parts. Null if it cannot hold them. */
function encodeRecord(events: readonly StoredEvent[], rnd: string): EventRecordV2 | null {
  const n = events.length
  const num = new Float64Array(n * 5)
  const tokF = new Float64Array(n * 5)
  const err = new Uint8Array(n)
  const str = new Uint16Array(n * 2)
  const names: string[] = []
  const index = new Map<string, number>()
  const meta: EventRecordV2['meta'] = new Array(n)
  let tok32 = true
  for (let i = 0; i < n; i++) {
    const e = events[i]
    const o = i * 5
    num[o] = e.ts
    num[o + 1] = e.recv
    num[o + 2] = e.latency
    // NaN stands for null: validated ttft and cost are finite.
    num[o + 3] = e.ttft ?? NaN
    num[o + 4] = e.cost ?? NaN
    tokF[o] = e.prompt
    tokF[o + 1] = e.completion
    tokF[o + 2] = e.total
    tokF[o + 3] = e.cached
    tokF[o + 4] = e.reasoning
    if (e.total > 0xffffffff || e.prompt > 0xffffffff || e.completion > 0xffffffff || e.cached > 0xffffffff || e.reasoning > 0xffffffff) tok32 = false
    err[i] = e.error ? 1 : 0
    str[i * 2] = intern(index, names, e.model)
    str[i * 2 + 1] = intern(index, names, e.provider)
    meta[i] = e.meta
  }
  if (names.length > MAX_NAMES) return null
  const tok = tok32 ? bytesOf(Uint32Array.from(tokF)) : bytesOf(tokF)
  return { v: 2, n, num: bytesOf(num), tok, tok32, err: bytesOf(err), str: bytesOf(str), names, rnd, meta }
}

/** The v1 record of `events` (rows). */
function encodeRowsRecord(events: readonly StoredEvent[]): EventRecord {
  return {
    v: 1,
    ev: events.map((e): Row => [e.id, e.ts, e.recv, e.model, e.provider, e.prompt, e.completion, e.total, e.cached, e.reasoning, e.latency, e.ttft, e.error ? 1 : 0, e.cost, e.meta])
  }
}

/** A v2 record's columns as typed arrays: copies, so aligned and owned whatever buffer the read used. */
interface Columns {
  record: EventRecordV2
  num: Float64Array
  tok: Float64Array | Uint32Array
  err: Uint8Array
  str: Uint16Array
}

function copyInto<T extends Float64Array | Uint32Array | Uint16Array | Uint8Array>(target: T, bytes: Uint8Array): T {
  new Uint8Array(target.buffer).set(bytes)
  return target
}

function columnsOf(r: EventRecordV2): Columns {
  const n = r.n
  return {
    record: r,
    num: copyInto(new Float64Array(n * 5), r.num),
    tok: r.tok32 ? copyInto(new Uint32Array(n * 5), r.tok) : copyInto(new Float64Array(n * 5), r.tok),
    err: copyInto(new Uint8Array(n), r.err),
    str: copyInto(new Uint16Array(n * 2), r.str)
  }
}

function unknownFormat(key: number, r: unknown): Error {
  return new Error(`event log record at seq ${key} has format v${String((r as { v?: unknown }).v)}, which this release cannot read`)
}

/** Events in a stored record, of any format. */
function recordLength(key: number, r: EventRecord): number {
  if (r.v === 2) return r.n
  if (r.v === 1) return r.ev.length
  throw unknownFormat(key, r)
}

/** A stored record ready to decode: v1 as is, v2 with its columns copied out once. */
function readable(key: number, r: EventRecord): EventRecord | Columns {
  if (r.v === 1) return r
  if ((r as { v: unknown }).v !== 2) throw unknownFormat(key, r)
  return columnsOf(r)
}

/** Event `i` of the record stored at `key`. */
function decodeAt(key: number, rec: EventRecord | Columns, i: number): StoredEvent {
  const seq = key + i
  if ('v' in rec) {
    if (rec.v === 1) return fromRow(seq, rec.ev[i] as Row)
    throw unknownFormat(key, rec)
  }
  const { num, tok, err, str, record: r } = rec
  const o = i * 5
  const ttft = num[o + 3]
  const cost = num[o + 4]
  return {
    seq,
    id: `evt_${seq.toString(36)}_${r.rnd.slice(i * RND, i * RND + RND)}`,
    ts: num[o],
    recv: num[o + 1],
    model: r.names[str[i * 2]],
    provider: r.names[str[i * 2 + 1]],
    prompt: tok[o],
    completion: tok[o + 1],
    total: tok[o + 2],
    cached: tok[o + 3],
    reasoning: tok[o + 4],
    latency: num[o + 2],
    ttft: Number.isNaN(ttft) ? null : ttft,
    error: err[i] === 1,
    cost: Number.isNaN(cost) ? null : cost,
    meta: r.meta[i] ?? null
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
      this.#nextSeq = key + recordLength(key, value)
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
    // v2 keeps only the ids' random parts: `evt_<seq base36>_` follows from the position.
    const columns = pending.length >= COLUMNS_FROM
    let rnd = ''
    for (let i = 0; i < pending.length; i++) {
      const seq = first + i
      const e = pending[i] as StoredEvent
      e.seq = seq
      e.id = makeEventId(seq)
      if (columns) rnd += e.id.slice(-RND)
      events[i] = e
    }
    this.#appends++
    this.#appendedEvents += pending.length
    const record = (columns ? encodeRecord(events, rnd) : null) ?? encodeRowsRecord(events)
    const committed = this.#db.put(first, record).then(
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
      if (i < recordLength(key, value)) return decodeAt(key, readable(key, value), i)
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
      const n = recordLength(key, value)
      const rec = readable(key, value)
      for (let i = Math.max(0, from - key); i < n; i++) out.push(decodeAt(key, rec, i))
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


/**
 * The event log of cluster mode: the JetStream stream `${name}-events`, one message per event on
 * `${name}.ev.<partition>.<project>`. A position is the stream sequence, so an id
 * (`evt_<seq base36>_<12 random>`) means the same as in single-node mode.
 *
 * `append()` publishes every event of the call at once (the publishes are in flight together:
 * the group commit of this mode) with `Nats-Msg-Id` = the id's random part, so a publish retried
 * within the stream's dedupe window is stored once and acknowledged with its first seq.
 *
 * Exactly once by client id (DESIGN §7, Idempotency): an event that carries one is published
 * with `Nats-Msg-Id: ${project}/${clientId}` instead, and the random part of its id is derived
 * from that key ({@link clientRnd}), so JetStream itself keeps one copy per key within its
 * `duplicate_window` (the dedupe window, set where the stream is made: src/cluster/nats.ts) on
 * whichever node takes the copies, and a duplicate's PubAck (`duplicate: true`, the first
 * copy's seq) gives the first copy's id with no read: `evt_<seq>_<clientRnd>`.
 *
 * Price revision (DESIGN §8, ISSUE14 "Cluster"): every message carries the header
 * `LLMScope-Price-Rev: <n>`, the price book revision of the publishing node when it accepted the
 * event (its `priceRev`: which prices fix its cost). Readers set `priceRev` from it (absent or 0:
 * an event published before price books, priced as revision 0).
 *
 * The publish path is ours rather than `js.publish` (which is one `nc.request` per message: a
 * request object, two captured stack traces, a timer and a promise each: bench/cluster-micro.ts
 * measured 95 µs of CPU per event for batches of 100 that way, 27 µs this way). Each message goes out with `nc.publish` and a reply subject
 * `<inbox>.<append>.<index>` on ONE subscription per log; the acknowledgement (a JetStream PubAck,
 * or an API error, or a no-responders status) is matched back by that subject. One timer runs for
 * all appends: they share one timeout, so their deadlines come in the order they were made.
 */
import { createHash, randomFillSync } from 'node:crypto'
import { urlAlphabet } from 'nanoid'
import { createInbox, type Msg, type MsgHdrs, type Subscription } from '@nats-io/transport-node'
import { DeliverPolicy, JetStreamApiCodes, JetStreamApiError, type Consumer } from '@nats-io/jetstream'
import { llmsError } from '../errors.js'
import { markDuplicate, withExtras, type PendingEvent, type StoredEvent } from '../events.js'
import type { Appended, DurableLog, LogPosition } from '../store/durable-log.js'
import { partitionOf } from './names.js'
import type { NatsHandles } from './nats.js'

/** How long an append waits for JetStream's acknowledgement of each publish (DESIGN §9: 5 s). */
export const ACK_TIMEOUT_MS = 5_000
/** Events per batch yielded by `read()`. */
export const READ_BATCH = 1000
/** A `read()` that receives nothing for this long while events remain fails rather than hang. */
export const READ_IDLE_TIMEOUT_MS = 30_000
/** Length of an id's random part. */
const RND = 12

/**
 * Format 1 of a message body: JSON of
 * `[1, rnd, ts, recv, model, provider, prompt, completion, total, cached, reasoning, latency,
 *   ttft, error (0|1), cost, meta, project, user, session, tags]`.
 * Format 2 (an event with a client id or an imported cost, DESIGN §7): format 1 with `2` first
 * and two more elements, `clientId` (or null) and `costSource` (`computed`, `unpriced` or null).
 * Format 3 (an event with cache-write tokens): format 2 plus one element, `cacheWrite`.
 * The seq is the message's stream sequence, not in the body. A body of another format is an
 * error, never misread.
 */
type Body = [
  v: 1 | 2 | 3, rnd: string, ts: number, recv: number, model: string, provider: string,
  prompt: number, completion: number, total: number, cached: number, reasoning: number, latency: number,
  ttft: number | null, error: 0 | 1, cost: number | null, meta: Record<string, unknown> | null,
  project: string, user: string | null, session: string | null, tags: readonly string[] | null,
  clientId?: string | null, costSource?: StoredEvent['costSource'], cacheWrite?: number
]

/** The header naming the price book revision an event was accepted at. */
export const PRICE_REV_HEADER = 'LLMScope-Price-Rev'

const decoder = new TextDecoder()

/** Random bytes for ids, refilled when spent (one `randomFillSync` per many appends). */
const RANDOM_POOL = 16 * 1024
const random = Buffer.allocUnsafe(RANDOM_POOL)
let randomAt = RANDOM_POOL

/**
 * `n` random id parts of {@link RND} characters from nanoid's URL alphabet (64 characters, so
 * one random byte & 63 each: uniform, the same shape and entropy as `nanoid(12)`).
 */
function rnds(n: number): string[] {
  const out: string[] = new Array(n)
  for (let k = 0; k < n; k++) {
    if (randomAt + RND > RANDOM_POOL) {
      randomFillSync(random)
      randomAt = 0
    }
    let id = ''
    for (let j = 0; j < RND; j++) id += urlAlphabet[random[randomAt++]! & 63]
    out[k] = id
  }
  return out
}

/**
 * The NATS headers of a message with `Nats-Msg-Id: msgId`, already encoded: `nc.publish` only calls
 * `encode()` on its `headers` option, so this skips building a header map per message. The bytes
 * are the NATS header wire format (`NATS/1.0`, one `key: value` line, a blank line).
 */
function msgIdHeader(msgId: string, priceRev: number): MsgHdrs {
  const bytes = Buffer.from(`NATS/1.0\r\nNats-Msg-Id: ${msgId}\r\n${PRICE_REV_HEADER}: ${priceRev}\r\n\r\n`, 'latin1')
  return { encode: () => bytes } as unknown as MsgHdrs
}

/**
 * The errors `js.publish` gave for the same failures, by name (what the 503's message is made
 * from): no acknowledgement in time, and no server taking the subject (no responders).
 */
function ackTimeout(): Error {
  const err = new Error('timeout')
  err.name = 'TimeoutError'
  return err
}
function noResponders(): Error {
  const err = new Error('no responders: no server took the publish') as Error & { isNoResponders(): boolean }
  err.name = 'NoRespondersError'
  err.isNoResponders = () => true
  return err
}

/** An append waiting for its acknowledgements. */
interface Waiting {
  readonly key: string
  /** Emptied once it ends, so a finished append holds no events while it waits in the queue. */
  events: StoredEvent[]
  rnds: string[]
  /** Acknowledgements still to come. */
  left: number
  /** `performance.now()` after which it fails. */
  readonly deadline: number
  done: boolean
  resolve(): void
  reject(err: Error): void
}

/** The random part of an event id (`evt_<seq>_<this>`). */
export const rndOf = (id: string): string => id.slice(-RND)

/**
 * The id's "random" part of an event with a client id: the first 12 characters of the
 * base64url SHA-256 of `${project}/${clientId}` (the URL alphabet, as nanoid's). Every copy
 * gets the same, so a duplicate's id follows from the first copy's seq.
 */
export function clientRnd(project: string, clientId: string): string {
  return createHash('sha256').update(`${project}/${clientId}`).digest('base64url').slice(0, RND)
}

/** The message body of an event (every field but `seq`; the id's random part inside). */
export function encodeEvent(e: Omit<StoredEvent, 'seq' | 'id'> & { id?: string; rnd?: string }): Uint8Array {
  return bodyOf(e, e.rnd ?? rndOf(e.id ?? ''))
}

function bodyOf(e: Omit<StoredEvent, 'seq' | 'id'>, rnd: string): Uint8Array {
  const cw = e.cacheWrite ?? 0
  const extras = cw > 0 || (e.clientId !== null && e.clientId !== undefined) || (e.costSource !== null && e.costSource !== undefined)
  const body: Body = [
    cw > 0 ? 3 : extras ? 2 : 1, rnd, e.ts, e.recv, e.model, e.provider, e.prompt, e.completion, e.total, e.cached, e.reasoning, e.latency,
    e.ttft, e.error ? 1 : 0, e.cost, e.meta, e.project, e.user, e.session, e.tags
  ]
  if (extras) body.push(e.clientId ?? null, e.costSource ?? null)
  if (cw > 0) body.push(cw)
  // Buffer.from: a third of TextEncoder's cost for a string this small (a slice of Node's pool).
  return Buffer.from(JSON.stringify(body), 'utf8')
}

/**
 * The price revision a message's headers carry ({@link PRICE_REV_HEADER}); 0 when absent or not a
 * non-negative integer (a message published before price books).
 */
export function priceRevOf(h: MsgHdrs | undefined): number {
  const v = h?.get(PRICE_REV_HEADER)
  if (v === undefined || v === '') return 0
  const n = Number(v)
  return Number.isSafeInteger(n) && n > 0 ? n : 0
}

/**
 * The event stored at stream sequence `seq` with body `data`, accepted at price revision
 * `priceRev` (from the message's header: {@link priceRevOf}; set on the event only when > 0).
 */
export function decodeEvent(seq: number, data: Uint8Array, priceRev = 0): StoredEvent {
  const b = JSON.parse(decoder.decode(data)) as Body
  // Formats 2 and 3 are exactly format 1 plus two (three) elements: anything else is not a body this release wrote.
  if (!Array.isArray(b) || (b[0] !== 1 && (b[0] !== 2 || b.length !== 22) && (b[0] !== 3 || b.length !== 23))) {
    throw new Error(`event message ${seq} has an unknown format (${Array.isArray(b) ? String(b[0]) : typeof b}); a newer LLMScope wrote it`)
  }
  const e: StoredEvent = {
    seq,
    id: `evt_${seq.toString(36)}_${b[1]}`,
    ts: b[2], recv: b[3], model: b[4], provider: b[5], prompt: b[6], completion: b[7], total: b[8], cached: b[9],
    reasoning: b[10], latency: b[11], ttft: b[12], error: b[13] === 1, cost: b[14], meta: b[15],
    project: b[16], user: b[17], session: b[18], tags: b[19]
  }
  if (b[0] === 3 && typeof b[22] === 'number' && b[22] > 0) e.cacheWrite = b[22]
  if (priceRev > 0) e.priceRev = priceRev
  return b[0] === 1 ? e : withExtras(e, b[20], b[21])
}

export interface JetStreamLogOptions {
  /** How long each publish may wait for its acknowledgement (default 5 s). */
  ackTimeoutMs?: number
  /** The price book revision events are accepted at now (header {@link PRICE_REV_HEADER}; default 0). */
  priceRev?: () => number
}

export interface ReadOptions {
  /** Only this partition's events. */
  partition?: number
  /** Only this project's events. */
  project?: string
  /** Last seq to read (default: the stream's last seq when the read starts). */
  to?: number
}

/** The JetStream event log (cluster mode). */
export class JetStreamLog implements DurableLog {
  readonly #h: NatsHandles
  readonly #ackTimeoutMs: number
  readonly #priceRev: () => number
  #appends = 0
  #appendedEvents = 0
  #failedAppends = 0
  /** The acknowledgements' subscription (made on the first append) and its subject prefix. */
  #ackSub: Subscription | null = null
  #ackPrefix = ''
  #nextAppend = 0
  /** Appends waiting, by key; and in the order they were made (their deadlines' order). */
  readonly #waiting = new Map<string, Waiting>()
  #queue: Waiting[] = []
  #queueHead = 0
  #timer: NodeJS.Timeout | null = null

  constructor(h: NatsHandles, opts: JetStreamLogOptions = {}) {
    this.#h = h
    this.#ackTimeoutMs = opts.ackTimeoutMs ?? ACK_TIMEOUT_MS
    this.#priceRev = opts.priceRev ?? (() => 0)
  }

  get stats() {
    return { appends: this.#appends, appendedEvents: this.#appendedEvents, failedAppends: this.#failedAppends }
  }

  /**
   * Publishes every event to its partition subject, all in flight together, and returns the
   * events at once. Each event's `seq` and `id` are set when its acknowledgement arrives (before
   * `committed` resolves; until then `seq` is -1 and `id` is ''). `committed` resolves after every
   * acknowledgement and rejects with LLMS_ERR_UNAVAILABLE (Retry-After 1) when one fails or does
   * not come within the ack timeout.
   */
  append(pending: readonly PendingEvent[]): Appended {
    const { nc, names, partitions } = this.#h
    const n = pending.length
    const events: StoredEvent[] = new Array(n)
    const ids = rnds(n)
    let acked: Promise<void>
    if (n === 0) {
      acked = Promise.resolve()
    } else {
      const key = (this.#nextAppend++).toString(36)
      let resolve!: () => void
      let reject!: (err: Error) => void
      acked = new Promise<void>((res, rej) => {
        resolve = res
        reject = rej
      })
      const w: Waiting = { key, events, rnds: ids, left: n, deadline: performance.now() + this.#ackTimeoutMs, done: false, resolve, reject }
      try {
        const reply = `${this.#ackSubject()}${key}.`
        // One revision for the whole call, read as the events are accepted (ISSUE14: acceptance revision).
        const rev = this.#priceRev()
        this.#waiting.set(key, w)
        this.#queue.push(w)
        for (let i = 0; i < n; i++) {
          const e = pending[i] as StoredEvent
          const cid = e.clientId
          // A client id: JetStream dedupes by it (one stored copy per key within its window).
          const keyed = cid !== null && cid !== undefined
          const rnd = keyed ? (ids[i] = clientRnd(e.project, cid)) : ids[i]!
          e.seq = -1
          e.id = ''
          if (rev > 0) e.priceRev = rev
          events[i] = e
          nc.publish(names.subject(partitionOf(e.project, e.model, partitions), e.project), bodyOf(e, rnd), { reply: reply + i, headers: msgIdHeader(keyed ? `${e.project}/${cid}` : rnd, rev) })
        }
        this.#arm()
      } catch (err) {
        // The connection is closed or draining (or a subject is refused): nothing more goes out.
        for (let i = 0; i < n; i++) events[i] ??= pending[i] as StoredEvent
        this.#finish(w, err instanceof Error ? err : new Error(String(err)))
      }
    }
    this.#appends++
    this.#appendedEvents += n
    const committed = acked.then(
      () => {},
      (err: unknown) => {
        this.#failedAppends++
        throw llmsError('LLMS_ERR_UNAVAILABLE', `${this.#whyNotAcked(err)}; retry`, { retryAfter: 1 })
      }
    )
    return { events, committed }
  }

  /** The prefix of this log's reply subjects, subscribing on first use. */
  #ackSubject(): string {
    if (this.#ackSub === null) {
      const inbox = createInbox()
      this.#ackPrefix = `${inbox}.`
      this.#ackSub = this.#h.nc.subscribe(`${inbox}.>`, { callback: (err, msg) => this.#onAck(err, msg) })
    }
    return this.#ackPrefix
  }

  /** One acknowledgement: `<inbox>.<append>.<index>`. */
  #onAck(err: Error | null, msg: Msg): void {
    if (err !== null) return
    const rest = msg.subject.slice(this.#ackPrefix.length)
    const dot = rest.indexOf('.')
    const w = this.#waiting.get(rest.slice(0, dot))
    // Unknown: the append already failed (timeout, another message's error); ignored.
    if (w === undefined) return
    const i = Number(rest.slice(dot + 1))
    const e = w.events[i]
    if (e === undefined || e.seq !== -1) return
    const data = msg.data
    if (data.length === 0) {
      // A status without a body: 503 is "no responders" (no stream takes the subject now).
      const code = msg.headers?.code ?? 0
      this.#finish(w, code === 503 ? noResponders() : new Error(`status ${code} ${msg.headers?.description ?? ''}`.trim()))
      return
    }
    let ack: { stream?: unknown; seq?: unknown; duplicate?: unknown; error?: { description?: unknown; err_code?: unknown } }
    try {
      ack = JSON.parse(decoder.decode(data)) as typeof ack
    } catch {
      this.#finish(w, new Error('an acknowledgement that is not JSON'))
      return
    }
    if (ack.error !== undefined || typeof ack.seq !== 'number' || typeof ack.stream !== 'string' || ack.stream === '') {
      this.#finish(w, new Error(ack.error !== undefined ? `JetStream: ${String(ack.error.description)} (${String(ack.error.err_code)})` : 'invalid ack response'))
      return
    }
    // A duplicate (the same Nats-Msg-Id published again within the window) carries the first
    // seq; its rnd is the first copy's (derived from the key, or this very message retried).
    e.seq = ack.seq
    e.id = `evt_${ack.seq.toString(36)}_${w.rnds[i]}`
    if (ack.duplicate === true) markDuplicate(e)
    if (--w.left === 0) this.#finish(w, null)
  }

  /** Ends an append: resolved when `err` is null, else rejected (later acknowledgements are ignored). */
  #finish(w: Waiting, err: Error | null): void {
    if (w.done) return
    w.done = true
    w.events = []
    w.rnds = []
    this.#waiting.delete(w.key)
    // Most appends end in the order they were made: drop finished ones from the queue's head now.
    const q = this.#queue
    while (this.#queueHead < q.length && q[this.#queueHead]!.done) this.#queueHead++
    if (this.#queueHead === q.length) {
      this.#queue = []
      this.#queueHead = 0
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > q.length) {
      this.#queue = q.slice(this.#queueHead)
      this.#queueHead = 0
    }
    if (err === null) w.resolve()
    else w.reject(err)
  }

  /** Runs the one timer for the oldest append still waiting (the earliest deadline). */
  #arm(): void {
    if (this.#timer !== null) return
    const q = this.#queue
    while (this.#queueHead < q.length && q[this.#queueHead]!.done) this.#queueHead++
    if (this.#queueHead > 1024 && this.#queueHead * 2 > q.length) {
      this.#queue = q.slice(this.#queueHead)
      this.#queueHead = 0
    }
    const head = this.#queue[this.#queueHead]
    if (head === undefined) {
      this.#queue = []
      this.#queueHead = 0
      return
    }
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, head.deadline - performance.now()))
  }

  /** Fails every append past its deadline, then arms the timer for the next one. */
  #expire(): void {
    this.#timer = null
    const now = performance.now()
    for (;;) {
      // #finish moves the head past finished appends, so the head is the oldest one waiting.
      const w = this.#queue[this.#queueHead]
      if (w === undefined || w.deadline > now) break
      if (w.done) this.#queueHead++
      else this.#finish(w, ackTimeout())
    }
    this.#arm()
  }

  /** What a failed publish means, for the 503 of an append. */
  #whyNotAcked(err: unknown): string {
    const name = err instanceof Error ? err.name : ''
    const msg = err instanceof Error ? err.message : String(err)
    // No server answered the publish at once: the stream has no leader (a JetStream election, or NATS away).
    if (name === 'JetStreamNotEnabled' || (err instanceof Error && (err as Error & { isNoResponders?: () => boolean }).isNoResponders?.() === true)) {
      return 'the event stream has no leader right now (no server took the publish; a JetStream leader election is probably under way)'
    }
    if (name === 'TimeoutError') return `the event stream did not acknowledge the events within ${this.#ackTimeoutMs} ms`
    return `the event stream refused the events (${msg})`
  }

  /** The event at stream sequence `seq`, or undefined when there is none (never stored, or purged). */
  async get(seq: number): Promise<StoredEvent | undefined> {
    if (!Number.isSafeInteger(seq) || seq < 1) return undefined
    const { jsm, names } = this.#h
    let sm
    try {
      sm = await jsm.streams.getMessage(names.stream, { seq })
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.NoMessageFound) return undefined
      throw err
    }
    if (sm === null) return undefined
    return decodeEvent(sm.seq, sm.data, priceRevOf(sm.header))
  }

  /** The stream's last sequence (0 when nothing was ever stored). */
  async lastSeq(): Promise<number> {
    const info = await this.#h.jsm.streams.info(this.#h.names.stream)
    return info.state.last_seq
  }

  /**
   * Where each partition ends: the stream seq of its newest message (0 when it has none), by a
   * last-by-subject get per partition (answered by the stream leader).
   */
  async positions(): Promise<LogPosition[]> {
    const { jsm, names, partitions } = this.#h
    return Promise.all(
      Array.from({ length: partitions }, async (_, partition) => {
        try {
          const sm = await jsm.streams.getMessage(names.stream, { last_by_subj: names.partitionSubject(partition) })
          return { partition, last: sm?.seq ?? 0 }
        } catch (err) {
          if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.NoMessageFound) return { partition, last: 0 }
          throw err
        }
      })
    )
  }

  /** The subject filter for a partition and/or project. */
  filterOf(opts: { partition?: number; project?: string }): string {
    const { names } = this.#h
    if (opts.partition !== undefined && opts.project !== undefined) return names.subject(opts.partition, opts.project)
    if (opts.partition !== undefined) return names.partitionSubject(opts.partition)
    if (opts.project !== undefined) return `${names.name}.ev.*.${opts.project}`
    return names.allEvents
  }

  /**
   * Every stored event with `from <= seq <= to` (`to` defaults to the stream's last seq when the
   * read starts), filtered by partition and/or project, in seq order, in batches of up to
   * {@link READ_BATCH}. Bounded: it ends at `to` or at the last matching event, whichever comes
   * first; it fails (rather than hang) when its consumer cannot be made, or a batch does not
   * arrive, within {@link READ_IDLE_TIMEOUT_MS}.
   */
  async *read(from: number, opts: ReadOptions = {}): AsyncIterable<StoredEvent[]> {
    const { js, names } = this.#h
    const to = opts.to ?? (await this.lastSeq())
    const start = Math.max(1, from)
    if (start > to) return
    // Making the consumer can time out for a while after a NATS server died (the meta leader
    // may place it on the dead server until it notices): retry until the idle timeout.
    const deadline = Date.now() + READ_IDLE_TIMEOUT_MS
    let consumer: Consumer
    for (;;) {
      try {
        consumer = await js.consumers.get(names.stream, {
          filter_subjects: this.filterOf(opts),
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: start,
          inactive_threshold: 60_000
        })
        break
      } catch (err) {
        if (Date.now() >= deadline || (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err
        await new Promise((r) => setTimeout(r, 250))
      }
    }
    try {
      // Each fetch asks for at most what is pending (exact for the filter), so it completes as
      // soon as those arrive instead of waiting for its expiry; pending only grows meanwhile.
      let pending = (await consumer.info(true)).num_pending
      while (pending > 0) {
        const want = Math.min(READ_BATCH, pending)
        const messages = await consumer.fetch({ max_messages: want, expires: READ_IDLE_TIMEOUT_MS })
        const batch: StoredEvent[] = []
        let done = false
        let got = 0
        for await (const m of messages) {
          got++
          pending = m.info.pending
          if (m.seq > to) {
            done = true
            continue
          }
          batch.push(decodeEvent(m.seq, m.data, priceRevOf(m.headers)))
          if (m.seq === to) done = true
        }
        if (got < want) throw new Error(`reading the event stream from seq ${start}: ${want - got} of ${want} events did not arrive within ${READ_IDLE_TIMEOUT_MS / 1000} s`)
        if (batch.length > 0) yield batch
        if (done) return
      }
    } finally {
      consumer.delete().catch(() => {})
    }
  }

  /**
   * Removes every event of `project` from the stream (a purge filtered by subject
   * `${name}.ev.*.${project}`; positions never move). Returns how many were removed.
   */
  async purgeProject(project: string): Promise<number> {
    const { jsm, names } = this.#h
    const r = await jsm.streams.purge(names.stream, { filter: this.filterOf({ project }) })
    return r.purged
  }
}

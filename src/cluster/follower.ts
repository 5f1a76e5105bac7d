/**
 * A live reader of one partition of the event stream (`${name}.ev.<N>.>`): hands every event,
 * in stream order and in batches, to `onEvents`, from a given seq on, for as long as it runs.
 *
 * One loop, every step of it bounded in time:
 * - it makes a consumer of its own (ephemeral, R1, in memory, no acks) filtered on the partition,
 *   starting at the seq after the last one it received, and pulls from it with `fetch` (a batch,
 *   short expiry). A fetch that ends normally is followed by the next one on the same consumer.
 * - anything odd makes a new consumer from the next seq: a fetch that fails (missed heartbeats,
 *   no responders, consumer deleted, leadership change), a fetch that does not end well after its
 *   expiry (a watchdog closes it: the client may wait forever for a consumer whose server died),
 *   a gap in the consumer's delivery sequence (a message lost on the way), or a fetch that got
 *   nothing while the stream holds a message of the partition it should have delivered (asked of
 *   the stream leader after each empty fetch), or the connection dropping or coming back (messages
 *   in flight meanwhile are lost to a consumer without acks). It never relies on the client's own
 *   recovery.
 * - while no consumer can be made (the meta leader is being elected, or places the consumer on a
 *   server that has just died), it reads the partition message by message with "next by subject"
 *   gets from the stream leader, so it keeps moving as long as the stream answers; then it tries
 *   the consumer again (bounded backoff).
 * Every message at or below the last seq received is dropped, so nothing is handed over twice.
 *
 * `caughtUp(upTo)` is exact: the follower has handed over every event of the partition with
 * seq ≤ upTo when `processedThrough >= upTo`, or when the stream's next message of the partition
 * after `processedThrough` (a JetStream "next by subject" get, answered by the stream leader)
 * is past upTo or absent. It rejects with LLMS_ERR_UNAVAILABLE (503): a query waits for a
 * partition that is not there yet, never an internal error.
 */
import { nanoid } from 'nanoid'
import { AckPolicy, DeliverPolicy, JetStreamApiCodes, JetStreamApiError, type ConsumerInfo, type ConsumerMessages, type JsMsg, type StoredMsg } from '@nats-io/jetstream'
import { llmsError } from '../errors.js'
import type { StoredEvent } from '../events.js'
import type { Log } from '../log.js'
import { decodeEvent, priceRevOf } from './js-log.js'
import type { NatsHandles } from './nats.js'

/** Messages asked for per fetch. */
const PULL_BATCH = 1000
/** A fetch waits this long for messages (the server heartbeats every half of it; two missed end it). */
const FETCH_EXPIRES_MS = 2_000
/** A fetch not ended this long after its expiry is closed and the consumer made anew. */
const FETCH_GRACE_MS = 2_000
/** How long one get from the stream may take. */
const REQUEST_TIMEOUT_MS = 3_000
/**
 * How long making a consumer may take: short, then longer after each two failures (to the cap).
 * After a server is killed, nats-server 2.9's meta leader goes on placing some new R1 consumers on
 * it for a minute or more (measured: about one create in three never answers, the others answer
 * in a few ms): waiting long for such a create only delays the next one, which likely lands on a
 * live server.
 */
const CREATE_TIMEOUT_MS = 1_000
const CREATE_TIMEOUT_MAX_MS = 5_000
/** An abandoned consumer (its follower gone or moved to a new one) is removed by the server after this. */
const INACTIVE_MS = 30_000
/** Backoff between attempts to make a consumer: from the first to the cap. */
const BACKOFF_MIN_MS = 100
const BACKOFF_MAX_MS = 1_000
/** While no consumer can be made: messages read by get per round, between attempts. */
const GET_ROUND = 200
/** A caughtUp that waits re-asks the stream at least this often (in case a message was purged meanwhile). */
const RECHECK_MS = 1_000

export interface PartitionFollowerOptions {
  partition: number
  /** The first stream seq to hand over (events before it are not delivered). */
  from: number
  /** Receives events in stream order, in batches; synchronous. */
  onEvents: (events: StoredEvent[]) => void
  /** Asked before each fetch: a promise to wait for before fetching more (the receiver is behind), or null. */
  backpressure?: () => Promise<void> | null
  log: Log
}

interface Waiter {
  /** Wake when processedThrough reaches this. */
  at: number
  wake: () => void
}

/** Why a fetch round ended. */
type FetchEnd = 'ok' | 'empty' | 'broken'

export class PartitionFollower {
  readonly #h: NatsHandles
  readonly #partition: number
  readonly #onEvents: (events: StoredEvent[]) => void
  readonly #backpressure: (() => Promise<void> | null) | undefined
  readonly #log: Log
  /** Last stream seq handed to onEvents. */
  #processed: number
  /** Last stream seq received (handed over or in #buffer). */
  #received: number
  /** No message of this partition lies in (#processed, #clearThrough]. */
  #clearThrough: number
  #buffer: StoredEvent[] = []
  #flushScheduled = false
  /** Messages of the partition the consumer had not delivered yet, as of its last word. */
  #pending = 0
  /** Highest stream seq this follower has heard of (messages, gets, caughtUp's upTo). */
  #streamLast = 0
  /** A consumer is delivering (false before the first one, and from a failure until the next one works). */
  #live = false
  #consumer: string | null = null
  #fetch: ConsumerMessages | null = null
  #loop: Promise<void> | null = null
  #stopped = false
  #reopens = 0
  #sleepWake: (() => void) | null = null
  /** Consecutive failures to make a consumer. */
  #createFailures = 0
  /** The current fetch must end as broken (the connection dropped or came back meanwhile). */
  #fetchBroken = false
  #status: (AsyncIterable<unknown> & { stop?: () => void }) | null = null
  #waiters = new Set<Waiter>()
  /** Messages caughtUp took by get while the consumer stalled. */
  #takenByGet = 0

  constructor(h: NatsHandles, opts: PartitionFollowerOptions) {
    this.#h = h
    this.#partition = opts.partition
    this.#onEvents = opts.onEvents
    this.#backpressure = opts.backpressure
    this.#log = opts.log
    const from = Math.max(1, Math.floor(opts.from))
    this.#processed = from - 1
    this.#received = from - 1
    this.#clearThrough = from - 1
  }

  /** The partition followed. */
  get partition(): number {
    return this.#partition
  }

  /** The last stream seq handed to onEvents (from - 1 before any). */
  get processedThrough(): number {
    return this.#processed
  }

  /**
   * Messages of the partition not handed over yet. Exact while a consumer delivers (its pending
   * count plus what waits for the next batch); while none does, an upper bound — the stream seqs
   * past the last handed over that this follower heard of, at least 1 — unless the stream said
   * nothing of the partition lies past it.
   */
  get lag(): number {
    const exact = this.#pending + this.#buffer.length
    if (this.#live || this.#clearThrough >= this.#streamLast) return exact
    return Math.max(exact, this.#streamLast - this.#processed, 1)
  }

  /** How many times a consumer was made anew after the first one. */
  get reopens(): number {
    return this.#reopens
  }

  /** Messages a waiting caughtUp took by get because the consumer had stalled. */
  get takenByGet(): number {
    return this.#takenByGet
  }

  /**
   * Starts following. Resolves once the first consumer exists; when it cannot be made yet (a
   * JetStream election), resolves anyway and keeps trying in the background. Rejects only when
   * the stream does not exist.
   */
  async start(): Promise<void> {
    if (this.#loop !== null || this.#stopped) return
    this.#watchConnection()
    let first: ConsumerInfo | null = null
    try {
      first = await this.#create()
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) throw err
      this.#log.warn({ partition: this.#partition, err: errMessage(err) }, 'cluster: cannot open the partition consumer yet; retrying')
    }
    this.#loop = this.#run(first).catch((err: unknown) => {
      this.#log.error({ partition: this.#partition, err: errMessage(err) }, 'cluster: partition follower loop failed')
    })
  }

  /** A dropped or restored connection ends the current fetch (its consumer may have sent messages into the void). */
  #watchConnection(): void {
    const status = this.#h.nc.status() as AsyncIterable<{ type: string }> & { stop?: () => void }
    this.#status = status
    void (async () => {
      for await (const s of status) {
        if (this.#stopped) return
        if ((s.type === 'disconnect' || s.type === 'reconnect') && this.#fetch !== null) {
          this.#fetchBroken = true
          this.#fetch.stop()
        }
      }
    })().catch(() => {})
  }

  /** Makes a consumer from the next seq; its name is kept so it can be deleted. */
  async #create(): Promise<ConsumerInfo> {
    const { jsm, names } = this.#h
    const name = `llms_p${this.#partition}_${nanoid(10).replace(/[^A-Za-z0-9]/g, 'x')}`
    const timeout = Math.min(CREATE_TIMEOUT_MAX_MS, CREATE_TIMEOUT_MS * (1 + Math.floor(this.#createFailures / 2)))
    let ci: ConsumerInfo
    try {
      ci = await within(
        jsm.consumers.add(names.stream, {
          name,
          filter_subject: names.partitionSubject(this.#partition),
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: this.#received + 1,
          ack_policy: AckPolicy.None,
          mem_storage: true,
          num_replicas: 1,
          inactive_threshold: INACTIVE_MS * 1_000_000
        }),
        timeout,
        'making the partition consumer'
      )
    } catch (err) {
      this.#createFailures++
      throw err
    }
    this.#createFailures = 0
    if (this.#stopped) {
      this.#deleteConsumer(ci.name)
      throw new Error('stopped')
    }
    this.#consumer = ci.name
    this.#pending = ci.num_pending
    return ci
  }

  /** Deletes a consumer in the background (the server removes it anyway once inactive). */
  #deleteConsumer(name: string | null): void {
    if (name === null || this.#h.nc.isClosed()) return
    this.#h.jsm.consumers.delete(this.#h.names.stream, name).catch(() => {})
  }

  async #run(first: ConsumerInfo | null): Promise<void> {
    let ci = first
    let failures = 0
    while (!this.#stopped) {
      if (ci === null) {
        // Between consumers: nothing delivers.
        this.#live = false
        if (this.#h.nc.isClosed()) return
        try {
          ci = await this.#create()
          this.#reopens++
          failures = 0
        } catch (err) {
          if (this.#stopped) return
          failures++
          if (failures === 1 || failures % 10 === 0) this.#log.warn({ partition: this.#partition, attempt: failures, err: errMessage(err) }, 'cluster: cannot open the partition consumer yet')
          // Keep moving while the consumer cannot be made: read from the stream leader directly.
          await this.#readByGet()
          await this.#sleep(Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (failures - 1)))
          continue
        }
      }
      // The receiver behind (a long tail after a restart): let it catch up before fetching more.
      const behind = this.#backpressure?.() ?? null
      if (behind !== null) {
        await behind.catch(() => {})
        if (this.#stopped) return
      }
      const end = await this.#fetchRound(ci)
      if (this.#stopped) return
      if (end === 'ok') continue
      if (end === 'empty' && !(await this.#missedSome())) continue
      // Broken, or a consumer that did not deliver what the stream holds: a new one from the next seq.
      this.#live = false
      this.#deleteConsumer(ci.name)
      if (this.#consumer === ci.name) this.#consumer = null
      ci = null
    }
  }

  /**
   * One fetch on consumer `ci`: 'ok' when it ended normally with messages, 'empty' when it ended
   * normally with none, 'broken' when it failed, ran past its watchdog or showed a delivery gap.
   */
  async #fetchRound(ci: ConsumerInfo): Promise<FetchEnd> {
    let messages: ConsumerMessages
    try {
      messages = await this.#h.js.consumers.getConsumerFromInfo(ci).fetch({ max_messages: PULL_BATCH, expires: FETCH_EXPIRES_MS })
    } catch (err) {
      this.#log.warn({ partition: this.#partition, err: errMessage(err) }, 'cluster: partition fetch could not start; making a new consumer')
      return 'broken'
    }
    this.#fetch = messages
    this.#fetchBroken = false
    let timedOut = false
    const watchdog = setTimeout(() => {
      timedOut = true
      messages.stop()
    }, FETCH_EXPIRES_MS + FETCH_GRACE_MS)
    let got = 0
    let broken = false
    try {
      for await (const m of messages) {
        if (this.#stopped) break
        // Delivery sequences of a consumer run 1, 2, 3…: a jump means a message was lost on the way.
        const dseq = m.info.deliverySequence
        const expected = ci.delivered.consumer_seq + 1
        if (dseq !== expected) {
          this.#log.warn({ partition: this.#partition, expected, got: dseq }, 'cluster: partition consumer skipped a delivery; making a new one')
          broken = true
          messages.stop()
          break
        }
        ci.delivered.consumer_seq = dseq
        this.#live = true
        got++
        this.#pending = m.info.pending
        this.#accept(m.seq, m.data, priceRevOf(m.headers))
      }
    } catch (err) {
      if (!this.#stopped) this.#log.warn({ partition: this.#partition, err: errMessage(err) }, 'cluster: partition consumer failed; making a new one')
      broken = true
    } finally {
      clearTimeout(watchdog)
      if (this.#fetch === messages) this.#fetch = null
    }
    if (this.#fetchBroken && !this.#stopped) {
      this.#log.warn({ partition: this.#partition }, 'cluster: the NATS connection dropped or came back during a fetch; making a new consumer')
      broken = true
    }
    if (timedOut && !this.#stopped) {
      this.#log.warn({ partition: this.#partition, ms: FETCH_EXPIRES_MS + FETCH_GRACE_MS }, 'cluster: partition fetch did not end after its expiry; making a new consumer')
      broken = true
    }
    if (broken) return 'broken'
    if (got === 0) return 'empty'
    return 'ok'
  }

  /**
   * After a fetch that got nothing: true when the stream holds a message of the partition past
   * the last one received (the consumer should have delivered it; one published in the instant
   * since is rare and costs only a new consumer). A stream that does not answer: false (the next
   * fetch tells).
   */
  async #missedSome(): Promise<boolean> {
    const after = this.#received
    let next: StoredMsg | null
    try {
      next = await this.#nextAfter(after)
    } catch {
      return false
    }
    if (next === null) {
      this.#live = true
      this.#clearThrough = Math.max(this.#clearThrough, after)
      return false
    }
    this.#streamLast = Math.max(this.#streamLast, next.seq)
    this.#log.warn({ partition: this.#partition, after, next: next.seq }, 'cluster: partition consumer delivered nothing though the stream holds more; making a new one')
    return true
  }

  /** The stream's first message of the partition with seq > `after`, or null (asked of the stream leader). */
  async #nextAfter(after: number, timeoutMs = REQUEST_TIMEOUT_MS): Promise<StoredMsg | null> {
    const { jsm, names } = this.#h
    try {
      return await within(
        jsm.streams.getMessage(names.stream, { seq: after + 1, next_by_subj: names.partitionSubject(this.#partition) } as unknown as { seq: number }),
        timeoutMs,
        'a get from the event stream'
      )
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.NoMessageFound) return null
      throw err
    }
  }

  /** Reads up to GET_ROUND messages of the partition by next-by-subject gets, in order; stops at the first failure. */
  async #readByGet(): Promise<void> {
    for (let i = 0; i < GET_ROUND && !this.#stopped; i++) {
      const after = this.#received
      let next: StoredMsg | null
      try {
        // Short: between attempts to make a consumer, which matter more.
        next = await this.#nextAfter(after, CREATE_TIMEOUT_MS)
      } catch {
        return
      }
      if (this.#stopped || this.#received !== after) return
      if (next === null) {
        this.#clearThrough = Math.max(this.#clearThrough, after)
        return
      }
      this.#streamLast = Math.max(this.#streamLast, next.seq)
      this.#accept(next.seq, next.data, priceRevOf(next.header))
    }
  }

  /** Queues the message at stream seq `seq` for the next batch (dropped when already received). */
  #accept(seq: number, data: Uint8Array, priceRev: number): void {
    if (this.#stopped) return
    // Received already (from an earlier consumer, or by get).
    if (seq <= this.#received) return
    this.#received = seq
    this.#streamLast = Math.max(this.#streamLast, seq)
    let e: StoredEvent
    try {
      e = decodeEvent(seq, data, priceRev)
    } catch (err) {
      // Never misread: log and leave it out (positions stay; it is counted as handled).
      this.#log.error({ partition: this.#partition, seq, err: errMessage(err) }, 'cluster: an event message cannot be read; skipped')
      this.#scheduleFlush()
      return
    }
    this.#buffer.push(e)
    this.#scheduleFlush()
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    // Everything that arrived in the same turn(s) goes over as one batch.
    setImmediate(() => this.#flush())
  }

  #flush(): void {
    this.#flushScheduled = false
    if (this.#stopped) return
    const events = this.#buffer
    this.#buffer = []
    this.#processed = this.#received
    if (events.length > 0) {
      try {
        this.#onEvents(events)
      } catch (err) {
        this.#log.error({ partition: this.#partition, err: errMessage(err) }, 'cluster: onEvents threw')
      }
    }
    for (const w of this.#waiters) if (this.#processed >= w.at) w.wake()
  }

  /** Waits `ms`, or less when the follower stops. */
  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms)
      const self = this
      function done() {
        clearTimeout(timer)
        if (self.#sleepWake === done) self.#sleepWake = null
        resolve()
      }
      this.#sleepWake = done
    })
  }

  /**
   * Resolves once every message of this partition with seq ≤ `upTo` has been handed to onEvents;
   * rejects with LLMS_ERR_UNAVAILABLE after `timeoutMs` (or at once when stopped). `upTo` is a
   * seq the stream already holds (the stream's last seq read before the call, as a query
   * coordinator does).
   */
  async caughtUp(upTo: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    this.#streamLast = Math.max(this.#streamLast, upTo)
    let lastErr: unknown
    // Messages this call may take by get once the consumer stalls (then it is a backlog, not a stall).
    let byGet = 0
    let stalled = false
    for (;;) {
      if (this.#stopped) throw llmsError('LLMS_ERR_UNAVAILABLE', `partition ${this.#partition}: the follower is stopped (the partition is being handed over)`, { retryAfter: 1 })
      const through = Math.max(this.#processed, this.#clearThrough)
      if (through >= upTo) return
      const left = deadline - Date.now()
      if (left <= 0) break
      let waitFor = this.#processed + 1
      try {
        const after = this.#processed
        const next = await within(this.#nextAfter(after), left, 'a get from the event stream')
        if (next === null || next.seq > upTo) {
          // Nothing of this partition in (after, upTo] (or in (after, next.seq)).
          this.#clearThrough = Math.max(this.#clearThrough, next === null ? upTo : next.seq - 1)
          continue
        }
        this.#clearThrough = Math.max(this.#clearThrough, next.seq - 1)
        waitFor = next.seq
        // The consumer handed nothing over for a recheck period while the stream holds the next
        // message (a fetch that hangs past its expiry, measured up to 4 s under load before its
        // watchdog ends it): take the message as the get brought it, in order, rather than let
        // the query wait out its timeout. The consumer's own copy is dropped as received already.
        if (stalled && byGet < GET_ROUND && this.#received === after && !this.#stopped) {
          byGet++
          this.#accept(next.seq, next.data, priceRevOf(next.header))
          this.#takenByGet++
        }
      } catch (err) {
        lastErr = err
      }
      const before = this.#processed
      await this.#waitProgress(waitFor, Math.min(RECHECK_MS, Math.max(0, deadline - Date.now())))
      if (this.#processed === before && this.#received === before) stalled = true
    }
    const why = lastErr instanceof Error ? `; last error: ${lastErr.message}` : ''
    const state = this.#live ? `${this.lag} behind` : 'no consumer delivering right now'
    throw llmsError('LLMS_ERR_UNAVAILABLE', `partition ${this.#partition}: not caught up to seq ${upTo} within ${timeoutMs} ms (handed over through ${this.#processed}, ${state}${why})`, { retryAfter: 1 })
  }

  /** Resolves when processedThrough reaches `at`, after `ms`, or when the follower stops. */
  #waitProgress(at: number, ms: number): Promise<void> {
    if (this.#processed >= at || this.#stopped) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const w: Waiter = {
        at,
        wake: () => {
          clearTimeout(timer)
          this.#waiters.delete(w)
          resolve()
        }
      }
      const timer = setTimeout(w.wake, ms)
      this.#waiters.add(w)
    })
  }

  /** Stops reading and deletes the consumer (in the background); pending caughtUp calls reject. Safe twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    this.#live = false
    for (const w of [...this.#waiters]) w.wake()
    this.#sleepWake?.()
    this.#buffer = []
    this.#fetch?.stop()
    this.#fetch = null
    this.#status?.stop?.()
    this.#deleteConsumer(this.#consumer)
    this.#consumer = null
    // Every step of the loop is bounded; it ends at its next check, handing nothing more over.
    if (this.#loop !== null) await within(this.#loop, REQUEST_TIMEOUT_MS, 'the follower loop').catch(() => {})
  }
}

const errMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err))

/** `p`, or a rejection after `ms` naming `what`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
    })
  ]).finally(() => clearTimeout(timer))
}

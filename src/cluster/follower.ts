/**
 * A live reader of one partition of the event stream (`${name}.ev.<N>.>`): hands every event,
 * in stream order and in batches, to `onEvents`, from a given seq on, for as long as it runs.
 *
 * It reads with an ordered consumer (ephemeral, R1, in memory, no acks): the client tracks the
 * last stream seq it received and, when the consumer is lost — a gap in delivery, missed
 * heartbeats, a reconnect, the stream leader killed — makes a new one from the next seq. On top
 * of that this class drops any message at or below the last seq it handed over (so a repeat is
 * never seen twice) and, if the consume ends with an error, opens a new consumer from
 * `processedThrough + 1` (so nothing is lost).
 *
 * `caughtUp(upTo)` is exact: the follower has handed over every event of the partition with
 * seq ≤ upTo when `processedThrough >= upTo`, or when the stream's next message of the partition
 * after `processedThrough` (a JetStream "next by subject" get, answered by the stream leader)
 * is past upTo or absent.
 */
import { DeliverPolicy, type Consumer, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream'
import type { StoredEvent } from '../events.js'
import type { Log } from '../log.js'
import { decodeEvent } from './js-log.js'
import type { NatsHandles } from './nats.js'

/** Messages asked for per pull. */
const PULL_BATCH = 1000
/** A pull waits this long for messages; the server heartbeats every half of it, so a lost consumer is noticed after about this long. */
const PULL_EXPIRES_MS = 5_000
/** A caughtUp that waits re-asks the stream at least this often (in case a message was purged meanwhile). */
const RECHECK_MS = 1_000

export interface PartitionFollowerOptions {
  partition: number
  /** The first stream seq to hand over (events before it are not delivered). */
  from: number
  /** Receives events in stream order, in batches; synchronous. */
  onEvents: (events: StoredEvent[]) => void
  log: Log
}

interface Waiter {
  /** Wake when processedThrough reaches this. */
  at: number
  wake: () => void
}

export class PartitionFollower {
  readonly #h: NatsHandles
  readonly #partition: number
  readonly #onEvents: (events: StoredEvent[]) => void
  readonly #log: Log
  /** Last stream seq handed to onEvents. */
  #processed: number
  /** Last stream seq received (handed over or in #buffer). */
  #received: number
  /** No message of this partition lies in (#processed, #clearThrough]. */
  #clearThrough: number
  #buffer: StoredEvent[] = []
  #flushScheduled = false
  /** Messages of the partition the server had not delivered yet, as of the last message or consumer info. */
  #serverPending = 0
  #consumer: Consumer | null = null
  #messages: ConsumerMessages | null = null
  #started = false
  #stopped = false
  #reopens = 0
  #gen = 0
  #waiters = new Set<Waiter>()
  #stopWaiters = new Set<(err: Error) => void>()

  constructor(h: NatsHandles, opts: PartitionFollowerOptions) {
    this.#h = h
    this.#partition = opts.partition
    this.#onEvents = opts.onEvents
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

  /** Messages of the partition not handed over yet (as of the newest word from the server). */
  get lag(): number {
    return this.#serverPending + this.#buffer.length
  }

  /** How many times the consumer was opened again after it ended with an error. */
  get reopens(): number {
    return this.#reopens
  }

  /** Opens the consumer; resolves once it exists (events then arrive on their own). */
  async start(): Promise<void> {
    if (this.#started) return
    this.#started = true
    await this.#open()
  }

  async #open(): Promise<void> {
    const { js, names } = this.#h
    const consumer = await js.consumers.get(names.stream, {
      filter_subjects: names.partitionSubject(this.#partition),
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: this.#received + 1
    })
    if (this.#stopped) {
      consumer.delete().catch(() => {})
      return
    }
    this.#consumer = consumer
    this.#serverPending = (await consumer.info(true)).num_pending
    // Messages of a consumer this follower has given up on are ignored (generation check).
    const gen = ++this.#gen
    const messages = await consumer.consume({
      max_messages: PULL_BATCH,
      expires: PULL_EXPIRES_MS,
      callback: (m) => {
        if (gen === this.#gen) this.#onMessage(m)
      }
    })
    this.#messages = messages
    void messages.closed().then((err) => {
      if (this.#stopped || this.#messages !== messages) return
      this.#log.warn({ partition: this.#partition, err: err instanceof Error ? err.message : err }, 'cluster: partition consumer ended; opening it again')
      this.#abandon(messages)
    })
    // The client's ordered consumer waits forever for the info of a consumer whose server died
    // (an R1 consumer on the killed stream leader): missed heartbeats → a new consumer here.
    void (async () => {
      for await (const s of messages.status()) {
        if (s.type === 'heartbeats_missed' && this.#messages === messages && !this.#stopped) {
          this.#log.warn({ partition: this.#partition, missed: s.count }, 'cluster: partition consumer missed heartbeats; opening a new one')
          this.#abandon(messages)
          return
        }
      }
    })().catch(() => {})
  }

  /** Drops `messages` (and its consumer) and opens a new consumer from the next seq. */
  #abandon(messages: ConsumerMessages): void {
    if (this.#messages === messages) this.#messages = null
    this.#gen++
    void messages.close().catch(() => {})
    this.#reopen()
  }

  /** Opens a new consumer from the next seq, retrying with backoff until it works or the follower stops. */
  #reopen(attempt = 0): void {
    if (this.#stopped || this.#h.nc.isClosed()) return
    this.#reopens++
    const delay = Math.min(5_000, 250 * 2 ** attempt)
    setTimeout(() => {
      if (this.#stopped) return
      this.#consumer?.delete().catch(() => {})
      this.#open().catch((err: unknown) => {
        this.#log.warn({ partition: this.#partition, err: err instanceof Error ? err.message : String(err) }, 'cluster: cannot open the partition consumer yet')
        this.#reopen(attempt + 1)
      })
    }, delay).unref()
  }

  #onMessage(m: JsMsg): void {
    if (this.#stopped) return
    const seq = m.seq
    this.#serverPending = m.info.pending
    // A message received again after the consumer was made anew: already queued or handed over.
    if (seq <= this.#received) return
    this.#received = seq
    let e: StoredEvent
    try {
      e = decodeEvent(seq, m.data)
    } catch (err) {
      // Never misread: log and leave it out (positions stay; it is counted as handled).
      this.#log.error({ partition: this.#partition, seq, err: err instanceof Error ? err.message : String(err) }, 'cluster: an event message cannot be read; skipped')
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
        this.#log.error({ partition: this.#partition, err: err instanceof Error ? err.message : String(err) }, 'cluster: onEvents threw')
      }
    }
    for (const w of this.#waiters) if (this.#processed >= w.at) w.wake()
  }

  /**
   * Resolves once every message of this partition with seq ≤ `upTo` has been handed to onEvents;
   * rejects after `timeoutMs`. `upTo` is a seq the stream already holds (the stream's last seq
   * read before the call, as a query coordinator does).
   */
  async caughtUp(upTo: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    const { jsm, names } = this.#h
    let lastErr: unknown
    for (;;) {
      if (this.#stopped) throw new Error(`partition ${this.#partition}: the follower is stopped`)
      const through = Math.max(this.#processed, this.#clearThrough)
      if (through >= upTo) return
      const left = deadline - Date.now()
      if (left <= 0) break
      let waitFor = this.#processed + 1
      try {
        const after = this.#processed
        const next = await within(
          jsm.streams.getMessage(names.stream, { seq: after + 1, next_by_subj: names.partitionSubject(this.#partition) } as unknown as { seq: number }),
          left
        )
        if (next === null || next.seq > upTo) {
          // Nothing of this partition in (after, upTo] (or in (after, next.seq)).
          this.#clearThrough = Math.max(this.#clearThrough, next === null ? upTo : next.seq - 1)
          continue
        }
        this.#clearThrough = Math.max(this.#clearThrough, next.seq - 1)
        waitFor = next.seq
      } catch (err) {
        lastErr = err
      }
      await this.#waitProgress(waitFor, Math.min(RECHECK_MS, Math.max(0, deadline - Date.now())))
    }
    const why = lastErr instanceof Error ? ` (last error: ${lastErr.message})` : ''
    throw new Error(`partition ${this.#partition}: not caught up to seq ${upTo} within ${timeoutMs} ms (handed over through ${this.#processed}, ${this.lag} behind)${why}`)
  }

  /** Resolves when processedThrough reaches `at`, after `ms`, or when the follower stops. */
  #waitProgress(at: number, ms: number): Promise<void> {
    if (this.#processed >= at) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const w: Waiter = {
        at,
        wake: () => {
          clearTimeout(timer)
          this.#waiters.delete(w)
          this.#stopWaiters.delete(onStop)
          resolve()
        }
      }
      const onStop = () => w.wake()
      const timer = setTimeout(w.wake, ms)
      this.#waiters.add(w)
      this.#stopWaiters.add(onStop)
    })
  }

  /** Stops reading and deletes the consumer; pending caughtUp calls reject. Safe twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    for (const s of [...this.#stopWaiters]) s(new Error('stopped'))
    const messages = this.#messages
    this.#messages = null
    this.#buffer = []
    if (messages !== null) await messages.close().catch(() => {})
    if (this.#consumer !== null && !this.#h.nc.isClosed()) await this.#consumer.delete().catch(() => false)
  }
}

/** `p`, or a rejection after `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
    })
  ]).finally(() => clearTimeout(timer))
}

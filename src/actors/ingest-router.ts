/**
 * IngestRouter: the front of the pipeline. For each request's events it checks admission
 * (503 past the high-water mark), appends them to the durable log, and — only once the
 * commit holding them resolves — answers the request and forwards the events downstream.
 *
 * Group commit: `receive()` never awaits the commit; every request handled in one turn of
 * the event loop joins one append — one LMDB put, one commit — and each request is answered
 * when it resolves. "One turn" is the loop's whole poll phase, not one I/O callback: the
 * append runs from `setImmediate`, so the requests of every socket read in that phase share
 * it. (From a microtask it ran once per request: at c=50 single events every append held
 * one event — 1.00 events per commit, counted on COMMIT_CHANNEL — and each paid its own
 * record, put and commit promise.)
 * Events from all commits that resolve in one turn are merged into one micro-batch for the
 * cost stage (one message, not one per request).
 */
import { channel } from 'node:diagnostics_channel'
import { Actor, assertNever, type ActorOptions } from './actor.js'
import { llmsError, type LLMScopeError } from '../errors.js'
import type { EventLog } from '../store/event-log.js'
import type { PendingEvent, StoredEvent } from '../events.js'

export type IngestReply = { ok: true; events: StoredEvent[] } | { ok: false; error: LLMScopeError }

export type RouterMessage = { type: 'ingest'; events: PendingEvent[]; reply: (r: IngestReply) => void }

/** The `node:diagnostics_channel` name on which every resolved log commit is published. */
export const COMMIT_CHANNEL = 'llmscope:ingest:commit'

/**
 * A message on {@link COMMIT_CHANNEL}: the log written (subscribers keep the commits of their
 * own engine: tests run many in one process), the latency from the append to the commit, and
 * the commit's size in events.
 */
export interface CommitMessage {
  readonly log: Pick<EventLog, 'append'>
  readonly ms: number
  readonly events: number
}

/** Published after each commit resolves, as undici publishes its own (`undici:request:*`). */
const commitChannel = channel(COMMIT_CHANNEL)

export interface IngestRouterOptions extends ActorOptions {
  eventLog: Pick<EventLog, 'append'>
  /** Seconds to wait before retrying when the pipeline cannot take `n` more events, else 0. */
  admission: (n: number) => number
  /** Receives committed events in log order, merged per turn. Returns false if it could not take them. */
  forward: (events: StoredEvent[]) => boolean
}

/**
 * The arrays joined in order. Not `Array.prototype.flat()`/`flatMap()`: V8's generic version
 * is far slower than `concat` on arrays of events, and it sat in the batch-ingest profile as
 * the router's hottest line (figures in bench/RESULTS.md, "Micro-benchmark notes"). Spread
 * arguments are bounded, so very many arrays are joined by a loop instead.
 */
export function concatAll<T>(arrays: readonly (readonly T[])[]): T[] {
  if (arrays.length <= 1024) return ([] as T[]).concat(...arrays)
  let n = 0
  for (const a of arrays) n += a.length
  const out: T[] = new Array(n)
  let k = 0
  for (const a of arrays) for (let i = 0; i < a.length; i++) out[k++] = a[i]
  return out
}

/**
 * Events past which a group is appended at once instead of at the end of the poll phase, so a
 * batch of 1000 keeps the append of its own it always had. Without the bound, concurrent
 * batches merged into records of many thousand events, and in a first (noisy, load ~24) A/B
 * batches of 1000 at c=50 went slower; small requests are what grouping is for.
 */
const GROUP_EVENTS = 1000

export class IngestRouter extends Actor<RouterMessage> {
  readonly #opts: IngestRouterOptions
  #committed: StoredEvent[][] = []
  #group: RouterMessage[] = []
  /** An append of the group is queued with setImmediate / as a microtask (a full group). */
  #groupScheduled = false
  #groupNow = false
  /** Events in `#group`. */
  #groupEvents = 0
  #flushScheduled = false
  #commitsInFlight = 0
  #inFlightEvents = 0
  #idleWaiters: Array<() => void> = []
  #flushWaiters: Array<() => void> = []
  #rejectedOverload = 0
  #commitFailures = 0
  #retryTimer: NodeJS.Timeout | null = null
  #stopped = false

  constructor(options: IngestRouterOptions) {
    super('ingest-router', options)
    this.#opts = options
  }

  /** Sends events through the pipeline; resolves with their stored form after the commit, or rejects with a 503. */
  ingest(events: PendingEvent[]): Promise<StoredEvent[]> {
    return new Promise((resolve, reject) => {
      const sent = this.send({
        type: 'ingest',
        events,
        reply: (r) => (r.ok ? resolve(r.events) : reject(r.error))
      })
      if (!sent) {
        reject(this.closed
          ? llmsError('LLMS_ERR_SHUTTING_DOWN', 'the server is shutting down', { retryAfter: 1 })
          : llmsError('LLMS_ERR_OVERLOADED', 'ingestion queue is full, retry later', { retryAfter: 1 }))
      }
    })
  }

  protected receive(message: RouterMessage): void {
    switch (message.type) {
      case 'ingest': {
        const { events, reply } = message
        const wait = this.#opts.admission(events.length)
        if (wait > 0) {
          this.#rejectedOverload += events.length
          reply({ ok: false, error: llmsError('LLMS_ERR_OVERLOADED', 'the pipeline is over its high-water mark, retry later', { retryAfter: wait }) })
          return
        }
        // Every request handled in this turn of the loop joins one append (one put, one commit).
        this.#group.push(message)
        this.#groupEvents += events.length
        this.#inFlightEvents += events.length
        if (this.#groupEvents >= GROUP_EVENTS) {
          // A full group goes at once (a microtask, as receive() must not append re-entrantly):
          // large batches keep one append each, as before.
          if (!this.#groupNow) {
            this.#groupNow = true
            queueMicrotask(this.#appendNow)
          }
        } else if (!this.#groupScheduled) {
          this.#groupScheduled = true
          // setImmediate, not a microtask: after the poll phase, so the requests parsed from
          // every socket read in it join (see the module comment).
          setImmediate(this.#appendLater)
        }
        return
      }
      default:
        assertNever(message.type)
    }
  }

  readonly #appendLater = (): void => {
    this.#groupScheduled = false
    this.#appendGroup()
  }

  readonly #appendNow = (): void => {
    this.#groupNow = false
    this.#appendGroup()
  }

  /** An append of gathered requests is queued (at the end of the poll phase, or at once). */
  get #appendQueued(): boolean {
    return this.#groupScheduled || this.#groupNow
  }

  /** Appends the requests gathered this turn as one log write; answers each after the commit. */
  #appendGroup(): void {
    const group = this.#group
    // A full group went at once, before the end of the poll phase it was also queued for.
    if (group.length === 0) return this.#checkIdle()
    this.#group = []
    this.#groupEvents = 0
    const count = group.reduce((n, m) => n + m.events.length, 0)
    const all = group.length === 1 ? group[0].events : concatAll(group.map((m) => m.events))
    // append() turns the pending objects into stored ones in place: each request's own array
    // now holds its stored events, in log order (a duplicate holds its original's seq and id).
    const t0 = performance.now()
    const appended = this.#opts.eventLog.append(all)
    this.#commitsInFlight++
    appended.committed.then(
      () => {
        const ms = performance.now() - t0
        // `events` holds what was stored; duplicates (DESIGN §7) were answered, not stored, and
        // never go downstream: a group of duplicates only stores nothing.
        if (appended.events.length > 0) {
          this.#committed.push(appended.events)
          this.#scheduleFlush()
        }
        for (const m of group) m.reply({ ok: true, events: m.events as StoredEvent[] })
        // After the replies. A subscriber that throws cannot undo them: diagnostics_channel
        // catches the error and rethrows it on a later tick, as any uncaught exception.
        if (commitChannel.hasSubscribers) commitChannel.publish({ log: this.#opts.eventLog, ms, events: count } satisfies CommitMessage)
      },
      (err: unknown) => {
        this.#commitFailures++
        const error = llmsError('LLMS_ERR_STORAGE', `could not write the event log: ${(err as Error).message}`, { retryAfter: 1 })
        for (const m of group) m.reply({ ok: false, error })
      }
    ).finally(() => {
      this.#commitsInFlight--
      this.#inFlightEvents -= count
      this.#checkIdle()
    })
  }

  /** Events accepted here whose commit has not resolved yet. */
  get inFlightEvents(): number {
    return this.#inFlightEvents
  }

  get routerStats() {
    return { commitsInFlight: this.#commitsInFlight, rejectedOverload: this.#rejectedOverload, commitFailures: this.#commitFailures, waitingForward: this.#committed.length }
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    // setImmediate: let every commit resolved in this turn join the same micro-batch.
    setImmediate(() => this.#flush())
  }

  #flush(): void {
    this.#flushScheduled = false
    if (this.#committed.length === 0) return this.#checkIdle()
    // Commits resolve in put order, so concatenation keeps log order.
    const events = this.#committed.length === 1 ? this.#committed[0] : concatAll(this.#committed)
    if (this.#opts.forward(events)) {
      this.#committed = []
    } else if (!this.#stopped) {
      // Downstream full (should not happen below the high-water mark): keep and retry; never drop.
      this.#committed = [events]
      this.#retryTimer ??= setTimeout(() => {
        this.#retryTimer = null
        this.#flush()
      }, 5)
    }
    this.#checkIdle()
  }

  #checkIdle(): void {
    if (this.#committed.length === 0 && !this.#flushScheduled && this.#flushWaiters.length > 0) {
      const waiters = this.#flushWaiters
      this.#flushWaiters = []
      for (const w of waiters) w()
    }
    if (this.#commitsInFlight === 0 && !this.#appendQueued && this.#committed.length === 0 && !this.#flushScheduled) {
      const waiters = this.#idleWaiters
      this.#idleWaiters = []
      for (const w of waiters) w()
    }
  }

  /** Resolves once every event committed so far was forwarded downstream. */
  flushed(): Promise<void> {
    if (this.#committed.length === 0 && !this.#flushScheduled) return Promise.resolve()
    return new Promise((resolve) => this.#flushWaiters.push(resolve))
  }

  /** Stops accepting, then resolves once every accepted event was committed and forwarded. */
  async quiesce(): Promise<void> {
    await this.close()
    if (this.#commitsInFlight === 0 && !this.#appendQueued && this.#committed.length === 0 && !this.#flushScheduled) return
    await new Promise<void>((resolve) => this.#idleWaiters.push(resolve))
  }

  override async destroy(): Promise<void> {
    this.#stopped = true
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer)
    await super.destroy()
  }
}

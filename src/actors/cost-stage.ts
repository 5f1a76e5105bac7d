/**
 * CostStage: prices committed events in piscina workers, a whole micro-batch per task, and
 * hands the priced events downstream IN LOG ORDER even though tasks finish out of order
 * (a reorder queue: only the head is ever emitted).
 *
 *   router ──batch──► [ chunk | chunk | chunk ]  ordered queue, ≤ maxInFlight tasks running
 *                        │ head done?
 *                        ▼
 *                     emit(priced)  ──► aggregators / alert evaluator / broadcaster
 *
 * Barriers ride the same queue: a barrier waits until everything before it was emitted, then
 * runs (the topology uses this for consistent snapshots and read-your-writes queries).
 * If a worker task fails, that chunk is priced inline on the main thread: the hot path
 * never drops an event because a worker died.
 */
import { Actor, assertNever, type ActorOptions } from './actor.js'
import type { PricedEvent, StoredEvent } from '../events.js'
import { encodeBatch, priceBatch, type PriceBatch, type PriceResult } from '../pricing/batch.js'
import { priceInputOf, type PriceBook } from '../pricing/book.js'

export type CostStageMessage =
  | { type: 'events'; events: StoredEvent[] }
  | { type: 'barrier'; run: () => void | Promise<void> }

/** Prices a batch off the main thread (a PricingPool) — or inline when absent. */
export interface Pricer {
  price(batch: PriceBatch): Promise<PriceResult>
}

export interface CostStageOptions extends ActorOptions {
  /** Events per worker task. */
  chunkSize: number
  /** Tasks running at once (2 × threads keeps workers busy while results travel back). */
  maxInFlight: number
  pricer: Pricer | null
  /**
   * Chunks smaller than this are priced inline even with a pricer (default
   * {@link DEFAULT_INLINE_BELOW}; 0 = always the pricer). A worker task costs its messaging
   * whatever its size, so for small chunks pricing inline takes less main-thread time than
   * handing them to a worker. Pricing is cheap (~0.3 µs/event inline), so the worker saves
   * main-thread time only on large chunks, and every task adds a thread hop (and a later
   * event-loop turn) between the commit and the downstream actors, which is latency on the
   * live stream: under the WebSocket bench's load (10,000 events/s in batches of 50, grouped
   * into chunks of 50–200) the main thread spent ~600 ms in piscina's run/postTask for ~40 ms
   * of pricing in the worker. Figures in bench/RESULTS.md, "Micro-benchmark notes".
   */
  inlineBelow?: number
  /**
   * The price book: each event is priced with the schedule its acceptance revision (and any
   * re-pricing covering it) selects, the same input Engine.price uses (priceInputOf).
   */
  book: PriceBook
  /** Receives priced events in log order. */
  emit: (events: PricedEvent[]) => void
}

/** See {@link CostStageOptions.inlineBelow}. */
export const DEFAULT_INLINE_BELOW = 1024

type Entry =
  | { kind: 'chunk'; events: StoredEvent[]; batch?: PriceBatch; state: 'waiting' | 'running' | 'done'; result?: PriceResult }
  | { kind: 'barrier'; run: () => void | Promise<void>; state: 'waiting' | 'running' | 'done' }

export class CostStage extends Actor<CostStageMessage> {
  readonly #opts: CostStageOptions
  readonly #inlineBelow: number
  readonly #queue: Entry[] = []
  #running = 0
  /** Events in the mailbox (sent, not yet received). */
  #inbox = 0
  #pendingEvents = 0
  #emittedThrough = -1
  #workerFailures = 0
  #pricedEvents = 0
  #draining = false

  constructor(options: CostStageOptions) {
    super('cost-stage', options)
    if (!(options.chunkSize >= 1)) throw new Error('CostStage option chunkSize must be >= 1')
    if (!(options.maxInFlight >= 1)) throw new Error('CostStage option maxInFlight must be >= 1')
    if (options.inlineBelow !== undefined && !(options.inlineBelow >= 0)) throw new Error('CostStage option inlineBelow must be >= 0')
    this.#opts = options
    this.#inlineBelow = options.inlineBelow ?? DEFAULT_INLINE_BELOW
  }

  protected receive(message: CostStageMessage): void {
    switch (message.type) {
      case 'events': {
        const { events } = message
        const size = this.#opts.chunkSize
        let i = 0
        // While every task slot is busy, new events join the last chunk not yet started, so a
        // busy stage sends few large tasks rather than many small ones.
        const last = this.#queue[this.#queue.length - 1]
        if (last !== undefined && last.kind === 'chunk' && last.state === 'waiting' && last.events.length < size) {
          i = Math.min(events.length, size - last.events.length)
          last.events = last.events.concat(i === events.length ? events : events.slice(0, i))
        }
        for (; i < events.length; i += size) {
          const part = i === 0 && events.length <= size ? events : events.slice(i, i + size)
          this.#queue.push({ kind: 'chunk', events: part, state: 'waiting' })
        }
        this.#inbox -= events.length
        this.#pendingEvents += events.length
        break
      }
      case 'barrier':
        this.#queue.push({ kind: 'barrier', run: message.run, state: 'waiting' })
        break
      default:
        assertNever(message)
    }
    this.#pump()
  }

  /**
   * Events count as pending from the moment `send` accepts them, not only once `receive` takes
   * them from the mailbox: a caller sending in a loop that does not yield (the recovery replay)
   * sees what it queued, or it reads the whole log into the mailbox (at 10M events, past the
   * heap limit).
   */
  override send(message: CostStageMessage): boolean {
    if (!super.send(message)) return false
    if (message.type === 'events') this.#inbox += message.events.length
    return true
  }

  /** {@link Actor.destroy}: the mailbox's events are dropped, so no longer pending. */
  override destroy(): Promise<void> {
    this.#inbox = 0
    return super.destroy()
  }

  /** Events sent but not yet emitted downstream (in the mailbox, queued or being priced). */
  get pendingEvents(): number {
    return this.#inbox + this.#pendingEvents
  }

  /** Highest seq emitted downstream (-1 before any). */
  get emittedThrough(): number {
    return this.#emittedThrough
  }

  get costStats() {
    return { pendingEvents: this.pendingEvents, running: this.#running, queued: this.#queue.length, workerFailures: this.#workerFailures, pricedEvents: this.#pricedEvents }
  }

  /** Resolves when nothing is queued or running here. */
  async settled(): Promise<void> {
    await this.idle()
    await new Promise<void>((resolve) => {
      this.#queue.push({ kind: 'barrier', run: resolve, state: 'waiting' })
      this.#pump()
    })
  }

  #pump(): void {
    // Start chunks while there is room. Pricing may run ahead of a barrier: only emission
    // is ordered, and pricing touches no downstream state.
    for (const entry of this.#queue) {
      if (entry.kind !== 'chunk' || entry.state !== 'waiting') continue
      // Small chunks are priced inline at once (they take no task slot); the merging above
      // only applies to chunks waiting for a slot, which are then large enough for a task.
      if (entry.events.length < this.#inlineBelow) this.#start(entry, true)
      else if (this.#running < this.#opts.maxInFlight) this.#start(entry, false)
    }
    this.#drain()
  }

  #start(entry: Extract<Entry, { kind: 'chunk' }>, inline: boolean): void {
    const pricer = this.#opts.pricer
    const book = this.#opts.book
    const batch = encodeBatch(entry.events.map((e) => priceInputOf(e, book)))
    entry.batch = batch
    if (pricer === null || inline) {
      entry.result = priceBatch(batch)
      entry.state = 'done'
      return
    }
    entry.state = 'running'
    this.#running++
    pricer.price(batch).then(
      (result) => {
        entry.result = result
      },
      () => {
        this.#workerFailures++
        entry.result = priceBatch(batch)
      }
    ).finally(() => {
      entry.state = 'done'
      this.#running--
      this.#pump()
    })
  }

  /** Emits finished entries from the head, in order. Re-entrancy safe. */
  #drain(): void {
    if (this.#draining) return
    this.#draining = true
    try {
      while (this.#queue.length > 0) {
        const head = this.#queue[0]
        if (head.kind === 'barrier') {
          if (head.state === 'running') return
          head.state = 'running'
          let out: void | Promise<void>
          try {
            out = head.run()
          } catch {
            out = undefined
          }
          if (out instanceof Promise) {
            out.catch(() => {}).finally(() => {
              head.state = 'done'
              this.#queue.shift()
              this.#pump()
            })
            return
          }
          head.state = 'done'
          this.#queue.shift()
          continue
        }
        if (head.state !== 'done') return
        this.#queue.shift()
        const { events, result } = head
        const priced = events as PricedEvent[]
        for (let i = 0; i < priced.length; i++) {
          priced[i].costNanos = result!.costNanos[i]
          priced[i].unpriced = result!.unpriced[i] === 1
        }
        this.#pendingEvents -= events.length
        this.#pricedEvents += events.length
        this.#emittedThrough = events[events.length - 1].seq
        this.#opts.emit(priced)
      }
    } finally {
      this.#draining = false
    }
  }
}

import { performance } from 'node:perf_hooks'
import { silentLog } from '../log.js'
import type { Log } from '../log.js'
import { Mailbox } from './mailbox.js'

/** A point-in-time view of one actor, for /metrics and the 503 high-water check. */
export interface ActorStats {
  name: string
  /** Messages queued, not counting the one being handled. */
  depth: number
  /** Mailbox capacity: `send()` is refused once `depth` reaches it. */
  capacity: number
  /** Messages whose `receive()` completed. */
  processed: number
  /** Messages whose `receive()` threw or rejected. */
  failed: number
  /** Messages refused by `send()` (mailbox full, actor closing) or dropped by `destroy()`. */
  rejected: number
  /** Highest `depth` seen since the actor was created. */
  maxDepth: number
  /** True while a message is being handled. */
  busy: boolean
}

/** Options every actor accepts. */
export interface ActorOptions {
  /** Mailbox capacity; a positive integer. Default {@link DEFAULT_MAILBOX_CAPACITY}. */
  mailboxCapacity?: number
  /** Where failed messages are reported. Default: silent. */
  log?: Log
}

/** Mailbox capacity when {@link ActorOptions.mailboxCapacity} is not given. */
export const DEFAULT_MAILBOX_CAPACITY = 10_000

/**
 * One drain loop handles at most this many messages, or runs at most
 * {@link DRAIN_BUDGET_MS}, before it yields to the event loop with `setImmediate`.
 * Without it a burst of synchronous messages (or promises that resolve at once,
 * which only hop the microtask queue) would keep I/O, timers and other HTTP
 * requests waiting until the whole mailbox is empty. 1,000 cheap messages take
 * well under a millisecond, so the yield costs little throughput.
 */
export const DRAIN_BUDGET_MESSAGES = 1_000

/**
 * Time half of the drain budget: expensive messages yield sooner than
 * {@link DRAIN_BUDGET_MESSAGES}. Measured with the monotonic `performance.now()`;
 * it decides only *when* the loop yields, never what a message computes, so it does
 * not break the "pass a clock" rule for actor logic.
 */
export const DRAIN_BUDGET_MS = 10

/**
 * Base class of every actor: a bounded mailbox handled one message at a time.
 *
 * Invariants:
 * - `receive()` never runs re-entrantly: a `send()` from inside `receive()` (to this
 *   actor or another) only enqueues; the message is handled by the drain loop later.
 * - Messages are handled in the order `send()` accepted them; an async `receive()` is
 *   awaited before the next message starts.
 * - Every accepted message ends up exactly once in `processed`, `failed` or (when
 *   dropped by `destroy()`) `rejected`. So at any time
 *   `processed + failed + rejected + depth + (busy ? 1 : 0)` equals the number of
 *   `send()` calls.
 * - A failing message never stops the actor (supervision: log, count, carry on).
 *
 * Subclasses own their state and change it only inside `receive()`.
 *
 * @example
 * ```ts
 * type CounterMsg = { type: 'add'; n: number } | { type: 'reset' }
 * class Counter extends Actor<CounterMsg> {
 *   #total = 0
 *   protected receive(msg: CounterMsg): void {
 *     switch (msg.type) {
 *       case 'add': this.#total += msg.n; return
 *       case 'reset': this.#total = 0; return
 *       default: assertNever(msg)
 *     }
 *   }
 * }
 * ```
 */
export abstract class Actor<M extends { type: string }> {
  /** Unique within an {@link ActorSystem}; appears in logs and stats. */
  readonly name: string

  readonly #mailbox: Mailbox<M>
  readonly #log: Log
  #processed = 0
  #failed = 0
  #rejected = 0
  #maxDepth = 0
  /** A message is inside `receive()` (including an awaited async one). */
  #busy = false
  /** A drain loop is queued or running; at most one exists at a time. */
  #draining = false
  /** Set by the first `close()`/`destroy()`; from then on `send()` refuses. */
  #stopped: Promise<void> | undefined
  /** `idle()` callers waiting for the current drain loop to end. */
  #idleWaiters: (() => void)[] = []

  /**
   * @param name - unique name of the actor (used in logs, stats and the system registry).
   * @param options - see {@link ActorOptions}.
   * @throws RangeError `mailboxCapacity must be a positive integer, got <value>`
   */
  constructor(name: string, options: ActorOptions = {}) {
    const capacity = options.mailboxCapacity ?? DEFAULT_MAILBOX_CAPACITY
    // Validate here, not only in Mailbox, so the message names the option the caller set.
    if (!Number.isSafeInteger(capacity) || capacity < 1) {
      throw new RangeError(`mailboxCapacity must be a positive integer, got ${String(capacity)}`)
    }
    this.name = name
    this.#mailbox = new Mailbox<M>(capacity)
    this.#log = options.log ?? silentLog
  }

  /**
   * Enqueue a message. Never throws and never runs `receive()` synchronously.
   * @returns false (counted as `rejected`) when the mailbox is full or the actor is
   *   closing or closed; the caller decides whether to shed load or retry.
   */
  send(message: M): boolean {
    if (this.#stopped !== undefined || !this.#mailbox.push(message)) {
      this.#rejected++
      return false
    }
    if (this.#mailbox.size > this.#maxDepth) this.#maxDepth = this.#mailbox.size
    if (!this.#draining) {
      this.#draining = true
      // A microtask, not a synchronous call: keeps receive() non re-entrant, and a
      // synchronous burst of sends is all queued before the one drain loop starts.
      queueMicrotask(() => {
        void this.#drain()
      })
    }
    return true
  }

  /**
   * Handle one message. May be async: the next message waits for it.
   * A throw or rejection is logged, counted in `failed`, passed to `onFailure`,
   * and the actor carries on with the next message.
   */
  protected abstract receive(message: M): void | Promise<void>

  /**
   * Hook called after a message failed (already logged and counted); default none.
   * If the hook itself throws, that is logged too and the actor carries on.
   */
  protected onFailure?(message: M, err: unknown): void

  /** A fresh snapshot of this actor's counters. */
  get stats(): ActorStats {
    return {
      name: this.name,
      depth: this.#mailbox.size,
      capacity: this.#mailbox.capacity,
      processed: this.#processed,
      failed: this.#failed,
      rejected: this.#rejected,
      maxDepth: this.#maxDepth,
      busy: this.#busy
    }
  }

  /** Messages queued, not counting the one being handled. */
  get depth(): number {
    return this.#mailbox.size
  }

  /**
   * True once `close()` or `destroy()` has been called: `send()` refuses from then on.
   * Await the promise they return to know when the last message is done.
   */
  get closed(): boolean {
    return this.#stopped !== undefined
  }

  /**
   * Resolves when the mailbox is empty and no message is being handled. Messages
   * sent meanwhile (even from inside `receive()`) are waited for as well.
   */
  idle(): Promise<void> {
    if (!this.#draining) return Promise.resolve()
    return new Promise<void>((resolve) => {
      this.#idleWaiters.push(resolve)
    })
  }

  /**
   * Graceful stop: refuse new messages, handle everything already queued, then resolve.
   * Calling it again (or `destroy()` afterwards) returns the same promise.
   */
  close(): Promise<void> {
    this.#stopped ??= this.idle()
    return this.#stopped
  }

  /**
   * Hard stop: refuse new messages, drop what is queued (counted in `rejected`), and
   * resolve once the message in flight, if any, finishes. Safe to call twice, and after
   * `close()` (it then drops what `close()` had yet to handle); returns the same
   * promise as any earlier `close()`/`destroy()`.
   */
  destroy(): Promise<void> {
    this.#rejected += this.#mailbox.size
    this.#mailbox.clear()
    return this.close()
  }

  /**
   * The one drain loop. Invariant: runs only while `#draining` is true, and sets it
   * false (waking `idle()` callers) in the same synchronous step that finds the
   * mailbox empty, so no message is ever left queued without a loop to handle it.
   */
  async #drain(): Promise<void> {
    let handled = 0
    let sliceStart = performance.now()
    for (;;) {
      if (this.#mailbox.isEmpty) break
      const message = this.#mailbox.shift() as M
      this.#busy = true
      try {
        const pending = this.receive(message)
        // Only await real promises: a sync receive() must not pay a microtask hop.
        if (pending !== undefined) await pending
        this.#processed++
      } catch (err) {
        this.#fail(message, err)
      }
      this.#busy = false

      if (++handled >= DRAIN_BUDGET_MESSAGES || performance.now() - sliceStart >= DRAIN_BUDGET_MS) {
        // Only worth yielding if more work is waiting; otherwise just finish.
        if (!this.#mailbox.isEmpty) {
          await new Promise<void>((resolve) => setImmediate(resolve))
        }
        handled = 0
        sliceStart = performance.now()
      }
    }
    this.#draining = false
    const waiters = this.#idleWaiters
    this.#idleWaiters = []
    for (const resolve of waiters) resolve()
  }

  #fail(message: M, err: unknown): void {
    this.#failed++
    this.#log.error({ actor: this.name, type: message.type, err }, 'actor message failed')
    if (this.onFailure === undefined) return
    try {
      this.onFailure(message, err)
    } catch (hookErr) {
      this.#log.error({ actor: this.name, type: message.type, err: hookErr }, 'actor onFailure hook failed')
    }
  }
}

/**
 * Exhaustiveness check for `switch (message.type)` in `receive()`: the call only
 * type-checks when every member of the message union has a case. At run time (a
 * message that slipped past the types) it throws, which the actor counts as a failure.
 */
export function assertNever(x: never): never {
  const type = typeof x === 'object' && x !== null ? (x as { type?: unknown }).type : x
  throw new Error(`unexpected message type: ${String(type)}`)
}

/**
 * PricingPool: piscina worker threads that price whole batches. One task per batch; the
 * result's buffer is moved back to the caller, not cloned.
 *
 * The worker is `worker.ts` next to this file when running from source (tests through tap's
 * TypeScript loader) and `worker.js` once built into dist/: the extension of this very module
 * says which. Workers inherit this process's `execArgv`, so under tap the `--import` that
 * registers the TypeScript loader runs in every worker too (verified on Node 20 and by
 * `test/pricing/pool.test.ts`); the built path needs no loader at all.
 */
import { Piscina } from 'piscina'
import { llmsError } from '../errors.js'
import { batchSize, batchTransferList } from './batch.js'
import type { PriceBatch, PriceResult } from './batch.js'
import { validatePriceOverrides } from './compute-cost.js'
import type { PriceOverrides } from './compute-cost.js'
import type { PricingWorkerData } from './worker.js'

/** Options of {@link PricingPool}. */
export interface PricingPoolOptions {
  /** Worker threads, an integer >= 1; all started at construction and kept. */
  threads: number
  /**
   * @deprecated Checked, then NOT sent to the workers: prices come from the price book, whose
   * schedules (the configuration's override layer included) travel in each batch. A worker
   * applying today's configuration to a call the book prices with genai-prices would price an
   * event accepted under an older configuration differently from the main thread
   * (priceEvent), which is the bug the book fixes (issue 14, new user #1).
   */
  overrides?: PriceOverrides
  /** Batches allowed to wait for a free thread; past it `price()` rejects with LLMS_ERR_OVERLOADED. Default: unbounded. */
  maxQueue?: number
}

/** Options of one {@link PricingPool.price} call. */
export interface PriceCallOptions {
  /**
   * Move the batch's buffer to the worker instead of copying it (saves a copy of ~56 bytes per
   * call). The batch is then unusable here, so leave this off when the caller may price the same
   * batch inline after a worker failure (the cost stage does). Default false.
   */
  transfer?: boolean
}

/** Counters of a {@link PricingPool}. */
export interface PricingPoolStats {
  threads: number
  /** Batches priced. */
  completed: number
  /** Batches whose task failed (worker crash, pool destroyed, overloaded). */
  failed: number
  /** Calls priced, summed over completed batches. */
  events: number
  /** Batches sent and not yet settled (running + queued). */
  inFlight: number
  /** Batches waiting for a free thread. */
  queued: number
  /** Share of time the threads were busy since start, 0–1 (piscina's utilization). */
  utilization: number
}

const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url)

/** Prices batches in worker threads. Close it (drain) or destroy it (drop) when done; both are safe twice. */
export class PricingPool {
  readonly #pool: Piscina
  readonly #threads: number
  readonly #maxQueue: number
  #completed = 0
  #failed = 0
  #events = 0
  #inFlight = 0
  #closing: Promise<void> | null = null
  #destroying: Promise<void> | null = null

  constructor(options: PricingPoolOptions) {
    const { threads, maxQueue = Infinity } = options
    if (!Number.isInteger(threads) || threads < 1) {
      throw new RangeError(`PricingPool option threads must be an integer >= 1, got ${String(threads)}`)
    }
    if (maxQueue !== Infinity && (!Number.isInteger(maxQueue) || maxQueue < 0)) {
      throw new RangeError(`PricingPool option maxQueue must be an integer >= 0, got ${String(maxQueue)}`)
    }
    const workerData: PricingWorkerData = {}
    if (options.overrides !== undefined) validatePriceOverrides(options.overrides, 'PricingPool option overrides')
    this.#threads = threads
    this.#maxQueue = maxQueue
    this.#pool = new Piscina({
      filename: WORKER_URL.href,
      minThreads: threads,
      maxThreads: threads,
      // No piscina maxQueue: price() enforces ours first, with our error code.
      workerData
    })
  }

  /** Prices one batch in a worker. Rejects when closed or when the queue is full. */
  async price(batch: PriceBatch, options: PriceCallOptions = {}): Promise<PriceResult> {
    if (this.#closing !== null || this.#destroying !== null) {
      throw llmsError('LLMS_ERR_SHUTTING_DOWN', 'the pricing pool is closed')
    }
    // In flight = running + waiting; each thread runs one batch, the rest wait. Our count drops
    // a little after piscina's, so this errs on the side of refusing.
    if (this.#inFlight >= this.#threads + this.#maxQueue) {
      this.#failed++
      throw llmsError('LLMS_ERR_OVERLOADED', `the pricing queue is full (${this.#maxQueue} batches)`)
    }
    const n = batchSize(batch)
    this.#inFlight++
    try {
      const transferList = options.transfer === true ? batchTransferList(batch) : undefined
      const result = (await this.#pool.run(batch, { transferList })) as PriceResult
      this.#completed++
      this.#events += n
      return result
    } catch (err) {
      this.#failed++
      throw err
    } finally {
      this.#inFlight--
    }
  }

  get stats(): PricingPoolStats {
    return {
      threads: this.#threads,
      completed: this.#completed,
      failed: this.#failed,
      events: this.#events,
      inFlight: this.#inFlight,
      queued: this.#pool.queueSize,
      utilization: this.#pool.utilization
    }
  }

  /** Stops taking batches, lets queued and running ones finish, stops the threads. Safe twice. */
  close(): Promise<void> {
    if (this.#destroying !== null) return this.#destroying
    this.#closing ??= this.#pool.close()
    return this.#closing
  }

  /** Stops the threads now; pending batches reject. Safe twice, and after close(). */
  destroy(): Promise<void> {
    this.#destroying ??= this.#pool.destroy()
    return this.#destroying
  }
}

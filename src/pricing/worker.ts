/**
 * Piscina worker entry: prices one whole batch per task (a task per event would cost more in
 * messaging than the arithmetic). The price book's rates travel IN the batch (its distinct
 * schedules, one index per call), so a worker holds no book and needs no update when prices
 * change: a batch prices the same here as inline. Transitional config overrides (callers
 * without a book) arrive once, in `workerData`. The result's single buffer is moved back.
 */
import { move, transferableSymbol, valueSymbol, workerData } from 'piscina'
import { priceBatch, resultTransferList } from './batch.js'
import type { PriceBatch, PriceResult } from './batch.js'
import type { PriceOverrides } from './compute-cost.js'

/** What {@link PricingPool} passes as piscina `workerData`. */
export interface PricingWorkerData {
  /** Transitional: applied only to calls without a schedule (callers not yet passing the book). */
  overrides?: PriceOverrides
}

const overrides = (workerData as PricingWorkerData | undefined)?.overrides

/** Prices `batch`; the returned value is piscina's movable wrapper around a {@link PriceResult}. */
export default function priceTask(batch: PriceBatch): unknown {
  const result = priceBatch(batch, overrides)
  // piscina transfers what `transferableSymbol` lists and posts `valueSymbol` in place of the
  // wrapper, so the main thread receives a plain PriceResult whose buffer was moved.
  return move({
    get [transferableSymbol]() {
      return resultTransferList(result)
    },
    get [valueSymbol](): PriceResult {
      return result
    }
  })
}

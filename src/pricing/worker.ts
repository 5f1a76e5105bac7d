/**
 * Piscina worker entry: prices one whole batch per task (a task per event would cost more in
 * messaging than the arithmetic). The price book's rates travel IN the batch (its distinct
 * schedules, one index per call), so a worker holds no book, no configuration, and needs no
 * update when prices change: a batch prices the same here as inline (`priceBatch(batch)`).
 * The result's single buffer is moved back.
 */
import { move, transferableSymbol, valueSymbol } from 'piscina'
import { priceBatch, resultTransferList } from './batch.js'
import type { PriceBatch, PriceResult } from './batch.js'

/** What {@link PricingPool} passes as piscina `workerData`: nothing today (prices travel in each batch). */
export type PricingWorkerData = Record<string, never>

/** Prices `batch`; the returned value is piscina's movable wrapper around a {@link PriceResult}. */
export default function priceTask(batch: PriceBatch): unknown {
  const result = priceBatch(batch)
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

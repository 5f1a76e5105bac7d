/**
 * Question: at which batch size does pricing in piscina workers pay off against pricing on the
 * main thread? Measures main-thread time per event (what ingestion competes with) and
 * throughput, for several batch sizes, through the real PricingPool and priceBatch.
 */
import { PricingPool } from '../src/pricing/pool.js'
import { encodeBatch, priceBatch } from '../src/pricing/batch.js'
import type { PriceInput } from '../src/pricing/compute-cost.js'
import type { Row } from './lib.js'

const MODELS: Array<[string, string]> = [['openai', 'gpt-4o'], ['openai', 'gpt-4o-mini'], ['anthropic', 'claude-3-5-sonnet-20241022'], ['openai', 'gpt-4'], ['unknown', 'private-model']]

function inputs(n: number): PriceInput[] {
  return Array.from({ length: n }, (_, i) => {
    const [provider, model] = MODELS[i % MODELS.length]
    return { provider, model, ts: Date.parse('2026-01-01T00:00:00Z') + i, promptTokens: 100 + (i % 4000), completionTokens: i % 1000, cachedTokens: i % 3 === 0 ? 50 : 0, reasoningTokens: 0, callerCost: null }
  })
}

/** Busy main-thread time is measured with process.cpuUsage of this thread? No: ELU is per thread. */
async function measure(batchSize: number, totalEvents: number, pool: PricingPool | null) {
  const batches = Math.max(1, Math.round(totalEvents / batchSize))
  const data = inputs(batchSize)
  const elu0 = performance.eventLoopUtilization()
  const t0 = performance.now()
  const pending: Promise<unknown>[] = []
  for (let b = 0; b < batches; b++) {
    const batch = encodeBatch(data)
    if (pool === null) priceBatch(batch)
    else {
      pending.push(pool.price(batch))
      if (pending.length >= 4) await pending.shift()
    }
  }
  await Promise.all(pending)
  const ms = performance.now() - t0
  const elu = performance.eventLoopUtilization(elu0)
  const events = batches * batchSize
  return { eventsPerSec: events / (ms / 1000), mainUsPerEvent: (elu.active / events) * 1000 }
}

export async function run(): Promise<Row[]> {
  const rows: Row[] = []
  const pool = new PricingPool({ threads: 1 })
  try {
    await measure(256, 50_000, pool) // warm the worker
    await measure(256, 50_000, null)
    for (const size of [1, 16, 128, 1024, 4096]) {
      const total = size < 16 ? 20_000 : 400_000
      // A/B alternating, two rounds each, best of each (least disturbed).
      const a = [await measure(size, total, null), await measure(size, total, pool)]
      const b = [await measure(size, total, null), await measure(size, total, pool)]
      const inline = a[0].eventsPerSec > b[0].eventsPerSec ? a[0] : b[0]
      const worker = a[1].eventsPerSec > b[1].eventsPerSec ? a[1] : b[1]
      rows.push({ bench: 'cost', metric: `batch ${size}: events/s piscina (inline = baseline)`, value: worker.eventsPerSec, unit: 'ev/s', baseline: inline.eventsPerSec, ratio: worker.eventsPerSec / inline.eventsPerSec })
      rows.push({ bench: 'cost', metric: `batch ${size}: main-thread µs/event piscina (inline = baseline)`, value: worker.mainUsPerEvent, unit: 'µs', baseline: inline.mainUsPerEvent, ratio: worker.mainUsPerEvent / inline.mainUsPerEvent, note: worker.mainUsPerEvent < inline.mainUsPerEvent ? 'piscina frees the main thread' : 'inline is cheaper' })
    }
  } finally {
    await pool.close()
  }
  return rows
}

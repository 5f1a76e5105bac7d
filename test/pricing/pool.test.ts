import t from 'tap'
import { encodeBatch, priceBatch } from '../../src/pricing/batch.js'
import type { PriceBatch } from '../../src/pricing/batch.js'
import type { PriceInput } from '../../src/pricing/compute-cost.js'
import { PricingPool } from '../../src/pricing/pool.js'
import { PriceBook } from '../../src/pricing/book.js'

// The book prices 'my-model' (an override layer from the start of time) and gpt-4 from 2025-01-05
// (a project version): their schedules travel in each batch.
const book = new PriceBook()
book.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'my-model': { input_mtok: 1, output_mtok: 2, cache_read_mtok: 0.5, cache_write_mtok: 1.25 } } })
book.addVersion({ id: 'pv_1', project: 'p', provider: 'openai', model: 'gpt-4', rates: { input: 3, output: 6, cached_input: 1, cache_write: 4, reasoning: 6 }, effective_from: Date.parse('2025-01-05'), created_at: 0, rev: book.nextRev() })

function calls(n: number): PriceInput[] {
  const models = ['gpt-4', 'gpt-4o', 'o3', 'claude-3-5-sonnet-20241022', 'claude-sonnet-4-6', 'gemini-2.5-pro', 'deepseek-chat', 'my-model', 'no-such-model']
  const providers = ['openai', 'openai', 'openai', 'anthropic', 'anthropic', 'google', 'deepseek', 'acme', 'unknown']
  const out: PriceInput[] = []
  for (let i = 0; i < n; i++) {
    const k = i % models.length
    out.push({
      provider: providers[k],
      model: models[k],
      ts: Date.parse('2025-01-01') + i * 3_600_000,
      promptTokens: (i * 7919) % 300_000,
      completionTokens: (i * 104_729) % 20_000,
      cachedTokens: (i * 31) % 5000,
      cacheWriteTokens: i % 4 === 0 ? (i * 13) % 3000 : 0,
      reasoningTokens: i % 700,
      callerCost: i % 13 === 0 ? i / 1000 : null,
      schedule: book.schedule('p', providers[k], models[k], book.rev)
    })
  }
  return out
}

// One pool for the behaviour tests: starting a worker through the TypeScript loader takes ~1 s.
const pool = new PricingPool({ threads: 2 })
t.teardown(() => pool.destroy())

t.test('a worker (running worker.ts through tap\'s loader) prices a batch exactly like inline', async (t) => {
  const inputs = calls(5000)
  const inline = priceBatch(encodeBatch(inputs))
  const result = await pool.price(encodeBatch(inputs))
  t.same(Array.from(result.costNanos), Array.from(inline.costNanos))
  t.same(Array.from(result.unpriced), Array.from(inline.unpriced))
  t.ok(result.unpriced.includes(1) && result.unpriced.includes(0), 'priced and unpriced calls both present')
  t.ok(inputs.some((c, i) => c.model === 'my-model' && c.callerCost === null && result.unpriced[i] === 0), 'my-model priced by the book\'s override layer in the worker')
  t.equal(result.costNanos[1], computeExpectedGpt4o(inputs[1]), 'spot check by hand')
})

t.test('without transfer the batch stays usable (the cost stage prices it inline on failure)', async (t) => {
  const batch = encodeBatch(calls(10))
  await pool.price(batch)
  t.equal(batch.ts.length, 10)
  t.same(priceBatch(batch).costNanos.length, 10)
})

t.test('with transfer the batch moves to the worker', async (t) => {
  const inputs = calls(100)
  const batch = encodeBatch(inputs)
  const result = await pool.price(batch, { transfer: true })
  t.equal(batch.ts.byteLength, 0, 'detached here')
  t.same(Array.from(result.costNanos), Array.from(priceBatch(encodeBatch(inputs)).costNanos))
})

t.test('many batches at once all come back right', async (t) => {
  const batches = Array.from({ length: 8 }, (_, i) => calls(200 + i))
  const results = await Promise.all(batches.map((inputs) => pool.price(encodeBatch(inputs))))
  results.forEach((r, i) => t.same(Array.from(r.costNanos), Array.from(priceBatch(encodeBatch(batches[i])).costNanos)))
})

t.test('a failing task rejects and is counted; the pool keeps working', async (t) => {
  const before = pool.stats.failed
  const bad: PriceBatch = { ...encodeBatch(calls(2)), prompt: new Float64Array(1) }
  await t.rejects(pool.price(bad), { message: /every column must hold 2 values/ })
  t.equal(pool.stats.failed, before + 1)
  const ok = await pool.price(encodeBatch(calls(3)))
  t.equal(ok.costNanos.length, 3)
})

t.test('stats count batches and calls', async (t) => {
  const before = pool.stats
  await pool.price(encodeBatch(calls(42)))
  const after = pool.stats
  t.equal(after.threads, 2)
  t.equal(after.completed, before.completed + 1)
  t.equal(after.events, before.events + 42)
  t.equal(after.inFlight, 0)
  t.equal(after.queued, 0)
  t.ok(after.utilization >= 0 && after.utilization <= 1)
})

t.test('a small pool: overload, then close', async (t) => {
  // One pool for both: each worker start through the TypeScript loader costs over a second.
  const p = new PricingPool({ threads: 1, maxQueue: 0 })
  t.teardown(() => p.destroy())

  t.test('past maxQueue waiting batches, price() answers overloaded', async (t) => {
    const first = p.price(encodeBatch(calls(20_000)))
    await t.rejects(p.price(encodeBatch(calls(1))), { code: 'LLMS_ERR_OVERLOADED', statusCode: 503 })
    t.equal((await first).costNanos.length, 20_000)
    t.equal(p.stats.failed, 1)
    t.equal((await p.price(encodeBatch(calls(1)))).costNanos.length, 1, 'room again once the thread is free')
  })

  t.test('close drains, is safe twice, and later batches are refused', async (t) => {
    const pending = p.price(encodeBatch(calls(50)))
    const closing = p.close()
    t.equal(p.close(), closing, 'the same promise')
    t.equal((await pending).costNanos.length, 50, 'the batch sent before close still finished')
    await closing
    await p.close()
    await t.rejects(p.price(encodeBatch(calls(1))), { code: 'LLMS_ERR_SHUTTING_DOWN', statusCode: 503 })
    await p.destroy()
    await p.destroy()
    t.pass('destroy after close, twice')
  })
})

t.test('destroy is safe twice, and close after destroy resolves', async (t) => {
  const p = new PricingPool({ threads: 1 })
  await Promise.all([p.destroy(), p.destroy()])
  await p.close()
  await t.rejects(p.price(encodeBatch(calls(1))), { code: 'LLMS_ERR_SHUTTING_DOWN' })
})

t.test('configured overrides are not applied in the worker: prices come from the schedules in the batch', async (t) => {
  // A pool given overrides (deprecated) prices a call without a schedule with genai-prices, as
  // priceEvent does on the main thread; never with today's configuration.
  const p = new PricingPool({ threads: 1, overrides: { 'gpt-4o': { input_mtok: 100, output_mtok: 100 } } })
  t.teardown(() => p.destroy())
  const c: PriceInput = { provider: 'openai', model: 'gpt-4o', ts: Date.parse('2025-06-01'), promptTokens: 1000, completionTokens: 500, cachedTokens: 200, reasoningTokens: 0, callerCost: null, schedule: null }
  // genai-prices gpt-4o: 800 × 2.5 + 200 × 1.25 + 500 × 10 = 2000 + 250 + 5000 = 7250 µ$
  t.same(Array.from((await p.price(encodeBatch([c]))).costNanos), [7_250_000])
})

t.test('options are checked at construction, naming the option', async (t) => {
  t.throws(() => new PricingPool({ threads: 0 }), { name: 'RangeError', message: 'PricingPool option threads must be an integer >= 1, got 0' })
  t.throws(() => new PricingPool({ threads: 1.5 }), { message: /threads must be an integer >= 1, got 1.5/ })
  t.throws(() => new PricingPool({ threads: 1, maxQueue: -1 }), { message: 'PricingPool option maxQueue must be an integer >= 0, got -1' })
  t.throws(() => new PricingPool({ threads: 1, overrides: { m: { input_mtok: -1, output_mtok: 1 } } }), {
    name: 'TypeError',
    message: 'PricingPool option overrides["m"].input_mtok must be a finite number >= 0'
  })
})

/** gpt-4o at 2.5 / cache 1.25 / 10 per 1M (cache writes at the input price), OpenAI shape (cached and writes inside prompt), in nanos. */
function computeExpectedGpt4o(c: PriceInput): number {
  const cached = Math.min(c.cachedTokens, c.promptTokens)
  const writes = Math.min(c.cacheWriteTokens ?? 0, c.promptTokens - cached)
  return Math.round(((c.promptTokens - cached - writes) * 2.5 + cached * 1.25 + writes * 2.5 + c.completionTokens * 10) * 1000)
}

/**
 * A batch priced with the price book's schedules costs the same in a worker thread, inline, and
 * event by event on the main thread (priceEvent): the schedules travel in the batch.
 */
import t from 'tap'
import { encodeBatch, priceBatch } from '../../src/pricing/batch.js'
import { PriceBook, fillRates, priceEvent, priceInputOf } from '../../src/pricing/book.js'
import { PricingPool } from '../../src/pricing/pool.js'
import type { StoredEvent } from '../../src/events.js'

const MAR = Date.parse('2025-03-01T00:00:00Z')
const JUN = Date.parse('2025-06-01T00:00:00Z')

function bookWithHistory(): PriceBook {
  const book = new PriceBook()
  book.addOverrideLayer({ rev: 0, created_at: 0, overrides: { 'my-model': { input_mtok: 1, output_mtok: 2, cache_read_mtok: 0.5, cache_write_mtok: 1.5 } } })
  const v = (provider: string, model: string, from: number, input: number) =>
    book.addVersion({ id: `pv_${book.rev + 1}`, project: 'p', provider, model, rates: fillRates({ input, output: input * 4, cache_write: input * 1.25 }), effective_from: from, created_at: 0, rev: book.nextRev() })
  v('openai', 'gpt-4o', MAR, 2)
  v('anthropic', 'claude-3-5-sonnet', JUN, 2.5)
  v('*', 'gpt-4o-2024-08-06', JUN, 3)
  v('openai', 'gpt-4o', JUN, 1.5)
  book.addReprice({ id: 'rp_1', project: 'p', start: MAR, end: JUN + 86_400_000 * 30, model: 'gpt-4o', rev: book.nextRev(), created_at: 0 })
  return book
}

function events(n: number, book: PriceBook): StoredEvent[] {
  const models = ['gpt-4o', 'gpt-4o-2024-08-06', 'claude-3-5-sonnet-20241022', 'my-model', 'gpt-4', 'no-such-model']
  const providers = ['openai', 'azure', 'anthropic', 'acme', 'openai', 'unknown']
  const out: StoredEvent[] = []
  for (let i = 0; i < n; i++) {
    const k = i % models.length
    const ts = Date.parse('2025-01-01') + ((i * 7_919_993) % (300 * 86_400_000))
    out.push({
      seq: i, id: `evt_${i}`, ts, recv: ts, model: models[k], provider: providers[k], prompt: (i * 7919) % 30_000, completion: (i * 104_729) % 5000, total: 0,
      cached: (i * 31) % 3000, cacheWrite: i % 3 === 0 ? (i * 17) % 4000 : 0, reasoning: i % 300, latency: 1, ttft: null, error: false,
      cost: i % 11 === 0 ? i / 1000 : null, meta: null, project: i % 5 === 0 ? 'other' : 'p', user: null, session: null, tags: null,
      // Accepted at assorted revisions, before and after the versions and the reprice.
      priceRev: Math.floor(i / 7) % (book.rev + 1)
    } as StoredEvent)
  }
  return out
}

const pool = new PricingPool({ threads: 1 })
t.teardown(() => pool.destroy())

t.test('worker == inline == priceEvent, with versions, an override layer, a reprice and cache writes', async (t) => {
  const book = bookWithHistory()
  const es = events(6000, book)
  const batch = encodeBatch(es.map((e) => priceInputOf(e, book)))
  t.ok(batch.schedules.length >= 4, `${batch.schedules.length} distinct schedules in the batch`)
  const inline = priceBatch(batch)
  const worker = await pool.price(encodeBatch(es.map((e) => priceInputOf(e, book))))
  t.same(Array.from(worker.costNanos), Array.from(inline.costNanos))
  t.same(Array.from(worker.unpriced), Array.from(inline.unpriced))
  const one = es.map((e) => priceEvent(e, book))
  t.same(Array.from(inline.costNanos), one.map((p) => p.costNanos))
  t.same(Array.from(inline.unpriced), one.map((p) => (p.unpriced ? 1 : 0)))
  // The book changes costs: not every event prices as genai-prices alone would.
  const bare = es.map((e) => priceEvent(e, new PriceBook()).costNanos)
  t.ok(bare.some((c, i) => c !== one[i].costNanos), 'the book prices differ from genai-prices')
  // Spot check by hand, through the worker too: openai gpt-4o in April, accepted at the newest
  // rev: v1 ($2 input, $8 output; cached = input = $2, cache write 1.25 × 2 = $2.5, reasoning = output).
  // OpenAI shape: uncached = 10000 − 2000 − 3000 = 5000.
  // 5000 × 2 + 2000 × 2 + 3000 × 2.5 + (800 − 100) × 8 + 100 × 8 = 10000 + 4000 + 7500 + 5600 + 800 = 27900 µ$
  const e = { ...es[1], model: 'gpt-4o', provider: 'openai', project: 'p', cost: null, ts: Date.parse('2025-04-10'), priceRev: book.rev, prompt: 10_000, cached: 2000, cacheWrite: 3000, completion: 800, reasoning: 100 }
  t.equal(priceEvent(e, book).costNanos, 27_900_000)
  t.same(Array.from((await pool.price(encodeBatch([priceInputOf(e, book)]))).costNanos), [27_900_000])
})

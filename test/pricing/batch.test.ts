import t from 'tap'
import fc from 'fast-check'
import {
  batchSize,
  batchTransferList,
  decodeBatch,
  encodeBatch,
  NO_SCHEDULE,
  priceBatch,
  resultTransferList
} from '../../src/pricing/batch.js'
import type { PriceBatch } from '../../src/pricing/batch.js'
import { computeCost } from '../../src/pricing/compute-cost.js'
import type { PriceInput, PriceOverrides } from '../../src/pricing/compute-cost.js'
import type { RateSchedule } from '../../src/pricing/book.js'

const overrides: PriceOverrides = { 'my-model': { input_mtok: 1, output_mtok: 2, cache_read_mtok: 0.5 } }

const rates = (input: number, output: number) => ({ input, output, cached_input: input / 10, cache_write: input * 1.25, reasoning: output })
const step = (from: number, input: number, output: number, versionId: string | null) => ({ from, rates: rates(input, output), source: 'override' as const, versionId, entryProvider: '*', entryModel: 'm' })
/** Book schedules: from the start of time; one that starts mid-range (earlier events fall to genai-prices); two steps. */
const SCHEDULES: RateSchedule[] = [
  [step(-Infinity, 1, 2, null)],
  [step(Date.parse('2025-06-01'), 3, 15, 'pv_a')],
  [step(-Infinity, 0.5, 1, null), step(Date.parse('2025-03-01T12:00:00Z'), 2, 8, 'pv_b')]
]

const inputArb: fc.Arbitrary<PriceInput> = fc.record({
  provider: fc.constantFrom('openai', 'anthropic', 'google', 'unknown', 'acme', ''),
  model: fc.constantFrom('gpt-4', 'gpt-4o', 'o3', 'claude-3-5-sonnet-20241022', 'gemini-2.5-pro', 'my-model', 'no-such-model'),
  ts: fc.integer({ min: Date.parse('2024-01-01'), max: Date.parse('2027-01-01') }),
  promptTokens: fc.nat({ max: 300_000 }),
  completionTokens: fc.nat({ max: 100_000 }),
  cachedTokens: fc.nat({ max: 100_000 }),
  cacheWriteTokens: fc.oneof(fc.constant(0), fc.nat({ max: 100_000 })),
  reasoningTokens: fc.nat({ max: 10_000 }),
  callerCost: fc.option(fc.double({ min: 0, max: 100, noNaN: true }), { freq: 4 }),
  schedule: fc.option(fc.constantFrom(...SCHEDULES), { freq: 2 })
})

t.test('encode then decode gives the calls back', async (t) => {
  fc.assert(
    fc.property(fc.array(inputArb, { maxLength: 50 }), (inputs) => {
      t.same(decodeBatch(encodeBatch(inputs)), inputs)
    }),
    { numRuns: 200 }
  )
})

t.test('strings are dictionary-encoded', async (t) => {
  const inputs = ['gpt-4', 'gpt-4o', 'gpt-4', 'gpt-4', 'gpt-4o'].map((model) => call('openai', model))
  const batch = encodeBatch(inputs)
  t.same(batch.providers, ['openai'])
  t.same(batch.models, ['gpt-4', 'gpt-4o'])
  t.same(Array.from(batch.providerIndex), [0, 0, 0, 0, 0])
  t.same(Array.from(batch.modelIndex), [0, 1, 0, 0, 1])
  t.equal(batchSize(batch), 5)
})

t.test('a batch is one transferable buffer, and so is a result', async (t) => {
  const batch = encodeBatch([call('openai', 'gpt-4'), call('anthropic', 'claude-3-5-sonnet-20241022'), call('x', 'y')])
  const list = batchTransferList(batch)
  t.equal(list.length, 1)
  t.equal(list[0].byteLength, 3 * (7 * 8 + 3 * 4))
  const result = priceBatch(batch)
  const out = resultTransferList(result)
  t.equal(out.length, 1)
  t.equal(out[0].byteLength, 3 * 9)
  // Shared memory is not transferable: it is left out.
  const shared = { ...result, unpriced: new Uint8Array(new SharedArrayBuffer(3)) }
  t.equal(resultTransferList(shared).length, 1)
})

t.test('schedules are dictionary-encoded by identity; none travels as NO_SCHEDULE', async (t) => {
  const [a, b] = SCHEDULES
  const batch = encodeBatch([call('openai', 'm', { schedule: a }), call('openai', 'm'), call('openai', 'm', { schedule: b }), call('openai', 'm', { schedule: a })])
  t.equal(batch.schedules.length, 2)
  t.equal(batch.schedules[0], a)
  t.equal(batch.schedules[1], b)
  t.same(Array.from(batch.scheduleIndex), [0, NO_SCHEDULE, 1, 0])
  t.same(decodeBatch(batch).map((c) => c.schedule), [a, null, b, a])
})

t.test('cache writes travel in their own column and are priced', async (t) => {
  // Anthropic shape, book rates $1/$2 per Mtok, cache write 1.25 × input = $1.25:
  // 1000 prompt × 1 + 4000 cache write × 1.25 + 500 completion × 2 = 1000 + 5000 + 1000 = 7000 $/Mtok-units → $0.007
  const batch = encodeBatch([call('anthropic', 'claude-x', { cacheWriteTokens: 4000, schedule: SCHEDULES[0] })])
  t.equal(batch.cacheWrite[0], 4000)
  t.same(Array.from(priceBatch(batch).costNanos), [7_000_000])
})

t.test('a call with no caller cost travels as NaN and comes back as null', async (t) => {
  const batch = encodeBatch([call('openai', 'gpt-4'), call('openai', 'gpt-4', { callerCost: 0.25 })])
  t.ok(Number.isNaN(batch.callerCost[0]))
  t.equal(batch.callerCost[1], 0.25)
  t.same(decodeBatch(batch).map((c) => c.callerCost), [null, 0.25])
})

t.test('pricing a batch equals pricing each call', async (t) => {
  fc.assert(
    fc.property(fc.array(inputArb, { maxLength: 100 }), (inputs) => {
      const result = priceBatch(encodeBatch(inputs), overrides)
      t.equal(result.costNanos.length, inputs.length)
      inputs.forEach((input, i) => {
        const one = computeCost(input, overrides)
        if (result.costNanos[i] !== one.costNanos || result.unpriced[i] !== (one.unpriced ? 1 : 0)) {
          throw new Error(`call ${i} differs: ${JSON.stringify(input)}`)
        }
      })
    }),
    { numRuns: 200 }
  )
})

t.test('anchors through a batch', async (t) => {
  const result = priceBatch(encodeBatch([call('openai', 'gpt-4'), call('openai', 'no-such-model'), call('x', 'no-such-model', { callerCost: 1 })]))
  t.same(Array.from(result.costNanos), [60_000_000, 0, 1e9])
  t.same(Array.from(result.unpriced), [0, 1, 0])
})

t.test('an empty batch prices to an empty result', async (t) => {
  const result = priceBatch(encodeBatch([]))
  t.equal(result.costNanos.length, 0)
  t.equal(result.unpriced.length, 0)
})

t.test('a malformed batch is a programming error: it throws', async (t) => {
  const batch = encodeBatch([call('openai', 'gpt-4')])
  const bad: PriceBatch = { ...batch, prompt: new Float64Array(2) }
  t.throws(() => priceBatch(bad), { name: 'RangeError', message: /every column must hold 1 values/ })
})

t.test('an index past the dictionary prices as an unknown model', async (t) => {
  const batch = encodeBatch([call('openai', 'gpt-4')])
  batch.modelIndex[0] = 7
  t.same(Array.from(priceBatch(batch).unpriced), [1])
})

function call(provider: string, model: string, extra: Partial<PriceInput> = {}): PriceInput {
  return { provider, model, ts: 0, promptTokens: 1000, completionTokens: 500, cachedTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, callerCost: null, schedule: null, ...extra }
}

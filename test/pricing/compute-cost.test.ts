import t from 'tap'
import fc from 'fast-check'
import { findProvider } from '@pydantic/genai-prices'
import {
  PRICE_CACHE_MAX,
  clearPriceCache,
  computeCost,
  computeCostReference,
  inferProvider,
  isCacheExclusive,
  priceCacheSize,
  priceInputOf,
  validatePriceOverrides
} from '../../src/pricing/compute-cost.js'
import type { PriceInput, PriceOverrides } from '../../src/pricing/compute-cost.js'
import type { StoredEvent } from '../../src/events.js'

const TS = Date.parse('2025-06-01T00:00:00Z')

function call(provider: string, model: string, usage: Partial<PriceInput> = {}): PriceInput {
  return {
    provider,
    model,
    ts: TS,
    promptTokens: 1000,
    completionTokens: 500,
    cachedTokens: 0,
    reasoningTokens: 0,
    callerCost: null,
    ...usage
  }
}

// Every expected number below is worked out by hand from the model's genai-prices entry
// ($ per 1M tokens), so 1 token at $1/M = 1 µ$ = 1000 nanos.

t.test('anchor: gpt-4 at $30/$60 per 1M, 1000 prompt + 500 completion = $0.06', async (t) => {
  t.same(computeCost(call('openai', 'gpt-4')), { costNanos: 60_000_000, unpriced: false })
})

t.test('OpenAI shape: cached tokens are inside prompt tokens (gpt-4o: 2.5 / cache 1.25 / 10)', async (t) => {
  // 800 uncached × 2.5 + 200 cached × 1.25 + 500 × 10 = 2000 + 250 + 5000 µ$
  t.same(computeCost(call('openai', 'gpt-4o', { cachedTokens: 200 })), { costNanos: 7_250_000, unpriced: false })
  // Azure's OpenAI models report the same way.
  t.equal(computeCost(call('azure', 'gpt-4o', { cachedTokens: 200 })).costNanos, 7_250_000)
})

t.test('Anthropic shape: cached tokens come on top of prompt tokens (claude-3-5-sonnet: 3 / cache 0.3 / 15)', async (t) => {
  // 1000 uncached × 3 + 200 cached × 0.3 + 500 × 15 = 3000 + 60 + 7500 µ$
  const expected = { costNanos: 10_560_000, unpriced: false }
  t.same(computeCost(call('anthropic', 'claude-3-5-sonnet-20241022', { cachedTokens: 200 })), expected)
  t.same(computeCost(call('bedrock', 'anthropic.claude-3-5-sonnet-20241022-v2:0', { cachedTokens: 200 })), expected, 'Bedrock (normalised to aws)')
  t.same(computeCost(call('vertex_ai', 'claude-3-5-sonnet-v2@20241022', { cachedTokens: 200 })), expected, 'Claude on Vertex')
  t.same(computeCost(call('unknown', 'claude-3-5-sonnet-20241022', { cachedTokens: 200 })), expected, 'provider inferred')
})

t.test('OpenRouter is OpenAI-shaped even for Claude (no cache price there: cached at input price)', async (t) => {
  // 1000 × 3 + 500 × 15 µ$; the 200 cached are part of the 1000.
  t.equal(computeCost(call('openrouter', 'anthropic/claude-3.5-sonnet', { cachedTokens: 200 })).costNanos, 10_500_000)
})

t.test('Gemini is OpenAI-shaped (gemini-2.5-pro: 1.25 / cache 0.125 / 10 below 200k)', async (t) => {
  // 800 × 1.25 + 200 × 0.125 + 500 × 10 = 1000 + 25 + 5000 µ$
  t.equal(computeCost(call('google', 'gemini-2.5-pro', { cachedTokens: 200 })).costNanos, 6_025_000)
})

t.test('the convention table', async (t) => {
  t.equal(isCacheExclusive('anthropic', 'claude-3-opus'), true)
  t.equal(isCacheExclusive('aws', 'amazon.nova-pro-v1:0'), true, 'Bedrock Converse excludes cache reads for every model')
  t.equal(isCacheExclusive('cursor', 'composer-1'), true)
  t.equal(isCacheExclusive('google', 'claude-sonnet-4@20250514'), true)
  t.equal(isCacheExclusive('azure', 'Claude-Sonnet-4-5'), true)
  t.equal(isCacheExclusive('google', 'gemini-2.5-pro'), false)
  t.equal(isCacheExclusive('azure', 'gpt-4o'), false)
  t.equal(isCacheExclusive('openai', 'gpt-4o'), false)
  t.equal(isCacheExclusive('openrouter', 'anthropic/claude-3.5-sonnet'), false)
  t.equal(isCacheExclusive('deepseek', 'deepseek-chat'), false)
})

t.test('reasoning tokens are part of completion tokens, never added again', async (t) => {
  const plain = computeCost(call('openai', 'gpt-4o'))
  t.same(computeCost(call('openai', 'gpt-4o', { reasoningTokens: 300 })), plain)
  // sonar-deep-research prices reasoning apart (2 in / 8 out / 3 reasoning):
  // 1000 × 2 + (500 − 300) × 8 + 300 × 3 = 2000 + 1600 + 900 µ$
  t.equal(computeCost(call('perplexity', 'sonar-deep-research', { reasoningTokens: 300 })).costNanos, 4_500_000)
  t.equal(computeCost(call('perplexity', 'sonar-deep-research')).costNanos, 6_000_000)
})

t.test('inconsistent counts are clamped, not rejected', async (t) => {
  // OpenAI shape: cached > prompt is capped at prompt: 1000 × 1.25 + 500 × 10 µ$
  t.same(computeCost(call('openai', 'gpt-4o', { cachedTokens: 5000 })), { costNanos: 6_250_000, unpriced: false })
  // reasoning > completion is capped at completion
  t.equal(computeCost(call('perplexity', 'sonar-deep-research', { reasoningTokens: 9999 })).costNanos, 2_000_000 + 1_500_000)
  // negative and non-finite counts are 0
  t.same(
    computeCost(call('openai', 'gpt-4', { promptTokens: -5, completionTokens: NaN, cachedTokens: Infinity, reasoningTokens: -Infinity })),
    { costNanos: 0, unpriced: false }
  )
})

t.test('a caller-supplied cost wins, even for an unknown model', async (t) => {
  t.same(computeCost(call('openai', 'gpt-4', { callerCost: 0.5 })), { costNanos: 500_000_000, unpriced: false })
  t.same(computeCost(call('nobody', 'no-such-model', { callerCost: 0.000_001_5 })), { costNanos: 1500, unpriced: false })
  t.same(computeCost(call('nobody', 'no-such-model', { callerCost: 0 })), { costNanos: 0, unpriced: false })
  t.same(computeCost(call('openai', 'gpt-4', { callerCost: 1e300 })), { costNanos: Number.MAX_SAFE_INTEGER, unpriced: false }, 'capped')
  // Not a usable cost: NaN, negative, Infinity fall back to the computed price.
  for (const bad of [NaN, -1, Infinity]) {
    t.equal(computeCost(call('openai', 'gpt-4', { callerCost: bad })).costNanos, 60_000_000, String(bad))
  }
})

t.test('an unknown model is free and counted as unpriced', async (t) => {
  t.same(computeCost(call('openai', 'no-such-model')), { costNanos: 0, unpriced: true })
  t.same(computeCost(call('unknown', 'llama-nobody-7b')), { costNanos: 0, unpriced: true })
  t.same(computeCost(call('', '')), { costNanos: 0, unpriced: true })
  // A provider genai-prices knows is trusted: a model it does not list there is not guessed.
  t.same(computeCost(call('openai', 'claude-3-5-sonnet-20241022')), { costNanos: 0, unpriced: true })
  // An unknown provider name falls back to the model name.
  t.equal(computeCost(call('my-proxy', 'gpt-4')).costNanos, 60_000_000)
  // litellm-style "provider/model"
  t.equal(computeCost(call('litellm', 'openai/gpt-4')).costNanos, 60_000_000)
})

t.test('date-dependent prices follow the event time, not the wall clock', async (t) => {
  // o3: 10 / 40 until 2025-06-10, then 2 / 8
  const before = computeCost(call('openai', 'o3', { ts: Date.parse('2025-06-09T23:59:59.999Z') }))
  const from = computeCost(call('openai', 'o3', { ts: Date.parse('2025-06-10T00:00:00Z') }))
  t.equal(before.costNanos, 30_000_000, '1000 × 10 + 500 × 40 µ$')
  t.equal(from.costNanos, 6_000_000, '1000 × 2 + 500 × 8 µ$')
  t.same(computeCost(call('openai', 'o3', { ts: NaN })), { costNanos: 0, unpriced: true }, 'no valid time, no table')
  t.equal(computeCost(call('openai', 'gpt-4', { ts: NaN })).costNanos, 60_000_000, 'undated prices need no time')
})

t.test('tiered prices step up past 200k input tokens (strictly above the tier start)', async (t) => {
  // gemini-2.5-pro: 1.25 / 10 up to 200k input, 2.5 / 15 above
  t.equal(computeCost(call('google', 'gemini-2.5-pro', { promptTokens: 200_000, completionTokens: 1000 })).costNanos, 260_000_000)
  t.equal(computeCost(call('google', 'gemini-2.5-pro', { promptTokens: 250_000, completionTokens: 1000 })).costNanos, 640_000_000)
  // claude-sonnet-4-6: tiered (6 / 22.5 above 200k) until 2026-03-13, flat 3 / 15 after.
  // Anthropic shape: 150k prompt + 100k cache reads = 250k input, above the tier.
  const big = { promptTokens: 150_000, cachedTokens: 100_000, completionTokens: 1000 }
  // 150k × 6 + 100k × 0.6 + 1000 × 22.5 = 900000 + 60000 + 22500 µ$
  t.equal(computeCost(call('anthropic', 'claude-sonnet-4-6', { ...big, ts: Date.parse('2026-01-01') })).costNanos, 982_500_000)
  // 150k × 3 + 100k × 0.3 + 1000 × 15 = 450000 + 30000 + 15000 µ$
  t.equal(computeCost(call('anthropic', 'claude-sonnet-4-6', { ...big, ts: Date.parse('2026-04-01') })).costNanos, 495_000_000)
})

t.test('time-of-day prices (deepseek-chat: discount outside 00:30–16:30 UTC)', async (t) => {
  const usage = { cachedTokens: 200 }
  // 800 × 0.27 + 200 × 0.07 + 500 × 1.1 = 216 + 14 + 550 µ$
  t.equal(computeCost(call('deepseek', 'deepseek-chat', { ...usage, ts: Date.parse('2025-06-01T12:00:00Z') })).costNanos, 780_000)
  // 800 × 0.135 + 200 × 0.035 + 500 × 0.55 = 108 + 7 + 275 µ$
  t.equal(computeCost(call('deepseek', 'deepseek-chat', { ...usage, ts: Date.parse('2025-06-01T20:00:00Z') })).costNanos, 390_000)
  // The window is [00:30, 16:30): its start is in, its end is out.
  t.equal(computeCost(call('deepseek', 'deepseek-chat', { ...usage, ts: Date.parse('2025-06-01T00:30:00Z') })).costNanos, 780_000)
  t.equal(computeCost(call('deepseek', 'deepseek-chat', { ...usage, ts: Date.parse('2025-06-01T00:29:59.999Z') })).costNanos, 390_000)
  t.equal(computeCost(call('deepseek', 'deepseek-chat', { ...usage, ts: Date.parse('2025-06-01T16:30:00Z') })).costNanos, 390_000)
  t.equal(computeCost(call('deepseek', 'deepseek-chat', { ...usage, ts: Date.parse('1969-12-31T12:00:00Z') })).costNanos, 780_000, 'before 1970 too')
})

t.test('overrides', async (t) => {
  const overrides: PriceOverrides = {
    'my-model': { input_mtok: 1, output_mtok: 2 },
    'acme/my-model': { input_mtok: 10, output_mtok: 20, cache_read_mtok: 5 },
    'gpt-4': { input_mtok: 1, output_mtok: 1 },
    'anthropic/claude-custom': { input_mtok: 3, output_mtok: 15, cache_read_mtok: 0.3 },
    'claude-bare': { input_mtok: 3, output_mtok: 15, cache_read_mtok: 0.3 }
  }
  t.test('a bare model key prices any provider; cached tokens at the input price without cache_read_mtok', async (t) => {
    // 1000 × 1 + 500 × 2 µ$ (200 cached inside the 1000, same price)
    t.same(computeCost(call('whoever', 'my-model', { cachedTokens: 200 }), overrides), { costNanos: 2_000_000, unpriced: false })
  })
  t.test('"provider/model" beats the bare key, and cache_read_mtok applies', async (t) => {
    // 800 × 10 + 200 × 5 + 500 × 20 = 8000 + 1000 + 10000 µ$
    t.equal(computeCost(call('acme', 'my-model', { cachedTokens: 200 }), overrides).costNanos, 19_000_000)
  })
  t.test('an override beats the pricing data', async (t) => {
    t.equal(computeCost(call('openai', 'gpt-4'), overrides).costNanos, 1_500_000)
    t.equal(computeCost(call('openai', 'gpt-4')).costNanos, 60_000_000, 'and only when passed')
  })
  t.test('the provider convention applies to overrides too', async (t) => {
    // Anthropic shape: 1000 × 3 + 200 × 0.3 + 500 × 15 µ$
    t.equal(computeCost(call('anthropic', 'claude-custom', { cachedTokens: 200 }), overrides).costNanos, 10_560_000)
    t.equal(computeCost(call('bedrock', 'claude-bare', { cachedTokens: 200 }), overrides).costNanos, 10_560_000, 'bedrock is aws')
    // An unknown provider takes the convention of the provider the model name suggests.
    t.equal(computeCost(call('unknown', 'claude-bare', { cachedTokens: 200 }), overrides).costNanos, 10_560_000)
    // OpenAI shape for OpenRouter: 800 × 3 + 200 × 0.3 + 500 × 15 µ$
    t.equal(computeCost(call('openrouter', 'claude-bare', { cachedTokens: 200 }), overrides).costNanos, 9_960_000)
  })
  t.test('a caller cost still wins over an override', async (t) => {
    t.equal(computeCost(call('whoever', 'my-model', { callerCost: 1 }), overrides).costNanos, 1e9)
  })
  t.test('prototype keys are not overrides', async (t) => {
    t.same(computeCost(call('x', 'constructor'), overrides), { costNanos: 0, unpriced: true })
    t.same(computeCost(call('x', '__proto__'), {}), { costNanos: 0, unpriced: true })
  })
  t.test('a broken override (not validated) prices as unpriced rather than NaN', async (t) => {
    const broken = { 'm': { input_mtok: NaN, output_mtok: 1 } }
    t.same(computeCost(call('x', 'm'), broken), { costNanos: 0, unpriced: true })
  })
})

t.test('validatePriceOverrides names the offending key and field', async (t) => {
  const ok = { 'a': { input_mtok: 1, output_mtok: 2, cache_read_mtok: 0.5 } }
  t.equal(validatePriceOverrides(ok), ok)
  t.throws(() => validatePriceOverrides(null), { name: 'TypeError', message: 'overrides must be an object of model -> prices' })
  t.throws(() => validatePriceOverrides([]), TypeError)
  t.throws(() => validatePriceOverrides({ a: 3 }), { message: 'overrides["a"] must be an object' })
  t.throws(() => validatePriceOverrides({ a: { output_mtok: 1 } }), { message: 'overrides["a"].input_mtok must be a finite number >= 0' })
  t.throws(() => validatePriceOverrides({ a: { input_mtok: 1, output_mtok: -1 } }, 'opt'), { message: 'opt["a"].output_mtok must be a finite number >= 0' })
  t.throws(() => validatePriceOverrides({ a: { input_mtok: 1, output_mtok: 1, cache_read_mtok: Infinity } }), {
    message: 'overrides["a"].cache_read_mtok must be a finite number >= 0'
  })
})

t.test('inferProvider reads the pricing data, else "unknown"', async (t) => {
  t.equal(inferProvider('gpt-4o'), 'openai')
  t.equal(inferProvider('GPT-4o'), 'openai')
  t.equal(inferProvider('o3-mini'), 'openai')
  t.equal(inferProvider('claude-3-opus-20240229'), 'anthropic')
  t.equal(inferProvider('gemini-1.5-pro'), 'google')
  t.equal(inferProvider('llama-nobody-7b'), 'unknown')
  t.equal(inferProvider('llama-nobody-7b'), 'unknown', 'memoised answer is the same')
})

t.test('the memo is bounded', async (t) => {
  clearPriceCache()
  t.equal(priceCacheSize(), 0)
  for (let i = 0; i < PRICE_CACHE_MAX + 50; i++) computeCost(call('unknown', `garbage-${i}`))
  t.equal(priceCacheSize(), PRICE_CACHE_MAX)
  // Still right after eviction.
  t.equal(computeCost(call('openai', 'gpt-4')).costNanos, 60_000_000)
  clearPriceCache()
})

// Every model of these providers, under a few provider spellings.
const MODELS: Array<[string, string]> = []
for (const id of ['openai', 'anthropic', 'google', 'aws', 'azure', 'deepseek', 'mistral', 'perplexity', 'x-ai', 'groq']) {
  for (const m of findProvider({ providerId: id })?.models ?? []) {
    MODELS.push([id, m.id], ['unknown', m.id])
  }
}
MODELS.push(['bedrock', 'us.anthropic.claude-3-5-sonnet-20241022-v2:0'], ['litellm', 'openai/gpt-4o'], ['openai', 'nope'])

t.test('the memoised fast path prices exactly like calcPrice on every call', async (t) => {
  t.ok(MODELS.length > 300, `${MODELS.length} (provider, model) pairs`)
  const tokens = fc.oneof(fc.nat({ max: 5000 }), fc.nat({ max: 400_000 }))
  fc.assert(
    fc.property(
      fc.constantFrom(...MODELS),
      tokens,
      tokens,
      tokens,
      tokens,
      fc.oneof(fc.constant(0), tokens),
      // 2024–2027 covers every start date and time-of-day window in the data.
      fc.integer({ min: Date.parse('2024-01-01'), max: Date.parse('2027-06-01') }),
      ([provider, model], promptTokens, completionTokens, cachedTokens, reasoningTokens, cacheWriteTokens, ts) => {
        const input: PriceInput = { provider, model, ts, promptTokens, completionTokens, cachedTokens, cacheWriteTokens, reasoningTokens, callerCost: null }
        const fast = computeCost(input)
        const slow = computeCostReference(input)
        // Summation order differs, so allow one nano of rounding.
        return fast.unpriced === slow.unpriced && Math.abs(fast.costNanos - slow.costNanos) <= 1
      }
    ),
    { numRuns: 2000 }
  )
  t.pass('no counterexample')
})

t.test('the reference path agrees on the edges too', async (t) => {
  t.same(computeCostReference(call('openai', 'gpt-4', { callerCost: 2 })), { costNanos: 2e9, unpriced: false })
  t.same(computeCostReference(call('x', 'my-model'), { 'my-model': { input_mtok: 1, output_mtok: 2 } }), { costNanos: 2_000_000, unpriced: false })
  t.same(computeCostReference(call('', 'gpt-4')), { costNanos: 60_000_000, unpriced: false })
  t.same(computeCostReference(call('openai', 'o3', { ts: NaN })), { costNanos: 0, unpriced: true })
})

t.test('never throws: any non-negative integers give a finite integer cost >= 0', async (t) => {
  const names = fc.constantFrom('gpt-4', 'gpt-4o', 'o3', 'claude-3-5-sonnet-20241022', 'claude-sonnet-4-6', 'gemini-2.5-pro', 'deepseek-chat', 'no-such-model')
  const providers = fc.constantFrom('openai', 'anthropic', 'google', 'deepseek', 'aws', 'unknown', '')
  const count = fc.maxSafeNat()
  fc.assert(
    fc.property(providers, names, count, count, count, count, fc.option(fc.maxSafeNat().map((n) => n / 1e6)), fc.integer({ min: 0, max: 8.64e15 }), (provider, model, p, c, k, r, callerCost, ts) => {
      const out = computeCost({ provider, model, ts, promptTokens: p, completionTokens: c, cachedTokens: k, reasoningTokens: r, callerCost })
      return Number.isSafeInteger(out.costNanos) && out.costNanos >= 0
    }),
    { numRuns: 3000 }
  )
  t.pass('no counterexample')
})

t.test('never throws on garbage either (any doubles, any strings)', async (t) => {
  const num = fc.double()
  fc.assert(
    fc.property(fc.string(), fc.string(), num, num, num, num, num, fc.option(num), (provider, model, ts, p, c, k, r, callerCost) => {
      const out = computeCost({ provider, model, ts, promptTokens: p, completionTokens: c, cachedTokens: k, reasoningTokens: r, callerCost })
      return Number.isSafeInteger(out.costNanos) && out.costNanos >= 0
    }),
    { numRuns: 2000 }
  )
  // Not even with values the types forbid.
  const odd = { provider: undefined, model: 42, ts: 'x', promptTokens: '5', completionTokens: null, cachedTokens: {}, reasoningTokens: [], callerCost: null }
  t.same(computeCost(odd as unknown as PriceInput), { costNanos: 0, unpriced: true })
  t.pass('no counterexample')
})

t.test('priceInputOf maps a stored event\'s fields (the one mapping the cost stage and Engine.price share)', async (t) => {
  const e = { provider: 'anthropic', model: 'claude-3-5-sonnet-latest', ts: TS, prompt: 1200, completion: 300, cached: 200, reasoning: 50, cost: null, latency: 10, seq: 1, id: 'evt_1' } as unknown as StoredEvent
  t.same(priceInputOf(e), { provider: 'anthropic', model: 'claude-3-5-sonnet-latest', ts: TS, promptTokens: 1200, completionTokens: 300, cachedTokens: 200, cacheWriteTokens: 0, reasoningTokens: 50, callerCost: null, schedule: null })
  t.same(priceInputOf({ ...e, cost: 0.25 }).callerCost, 0.25)
})

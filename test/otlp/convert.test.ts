/** Span → event mapping: provider aliases and the token conventions, case by case and as properties. */
import t from 'tap'
import fc from 'fast-check'
import { mapProvider, shapeTokens } from '../../src/otlp/convert.js'
import { PROVIDER_ALIASES } from '../../src/otlp/aliases.js'
import { isCacheExclusive } from '../../src/pricing/compute-cost.js'
import { findProvider } from '@pydantic/genai-prices'

t.test('provider names map to genai-prices ids', async (t) => {
  const cases: Array<[string, string]> = [
    ['openai', 'openai'],
    ['OpenAI', 'openai'],
    ['Anthropic', 'anthropic'],
    ['aws.bedrock', 'aws'],
    ['AWS', 'aws'],
    ['az.ai.inference', 'azure'],
    ['azure.ai.openai', 'azure'],
    ['gcp.vertex_ai', 'google'],
    ['gcp.gemini', 'google'],
    ['vertex_ai', 'google'],
    ['mistral_ai', 'mistral'],
    ['x_ai', 'x-ai'],
    ['ollama', 'ollama'],
    ['ibm.watsonx.ai', 'ibm.watsonx.ai']
  ]
  for (const [raw, id] of cases) t.equal(mapProvider(raw), id, raw)
  for (const id of new Set(Object.values(PROVIDER_ALIASES))) t.equal(findProvider({ providerId: id })?.id, id, `${id} is a genai-prices provider id`)
})

t.test('token conventions', async (t) => {
  const raw = (input: number, output: number, cacheRead = 0, cacheWrite = 0, reasoning = 0, total: number | null = null) => ({ input, output, cacheRead, cacheWrite, reasoning, total })
  // Anthropic-shaped provider, spec-style input (OpenLLMetry: 12 uncached + 2000 read + 500 written).
  t.match(shapeTokens(raw(2512, 300, 2000, 500), true, false), { prompt: 12, cached: 2000, cacheWrite: 500, completion: 300 })
  // The same call from OpenLIT (Anthropic's own input_tokens, 12).
  t.match(shapeTokens(raw(12, 300, 2000, 500), true, true), { prompt: 12, cached: 2000, cacheWrite: 500, completion: 300 })
  // Spec claimed but impossible (input < cache reads): read as native.
  t.match(shapeTokens(raw(12, 300, 2000, 500), true, false), { prompt: 12, cached: 2000, cacheWrite: 500 })
  // OpenAI-shaped with cache writes (OpenRouter, say): both inside prompt, whoever sent it.
  t.match(shapeTokens(raw(3000, 10, 1000, 500), false, false), { prompt: 3000, cached: 1000, cacheWrite: 500 })
  t.match(shapeTokens(raw(100, 10, 1000, 500), false, false), { prompt: 1600, cached: 1000, cacheWrite: 500 }, 'input smaller than its cached parts: they are added')
  // OpenAI-shaped: cached inside prompt, whoever sent it.
  t.match(shapeTokens(raw(1700, 150, 1024), false, false), { prompt: 1700, cached: 1024 })
  t.match(shapeTokens(raw(1700, 150, 1024), false, true), { prompt: 1700, cached: 1024 })
  t.match(shapeTokens(raw(100, 150, 1024), false, false), { prompt: 1124, cached: 1024 }, 'cached larger than input: input excluded it')
  // Reasoning inside output (OpenAI): not added again.
  t.match(shapeTokens(raw(120, 900, 0, 0, 640, 1020), false, false), { completion: 900, reasoning: 640 })
  // Reasoning outside output (Gemini thoughts: total = input + candidates + thoughts).
  t.match(shapeTokens(raw(100, 50, 0, 0, 400, 550), false, true), { completion: 450, reasoning: 400 })
  t.match(shapeTokens(raw(100, 50, 0, 0, 400), false, true), { completion: 450 }, 'reasoning larger than output')
})

t.test('property: no token is lost or counted twice, nothing goes negative', async (t) => {
  const n = fc.integer({ min: 0, max: 1_000_000 })
  fc.assert(
    fc.property(n, n, n, n, n, fc.boolean(), fc.boolean(), (uncached, output, cacheRead, cacheWrite, reasoning, exclusive, native) => {
      // Build the spec-style input from its parts, or the native one for an exclusive provider.
      const input = native && exclusive ? uncached : uncached + cacheRead + cacheWrite
      const r = shapeTokens({ input, output, cacheRead, cacheWrite, reasoning: Math.min(reasoning, output), total: null }, exclusive, native)
      if (r.prompt < 0 || r.completion < 0 || r.cached < 0 || r.cacheWrite !== cacheWrite) return false
      if (r.completion !== output) return false
      // Exclusive: prompt holds the uncached tokens, cache reads and writes beside it. Inclusive: all of it.
      return exclusive ? r.prompt === uncached && r.cached === cacheRead : r.prompt === input && r.cached === cacheRead
    }),
    { numRuns: 500 }
  )
  t.pass('500 random usages hold')
})

t.test('the exclusive convention follows the pricing module (Claude on Bedrock, Vertex)', async (t) => {
  t.equal(isCacheExclusive('aws', 'anthropic.claude-3-5-sonnet-20240620-v1:0'), true)
  t.equal(isCacheExclusive('google', 'claude-3-5-sonnet@20240620'), true)
  t.equal(isCacheExclusive('google', 'gemini-2.0-flash'), false)
})

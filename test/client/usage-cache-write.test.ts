/**
 * The client's record helpers send cache writes as `cache_write_tokens` (issue 14: Anthropic cache
 * writes cost 1.25× input and were sent inside `prompt_tokens`, priced as input).
 */
import t from 'tap'
import { detectShape, fromAnthropic, fromOpenAI } from '../../src/client/usage.js'

const opts = { latencyMs: 100, timestamp: '2026-01-01T00:00:00.000Z' }

t.test('fromAnthropic: input_tokens as sent, cache reads → cached_tokens, cache writes → cache_write_tokens', async (t) => {
  const e = fromAnthropic({ type: 'message', model: 'claude-sonnet-4-5', usage: { input_tokens: 12, cache_creation_input_tokens: 500, cache_read_input_tokens: 2000, output_tokens: 300 } }, opts)
  t.match(e, { model: 'claude-sonnet-4-5', provider: 'anthropic', prompt_tokens: 12, cached_tokens: 2000, cache_write_tokens: 500, completion_tokens: 300 })
  // A response without cache fields sends none (the server reads them as 0).
  const plain = fromAnthropic({ type: 'message', model: 'claude-3-5-haiku-20241022', usage: { input_tokens: 3, output_tokens: 1 } }, opts)!
  t.equal(plain.prompt_tokens, 3)
  t.notOk('cache_write_tokens' in plain)
  t.notOk('cached_tokens' in plain)
  // Only writes (a first call that fills the cache): prompt is the uncached input alone.
  t.match(fromAnthropic({ type: 'message', model: 'claude-sonnet-4-5', usage: { input_tokens: 4, cache_creation_input_tokens: 1800, cache_read_input_tokens: 0, output_tokens: 9 } }, opts), { prompt_tokens: 4, cache_write_tokens: 1800, cached_tokens: 0 })
  // Unusable counts are left out, never sent (the server would refuse the event).
  const bad = fromAnthropic({ type: 'message', model: 'claude-sonnet-4-5', usage: { input_tokens: 4, cache_creation_input_tokens: -1, output_tokens: 1.5 } }, opts)!
  t.notOk('cache_write_tokens' in bad)
  t.notOk('completion_tokens' in bad)
})

t.test('fromOpenAI: an OpenAI-compatible cache write count (OpenRouter) → cache_write_tokens, prompt as reported', async (t) => {
  const e = fromOpenAI({ object: 'chat.completion', model: 'anthropic/claude-sonnet-4.5', usage: { prompt_tokens: 194, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 0, cache_write_tokens: 100 } } }, { ...opts, provider: 'openrouter' })
  t.match(e, { provider: 'openrouter', prompt_tokens: 194, cached_tokens: 0, cache_write_tokens: 100, completion_tokens: 2 })
  const openai = fromOpenAI({ object: 'chat.completion', model: 'gpt-4o', usage: { prompt_tokens: 10, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 4 } } }, opts)!
  t.notOk('cache_write_tokens' in openai, 'OpenAI reports no cache writes')
})

t.test('detectShape still tells an Anthropic message by its cache fields', async (t) => {
  t.equal(detectShape({ model: 'x', usage: { input_tokens: 1, cache_creation_input_tokens: 0 } }), 'anthropic')
  t.equal(detectShape({ model: 'x', usage: { prompt_tokens: 1, prompt_tokens_details: { cache_write_tokens: 3 } } }), 'openai')
})

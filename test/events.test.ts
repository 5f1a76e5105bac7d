import t from 'tap'
import fc from 'fast-check'
import { eventSchema, fastPending, toPending, checkMetadata, seqOfEventId, makeEventId, pendingBatch } from '../src/events.js'

const limits = { maxBytes: 200, maxDepth: 3, maxKeys: 8 }
const schema = eventSchema(limits)
const NOW = Date.parse('2026-06-01T00:00:00Z')
const infer = (m: string) => (m.startsWith('gpt') ? 'openai' : 'unknown')

/** A value that is sometimes right for a field and often wrong in interesting ways. */
const wild = fc.oneof(
  fc.constant(undefined), fc.constant(null), fc.boolean(), fc.string({ maxLength: 5 }),
  fc.integer({ min: -5, max: 5 }), fc.double(), fc.constant(1e12), fc.constant(1e12 + 1), fc.constant(2 ** 60),
  fc.constant(Number.NaN), fc.constant(Infinity), fc.array(fc.integer(), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 3 })
)
const tokens = fc.oneof(fc.nat({ max: 10_000 }), wild)
const millis = fc.oneof(fc.double({ min: 0, max: 1e6, noNaN: true }), fc.constant(7 * 24 * 3600 * 1000 + 1), wild)
const timestamp = fc.oneof(
  fc.date({ min: new Date('1970-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }).map((d) => d.toISOString()),
  fc.constantFrom('2026-02-29T00:00:00Z', '2024-02-29T23:59:59.999+05:30', '2026-01-01T00:00:00', '2026-13-01T00:00:00Z', '2026-01-01T24:00:00Z', '2026-01-01T10:00:00.1234567-07:00'),
  wild
)
const metadata = fc.oneof(fc.jsonValue({ maxDepth: 4 }), wild)
const model = fc.oneof(fc.string({ minLength: 0, maxLength: 6 }), fc.constant('x'.repeat(256)), fc.constant('x'.repeat(257)), fc.constantFrom('gpt-4', 'claude-3'), wild)
const FIELDS = ['timestamp', 'model', 'provider', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cached_tokens', 'reasoning_tokens', 'latency_ms', 'ttft_ms', 'status', 'cost', 'metadata', 'extra'] as const
const eventLike = fc.record(
  {
    timestamp, model, provider: fc.oneof(fc.constantFrom('openai', 'acme', ''), fc.constant('p'.repeat(65)), wild),
    prompt_tokens: tokens, completion_tokens: tokens, total_tokens: tokens, cached_tokens: tokens, reasoning_tokens: tokens,
    latency_ms: millis, ttft_ms: millis, status: fc.oneof(fc.constantFrom('success', 'error', 'ok'), wild), cost: fc.oneof(fc.double({ min: 0, max: 2e6, noNaN: true }), wild),
    metadata, extra: wild
  },
  { requiredKeys: [] }
).map((o) => {
  // `undefined` values stand for absent keys, as after JSON.parse.
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v
  return out
})

const validEvent = fc.record(
  {
    timestamp: fc.date({ min: new Date('1970-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }).map((d) => d.toISOString()),
    model: fc.string({ minLength: 1, maxLength: 20 }),
    provider: fc.constantFrom('openai', 'acme'),
    prompt_tokens: fc.nat({ max: 10_000 }),
    completion_tokens: fc.nat({ max: 10_000 }),
    cached_tokens: fc.nat({ max: 10_000 }),
    reasoning_tokens: fc.nat({ max: 10_000 }),
    latency_ms: fc.double({ min: 0, max: 1e6, noNaN: true }),
    ttft_ms: fc.double({ min: 0, max: 1e6, noNaN: true }),
    status: fc.constantFrom('success', 'error'),
    cost: fc.double({ min: 0, max: 1e6, noNaN: true }),
    metadata: fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.integer(), fc.string({ maxLength: 8 })), { maxKeys: 4 })
  },
  { requiredKeys: ['model'] }
).map((e) => ({ ...e, ...(e.prompt_tokens !== undefined && e.completion_tokens !== undefined && e.prompt_tokens % 2 === 0 ? { total_tokens: e.prompt_tokens + e.completion_tokens + (e.prompt_tokens % 3) } : {}) }))

/** A valid event with one field replaced by something likely wrong. */
const mutated = fc.tuple(validEvent, fc.constantFrom(...FIELDS), fc.oneof(wild, timestamp, metadata, model)).map(([e, k, v]) => {
  const out: Record<string, unknown> = { ...e }
  if (v === undefined) delete out[k]
  else out[k] = v
  return out
})

t.test('the fast path accepts exactly what the zod schema accepts, and builds the same event', async (t) => {
  let accepted = 0
  fc.assert(
    fc.property(fc.oneof({ arbitrary: validEvent, weight: 3 }, { arbitrary: mutated, weight: 4 }, { arbitrary: eventLike, weight: 1 }, { arbitrary: fc.anything(), weight: 1 }), (body) => {
      const z = schema.safeParse(body)
      const fast = fastPending(body, limits, NOW, infer)
      if (fast === null) {
        if (z.success) throw new Error(`zod accepted what the fast path declined: ${JSON.stringify(body)}`)
        return
      }
      accepted++
      if (!z.success) throw new Error(`fast path accepted what zod rejects: ${JSON.stringify(body)} — ${z.error.message}`)
      t.same(fast, toPending(z.data, NOW, infer))
    }),
    { numRuns: 4000 }
  )
  t.ok(accepted > 100, `${accepted} generated events were valid (the property saw both sides)`)
})

t.test('pendingBatch names the index of the first bad event', async (t) => {
  const good = { model: 'gpt-4', prompt_tokens: 1 }
  t.equal(pendingBatch(schema, limits, [good, good], NOW, infer).length, 2)
  t.throws(() => pendingBatch(schema, limits, [good, { model: 'gpt-4', prompt_tokens: -1 }], NOW, infer), { code: 'LLMS_ERR_VALIDATION', message: /index 1/ })
  // A valid name the fast path leaves to zod (surrogate pairs: zod counts code points).
  const emoji = '😀'.repeat(200)
  const [e] = pendingBatch(schema, limits, [{ model: emoji }], NOW, infer)
  t.equal(e.model, emoji)
})

t.test('metadata bounds: depth, keys, bytes', async (t) => {
  t.equal(checkMetadata({ a: 1 }, limits), null)
  t.match(checkMetadata({ a: { b: { c: { d: 1 } } } }, limits), /deeper than 3/)
  t.match(checkMetadata(Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`k${i}`, i])), limits), /more than 8 keys/)
  t.match(checkMetadata({ s: 'x'.repeat(300) }, limits), /more than 200/)
  t.match(checkMetadata({ a: [[[[1]]]] }, limits), /deeper/)
})

t.test('metadata size is the UTF-8 length of its JSON, exactly (walk vs JSON.stringify)', async (t) => {
  const all = { maxBytes: 1, maxDepth: 1000, maxKeys: 1_000_000 }
  const sizeOf = (meta: Record<string, unknown>) => Number(/is (\d+) bytes/.exec(checkMetadata(meta, all) ?? '')?.[1])
  // Any UTF-16 code unit: control characters, quotes, backslashes, lone and paired surrogates.
  const unit = fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(0, 8, 9, 10, 12, 13, 0x1f, 0x22, 0x5c, 0x7f, 0x80, 0x7ff, 0x800, 0xd83d, 0xde00, 0xdbff, 0xdc00)).map((c) => String.fromCharCode(c))
  const str = fc.string({ unit, maxLength: 12 })
  const leaf = fc.oneof(str, fc.double(), fc.integer(), fc.boolean(), fc.constant(null), fc.constant(-0), fc.constant(1e21), fc.constant(5e-324))
  const tree = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small' }, leaf, tie('array'), tie('object')),
    array: fc.array(tie('value'), { maxLength: 4 }),
    object: fc.dictionary(str, tie('value'), { maxKeys: 4 })
  }))
  fc.assert(
    fc.property(fc.dictionary(str, tree.value, { maxKeys: 5 }), (meta) => {
      const want = Buffer.byteLength(JSON.stringify(meta))
      return sizeOf(meta) === want
    }),
    { numRuns: 2000 }
  )
  // Not plain JSON data: measured by JSON.stringify, as before.
  for (const meta of [{ d: new Date(0) }, { u: undefined, a: 1 }, { a: [undefined, () => 1] }, { m: new Map([[1, 2]]) }, { j: { toJSON: () => 'xyz' } }, { n: Object.create(null) }, { big: Object.assign(Object.create({ inherited: 1 }), { own: 2 }) }]) {
    t.equal(sizeOf(meta as Record<string, unknown>), Buffer.byteLength(JSON.stringify(meta)), JSON.stringify(meta))
  }
  // Depth and key problems are still found first, whatever the size.
  t.match(checkMetadata({ s: 'x'.repeat(300), a: { b: { c: { d: 1 } } } }, limits), /deeper than 3/)
})

t.test('event ids carry their log position', async (t) => {
  fc.assert(fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), (seq) => seqOfEventId(makeEventId(seq)) === seq))
  t.equal(seqOfEventId('evt_10_abc'), null)
  t.equal(seqOfEventId('nope'), null)
  t.equal(seqOfEventId(`evt_${'z'.repeat(12)}_AAAAAAAAAAAA`), null)
})

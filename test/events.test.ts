import t from 'tap'
import fc from 'fast-check'
import { z } from 'zod'
import { eventSchema, fastPending, toPending, toPublic, checkMetadata, seqOfEventId, makeEventId, pendingBatch, pendingOne, type PricedEvent } from '../src/events.js'

const limits = { maxBytes: 200, maxDepth: 3, maxKeys: 8 }
const schema = eventSchema(limits)
const NOW = Date.parse('2026-06-01T00:00:00Z')
const infer = (m: string) => (m.startsWith('gpt') ? 'openai' : 'unknown')

/**
 * Timestamps at the edges of what `z.iso.datetime({ offset: true })` accepts: leap days
 * (century rule), month lengths, 23:59:59 vs 24:00 and leap seconds, seconds omitted, offsets
 * without a colon or past 23:59, lower-case t/z, a space for T, an empty fraction, long
 * fractions, signed or five-digit years, non-ASCII digits, whitespace around.
 */
const ISO_EDGES = [
  '2000-02-29T00:00:00Z', '1900-02-29T00:00:00Z', '2100-02-29T00:00:00Z', '2400-02-29T12:00:00Z', '0000-02-29T00:00:00Z', '2023-02-29T00:00:00Z', '2023-02-28T23:59:59Z',
  '2026-04-30T00:00:00Z', '2026-04-31T00:00:00Z', '2026-12-31T23:59:59Z', '2026-01-32T00:00:00Z', '2026-00-10T00:00:00Z', '2026-01-00T00:00:00Z',
  '2026-01-01T23:59:59.999999999Z', '2026-01-01T23:59:60Z', '2026-01-01T24:00:00Z', '2026-01-01T10:60:00Z', '2026-01-01T10:00Z', '2026-01-01T10Z',
  '2026-01-01T10:00:00+23:59', '2026-01-01T10:00:00+24:00', '2026-01-01T10:00:00-00:00', '2026-01-01T10:00:00+05:60', '2026-01-01T10:00:00+0530', '2026-01-01T10:00:00+05', '2026-01-01T10:00:00+5:30',
  '2026-01-01t10:00:00Z', '2026-01-01T10:00:00z', '2026-01-01 10:00:00Z', '2026-01-01T10:00:00.Z', '2026-01-01T10:00:00.5Z', '2026-01-01T10:00:00,5Z', '2026-01-01T10:00:00.5+01:00',
  '+02026-01-01T00:00:00Z', '-0001-01-01T00:00:00Z', '20260-01-01T00:00:00Z', '2026-1-01T00:00:00Z', '２０２６-01-01T00:00:00Z', '2026-01-01T00:00:00Z\n', ' 2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z ', '2026-01-01', ''
]

/** Strings built from the parts of an ISO date-time, each part often right and sometimes not. */
const pad = (n: number, w = 2) => String(n).padStart(w, '0')
const digits = (n: number) => fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: n, maxLength: n })
/** Mostly `right`, sometimes one of `wrong`. */
const often = <T,>(right: fc.Arbitrary<T>, ...wrong: fc.Arbitrary<T>[]) => fc.oneof({ arbitrary: right, weight: 6 * wrong.length }, ...wrong.map((arbitrary) => ({ arbitrary, weight: 1 })))
const isoLike = fc
  .tuple(
    often(fc.integer({ min: 0, max: 9999 }).map((y) => pad(y, 4)), fc.constantFrom('2000', '1900', '2100', '2400', '0400', '1600', '2024'), fc.constantFrom('+02026', '20261', '202')),
    often(fc.integer({ min: 1, max: 12 }).map((m) => pad(m)), digits(2), fc.constantFrom('1', '001')),
    often(fc.integer({ min: 1, max: 31 }).map((d) => pad(d)), fc.constantFrom('28', '29', '30', '31', '00', '32'), digits(2)),
    often(fc.constant('T'), fc.constantFrom('t', ' ')),
    often(fc.integer({ min: 0, max: 23 }).map((h) => pad(h)), digits(2)),
    often(fc.integer({ min: 0, max: 59 }).map((m) => ':' + pad(m)), fc.constantFrom(':60', ':5', '')),
    often(fc.integer({ min: 0, max: 59 }).map((m) => ':' + pad(m)), fc.constantFrom(':60', ':5', '')),
    often(fc.oneof(fc.constant(''), fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: 1, maxLength: 12 }).map((f) => '.' + f)), fc.constantFrom('.', ',5')),
    often(
      fc.oneof(fc.constant('Z'), fc.tuple(fc.constantFrom('+', '-'), fc.integer({ min: 0, max: 23 }).map((h) => pad(h)), fc.integer({ min: 0, max: 59 }).map((m) => pad(m))).map(([sign, h, m]) => `${sign}${h}:${m}`)),
      fc.constantFrom('z', ''),
      fc.tuple(fc.constantFrom('+', '-'), digits(2), fc.constantFrom(':', ''), digits(2)).map((p) => p.join(''))
    )
  )
  .map(([y, mo, d, t, h, mi, s, f, zone]) => `${y}-${mo}-${d}${t}${h}${mi}${s}${f}${zone}`)

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
  fc.constantFrom(...ISO_EDGES),
  wild
)
const metadata = fc.oneof(fc.jsonValue({ maxDepth: 4 }), wild)
const model = fc.oneof(fc.string({ minLength: 0, maxLength: 6 }), fc.constant('x'.repeat(256)), fc.constant('x'.repeat(257)), fc.constantFrom('gpt-4', 'claude-3'), wild)
/** Client ids (DESIGN §7): right ones, exported `evt_…` ids, and near misses (length 0 and 65, a space, `/`, `.`, non-ASCII). */
const clientId = fc.oneof(
  fc.string({ unit: fc.constantFrom(...'abcXYZ019_-'), minLength: 1, maxLength: 64 }),
  fc.nat().map((n) => makeEventId(n)),
  fc.constantFrom('', 'x'.repeat(64), 'x'.repeat(65), 'a b', 'a/b', 'a.b', 'é', 'ａ'),
  wild
)
/** Server-made fields of an exported EVENT: any value is accepted (and only some mean something). */
const serverMade = fc.oneof(fc.constantFrom('computed', 'caller', 'unpriced', true, false, 0, '2026-01-01T00:00:00.000Z'), wild)
const FIELDS = ['timestamp', 'model', 'provider', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cached_tokens', 'cache_write_tokens', 'reasoning_tokens', 'latency_ms', 'ttft_ms', 'status', 'cost', 'metadata', 'user_id', 'session_id', 'tags', 'id', 'client_id', 'seq', 'received_at', 'cost_source', 'unpriced', 'extra'] as const
const eventLike = fc.record(
  {
    timestamp, model, provider: fc.oneof(fc.constantFrom('openai', 'acme', ''), fc.constant('p'.repeat(65)), wild),
    prompt_tokens: tokens, completion_tokens: tokens, total_tokens: tokens, cached_tokens: tokens, cache_write_tokens: tokens, reasoning_tokens: tokens,
    latency_ms: millis, ttft_ms: millis, status: fc.oneof(fc.constantFrom('success', 'error', 'ok'), wild), cost: fc.oneof(fc.double({ min: 0, max: 2e6, noNaN: true }), wild),
    metadata, user_id: fc.oneof(fc.constantFrom('u1', 'x'.repeat(257)), wild), session_id: fc.oneof(fc.constantFrom('s1', ''), wild), tags: fc.oneof(fc.constantFrom(['a'], ['a', 'a'], []), wild),
    id: clientId, client_id: clientId, seq: serverMade, received_at: serverMade, cost_source: serverMade, unpriced: serverMade, extra: wild
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
    cache_write_tokens: fc.oneof(fc.constant(0), fc.nat({ max: 10_000 })),
    reasoning_tokens: fc.nat({ max: 10_000 }),
    latency_ms: fc.double({ min: 0, max: 1e6, noNaN: true }),
    ttft_ms: fc.double({ min: 0, max: 1e6, noNaN: true }),
    status: fc.constantFrom('success', 'error'),
    cost: fc.double({ min: 0, max: 1e6, noNaN: true }),
    metadata: fc.oneof(fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.integer(), fc.string({ maxLength: 8 })), { maxKeys: 4 }), fc.constant(null)),
    user_id: fc.oneof(fc.string({ minLength: 1, maxLength: 8 }), fc.constant(null)),
    session_id: fc.oneof(fc.string({ minLength: 1, maxLength: 8 }), fc.constant(null)),
    tags: fc.oneof(fc.uniqueArray(fc.string({ minLength: 1, maxLength: 8 }), { maxLength: 4 }), fc.constant(null)),
    id: fc.oneof(fc.string({ unit: fc.constantFrom(...'abcXYZ019_-'), minLength: 1, maxLength: 64 }), fc.nat().map((n) => makeEventId(n))),
    client_id: fc.oneof(fc.string({ unit: fc.constantFrom(...'abc_-'), minLength: 1, maxLength: 8 }), fc.constant(null)),
    seq: fc.nat(),
    received_at: fc.constant('2026-01-01T00:00:00.000Z'),
    cost_source: fc.constantFrom('computed', 'caller', 'unpriced'),
    unpriced: fc.boolean()
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

t.test('timestamps: the fast path accepts exactly the date-times zod\'s z.iso.datetime({ offset: true }) accepts', async (t) => {
  const iso = z.iso.datetime({ offset: true })
  const agree = (s: string) => {
    const byZod = iso.safeParse(s).success
    const fast = fastPending({ model: 'm', timestamp: s }, limits, NOW, infer)
    if ((fast !== null) !== byZod) throw new Error(`${JSON.stringify(s)}: zod ${byZod ? 'accepts' : 'rejects'}, the fast path ${fast !== null ? 'accepts' : 'declines'}`)
    // What both accept is read as Date.parse reads it.
    if (fast !== null && fast.ts !== Date.parse(s)) throw new Error(`${s}: ts ${fast.ts}`)
    return byZod
  }
  const accepted = ISO_EDGES.filter(agree)
  t.same(accepted, [
    '2000-02-29T00:00:00Z', '2400-02-29T12:00:00Z', '0000-02-29T00:00:00Z', '2023-02-28T23:59:59Z', '2026-04-30T00:00:00Z', '2026-12-31T23:59:59Z',
    '2026-01-01T23:59:59.999999999Z', '2026-01-01T10:00:00+23:59', '2026-01-01T10:00:00-00:00', '2026-01-01T10:00:00.5Z', '2026-01-01T10:00:00.5+01:00'
  ], 'the edges zod accepts (and no others)')
  let yes = 0
  fc.assert(fc.property(isoLike, (s) => { if (agree(s)) yes++ }), { numRuns: 20_000 })
  t.ok(yes > 1000, `${yes} generated date-times were valid (the property saw both sides)`)
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

t.test('an EVENT as GET /events/:id writes it reads back as the same event (import)', async (t) => {
  const base: PricedEvent = {
    seq: 41, id: makeEventId(41), ts: Date.parse('2026-02-03T04:05:06.789Z'), recv: Date.parse('2026-02-03T04:05:07Z'), model: 'gpt-4o', provider: 'openai',
    prompt: 100, completion: 20, total: 125, cached: 10, reasoning: 5, latency: 812.5, ttft: null, error: true, cost: null, meta: null,
    project: 'default', user: null, session: null, tags: null, costNanos: 1_234_567, unpriced: false
  }
  const again = (e: PricedEvent, project = 'default') => pendingOne(schema, limits, JSON.parse(JSON.stringify(toPublic(e))), NOW, infer, project)
  // A computed cost: kept as computed, with the exported cost; the key is the exported id.
  const computed = again(base)
  t.same(computed, {
    ts: base.ts, recv: NOW, model: 'gpt-4o', provider: 'openai', prompt: 100, completion: 20, total: 125, cached: 10, reasoning: 5, latency: 812.5, ttft: null, error: true,
    cost: 0.001234567, meta: null, project: 'default', user: null, session: null, tags: null, clientId: base.id, costSource: 'computed'
  }, 'seq and received_at ignored, nulls read as absent, received now')
  // Unpriced stays unpriced; a caller's cost stays the caller's; a client id wins over the id.
  t.match(again({ ...base, costNanos: 0, unpriced: true }), { cost: null, costSource: 'unpriced', clientId: base.id })
  const caller = again({ ...base, cost: 2.5, costNanos: 2_500_000_000, clientId: 'mine-1' })
  t.match(caller, { cost: 2.5, clientId: 'mine-1' })
  t.equal(caller.costSource, undefined, 'a caller cost is the plain caller cost')
  // Dimensions and metadata come through.
  const dims = again({ ...base, user: 'u1', session: 's1', tags: ['a', 'b'], meta: { k: 1 }, ttft: 12 }, 'team-b')
  t.match(dims, { user: 'u1', session: 's1', tags: ['a', 'b'], meta: { k: 1 }, ttft: 12, project: 'team-b' })
  // Cache writes come through (cache_write_tokens); an EVENT with 0 keeps the shape without them.
  t.equal(again({ ...base, cacheWrite: 700 }).cacheWrite, 700, 'cache_write_tokens imported')
  t.equal(toPublic(base).cache_write_tokens, 0, 'an event without cache writes shows 0')
  t.notOk('cacheWrite' in computed, 'cache_write_tokens 0 stores nothing')
  // The fast path and zod agree on these too.
  for (const e of [base, { ...base, unpriced: true, costNanos: 0 }, { ...base, cost: 1, clientId: 'c' }, { ...base, cacheWrite: 9 }]) {
    const body = JSON.parse(JSON.stringify(toPublic(e)))
    t.same(fastPending(body, limits, NOW, infer), toPending(schema.parse(body), NOW, infer))
  }
  // An event without id carries no clientId at all (its shape as before).
  t.notOk('clientId' in fastPending({ model: 'm' }, limits, NOW, infer)!)
})

t.test('event ids carry their log position', async (t) => {
  fc.assert(fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), (seq) => seqOfEventId(makeEventId(seq)) === seq))
  t.equal(seqOfEventId('evt_10_abc'), null)
  t.equal(seqOfEventId('nope'), null)
  t.equal(seqOfEventId(`evt_${'z'.repeat(12)}_AAAAAAAAAAAA`), null)
})

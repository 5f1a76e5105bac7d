/**
 * Span attributes → `user_id`, `session_id`, `tags` and the caller's metadata: priority, the
 * resource fallback, values the schema would refuse (left out, never cut), tag forms, and a
 * property test that whatever a span carries, the event passes the schema.
 */
import t from 'tap'
import fc from 'fast-check'
import { spanDimensions, spanMetadata, spanToEvent, tagList, ID_MAX, TAG_MAX } from '../../src/otlp/convert.js'
import { SESSION_ID_ATTRS, TAGS_ATTRS, USER_ID_ATTRS } from '../../src/otlp/aliases.js'
import type { AnyValue, SpanView } from '../../src/otlp/spans.js'
import { eventSchema, MAX_TAGS } from '../../src/events.js'

const LIMITS = { maxBytes: 16 * 1024, maxDepth: 8, maxKeys: 256 }
const tokens = { prompt: 1, completion: 1, cached: 0, reasoning: 0, cacheWrite: 0 }

const s = (v: string): AnyValue => ({ stringValue: v })
const list = (...v: string[]): AnyValue => ({ arrayValue: { values: v.map((x) => ({ stringValue: x })) } })

function view(attrs: Record<string, AnyValue>, resource: Record<string, AnyValue> = {}): SpanView {
  return {
    traceId: 'a'.repeat(32),
    spanId: 'b'.repeat(16),
    parentSpanId: '',
    name: 'chat',
    start: 1767225600000000000n,
    end: 1767225600500000000n,
    statusCode: 1,
    statusMessage: '',
    attrs: new Map(Object.entries({ 'gen_ai.request.model': s('gpt-4o'), ...attrs })),
    resource: new Map(Object.entries(resource)),
    scopeName: 'test'
  }
}

t.test('every user spelling is read, and the earlier one wins', async (t) => {
  for (let i = 0; i < USER_ID_ATTRS.length; i++) {
    const attrs: Record<string, AnyValue> = {}
    for (let j = i; j < USER_ID_ATTRS.length; j++) attrs[USER_ID_ATTRS[j]] = s(`u${j}`)
    t.equal(spanDimensions(view(attrs)).user_id, `u${i}`, USER_ID_ATTRS[i])
  }
  for (let i = 0; i < SESSION_ID_ATTRS.length; i++) {
    const attrs: Record<string, AnyValue> = {}
    for (let j = i; j < SESSION_ID_ATTRS.length; j++) attrs[SESSION_ID_ATTRS[j]] = s(`s${j}`)
    t.equal(spanDimensions(view(attrs)).session_id, `s${i}`, SESSION_ID_ATTRS[i])
  }
  for (let i = 0; i < TAGS_ATTRS.length; i++) {
    const attrs: Record<string, AnyValue> = {}
    for (let j = i; j < TAGS_ATTRS.length; j++) attrs[TAGS_ATTRS[j]] = list(`t${j}`)
    t.same(spanDimensions(view(attrs)).tags, [`t${i}`], TAGS_ATTRS[i])
  }
})

t.test('OpenLIT gen_ai.request.user is the user_id (regression: it was dropped)', async (t) => {
  const out = spanToEvent(view({ 'gen_ai.request.user': s('cust_7731'), 'gen_ai.usage.input_tokens': { intValue: '5' } }), LIMITS)
  t.equal(out.kind, 'event')
  if (out.kind === 'event') t.equal(out.event.user_id, 'cust_7731')
})

t.test('the span wins over the resource; the resource is read when the span has none', async (t) => {
  t.same(spanDimensions(view({}, { 'user.id': s('r_user'), 'session.id': s('r_sess'), 'tag.tags': list('r') })), { user_id: 'r_user', session_id: 'r_sess', sessionFrom: 'session.id', tags: ['r'] })
  // A low-priority spelling on the span still beats a high-priority one on the resource.
  t.equal(spanDimensions(view({ 'llm.user': s('span_user') }, { 'user.id': s('r_user') })).user_id, 'span_user')
})

t.test('ids the schema would refuse are left out, never cut, and the next spelling is not tried', async (t) => {
  const long = 'x'.repeat(ID_MAX + 1)
  t.same(spanDimensions(view({ 'user.id': s(long), 'gen_ai.request.user': s('fallback') })), {}, 'too long: no user_id')
  t.equal(spanDimensions(view({ 'user.id': s('x'.repeat(ID_MAX)) })).user_id?.length, ID_MAX, 'exactly 256 is fine')
  t.equal(spanDimensions(view({ 'user.id': s(''), 'enduser.id': s('e1') })).user_id, 'e1', 'an empty string is absent')
  t.equal(spanDimensions(view({ 'user.id': { intValue: '42' } })).user_id, '42', 'an integer id as its text')
  t.equal(spanDimensions(view({ 'user.id': { intValue: 7 } })).user_id, '7')
  t.same(spanDimensions(view({ 'user.id': { boolValue: true } })), {}, 'a boolean is not an id')
  t.same(spanDimensions(view({ 'user.id': { doubleValue: 1.5 } })), {}, 'a double is not an id')
  const out = spanToEvent(view({ 'user.id': s(long), 'session.id': s(long) }), LIMITS)
  t.equal(out.kind, 'event', 'the span is still an event')
  if (out.kind === 'event') {
    t.notOk('user_id' in out.event)
    t.notOk('session_id' in out.event)
  }
})

t.test('tags: list, JSON array string, comma list; trimmed, bounded, distinct', async (t) => {
  t.same(tagList(list('a', ' b ', 'a', '', 'c')), ['a', 'b', 'c'])
  t.same(tagList(s('["x", "y", 3, null, "x"]')), ['x', 'y', '3'])
  t.same(tagList(s('alpha, beta ,,gamma')), ['alpha', 'beta', 'gamma'])
  t.same(tagList(s('single')), ['single'])
  t.same(tagList(s('[not json')), ['[not json'], 'a broken JSON array is read as a comma list')
  t.same(tagList(list('ok', 'y'.repeat(TAG_MAX + 1), 'y'.repeat(TAG_MAX))), ['ok', 'y'.repeat(TAG_MAX)], 'a tag over 64 characters is left out, not cut')
  const many = Array.from({ length: 40 }, (_, i) => `t${i}`)
  t.same(tagList(list(...many)), many.slice(0, MAX_TAGS), 'the first 16')
  t.same(tagList({ intValue: '3' }), [], 'not a list or a string')
  t.same(spanDimensions(view({ 'langfuse.trace.tags': list('', ' ') })), {}, 'no usable tag: no tags field')
})

t.test('metadata: the caller’s own keys, dimensions not repeated, fixed keys win', async (t) => {
  const span = view({
    'gen_ai.operation.name': s('chat'),
    'traceloop.association.properties.user_id': s('u1'),
    'traceloop.association.properties.session_id': s('s1'),
    'traceloop.association.properties.chat_id': s('c1'),
    'langfuse.trace.metadata.feature': s('search'),
    'langfuse.trace.metadata.langfuse_user_id': s('u2'),
    'langfuse.observation.metadata.step': { intValue: '3' },
    'ai.telemetry.metadata.userId': s('u3'),
    'ai.telemetry.metadata.operation': s('caller operation'),
    metadata: s('{"tier": "gold", "n": 2, "ok": true, "deep": {"a": 1}, "list": [1], "langfuse_session_id": "s9"}'),
    'gen_ai.conversation.id': s('conv_1')
  })
  const dims = spanDimensions(span)
  t.same(dims, { user_id: 'u1', session_id: 's1', sessionFrom: 'traceloop.association.properties.session_id' })
  const meta = spanMetadata(span, tokens, LIMITS, dims)
  t.match(meta, { 'association.chat_id': 'c1', feature: 'search', step: 3, tier: 'gold', n: 2, ok: true, operation: 'chat', conversation_id: 'conv_1' })
  for (const k of ['association.user_id', 'association.session_id', 'langfuse_user_id', 'userId', 'deep', 'list', 'langfuse_session_id']) t.notOk(Object.hasOwn(meta, k), `${k} not copied`)

  // gen_ai.conversation.id that became the session is not repeated as conversation_id.
  const conv = view({ 'gen_ai.conversation.id': s('conv_2') })
  t.equal(spanDimensions(conv).session_id, 'conv_2')
  t.notOk(Object.hasOwn(spanMetadata(conv, tokens, LIMITS), 'conversation_id'))
})

t.test('metadata stays within the limits whatever the caller sends', async (t) => {
  const attrs: Record<string, AnyValue> = {}
  for (let i = 0; i < 100; i++) attrs[`langfuse.trace.metadata.k${i}`] = s('v'.repeat(300))
  const meta = spanMetadata(view(attrs), tokens, { maxBytes: 2048, maxDepth: 8, maxKeys: 20 })
  t.ok(Object.keys(meta).length <= 20)
  t.ok(Buffer.byteLength(JSON.stringify(meta)) <= 2048)
  t.ok(Object.values(meta).every((v) => typeof v !== 'string' || v.length <= 256), 'strings cut to 256 like other metadata strings')
  const all = spanMetadata(view(attrs), tokens, LIMITS)
  t.equal(Object.keys(all).filter((k) => k.startsWith('k')).length, 32, 'at most 32 caller entries')
})

t.test('OpenInference: only LLM and EMBEDDING spans are calls', async (t) => {
  const oi = (kind: string) => spanToEvent(view({ 'openinference.span.kind': s(kind), 'llm.model_name': s('gpt-4o'), 'llm.token_count.prompt': { intValue: '10' } }), LIMITS).kind
  t.equal(oi('LLM'), 'event')
  t.equal(oi('EMBEDDING'), 'event')
  for (const kind of ['CHAIN', 'AGENT', 'TOOL', 'RETRIEVER']) t.equal(oi(kind), 'ignored', kind)
})

t.test('property: whatever the dimension attributes hold, the event passes the schema', async (t) => {
  const schema = eventSchema(LIMITS)
  const value: fc.Arbitrary<AnyValue> = fc.oneof(
    fc.string({ maxLength: 300 }).map((x) => ({ stringValue: x })),
    fc.array(fc.string({ maxLength: 80 }), { maxLength: 30 }).map((xs) => ({ arrayValue: { values: xs.map((x) => ({ stringValue: x })) } })),
    fc.json().map((x) => ({ stringValue: x })),
    fc.oneof(fc.integer(), fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String)).map((x) => ({ intValue: x })),
    fc.double().map((x) => ({ doubleValue: x })),
    fc.boolean().map((x) => ({ boolValue: x }))
  )
  const names = [...USER_ID_ATTRS, ...SESSION_ID_ATTRS, ...TAGS_ATTRS, 'metadata', 'langfuse.trace.metadata', 'langfuse.trace.metadata.x', 'ai.telemetry.metadata.y']
  fc.assert(
    fc.property(fc.dictionary(fc.constantFrom(...names), value), fc.dictionary(fc.constantFrom(...names), value), (attrs, resource) => {
      const out = spanToEvent(view(attrs, resource), LIMITS)
      if (out.kind !== 'event') return false
      const r = schema.safeParse(out.event)
      return r.success
    }),
    { numRuns: 400 }
  )
  t.pass('400 random spans give valid events')
})

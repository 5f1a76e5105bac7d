/**
 * Pins the live stream's event message byte for byte: eventMessage writes it field by field for
 * speed, and must equal the object form (eventMessageObject, JSON.stringify of the documented
 * object) for every event — strings that need escaping (quotes, backslashes, control
 * characters, lone surrogates, non-ASCII), any number, null and absent dimensions.
 */
import t from 'tap'
import fc from 'fast-check'
import { eventMessage, eventMessageObject, textFrame } from '../../src/actors/broadcaster.js'
import type { PricedEvent } from '../../src/events.js'

const base: PricedEvent = {
  seq: 7, id: 'evt_7', ts: 1_700_000_000_123, recv: 0, model: 'gpt-4o', provider: 'openai', prompt: 100, completion: 50, total: 150, cached: 0, reasoning: 0,
  latency: 12.5, ttft: null, error: false, cost: null, meta: null, project: 'default', user: null, session: null, tags: null, costNanos: 1234, unpriced: false
} as PricedEvent

t.test('a plain event: the documented message', async (t) => {
  t.equal(eventMessage(base), '{"type":"event","id":"evt_7","seq":7,"timestamp":"2023-11-14T22:13:20.123Z","model":"gpt-4o","provider":"openai","total_tokens":150,"latency_ms":12.5,"cost":0.000001234,"status":"success","user_id":null,"session_id":null,"tags":null}')
  t.equal(eventMessage(base), eventMessageObject(base))
})

t.test('every event: the same bytes as the object form', async (t) => {
  // fullUnicode + lone surrogates and control characters: everything JSON.stringify escapes.
  const str = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom('"', '\\', '\u0000', '\u001f', '\u2028', '\ud800', 'a\udc00b', '😀', '</script>'))
  const num = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(-0, 0, 1e21, 1e-7, Number.MAX_SAFE_INTEGER, NaN, Infinity, -Infinity))
  const dim = fc.oneof(fc.constant(null), fc.constant(undefined), str)
  const tags = fc.oneof(fc.constant(null), fc.constant(undefined), fc.array(str, { maxLength: 4 }))
  let fast = 0
  fc.assert(
    fc.property(
      fc.record({ id: str, seq: num, ts: fc.oneof(fc.integer({ min: -8.64e15, max: 8.64e15 }), fc.integer({ min: 1_700_000_000_000, max: 1_700_000_003_000 }), fc.double(), fc.constantFrom(8.64e15, -8.64e15, 8.64e15 + 1, -8.64e15 - 1, 0, -1, 999, 1000, -1000, -1001, 1.5)), model: str, provider: str, total: num, latency: num, costNanos: num, error: fc.boolean(), user: dim, session: dim, tags }),
      (over) => {
        const e = { ...base, ...over } as PricedEvent
        let want: string
        try {
          want = eventMessageObject(e)
        } catch (err) {
          // An invalid time: both forms throw the same error.
          try {
            eventMessage(e)
          } catch (err2) {
            return String(err2) === String(err)
          }
          return false
        }
        if (eventMessage(e) !== want) return false
        if ([over.seq, over.total, over.latency, over.costNanos].every(Number.isFinite) && over.user !== undefined && over.session !== undefined && over.tags !== undefined) fast++
        return textFrame(eventMessage(e)).equals(textFrame(want))
      }
    ),
    { numRuns: 3000, seed: 15 }
  )
  // Not vacuous: many events took the field-by-field path (the others its fallback).
  t.ok(fast > 300, `${fast} of 3000 written field by field`)
})

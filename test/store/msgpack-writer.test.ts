import t from 'tap'
import fc from 'fast-check'
import { Unpackr } from 'msgpackr'
import { MsgpackWriter } from '../../src/store/msgpack-writer.js'

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

/** Values read back, -0 told apart from 0 (t.same does not). */
const exact = (v: unknown): unknown => JSON.stringify(v, (_k, x) => (Object.is(x, -0) ? '-0' : x))

t.test('every JSON value reads back the same through msgpackr (property), value after value in one buffer', async (t) => {
  const w = new MsgpackWriter(16) // small: growing is exercised too
  const number = fc.oneof(
    fc.integer(),
    fc.constantFrom(0, -0, 127, 128, 255, 256, 65_535, 65_536, 0xffffffff, 0x100000000, -32, -33, -128, -129, -32_768, -32_769, -0x80000000, -0x80000001, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 1e300, 5e-324),
    fc.double({ noNaN: true, noDefaultInfinity: true })
  )
  const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 300 }))
  const json = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small' }, fc.constant(null), fc.boolean(), number, text, fc.array(tie('value'), { maxLength: 20 }), fc.dictionary(text.filter((k) => k !== '__proto__'), tie('value'), { maxKeys: 20 }))
  })).value
  fc.assert(
    fc.property(fc.array(json, { minLength: 1, maxLength: 8 }), (values) => {
      w.reset()
      const ends: number[] = []
      for (const v of values) {
        w.value(v)
        ends.push(w.length)
      }
      const bytes = w.copy()
      const all = unpackr.unpackMultiple(bytes)
      if (exact(all) !== exact(values)) return false
      // Each value alone, from its own bytes.
      let start = 0
      for (let i = 0; i < values.length; i++) {
        if (exact(unpackr.unpack(bytes.subarray(start, ends[i]))) !== exact(values[i])) return false
        start = ends[i]
      }
      return true
    }),
    { numRuns: 500 }
  )
})

t.test('long strings and containers take the wider headers; a short map is written in its shortest form', async (t) => {
  const w = new MsgpackWriter(8)
  for (const v of ['x'.repeat(31), 'x'.repeat(32), 'é'.repeat(100), 'x'.repeat(70_000), '😀'.repeat(30_000), Array.from({ length: 70_000 }, (_, i) => i % 3), Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i]))]) {
    w.reset()
    w.value(v)
    t.same(unpackr.unpack(w.copy()), v, `${typeof v} of ${Array.isArray(v) ? v.length : typeof v === 'string' ? v.length : Object.keys(v).length}`)
  }
  w.reset()
  w.value({ feature: 'chat', env: 'prod', prompt_version: 3 })
  // fixmap, then fixstr + bytes for each key and string, a positive fixint: 1 + 8 + 5 + 4 + 5 + 15 + 1.
  t.equal(w.length, 39, 'a short map in its shortest form')
  t.throws(() => w.value(() => 1), /not a JSON value/)
})

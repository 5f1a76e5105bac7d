/** IngestRouter helpers: joining per-commit arrays keeps log order (a replacement for Array.prototype.flat, which was slow). */
import t from 'tap'
import fc from 'fast-check'
import { concatAll } from '../../src/actors/ingest-router.js'

t.test('concatAll equals flat(), in order, for few and for very many arrays', async (t) => {
  fc.assert(fc.property(fc.array(fc.array(fc.integer(), { maxLength: 5 }), { maxLength: 40 }), (arrays) => {
    t.same(concatAll(arrays), arrays.flat())
    return true
  }))
  const many = Array.from({ length: 5000 }, (_, i) => [i, i + 0.5])
  t.same(concatAll(many), many.flat(), 'past the spread bound: the loop path')
  t.same(concatAll([]), [])
  const one = [1, 2]
  t.same(concatAll([one]), [1, 2])
})

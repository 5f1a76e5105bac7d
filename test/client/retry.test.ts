/** The client's retry rules and its ring buffer (the wait itself: test/backoff.test.ts). */
import t from 'tap'
import { RETRYABLE_STATUS } from '../../src/client/retry.js'
import { Ring } from '../../src/client/ring.js'

t.test('RETRYABLE_STATUS: rate limited or briefly unable, nothing else', async (t) => {
  t.same([...RETRYABLE_STATUS].sort(), [429, 502, 503, 504])
  for (const s of [400, 401, 403, 404, 409, 413, 415, 500]) t.notOk(RETRYABLE_STATUS.has(s), `${s} is not retried`)
})

t.test('Ring: FIFO, overwrites the oldest when full, take() wraps around', async (t) => {
  t.throws(() => new Ring(0), /capacity must be an integer >= 1/)
  const r = new Ring<number>(3)
  t.equal(r.push(1), undefined)
  t.equal(r.push(2), undefined)
  t.equal(r.push(3), undefined)
  t.equal(r.push(4), 1, 'full: the oldest comes back')
  t.equal(r.peek(), 2)
  t.same(r.take(2), [2, 3])
  r.push(5)
  r.push(6)
  t.equal(r.size, 3)
  t.same(r.clear(), [4, 5, 6])
  t.equal(r.size, 0)
  t.equal(r.peek(), undefined)
})

/** Backoff arithmetic and the client's ring buffer. */
import t from 'tap'
import { parseRetryAfter, retryDelay } from '../../src/client/retry.js'
import { Ring } from '../../src/client/ring.js'

t.test('Retry-After: delta-seconds and HTTP-date', async (t) => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  t.equal(parseRetryAfter('3', now), 3000)
  t.equal(parseRetryAfter(' 0 ', now), 0)
  t.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now), 5000)
  t.equal(parseRetryAfter('Wed, 31 Dec 2025 23:59:00 GMT', now), 0, 'a date in the past: no wait')
  t.equal(parseRetryAfter('soon', now), null)
  t.equal(parseRetryAfter(null, now), null)
})

t.test('retryDelay: Retry-After wins, capped; otherwise exponential with equal jitter', async (t) => {
  t.equal(retryDelay(0, 1000, 250, 30_000, () => 0), 1000)
  t.equal(retryDelay(0, 1000, 250, 30_000, () => 1), 1100, 'at most +10%')
  t.equal(retryDelay(0, 120_000, 250, 30_000, () => 0), 30_000, 'capped at retryMaxMs')
  for (let attempt = 0; attempt < 8; attempt++) {
    const cap = Math.min(30_000, 250 * 2 ** attempt)
    t.equal(retryDelay(attempt, null, 250, 30_000, () => 0), Math.round(cap / 2))
    t.equal(retryDelay(attempt, null, 250, 30_000, () => 1), cap)
  }
  t.equal(retryDelay(100, null, 250, 30_000, () => 1), 30_000, 'no overflow on a large attempt')
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

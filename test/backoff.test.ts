/** The shared retry backoff: full jitter, Retry-After honoured, capped (src/backoff.ts). */
import t from 'tap'
import fc from 'fast-check'
import { backoffDelay, parseRetryAfter } from '../src/backoff.js'

const policy = { baseMs: 250, maxMs: 30_000 }

t.test('parseRetryAfter: delta-seconds and HTTP-date, never negative, null when unreadable', async (t) => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  t.equal(parseRetryAfter('3', now), 3000)
  t.equal(parseRetryAfter(' 0 ', now), 0)
  t.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now), 5000, 'IMF-fixdate')
  t.equal(parseRetryAfter('Thursday, 01-Jan-26 00:00:07 GMT', now), 7000, 'obsolete RFC 850 form')
  t.equal(parseRetryAfter('Thu Jan  1 00:00:09 2026', now) !== null, true, 'asctime form is read')
  t.equal(parseRetryAfter('Wed, 31 Dec 2025 23:59:00 GMT', now), 0, 'a date in the past: no wait')
  t.equal(parseRetryAfter('soon', now), null)
  t.equal(parseRetryAfter('-5', now), null, 'not a delay, not a date')
  t.equal(parseRetryAfter('1.5', now), null, 'delta-seconds are whole')
  t.equal(parseRetryAfter('', now), null)
  t.equal(parseRetryAfter(null, now), null)
  t.equal(parseRetryAfter(undefined, now), null)
})

t.test('full jitter: a random wait over [0, base·2^attempt], capped', async (t) => {
  for (let attempt = 0; attempt < 10; attempt++) {
    const window = Math.min(30_000, 250 * 2 ** attempt)
    t.equal(backoffDelay(attempt, policy, null, () => 0), 0, `attempt ${attempt}: low end`)
    t.equal(backoffDelay(attempt, policy, null, () => 0.5), Math.round(window / 2), `attempt ${attempt}: middle`)
    t.equal(backoffDelay(attempt, policy, null, () => 0.999_999_9), window, `attempt ${attempt}: top`)
  }
  t.equal(backoffDelay(1000, policy, null, () => 0.999_999_9), 30_000, 'a huge attempt stays finite and capped')
  t.equal(backoffDelay(-1, policy, null, () => 0.5), 125, 'a negative attempt counts as the first')
  t.equal(backoffDelay(3, { baseMs: 0, maxMs: 30_000 }, null, () => 0.9), 0, 'base 0: retry at once')
})

t.test('Retry-After wins over the window, with at most 10% (≤ 1 s) jitter, capped', async (t) => {
  t.equal(backoffDelay(0, policy, 1000, () => 0), 1000)
  t.equal(backoffDelay(5, policy, 1000, () => 0), 1000, 'whatever the attempt')
  t.equal(backoffDelay(0, policy, 1000, () => 0.999_999_9), 1100, 'at most +10%')
  t.equal(backoffDelay(0, policy, 20_000, () => 0.999_999_9), 21_000, 'jitter at most 1 s')
  t.equal(backoffDelay(0, policy, 120_000, () => 0.5), 30_000, 'a longer Retry-After is cut to the cap')
  t.equal(backoffDelay(0, policy, 29_500, () => 0.999_999_9), 30_000, 'jitter never passes the cap')
  t.equal(backoffDelay(0, policy, 0, () => 0.7), 0, 'Retry-After: 0 means now')
})

t.test('property: an integer in [0, maxMs]; at least Retry-After (up to the cap); within the window otherwise', async (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: -5, max: 2000 }),
      fc.integer({ min: 0, max: 60_000 }),
      fc.integer({ min: 0, max: 600_000 }),
      fc.option(fc.integer({ min: 0, max: 10_000_000 })),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      (attempt, baseMs, maxMs, retryAfterMs, r) => {
        const d = backoffDelay(attempt, { baseMs, maxMs }, retryAfterMs, () => r)
        if (!Number.isInteger(d) || d < 0 || d > maxMs) return false
        if (retryAfterMs !== null) return d >= Math.min(retryAfterMs, maxMs) && d <= Math.min(maxMs, retryAfterMs + Math.min(retryAfterMs * 0.1, 1000) + 0.5)
        return d <= Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, attempt), 30))
      },
    ),
    { numRuns: 2000 },
  )
  t.pass('bounds held')
})

t.test('jitter spreads a fleet: senders failing together do not retry in lockstep', async (t) => {
  let seed = 42
  const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31)
  const waits = Array.from({ length: 200 }, () => backoffDelay(4, policy, null, random))
  t.ok(new Set(waits).size > 150, `distinct waits: ${new Set(waits).size} of 200`)
  t.ok(Math.min(...waits) < 1000 && Math.max(...waits) > 3000, 'over the whole [0, 4000] window')
})

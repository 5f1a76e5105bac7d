import t from 'tap'
import fc from 'fast-check'
import { cloneTotals, createTotals, mergeTotals, recordTotals } from '../../src/analytics/totals.js'
import { isValidRow } from '../../src/analytics/row.js'
import type { Row } from '../../src/analytics/row.js'
import { naiveTotals, rowArb } from './fixtures/naive.js'

const row = (over: Partial<Row> = {}): Row => ({
  ts: 0,
  promptTokens: 10,
  completionTokens: 20,
  totalTokens: 30,
  cachedTokens: 4,
  reasoningTokens: 5,
  latencyUs: 1500,
  costNanos: 7,
  error: false,
  unpriced: false,
  ...over,
})

t.test('createTotals is all zeros', async (t) => {
  t.same(createTotals(), {
    requests: 0,
    promptTokens: 0,
    completionTokens: 0,
    totalTokens: 0,
    cachedTokens: 0,
    reasoningTokens: 0,
    latencyUsSum: 0,
    costNanos: 0,
    errors: 0,
    unpriced: 0,
  })
})

t.test('recordTotals adds every field and counts flags', async (t) => {
  const tot = createTotals()
  recordTotals(tot, row())
  recordTotals(tot, row({ error: true, unpriced: true, latencyUs: 500, costNanos: 0 }))
  t.same(tot, {
    requests: 2,
    promptTokens: 20,
    completionTokens: 40,
    totalTokens: 60,
    cachedTokens: 8,
    reasoningTokens: 10,
    latencyUsSum: 2000,
    costNanos: 7,
    errors: 1,
    unpriced: 1,
  })
})

t.test('merging partial totals equals totals of all rows, in any grouping', async (t) => {
  fc.assert(
    fc.property(fc.array(rowArb(), { maxLength: 100 }), fc.nat(), (rows, cut) => {
      const k = rows.length === 0 ? 0 : cut % rows.length
      const a = createTotals()
      const b = createTotals()
      rows.slice(0, k).forEach((r) => recordTotals(a, r))
      rows.slice(k).forEach((r) => recordTotals(b, r))
      const ab = mergeTotals(cloneTotals(a), b)
      const ba = mergeTotals(cloneTotals(b), a)
      t.same(ab, naiveTotals(rows))
      t.same(ba, ab)
    }),
    { numRuns: 100 },
  )
})

t.test('cloneTotals is independent of its source', async (t) => {
  const a = createTotals()
  recordTotals(a, row())
  const b = cloneTotals(a)
  recordTotals(b, row())
  t.equal(a.requests, 1)
  t.equal(b.requests, 2)
})

t.test('isValidRow accepts the contract and refuses what would break exact sums', async (t) => {
  t.ok(isValidRow(row()))
  t.ok(isValidRow(row({ ts: -8.64e15 })), 'start of the Date range')
  t.ok(isValidRow(row({ promptTokens: 2 ** 40 })), 'above 2^32')
  const bad: [string, Partial<Row>][] = [
    ['fractional tokens', { promptTokens: 1.5 }],
    ['negative cost', { costNanos: -1 }],
    ['NaN latency', { latencyUs: NaN }],
    ['fractional ts', { ts: 1.5 }],
    ['ts beyond the Date range', { ts: 8.64e15 + 1 }],
    ['unsafe integer', { totalTokens: 2 ** 53 }],
    ['string tokens', { cachedTokens: '3' as unknown as number }],
    ['non-boolean flag', { error: 1 as unknown as boolean }],
  ]
  for (const [name, over] of bad) t.notOk(isValidRow(row(over)), name)
  t.notOk(isValidRow(null as unknown as Row), 'null')
})

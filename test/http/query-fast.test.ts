/**
 * fastRangeQuery (src/http/query.ts): the analytics routes' zod-free parse of the common query.
 * Wherever it answers, it must give what the zod schema plus parseWithFilters give; wherever
 * zod would refuse the query or read a filter, it must step aside (null) so zod answers.
 */
import t from 'tap'
import fc from 'fast-check'
import { z } from 'zod'
import { fastRangeQuery, filterShape, parseWithFilters, rangeShape } from '../../src/http/query.js'

const rangeQuery = z.looseObject({ ...rangeShape, ...filterShape })
const timeseriesQuery = z.looseObject({ ...rangeShape, interval: z.enum(['1m', '5m', '1h']).default('1h'), ...filterShape })

const value = fc.oneof(
  fc.integer({ min: -9e15, max: 9e15 }).map(String),
  fc.constantFrom('', ' ', '12a', '-0', '007', '1767255938720', '99999999999999999', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00+02:00', 'gpt-4o', 'a,b', ' a , ,b ', ',', 'x'.repeat(300), '1m', '5m', '1h', '2h', 'error', 'u1'),
  fc.string({ maxLength: 12 })
)
const key = fc.constantFrom('start_time', 'end_time', 'model', 'provider', 'api_key', 'project', 'interval', 'status', 'user_id', 'tag', 'metadata.plan', 'bogus')
const query = fc.dictionary(key, fc.oneof({ weight: 9, arbitrary: value }, { weight: 1, arbitrary: fc.array(value, { minLength: 2, maxLength: 2 }) }), { maxKeys: 5 })

function viaZod(schema: typeof rangeQuery | typeof timeseriesQuery, q: Record<string, unknown>): unknown {
  try {
    const { q: out, filters } = parseWithFilters(schema, q)
    const o = out as Record<string, unknown>
    return { start_time: o.start_time, end_time: o.end_time, model: o.model, provider: o.provider, interval: o.interval, filters }
  } catch {
    return 'refused'
  }
}

t.test('where the fast parse answers, it answers as zod does; otherwise zod decides', (t) => {
  let fast = 0
  fc.assert(
    fc.property(query, fc.boolean(), (q, interval) => {
      const got = fastRangeQuery(q, interval)
      if (got === null) return
      fast++
      const want = viaZod(interval ? timeseriesQuery : rangeQuery, q)
      const mine = { start_time: got.start_time, end_time: got.end_time, model: got.model, provider: got.provider, interval: interval ? got.interval : undefined, filters: {} }
      t.same(mine, want, JSON.stringify(q))
      if (!interval && 'interval' in q) throw new Error('interval accepted on a route without one')
    }),
    { numRuns: 3000 }
  )
  t.ok(fast > 100, `${fast} queries took the fast path`)
  t.end()
})

t.test('the common queries take the fast path', (t) => {
  t.same(fastRangeQuery({ start_time: '1767255938720', end_time: '1767386195804', model: 'gpt-4o, gpt-4' }, false), { start_time: 1767255938720, end_time: 1767386195804, model: new Set(['gpt-4o', 'gpt-4']) })
  t.same(fastRangeQuery({ start_time: '0', interval: '5m', api_key: 'k' }, true), { start_time: 0, interval: '5m' })
  t.same(fastRangeQuery({}, true), { interval: '1h' })
  t.equal(fastRangeQuery({ start_time: '2026-01-01T00:00:00Z' }, false), null, 'an ISO time goes to zod')
  t.equal(fastRangeQuery({ user_id: 'u1' }, false), null, 'a filter goes to zod')
  t.equal(fastRangeQuery({ model: ['a', 'b'] }, false), null, 'a repeated parameter goes to zod')
  t.end()
})

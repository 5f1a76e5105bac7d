/**
 * DimTotals.build (one value at a time, latencies laid out by value) gives the same totals and
 * sketches as adding the same rows one by one.
 */
import t from 'tap'
import { DimTotals, DIM_FIELDS } from '../../src/analytics/dim-totals.js'

t.test('build equals add row by row: sums, counts, min, max and quantiles of every value', async (t) => {
  let x = 12345
  const r = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  const rows: Array<{ id: number; v: number[]; flags: number }> = []
  for (let i = 0; i < 20_000; i++) {
    // Ids with gaps (some values never seen), a few heavy values, latencies over six decades and zero.
    const id = r() < 0.3 ? Math.floor(r() * 5) : 7 + Math.floor(r() * 3_000) * 2
    const latency = r() < 0.02 ? 0 : Math.round(10 ** (r() * 6 + 1))
    rows.push({ id, v: [r() * 1000 | 0, r() * 100 | 0, 0, 3, 1, latency, r() * 1e7 | 0], flags: r() < 0.1 ? 1 : r() < 0.05 ? 2 : 0 })
  }
  for (const row of rows) row.v[2] = row.v[0] + row.v[1]
  const one = new DimTotals()
  for (const row of rows) one.add(row.id, row.v, row.flags)
  const built = DimTotals.build((visit) => {
    for (const row of rows) visit(row.id, row.v, row.flags)
  })
  t.equal(built.top, one.top, 'the same ids')
  t.same(Array.from(built.totals.subarray(0, built.top * DIM_FIELDS)), Array.from(one.totals.subarray(0, one.top * DIM_FIELDS)), 'the same sums')
  let compared = 0
  for (let id = 0; id < one.top; id++) {
    const a = one.sketch(id)
    const b = built.sketch(id)
    if (a === undefined) {
      if (b !== undefined) t.fail(`value ${id}: a sketch without rows`)
      continue
    }
    if (b === undefined) {
      t.fail(`value ${id}: no sketch`)
      continue
    }
    const same = a.count === b.count && a.zeroCount === b.zeroCount && a.min === b.min && a.max === b.max && [0.01, 0.5, 0.95, 0.99, 1].every((q) => a.quantile(q) === b.quantile(q))
    if (!same) t.fail(`value ${id}: count ${a.count}/${b.count}, min ${a.min}/${b.min}, max ${a.max}/${b.max}, p95 ${a.quantile(0.95)}/${b.quantile(0.95)}`)
    compared++
  }
  t.ok(compared > 500, `every value's sketch compared (${compared})`)
  t.equal(built.sketch(6), undefined, 'a value without rows has no sketch')
})

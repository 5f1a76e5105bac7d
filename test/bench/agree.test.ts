/** The bench's answer check (bench/agree.ts) and goal reading (bench/goals.ts): what makes a "met" or an "answers agree" in bench tables. */
import t from 'tap'
import { differs, Verdict, type Answer, type Figures } from '../../bench/agree.js'
import { goalMet } from '../../bench/goals.js'

const fig = (requests: number, extra: Partial<Figures> = {}): Figures => ({ requests, tokens: requests * 10, costNanos: requests * 1000, errors: 0, ...extra })
const total = (f: Figures): Answer => ({ groups: [], ordered: false, total: f })

t.test('totals: counts, tokens, errors exact; cost to the nano-dollar', async (t) => {
  t.equal(differs(total(fig(5)), total(fig(5)), { percentiles: false }), null)
  t.match(differs(total(fig(5)), total(fig(6)), { percentiles: false }), /total: requests 5 vs 6/)
  t.match(differs(total(fig(5)), total(fig(5, { tokens: 51 })), { percentiles: false }), /tokens 50 vs 51/)
  t.match(differs(total(fig(5)), total(fig(5, { costNanos: 5001 })), { percentiles: false }), /cost 5000 vs 5001/)
  t.match(differs(total(fig(5)), total(fig(5, { errors: 1 })), { percentiles: false }), /errors 0 vs 1/)
  t.equal(differs(total(fig(5, { errors: undefined })), total(fig(5, { errors: 1 })), { percentiles: false }), null, 'errors compared only when both give them')
  t.equal(differs(total(fig(0, { tokens: 3 })), total(fig(0)), { percentiles: false }), null, 'an empty range compares requests only')
  // Past 2^53 nano-dollars a double's last unit is rounding.
  const big = 2 ** 60
  t.equal(differs(total(fig(1, { costNanos: big + 256 })), total(fig(1, { costNanos: big })), { percentiles: false }), null)
})

t.test('percentiles: only when asked, within the relative tolerance, null vs a value differs', async (t) => {
  const ours = total(fig(9, { pct: { p50: 100.5, p99: 200 } }))
  const near = total(fig(9, { pct: { p50: 100, p99: 199 } }))
  const far = total(fig(9, { pct: { p50: 100, p99: 150 } }))
  t.equal(differs(ours, far, { percentiles: false }), null, 'timed answers: percentiles not compared')
  t.equal(differs(ours, near, { percentiles: true }), null, 'within 1%')
  t.match(differs(ours, far, { percentiles: true }), /p99 200 vs 150 ms/)
  t.equal(differs(ours, far, { percentiles: true, tolerance: 0.5 }), null, 'a wider tolerance')
  t.match(differs(total(fig(9, { pct: { p50: null } })), total(fig(9, { pct: { p50: 1 } })), { percentiles: true }), /p50 null vs 1/)
  t.equal(differs(total(fig(9)), total(fig(9, { pct: { p95: 3 } })), { percentiles: true }), null, 'a percentile ours does not give is not compared')
})

t.test('ordered groups: same keys in the same order; keyed groups: any order, empty ones ignored', async (t) => {
  const a: Answer = { groups: [{ key: 'u1', ...fig(3) }, { key: 'u2', ...fig(2) }], ordered: true, total: fig(5) }
  t.equal(differs(a, structuredClone(a), { percentiles: false }), null)
  t.match(differs(a, { ...a, groups: [a.groups[1], a.groups[0]] }, { percentiles: false }), /group 1: u1 vs u2/)
  t.match(differs(a, { ...a, groups: [a.groups[0]] }, { percentiles: false }), /2 groups vs 1/)
  t.match(differs(a, { ...a, groups: [a.groups[0], { key: 'u2', ...fig(4) }] }, { percentiles: false }), /u2: requests 2 vs 4/)
  t.match(differs(a, { ...a, total: fig(6) }, { percentiles: false }), /total: requests 5 vs 6/)

  const k: Answer = { groups: [{ key: 'h0', ...fig(0) }, { key: 'h1', ...fig(4) }, { key: 'h2', ...fig(1) }], ordered: false }
  t.equal(differs(k, { groups: [{ key: 'h2', ...fig(1) }, { key: 'h1', ...fig(4) }], ordered: false }, { percentiles: false }), null, 'ours fills empty buckets, theirs does not')
  t.match(differs(k, { groups: [{ key: 'h1', ...fig(4) }], ordered: false }, { percentiles: false }), /2 non-empty groups vs 1/)
  t.match(differs(k, { groups: [{ key: 'h1', ...fig(4) }, { key: 'h3', ...fig(1) }], ordered: false }, { percentiles: false }), /group h3: missing/)
  t.match(differs(k, { groups: [{ key: 'h1', ...fig(4) }, { key: 'h2', ...fig(2) }], ordered: false }, { percentiles: false }), /h2: requests 1 vs 2/)
})

t.test('search page: same times newest first, same events but for ties at the last millisecond', async (t) => {
  const page = (...evs: Array<[number, string]>): Answer => ({ groups: [], ordered: false, page: evs.map(([ts, fields]) => ({ ts, fields })) })
  const ours = page([30, 'a'], [20, 'b'], [20, 'c'], [10, 'd'], [10, 'e'])
  t.equal(differs(ours, page([30, 'a'], [20, 'c'], [20, 'b'], [10, 'x'], [10, 'd']), { percentiles: false }), null, 'ties in any order; the last ms may hold other events')
  t.match(differs(ours, page([30, 'a'], [20, 'b'], [20, 'z'], [10, 'd'], [10, 'e']), { percentiles: false }), /page: event 20\|c vs 20\|z/)
  t.match(differs(ours, page([30, 'a'], [20, 'b'], [20, 'c'], [11, 'd'], [10, 'e']), { percentiles: false }), /page event 4: time 10 vs 11/)
  t.match(differs(ours, page([30, 'a']), { percentiles: false }), /page of 5 events vs 1/)
  t.match(differs(page([10, 'a'], [20, 'b']), page([10, 'a'], [20, 'b']), { percentiles: false }), /page event 2: not newest first/)
  t.match(differs(ours, { groups: [], ordered: false }, { percentiles: false }), /page on one side only/)
  t.equal(differs(page(), page(), { percentiles: false }), null, 'two empty pages')
})

t.test('Verdict counts agreements and keeps the first difference', async (t) => {
  const v = new Verdict()
  t.equal(String(v), 'answers agree 0/0')
  v.judge('q1', total(fig(1)), total(fig(1)), { percentiles: false })
  t.ok(v.ok)
  t.equal(String(v), 'answers agree 1/1')
  v.judge('q2', total(fig(1)), total(fig(2)), { percentiles: false })
  v.judge('q3', total(fig(1)), total(fig(3)), { percentiles: false })
  t.notOk(v.ok)
  t.equal(String(v), 'DISAGREE 2/3, first: q2: total: requests 1 vs 2')
})

t.test('goalMet reads plain goals against value or ratio; an explicit met wins; unreadable is undefined', async (t) => {
  t.equal(goalMet({ value: 1.5, goal: '≤ 2' }), true)
  t.equal(goalMet({ value: 2.5, goal: '≤ 2' }), false)
  t.equal(goalMet({ value: 2, goal: '< 2' }), false)
  t.equal(goalMet({ value: 250_000, goal: '≥ 200,000' }), true)
  t.equal(goalMet({ value: 3, goal: '> 3' }), false)
  t.equal(goalMet({ value: 3, goal: '>= 3' }), true)
  t.equal(goalMet({ value: 3, goal: '<= 2.5' }), false)
  t.equal(goalMet({ value: 3500, goal: '≤ 4000 (2 leases)' }), true, 'a remark after the bound')
  t.equal(goalMet({ value: 100, goal: '100' }), true, 'a bare number is equality')
  t.equal(goalMet({ value: 99.5, goal: '100' }), false)
  t.equal(goalMet({ value: 5, ratio: 0.95, goal: 'ratio ≥ 0.9' }), true, 'ratio goals read the ratio')
  t.equal(goalMet({ value: 5, ratio: 0.5, goal: 'ratio ≥ 0.9' }), false)
  t.equal(goalMet({ value: 5, goal: 'ratio ≥ 0.9' }), undefined, 'no ratio to judge')
  t.equal(goalMet({ value: 1, goal: 'p99 ≤ 2' }), undefined, 'a goal about another figure is not guessed')
  t.equal(goalMet({ value: 1, goal: 'answers agree', met: false }), false, 'explicit met')
  t.equal(goalMet({ value: 1, goal: '≤ 2', met: false }), false, 'explicit met wins over the reading')
  t.equal(goalMet({ value: 1 }), undefined)
  t.equal(goalMet({ value: 1, goal: ' ' }), undefined)
})

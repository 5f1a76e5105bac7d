/**
 * scanReprice (src/prices.ts, step 2 of a re-pricing): the same rows and change list whatever
 * the slicing (a turn may end inside a log record; the read restarts at the first event not
 * done), and only the events of the project, range and model in scope.
 */
import t from 'tap'
import { scanReprice } from '../../src/prices.js'
import { PriceBook, fillRates } from '../../src/pricing/book.js'
import type { StoredEvent } from '../../src/events.js'

const ev = (seq: number): StoredEvent => ({
  seq, id: `evt_${seq}`, ts: 1000 + (seq % 97) * 10, recv: 0, model: seq % 3 === 0 ? 'm-b' : 'm-a', provider: 'selfhost', prompt: 100 + seq, completion: 7, total: 107 + seq,
  cached: 0, reasoning: 0, latency: 1, ttft: null, error: false, cost: seq % 50 === 0 ? 0.5 : null, meta: null, project: seq % 11 === 0 ? 'other' : 'default', user: null, session: null, tags: null,
  priceRev: 1
})

t.test('the same answer whatever the slicing; only what is in scope', async (t) => {
  const book = new PriceBook()
  book.nextRev()
  book.addVersion({ id: 'pv_1', project: 'default', provider: 'selfhost', model: 'm-a', rates: fillRates({ input: 1, output: 1 }), effective_from: 0, created_at: 0, rev: 1 })
  book.nextRev()
  book.addVersion({ id: 'pv_2', project: 'default', provider: 'selfhost', model: 'm-a', rates: fillRates({ input: 3, output: 2 }), effective_from: 1500, created_at: 0, rev: 2 })
  // Records of 1,000 events; each read decodes afresh (scanReprice writes priceRev back on the objects it is given).
  const N = 6000
  const reads: number[] = []
  const read = function* (from: number): Generator<StoredEvent[]> {
    reads.push(from)
    for (let key = Math.floor(from / 1000) * 1000; key < N; key += 1000) {
      const out: StoredEvent[] = []
      for (let s = Math.max(key, from); s < key + 1000; s++) out.push(ev(s))
      yield out
    }
  }
  const scope = { project: 'default', start: 1200, end: 1900, model: 'm-a' }
  const whole = await scanReprice(read, book, scope, 2, { changes: true, perTurn: Infinity, turnMs: Infinity })
  t.same(reads, [0])
  reads.length = 0
  const sliced = await scanReprice(read, book, scope, 2, { changes: true, perTurn: 512 })
  t.ok(reads.length > 5, `${reads.length} slices`)
  t.ok(reads.some((r) => r % 1000 !== 0), 'some slices end inside a record')
  t.same(sliced, whole)
  const inScope = Array.from({ length: N }, (_, s) => ev(s)).filter((e) => e.project === 'default' && e.model === 'm-a' && e.ts >= 1200 && e.ts < 1900)
  const row = whole.rows.get('selfhost\u0000m-a')!
  t.equal(row.requests, inScope.length)
  t.equal(whole.rows.size, 1)
  const moving = inScope.filter((e) => e.cost === null && e.ts >= 1500)
  t.equal(whole.changed, moving.length, 'events from the new version on, without a caller cost')
  t.same(Array.from(whole.changes!.seqs), moving.map((e) => e.seq), 'seq ascending')
  const nanos = (e: StoredEvent, i: number, o: number) => Math.round(((e.prompt * i + e.completion * o) / 1e6) * 1e9)
  t.same(Array.from(whole.changes!.before), moving.map((e) => nanos(e, 1, 1)))
  t.same(Array.from(whole.changes!.after), moving.map((e) => nanos(e, 3, 2)))
})

t.test('a change list past one chunk of the builder (65,536 entries): every column joined in order', async (t) => {
  const book = new PriceBook()
  book.nextRev()
  book.addVersion({ id: 'pv_1', project: 'default', provider: 'selfhost', model: 'm-a', rates: fillRates({ input: 2, output: 5 }), effective_from: 0, created_at: 0, rev: 1 })
  const N = 240_000
  // Every event of m-a in `default` without a caller cost changes (accepted at revision 0, before the version).
  const at = (s: number): StoredEvent => ({ ...ev(s), priceRev: 0 })
  const read = function* (from: number): Generator<StoredEvent[]> {
    for (let key = Math.floor(from / 5000) * 5000; key < N; key += 5000) {
      const out: StoredEvent[] = []
      for (let s = Math.max(key, from); s < key + 5000; s++) out.push(at(s))
      yield out
    }
  }
  const scan = await scanReprice(read, book, { project: 'default', start: -Infinity, end: Infinity, model: null }, 1, { changes: true })
  const moving = Array.from({ length: N }, (_, s) => at(s)).filter((e) => e.project === 'default' && e.model === 'm-a' && e.cost === null)
  t.ok(moving.length > 2 * 65_536, `${moving.length} entries: three chunks`)
  const c = scan.changes!
  t.equal(c.seqs.length, moving.length)
  let wrong = 0
  moving.forEach((e, i) => {
    if (c.seqs[i] !== e.seq || c.ts[i] !== e.ts || c.names[c.model[i]] !== e.model || c.names[c.provider[i]] !== e.provider || c.before[i] !== 0 || c.beforeUnpriced[i] !== 1) wrong++
    if (c.after[i] !== Math.round(((e.prompt * 2 + e.completion * 5) / 1e6) * 1e9) || c.afterUnpriced[i] !== 0) wrong++
  })
  t.equal(wrong, 0, 'every entry of every column in seq order')
  t.equal(c.model.length, moving.length)
  t.equal(c.provider.length, moving.length)
  t.same([...c.names].sort(), ['m-a', 'selfhost'], 'each name once')
})

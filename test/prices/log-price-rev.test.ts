/**
 * The log's acceptance revision (`pr`): EventLog.append stamps each append with the price
 * book's revision as its seqs are given; every read (get, readFrom, atSeqs) gives it back as
 * StoredEvent.priceRev (absent for revision 0 and for records written before the book), in
 * every record format, and a purge's rewrite keeps it.
 */
import t from 'tap'
import { openStores } from '../../src/store/db.js'
import { COLUMNS_FROM, EventLog } from '../../src/store/event-log.js'
import type { PendingEvent } from '../../src/events.js'

const pending = (i: number, extras: Partial<PendingEvent> = {}): PendingEvent => ({
  ts: 1000 + i, recv: 5, model: `m${i % 3}`, provider: 'p', prompt: i, completion: 2 * i, total: 3 * i, cached: 0, reasoning: 0,
  latency: 1.5, ttft: null, error: false, cost: null, meta: null, project: 'default', user: null, session: null, tags: null, ...extras
})

t.test('each append carries the revision current when its seqs were given, in every format', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  let rev = 0
  log.priceRev = () => rev
  const kinds: Array<[string, (i: number) => PendingEvent, number]> = [
    ['rows (v1)', (i) => pending(i), 3],
    ['rows with a project (v3)', (i) => pending(i, { project: 'p2' }), 3],
    ['rows with a client id (v5)', (i) => pending(i, { clientId: `c${i}` }), 3],
    ['columns (v2)', (i) => pending(i), COLUMNS_FROM],
    ['columns with dimensions (v4)', (i) => pending(i, { user: 'u' }), COLUMNS_FROM],
    ['columns with a client id (v6)', (i) => pending(i, { clientId: `k${i}` }), COLUMNS_FROM]
  ]
  const want = new Map<number, number>()
  for (const [k, [, make, n]] of kinds.entries()) {
    for (const r of [0, 7 + k]) {
      rev = r
      const a = log.append(Array.from({ length: n }, (_, i) => make(i + 100 * k + r)))
      rev = 99 // moved after the seqs were given: not this append's
      for (const e of a.events) want.set(e.seq, r)
      t.equal(a.events[0].priceRev ?? 0, r, 'the appended events carry it at once (the cost stage prices them)')
      await a.committed
    }
  }
  const got = new Map<number, number>()
  for (const batch of log.readFrom(0)) for (const e of batch) got.set(e.seq, e.priceRev ?? 0)
  t.same(got, want, 'readFrom')
  const seqs = [...want.keys()].filter((s) => s % 5 === 0)
  t.same(new Map(seqs.map((s) => [s, log.get(s)?.priceRev ?? 0])), new Map(seqs.map((s) => [s, want.get(s)])), 'get')
  const at = new Map<number, number>()
  for (const [k, e] of log.atSeqs(seqs)) at.set(seqs[k], e.priceRev ?? 0)
  t.same(at, new Map(seqs.map((s) => [s, want.get(s)])), 'atSeqs')
  t.notOk('priceRev' in log.get(0)!, 'revision 0 is left unset (records before the book read the same)')

  // A purge rewrites records with holes: the survivors keep their revision.
  const gone = new Set(seqs)
  await log.purgeSeqs(gone)
  const after = new Map<number, number>()
  for (const batch of log.readFrom(0)) for (const e of batch) after.set(e.seq, e.priceRev ?? 0)
  t.same(after, new Map([...want].filter(([s]) => !gone.has(s))), 'after the purge, the same revisions')
})

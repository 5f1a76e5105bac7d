/**
 * PriceStore (src/store/prices.ts): revisions are committed with their records and never reused
 * (not even after DELETE /projects), a reopened store rebuilds the same book, the configuration's
 * overrides become a layer only when they change (the first at revision 0), re-pricing records
 * reach the book only when their caller says so, an unknown record format stops the start, and
 * the cluster seam (MetaBacking + applyRemote/loadRemote) mirrors a bucket.
 */
import t from 'tap'
import { openStores } from '../../src/store/db.js'
import { PriceStore } from '../../src/store/prices.js'
import type { MetaBacking } from '../../src/store/backing.js'
import type { RepriceRecord } from '../../src/pricing/book.js'

const rates = (input: number, output = input) => ({ input, output, cached_input: input, cache_write: input, reasoning: output })

t.test('revisions: one per version, committed, never reused; a reopened store has the same book', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let s = new PriceStore(stores.prices)
  t.equal(s.rev, 0)
  t.same(s.syncOverrides({}, 1), { rev: 0, created_at: 1, overrides: {} }, 'the first layer is at revision 0')
  t.equal(s.syncOverrides({}, 2), null, 'the same configuration adds nothing')
  const v1 = await s.putVersion({ project: 'default', provider: 'p', model: 'm', rates: rates(1), effective_from: 100 }, 10)
  const v2 = await s.putVersion({ project: 'team', provider: 'p', model: 'm', rates: rates(2), effective_from: 100 }, 11)
  t.same([v1.rev, v2.rev, s.rev], [1, 2, 2])
  t.match(v1.id, /^pv_/)
  const at = (store: PriceStore) => [store.book.schedule('default', 'p', 'm', 1), store.book.schedule('team', 'p', 'm', 2), store.book.schedule('team', 'p', 'm', 1)]
  const before = at(s).map((x) => JSON.stringify(x))
  await s.dropProject('team')
  t.same(s.versions('team'), [])
  await stores.close()

  stores = openStores(dir)
  t.teardown(() => stores.close())
  s = new PriceStore(stores.prices)
  t.equal(s.rev, 2, 'the counter survives, past the dropped project\'s revision')
  t.same(s.versions('default'), [v1])
  const now = at(s).map((x) => JSON.stringify(x))
  t.equal(now[0], before[0], 'default\'s schedule is rebuilt the same')
  t.not(before[0], 'null')
  t.same([now[1], now[2]], ['null', 'null'], 'team\'s version is gone')
  t.not(before[1], 'null')
  const v3 = await s.putVersion({ project: 'team', provider: 'p', model: 'm', rates: rates(3), effective_from: 100 }, 12)
  t.equal(v3.rev, 3, 'a new revision, never 2 again')
  t.same(s.syncOverrides({ m: { input_mtok: 1, output_mtok: 2 } }, 13)?.rev, 4, 'a changed configuration: a layer at a new revision')
  t.equal(s.syncOverrides({ m: { output_mtok: 2, input_mtok: 1 } }, 14), null, 'key order does not matter')
  t.same(s.layers().map((l) => l.rev), [0, 4])
})

t.test('re-pricing records: durable at once, in the book only when applied; reopened as pending unless the state holds them', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let s = new PriceStore(stores.prices)
  await s.putVersion({ project: 'default', provider: 'p', model: 'm', rates: rates(1), effective_from: 0 }, 1)
  const r = await s.putReprice({ project: 'default', start: 0, end: 10, model: null, rev: 1 }, 2)
  t.match(r.id, /^rp_/)
  t.same(s.book.reprices('default'), [], 'not in the book yet')
  t.same(s.pendingReprices(), [r])
  s.applyReprice(r)
  s.applyReprice(r)
  t.same(s.book.reprices('default'), [r], 'applied once')
  t.same(s.pendingReprices(), [])
  t.equal(s.book.repriceEpoch('default'), 1)
  t.equal(s.rev, 1, 'a re-pricing takes no new revision')
  await stores.close()

  stores = openStores(dir)
  s = new PriceStore(stores.prices, () => false)
  t.same(s.pendingReprices(), [r], 'a state without it: pending')
  t.same(s.book.reprices('default'), [])
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  s = new PriceStore(stores.prices, (id) => id === r.id)
  t.same(s.pendingReprices(), [])
  t.same(s.book.reprices('default'), [r], 'a state holding it: in the book from the start')
})

t.test('a record of an unknown format stops the start', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  await stores.prices.put('pv_future', { v: 2, kind: 'version' })
  t.throws(() => new PriceStore(stores.prices), /pv_future has a format this release cannot read/)
})

t.test('cluster seam: writes go to the backing, the book follows applyRemote; loadRemote mirrors a bucket', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const s = new PriceStore(stores.prices)
  const bucket = new Map<string, unknown>()
  const backing: MetaBacking = {
    put: async (id, value) => {
      bucket.set(id, value)
      s.applyRemote(id, value)
    },
    remove: async (id) => {
      bucket.delete(id)
      s.applyRemote(id, undefined)
    },
    create: async (id, value) => {
      if (bucket.has(id) && JSON.stringify(bucket.get(id)) !== JSON.stringify(value) && id !== 'rev') return false
      bucket.set(id, value)
      s.applyRemote(id, value)
      return true
    }
  }
  s.attachBacking(backing, { warn: () => {} } as never)
  const heard: RepriceRecord[] = []
  s.onReprice((r) => heard.push(r))
  const v = await s.putVersion({ project: 'default', provider: 'p', model: 'm', rates: rates(5), effective_from: 0 }, 1)
  t.equal(v.rev, 1)
  t.same([...bucket.keys()].sort(), [v.id, 'rev'])
  t.equal(s.book.rev, 1)
  t.ok(s.book.schedule('default', 'p', 'm', 1), 'the book took the version from the bucket')
  const r = await s.putReprice({ project: 'default', start: 0, end: 5, model: 'm', rev: 1 }, 2)
  t.same(heard, [r], 'a re-pricing record goes to the listener')
  t.same(s.book.reprices('default'), [], 'not to the book')

  // Another node's records arrive.
  s.applyRemote('pv_other', { v: 1, kind: 'version', id: 'pv_other', project: 'team', provider: 'p', model: 'm', rates: rates(7), effective_from: 0, created_at: 3, rev: 5 })
  t.equal(s.book.rev, 5, 'the book\'s revision follows')
  t.ok(s.book.schedule('team', 'p', 'm', 5))
  s.loadRemote(new Map([[v.id, bucket.get(v.id)]]))
  t.same(s.versions('team'), [], 'a record the bucket no longer holds is dropped')
  t.same(s.versions('default').map((x) => x.id), [v.id])
})

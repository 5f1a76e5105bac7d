import t from 'tap'
import fc from 'fast-check'
import { openStores } from '../../src/store/db.js'
import { EventLog } from '../../src/store/event-log.js'
import { seqOfEventId, type PendingEvent } from '../../src/events.js'

const pending = (i: number): PendingEvent => ({ ts: 1000 + i, recv: 5, model: `m${i % 3}`, provider: 'p', prompt: i, completion: 2 * i, total: 3 * i, cached: 0, reasoning: 1, latency: 1.5, ttft: i % 2 ? 0.5 : null, error: i % 5 === 0, cost: i % 4 === 0 ? 0.25 : null, meta: i % 3 ? { i } : null })

t.test('append assigns consecutive seqs and ids; get and readFrom return what was written', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  const a = log.append([pending(0), pending(1), pending(2)])
  const b = log.append([pending(3)])
  t.same(a.events.map((e) => e.seq), [0, 1, 2])
  t.equal(b.events[0].seq, 3)
  t.equal(seqOfEventId(a.events[1].id), 1)
  await Promise.all([a.committed, b.committed])
  t.equal(log.nextSeq, 4)
  t.same(log.get(1), a.events[1])
  t.same(log.get(3), b.events[0])
  t.equal(log.get(4), undefined)
  t.same([...log.readFrom(2)].flat().map((e) => e.seq), [2, 3], 'reads from inside an append')
  t.same([...log.readFrom(0)].flat(), [...a.events, ...b.events])
  t.equal(log.countFrom(1), 3)
  t.same(log.stats, { appends: 2, appendedEvents: 4, nextSeq: 4 })
})

t.test('a reopened log continues after the last stored seq', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let log = new EventLog(stores.events)
  await log.append([pending(0), pending(1)]).committed
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  log = new EventLog(stores.events)
  t.equal(log.nextSeq, 2)
  t.equal(log.append([pending(2)]).events[0].seq, 2)
})

t.test('concurrent appends in one turn share one commit and all land (property)', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 15 }), async (sizes) => {
      const start = log.nextSeq
      const all = sizes.map((n) => log.append(Array.from({ length: n }, (_, i) => pending(i))))
      await Promise.all(all.map((a) => a.committed))
      const total = sizes.reduce((x, y) => x + y, 0)
      const read = [...log.readFrom(start)].flat()
      return read.length === total && read.every((e, i) => e.seq === start + i)
    }),
    { numRuns: 30 }
  )
})

t.test('an unusable data dir is a clear error', async (t) => {
  const { writeFileSync } = await import('node:fs')
  const dir = t.testdir()
  writeFileSync(`${dir}/file`, 'x')
  t.throws(() => openStores(`${dir}/file`), /data dir .*file is not usable/)
})

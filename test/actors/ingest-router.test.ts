/**
 * IngestRouter: joining per-commit arrays keeps log order (a replacement for
 * Array.prototype.flat, which was slow); each resolved commit is published on the
 * diagnostics channel.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import t from 'tap'
import fc from 'fast-check'
import { COMMIT_CHANNEL, IngestRouter, concatAll, type CommitMessage } from '../../src/actors/ingest-router.js'
import type { EventLog } from '../../src/store/event-log.js'
import type { PendingEvent, StoredEvent } from '../../src/events.js'

t.test('concatAll equals flat(), in order, for few and for very many arrays', async (t) => {
  fc.assert(fc.property(fc.array(fc.array(fc.integer(), { maxLength: 5 }), { maxLength: 40 }), (arrays) => {
    t.same(concatAll(arrays), arrays.flat())
    return true
  }))
  const many = Array.from({ length: 5000 }, (_, i) => [i, i + 0.5])
  t.same(concatAll(many), many.flat(), 'past the spread bound: the loop path')
  t.same(concatAll([]), [])
  const one = [1, 2]
  t.same(concatAll([one]), [1, 2])
})

/** A log that assigns positions and commits at once, or refuses every append. */
function fakeLog(fail = false): EventLog {
  let next = 0
  return {
    append(pending: readonly PendingEvent[]) {
      if (fail) return { events: [], committed: Promise.reject(new Error('disk gone')) }
      const events = pending.map((e) => Object.assign(e, { seq: next, id: `evt_${next++}` }) as unknown as StoredEvent)
      return { events, committed: Promise.resolve() }
    }
  } as unknown as EventLog
}

const pending = (n: number) => Array.from({ length: n }, () => ({ model: 'm' }) as unknown as PendingEvent)

t.test('each resolved commit is published on the diagnostics channel with its log and size; failed ones are not', async (t) => {
  const seen: CommitMessage[] = []
  const onCommit = (m: unknown) => seen.push(m as CommitMessage)
  subscribe(COMMIT_CHANNEL, onCommit)
  t.teardown(() => unsubscribe(COMMIT_CHANNEL, onCommit))
  const forwarded: StoredEvent[][] = []
  const log = fakeLog()
  const router = new IngestRouter({ eventLog: log, admission: () => 0, forward: (e) => (forwarded.push(e), true) })
  t.teardown(() => router.destroy())
  // One turn: both requests join one commit.
  await Promise.all([router.ingest(pending(2)), router.ingest(pending(3))])
  await router.ingest(pending(1))
  t.same(seen.map((m) => [m.log === log, m.events]), [[true, 5], [true, 1]])
  t.ok(seen.every((m) => m.ms >= 0 && Number.isFinite(m.ms)))
  await router.flushed()
  t.equal(forwarded.flat().length, 6)

  const failing = new IngestRouter({ eventLog: fakeLog(true), admission: () => 0, forward: () => true })
  t.teardown(() => failing.destroy())
  await t.rejects(failing.ingest(pending(1)), { code: 'LLMS_ERR_STORAGE' })
  t.equal(seen.length, 2, 'a failed commit publishes nothing')
})

t.test('group commit: requests sent from separate callbacks of one loop turn join one append; a full group goes alone', async (t) => {
  const sizes: number[] = []
  let next = 0
  const log = {
    append(p: readonly PendingEvent[]) {
      sizes.push(p.length)
      const events = p.map((e) => Object.assign(e, { seq: next, id: `evt_${next++}` }) as unknown as StoredEvent)
      return { events, committed: Promise.resolve() }
    }
  } as unknown as EventLog
  const router = new IngestRouter({ eventLog: log, admission: () => 0, forward: () => true })
  t.teardown(() => router.destroy())
  // Each request in its own macrotask (as HTTP requests are, one per socket read), microtasks
  // drained between them — all in one check phase of the loop. A microtask-scheduled append
  // made three appends of 2, 3 and 1 here (regression: 1.00 events per commit at c=50).
  const sent = await new Promise<Array<Promise<StoredEvent[]>>>((resolve) => {
    const out: Array<Promise<StoredEvent[]>> = []
    setImmediate(() => out.push(router.ingest(pending(2))))
    setImmediate(() => out.push(router.ingest(pending(3))))
    setImmediate(() => {
      out.push(router.ingest(pending(1)))
      resolve(out)
    })
  })
  const answers = await Promise.all(sent)
  t.same(sizes, [6], 'one append for the three requests')
  t.same(answers.map((a) => a.map((e) => e.seq)), [[0, 1], [2, 3, 4], [5]], 'each answered with its own events, in order')

  // A batch of 1000 does not wait for the end of the poll phase: its append is queued at once.
  sizes.length = 0
  const big = await new Promise<Array<Promise<StoredEvent[]>>>((resolve) => {
    const out: Array<Promise<StoredEvent[]>> = []
    setImmediate(() => out.push(router.ingest(pending(1000))))
    setImmediate(() => {
      out.push(router.ingest(pending(1)))
      resolve(out)
    })
  })
  await Promise.all(big)
  t.same(sizes, [1000, 1], 'the full group went alone; the next request started a new one')
  await router.quiesce()
  t.pass('quiesces with nothing queued')
})

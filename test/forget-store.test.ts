/**
 * The storage half of DELETE /events: tombstones (durable, by delete and chunk, seqs only),
 * EventLog.purgeSeqs (holes exactly where asked, in every record format, idempotent, other
 * events untouched) and the free-page scrub (a removed value's bytes leave data.mdb).
 */
import t from 'tap'
import fc from 'fast-check'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { openStores } from '../src/store/db.js'
import { EventLog } from '../src/store/event-log.js'
import { ForgetTombstones, pendingForgets } from '../src/store/tombstones.js'
import { scrubFreePages } from '../src/store/scrub.js'
import type { PendingEvent } from '../src/events.js'

const pending = (i: number, user: string | null = null): PendingEvent => ({
  ts: 1000 + i, recv: 5, model: `m${i % 3}`, provider: 'p', prompt: i, completion: 2 * i, total: 3 * i, cached: 0, reasoning: 1, latency: 1.5,
  ttft: null, error: false, cost: null, meta: null, project: 'default', user, session: null, tags: null
})

/** Occurrences of `needle` in every file of the data dir, read as bytes. */
function occurrences(dir: string, needle: string): number {
  let n = 0
  for (const f of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!f.isFile()) continue
    const bytes = readFileSync(join(f.parentPath, f.name))
    for (let at = bytes.indexOf(needle); at >= 0; at = bytes.indexOf(needle, at + 1)) n++
  }
  return n
}

t.test('tombstones: put, list by delete then chunk, grouped; remove one delete only; survive a reopen', async (t) => {
  const dir = t.testdir()
  let stores = openStores(dir)
  let ts = ForgetTombstones.open(stores.root)
  t.ok(ts.empty)
  await ts.put({ id: 'del_b', project: 'p', chunk: 0, seqs: [7, 9], startedAt: 5 })
  await ts.put({ id: 'del_a', project: 'default', chunk: 1, seqs: [2 ** 40, 2 ** 40 + 1], startedAt: 3 })
  await ts.put({ id: 'del_a', project: 'default', chunk: 0, seqs: [1, 2, 3], startedAt: 3 })
  await stores.close()
  stores = openStores(dir)
  t.teardown(() => stores.close())
  ts = ForgetTombstones.open(stores.root)
  t.notOk(ts.empty)
  t.same(ts.list().map((x) => [x.id, x.chunk]), [['del_a', 0], ['del_a', 1], ['del_b', 0]])
  t.same(pendingForgets(ts.list()).map(({ chunks, ...p }) => ({ ...p, chunks: chunks.map((c) => c.chunk) })), [
    { id: 'del_a', project: 'default', startedAt: 3, seqs: [1, 2, 3, 2 ** 40, 2 ** 40 + 1], chunks: [0, 1] },
    { id: 'del_b', project: 'p', startedAt: 5, seqs: [7, 9], chunks: [0] }
  ], 'seqs past 2^32 kept exactly')
  await ts.remove('del_a')
  await ts.remove('del_a')
  t.same(ts.list().map((x) => x.id), ['del_b'])
  await ts.remove('del_b')
  t.ok(ts.empty)
})

t.test('purgeSeqs leaves holes exactly at the seqs asked, in row and column records; idempotent', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  // Small appends (rows, v1/v3) and large ones (columns, v2/v4), mixed.
  const sizes = [1, 3, 100, 2, 200, 1]
  for (const [k, n] of sizes.entries()) await log.append(Array.from({ length: n }, (_, i) => pending(i, k % 2 === 0 ? null : `u${i % 4}`))).committed
  const all = [...log.readFrom(0)].flat()
  const drop = new Set([0, 2, 4, 5, 50, 103, 104, 105, 106, 300, 306, all.length - 1, all.length + 50])
  const heard: number[] = []
  t.equal(await log.purgeSeqs([...drop].reverse(), { removed: (e) => heard.push(e.seq), recordsPerTurn: 2 }), drop.size - 1, 'a seq past the end is skipped')
  t.same(heard.sort((a, b) => a - b), [...drop].filter((s) => s < all.length).sort((a, b) => a - b))
  const left = [...log.readFrom(0)].flat()
  t.same(left, all.filter((e) => !drop.has(e.seq)), 'every other event is unchanged, with its seq and id')
  for (const s of drop) t.equal(log.get(s), undefined)
  t.equal(await log.purgeSeqs(drop), 0, 'again: nothing left to remove')
  t.equal(log.nextSeq, all.length, 'the end never moves back')
})

t.test('purgeSeqs removes exactly the given seqs (property)', async (t) => {
  const stores = openStores(t.testdir())
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.integer({ min: 1, max: 90 }), { minLength: 1, maxLength: 6 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      async (sizes, picks) => {
        const start = log.nextSeq
        for (const n of sizes) await log.append(Array.from({ length: n }, (_, i) => pending(i, `u${i}`))).committed
        const before = [...log.readFrom(start)].flat()
        const total = log.nextSeq - start
        const drop = new Set(picks.map((p) => start + (p % total)))
        const removed = await log.purgeSeqs(drop)
        const after = [...log.readFrom(start)].flat()
        return removed === drop.size && after.length === before.length - drop.size && after.every((e) => !drop.has(e.seq)) && JSON.stringify(after) === JSON.stringify(before.filter((e) => !drop.has(e.seq)))
      }
    ),
    { numRuns: 40 }
  )
})

t.test('after purgeSeqs and a scrub, the file no longer holds a removed user id; others stay', async (t) => {
  const dir = t.testdir()
  const stores = openStores(dir)
  t.teardown(() => stores.close())
  const log = new EventLog(stores.events)
  const secret = 'user-to-forget-7f3a9c'
  const kept = 'user-who-stays-2b81'
  for (let k = 0; k < 40; k++) {
    // Row records and column records, each holding both users.
    const n = k % 2 === 0 ? 5 : 150
    await log.append(Array.from({ length: n }, (_, i) => pending(i, i % 3 === 0 ? secret : kept))).committed
  }
  t.ok(occurrences(dir, secret) > 0, 'written')
  const seqs = [...log.readFrom(0)].flat().filter((e) => e.user === secret).map((e) => e.seq)
  t.equal(await log.purgeSeqs(seqs), seqs.length)
  t.ok(occurrences(dir, secret) > 0, 'the purge alone leaves the old pages in the file (LMDB copies on write)')
  const r = await scrubFreePages(stores.root, { valuesPerRound: 64 })
  t.ok(r.rounds >= 1 && r.values > 0, `scrub wrote ${r.values} values in ${r.rounds} commits`)
  t.equal(occurrences(dir, secret), 0, 'no copy of the removed user id is left in the data dir')
  t.ok(occurrences(dir, kept) > 0, 'the other user is still stored')
  const left = [...log.readFrom(0)].flat()
  t.equal(left.length, log.nextSeq - seqs.length)
  t.ok(left.every((e) => e.user === kept), 'only the other user\'s events are left')
  // The scratch database is empty again: the next scrub starts from key 0.
  const again = await scrubFreePages(stores.root, { valuesPerRound: 64 })
  t.ok(again.values < 64 * 50, 'a second scrub has little to fill')
})

/**
 * ProjectStore: `default` always exists; create/list/get; 409 on an existing id; a delete is a
 * durable tombstone `purging: true` (found again after a reopen, so a purge cut short is
 * resumed) until `finishDelete`; a re-create clears the tombstone but not while purging;
 * `ensure` (configured projects) skips deleted ones; watchers see every change.
 */
import t from 'tap'
import type { Test } from 'tap'
import { open } from 'lmdb'
import { ProjectStore, MAX_PROJECTS, type ProjectChange } from '../../src/store/projects.js'
import type { LLMScopeError } from '../../src/errors.js'

const T0 = Date.parse('2026-01-01T00:00:00.000Z')

function openDb(t: Test, dir: string) {
  const root = open({ path: `${dir}/db.lmdb` })
  const db = root.openDB<unknown, string>('projects', {})
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await root.close()
  }
  t.teardown(close)
  return { db, close }
}

async function rejectsWith(t: Test, p: Promise<unknown>, code: string, status: number, what: string) {
  try {
    await p
    t.fail(`${what}: expected ${code}`)
  } catch (err) {
    const e = err as LLMScopeError
    t.equal(e.code, code, what)
    t.equal(e.statusCode, status, what)
  }
}

t.test('default exists on first open, durably, with the open time', async (t) => {
  const dir = t.testdir()
  const a = openDb(t, dir)
  const s = new ProjectStore(a.db, T0)
  t.same(s.list(), [{ id: 'default', name: 'default', created_at: '2026-01-01T00:00:00.000Z' }])
  t.ok(s.exists('default'))
  t.equal(s.size, 1)
  await a.close()
  const b = openDb(t, dir)
  const again = new ProjectStore(b.db, T0 + 5000)
  t.equal(again.get('default')?.created_at, '2026-01-01T00:00:00.000Z', 'not made again')
})

t.test('create, get, list oldest first; 409 for an existing id; the name defaults to the id', async (t) => {
  const { db } = openDb(t, t.testdir())
  const s = new ProjectStore(db, T0)
  const changes: ProjectChange[] = []
  s.onChange((c) => changes.push(c))
  t.same(await s.create({ id: 'team-b', name: 'Team B' }, T0 + 2000), { id: 'team-b', name: 'Team B', created_at: '2026-01-01T00:00:02.000Z' })
  t.same(await s.create({ id: 'a1' }, T0 + 1000), { id: 'a1', name: 'a1', created_at: '2026-01-01T00:00:01.000Z' })
  t.same(s.list().map((p) => p.id), ['default', 'a1', 'team-b'])
  t.same(s.get('team-b'), { id: 'team-b', name: 'Team B', created_at: '2026-01-01T00:00:02.000Z' })
  t.equal(s.get('nope'), undefined)
  await rejectsWith(t, s.create({ id: 'team-b' }, T0), 'LLMS_ERR_CONFLICT', 409, 'existing id')
  await rejectsWith(t, s.create({ id: 'default' }, T0), 'LLMS_ERR_CONFLICT', 409, 'default')
  await rejectsWith(t, s.create({ id: 'Bad_Id' }, T0), 'LLMS_ERR_VALIDATION', 400, 'malformed id')
  t.same(changes.map((c) => c.type), ['created', 'created'])
  // Two creates of one id at the same moment: one wins, the other is a 409.
  const both = await Promise.allSettled([s.create({ id: 'race' }, T0), s.create({ id: 'race' }, T0)])
  t.same(both.map((r) => r.status).sort(), ['fulfilled', 'rejected'])
  t.equal((both.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason.code, 'LLMS_ERR_CONFLICT')
})

t.test('delete: gone at once, tombstone purging until finishDelete, durable across a reopen', async (t) => {
  const dir = t.testdir()
  const a = openDb(t, dir)
  const s = new ProjectStore(a.db, T0)
  const changes: ProjectChange[] = []
  const stop = s.onChange((c) => changes.push(c))
  await s.create({ id: 'gone' }, T0)
  const begun = s.beginDelete('gone', T0 + 1)
  t.notOk(s.exists('gone'), 'refused from the call on, before the commit')
  await begun
  t.ok(s.isDeleted('gone'))
  t.ok(s.isPurging('gone'))
  t.same(s.purging(), ['gone'])
  t.same(s.list().map((p) => p.id), ['default'])
  await rejectsWith(t, s.create({ id: 'gone' }, T0 + 2), 'LLMS_ERR_CONFLICT', 409, 'no re-create while purging')
  await rejectsWith(t, s.beginDelete('gone', T0), 'LLMS_ERR_NOT_FOUND', 404, 'a second beginDelete')
  await rejectsWith(t, s.beginDelete('never', T0), 'LLMS_ERR_NOT_FOUND', 404, 'unknown project')
  await rejectsWith(t, s.beginDelete('default', T0), 'LLMS_ERR_CONFLICT', 409, 'default cannot be deleted')
  t.ok(s.exists('default'))

  // A crash here: the reopened store still knows the purge is unfinished.
  await a.close()
  const b = openDb(t, dir)
  const s2 = new ProjectStore(b.db, T0)
  t.same(s2.purging(), ['gone'], 'the unfinished purge is found at start')
  t.notOk(s2.exists('gone'))
  await s2.finishDelete('gone')
  t.same(s2.purging(), [])
  t.ok(s2.isDeleted('gone'), 'the tombstone stays')
  await s2.finishDelete('gone') // twice is harmless
  await b.close()
  const c = openDb(t, dir)
  const s3 = new ProjectStore(c.db, T0)
  t.same(s3.purging(), [])
  t.ok(s3.isDeleted('gone'))
  // Created again: the tombstone is cleared.
  const again = await s3.create({ id: 'gone', name: 'back' }, T0 + 10)
  t.same(again, { id: 'gone', name: 'back', created_at: '2026-01-01T00:00:00.010Z' })
  t.ok(s3.exists('gone'))
  t.notOk(s3.isDeleted('gone'))
  t.same(changes.map((x) => x.type), ['created', 'deleting'], 'the first store saw its own changes')
  stop()
})

t.test('ensure creates configured projects once, and never one that was deleted', async (t) => {
  const dir = t.testdir()
  const a = openDb(t, dir)
  const s = new ProjectStore(a.db, T0)
  t.same(await s.ensure(['team-a', 'team-b', 'team-a', 'default'], T0), ['team-a', 'team-b'])
  t.same(await s.ensure(['team-a'], T0), [])
  await s.beginDelete('team-b', T0)
  await s.finishDelete('team-b')
  t.same(await s.ensure(['team-a', 'team-b'], T0), [], 'a deleted project stays deleted')
  t.notOk(s.exists('team-b'))
  await a.close()
  const b = openDb(t, dir)
  const s2 = new ProjectStore(b.db, T0)
  t.same(await s2.ensure(['team-b'], T0), [], 'after a restart too')
  t.same(s2.list().map((p) => p.id), ['default', 'team-a'])
})

t.test('onChange: a throwing listener stops neither the change nor the others; unsubscribe works', async (t) => {
  const { db } = openDb(t, t.testdir())
  const s = new ProjectStore(db, T0)
  const seen: string[] = []
  s.onChange(() => {
    throw new Error('boom')
  })
  const stop = s.onChange((c) => seen.push(c.type === 'created' ? `created ${c.project.id}` : `${c.type} ${c.id}`))
  await s.create({ id: 'x' }, T0)
  await s.beginDelete('x', T0)
  await s.finishDelete('x')
  stop()
  await s.create({ id: 'y' }, T0)
  t.same(seen, ['created x', 'deleting x', 'deleted x'])
  t.ok(s.exists('y'))
})

t.test('records of an unknown version are skipped, never misread', async (t) => {
  const { db } = openDb(t, t.testdir())
  await db.put('future', { v: 9, kind: 'project', id: 'future', name: 'f', created_at: 'x' })
  await db.put('odd', 'not an object')
  await db.put('mismatch', { v: 1, kind: 'project', id: 'other', name: 'o', created_at: 'x' })
  const s = new ProjectStore(db, T0)
  t.same(s.list().map((p) => p.id), ['default'])
})

t.test(`at most ${MAX_PROJECTS} projects`, async (t) => {
  const { db } = openDb(t, t.testdir())
  const s = new ProjectStore(db, T0)
  await Promise.all(Array.from({ length: MAX_PROJECTS - 1 }, (_, i) => s.create({ id: `p${i}` }, T0)))
  t.equal(s.size, MAX_PROJECTS)
  await rejectsWith(t, s.create({ id: 'one-more' }, T0), 'LLMS_ERR_VALIDATION', 400, 'past the cap')
  await s.beginDelete('p0', T0)
  await s.finishDelete('p0')
  t.ok(await s.create({ id: 'one-more' }, T0), 'room again after a delete')
})

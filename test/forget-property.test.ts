/**
 * DELETE /events, property: random deletes interleaved with ingestion, queries, snapshots,
 * graceful restarts and crashes (engine.destroy: no drain, no final snapshot — what kill -9
 * leaves), some of them in the middle of a delete. After every step that completes a delete,
 * every figure equals a reference app that only ever ingested the kept events, no deleted id
 * is readable, and a user whose every event was deleted is in no file of the data dir. A
 * crash in the middle of a delete loses no other event; running the delete again completes it.
 */
import t from 'tap'
import fc from 'fast-check'
import { mkdtempSync } from 'node:fs'
import { join } from 'node:path'
import { T0, admin, bytesIn, figures, forget, ingest, makeEvents, matches, openApp, dataDir, whereIn, type App, type ForgetFilter, type TestEvent } from './forget-helpers.js'

interface Held {
  e: TestEvent
  id: string
  gone: boolean
}

type Action =
  | { type: 'ingest'; seed: number; n: number }
  | { type: 'delete'; filter: ForgetFilter }
  | { type: 'forgetUser' }
  | { type: 'snapshot' }
  | { type: 'restart' }
  | { type: 'crash' }
  | { type: 'crashDuringDelete'; filter: ForgetFilter; chunks: number }
  | { type: 'check' }

const filterArb: fc.Arbitrary<ForgetFilter> = fc.oneof(
  fc.record({ user_id: fc.constantFrom('u-alpha', 'u-beta', 'u-gamma', 'u-delta') }),
  fc.record({ model: fc.constantFrom('gpt-4o', 'house-model'), status: fc.constantFrom('success', 'error') }),
  fc.record({ 'metadata.feature': fc.constantFrom('search', 'chat'), tag: fc.constant('batch') }),
  fc.record({ session_id: fc.constantFrom('s1', 's2', 's5') }),
  fc.record({
    provider: fc.constantFrom('openai', 'anthropic', 'self'),
    start_time: fc.integer({ min: 0, max: 90 }).map((m) => new Date(T0 + m * 60_000).toISOString()),
    end_time: fc.integer({ min: 91, max: 180 }).map((m) => new Date(T0 + m * 60_000 + 17).toISOString())
  })
)

const actionArb: fc.Arbitrary<Action> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ type: fc.constant('ingest' as const), seed: fc.nat(), n: fc.integer({ min: 20, max: 160 }) }) },
  { weight: 4, arbitrary: fc.record({ type: fc.constant('delete' as const), filter: filterArb }) },
  { weight: 2, arbitrary: fc.constant({ type: 'forgetUser' as const }) },
  { weight: 1, arbitrary: fc.constant({ type: 'snapshot' as const }) },
  { weight: 1, arbitrary: fc.constant({ type: 'restart' as const }) },
  { weight: 1, arbitrary: fc.constant({ type: 'crash' as const }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('crashDuringDelete' as const), filter: filterArb, chunks: fc.integer({ min: 0, max: 3 }) }) },
  { weight: 1, arbitrary: fc.constant({ type: 'check' as const }) }
)

// The property's time limit below, plus the run in progress when it passes, plus the rest.
t.setTimeout(400_000)

t.test('random deletes among ingestion, snapshots, restarts and crashes: every figure equals the reference without the deleted events', async (t) => {
  const root = dataDir(t)
  let runs = 0
  let skipped = 0
  const deadline = Date.now() + Number(process.env.FORGET_PROPERTY_MS ?? 100_000)
  /** Crashes that left a delete's tombstones behind (a delete cut short, resumed at the next start). */
  let midDelete = 0
  await fc.assert(
    fc.asyncProperty(fc.array(actionArb, { minLength: 3, maxLength: 9 }), async (actions) => {
      // Bounded in time as well: on a loaded machine 12 runs took 175 s and hit the file timeout
      // (the doubled suite). A run started before the limit finishes; later ones are skipped.
      // (Not fast-check's interruptAfterTimeLimit: it abandons the run in flight, which then
      // wrote into the data dir while the test's teardown removed it — ENOTEMPTY.)
      if (Date.now() > deadline) {
        skipped++
        return true
      }
      const dir = mkdtempSync(join(root, `run${runs++}-`))
      let app: App = await openApp(t, { dir })
      const held: Held[] = []
      /** Users whose every event is deleted (their ids must be in no file). */
      const erased: string[] = []
      let users = 0

      const add = async (seed: number, n: number) => {
        // Each batch also carries a user of its own, to be forgotten whole later.
        const user = `gone-${users++}-${seed.toString(36)}`
        const events = makeEvents(seed, n).map((e, i) => (i % 9 === 0 ? { ...e, user_id: user } : e))
        const ids = await ingest(app, events)
        events.forEach((e, i) => held.push({ e, id: ids[i], gone: false }))
      }
      const applied = (f: ForgetFilter) => {
        let n = 0
        for (const h of held) {
          if (!h.gone && matches(h.e, f)) {
            h.gone = true
            n++
          }
        }
        return n
      }
      const check = async (label: string) => {
        const ref = await openApp(t, { dir: mkdtempSync(join(root, `ref${runs}-`)) })
        await ingest(ref, held.filter((h) => !h.gone).map((h) => h.e))
        const [a, b] = [await figures(app), await figures(ref)]
        await ref.close()
        if (JSON.stringify(a) !== JSON.stringify(b)) {
          t.same(a, b, `${label}: figures differ from the reference`)
          return false
        }
        for (const h of held) {
          const status = (await app.app.inject({ method: 'GET', url: `/events/${h.id}`, headers: admin() })).statusCode
          if (status !== (h.gone ? 404 : 200)) {
            t.fail(`${label}: GET /events/${h.id} answered ${status}, gone=${h.gone}`)
            return false
          }
        }
        for (const user of erased) {
          if (bytesIn(app.dir, user) > 0) {
            t.fail(`${label}: ${user}, whose events were all deleted, is still in the data dir`, { found: whereIn(app.dir, user) })
            return false
          }
        }
        return true
      }
      const reopen = async () => {
        app = await openApp(t, { dir })
      }

      await add(1, 100)
      for (const [i, a] of actions.entries()) {
        const label = `step ${i} ${JSON.stringify(a)}`
        switch (a.type) {
          case 'ingest':
            await add(a.seed, a.n)
            break
          case 'delete': {
            const expected = held.filter((h) => !h.gone && matches(h.e, a.filter)).length
            const deleted = await forget(app, a.filter)
            applied(a.filter)
            if (deleted !== expected) {
              t.equal(deleted, expected, `${label}: deleted count`)
              return false
            }
            if (!(await check(label))) return false
            break
          }
          case 'forgetUser': {
            const user = held.find((h) => !h.gone && h.e.user_id?.startsWith('gone-'))?.e.user_id
            if (user === undefined) break
            await forget(app, { user_id: user })
            applied({ user_id: user })
            erased.push(user)
            if (!(await check(label))) return false
            break
          }
          case 'snapshot':
            await app.engine.snapshotNow()
            break
          case 'restart':
            await app.close()
            await reopen()
            break
          case 'crash':
            await app.engine.destroy()
            await reopen()
            break
          case 'crashDuringDelete': {
            app.engine.forgetOptions = { chunk: 7 }
            const running = forget(app, a.filter).then(() => 'answered', () => 'failed')
            // After `chunks` chunks were removed from memory (or once it answered), crash.
            const end = Date.now() + 60_000
            while (Date.now() < end) {
              const d = app.engine.deletes.list('default')[0]
              if (d !== undefined && (d.deleted >= a.chunks * 7 || d.state !== 'running')) break
              await new Promise((r) => setImmediate(r))
            }
            if (!app.engine.forgetTombstones.empty) midDelete++
            await app.engine.destroy()
            void running
            await reopen()
            // Nothing else lost, whatever the crash cut short: every event the filter does not match is readable.
            for (const h of held) {
              if (h.gone || matches(h.e, a.filter)) continue
              const status = (await app.app.inject({ method: 'GET', url: `/events/${h.id}`, headers: admin() })).statusCode
              if (status !== 200) {
                t.fail(`${label}: an unmatched event ${h.id} answered ${status} after the crash`)
                return false
              }
            }
            // Running it again completes it.
            await forget(app, a.filter)
            applied(a.filter)
            if (!(await check(label))) return false
            break
          }
          case 'check':
            if (!(await check(label))) return false
            break
        }
      }
      const ok = await check('end')
      await app.close()
      return ok
    }),
    {
      numRuns: Number(process.env.FORGET_PROPERTY_RUNS ?? 12),
      endOnFailure: true,
      // To replay a failure: FORGET_PROPERTY_SEED and FORGET_PROPERTY_PATH from its report.
      ...(process.env.FORGET_PROPERTY_SEED === undefined ? {} : { seed: Number(process.env.FORGET_PROPERTY_SEED), path: process.env.FORGET_PROPERTY_PATH })
    }
  )
  t.comment(`${runs} runs (${skipped} skipped past the time limit), ${midDelete} crashes in the middle of a delete`)
})

t.test('a range filter alone matches only its window (sanity of the reference predicate)', async (t) => {
  const e = makeEvents(3, 1)[0]
  const at = Date.parse(e.timestamp)
  t.ok(matches(e, { start_time: new Date(at).toISOString(), end_time: new Date(at + 1).toISOString(), model: e.model }))
  t.notOk(matches(e, { start_time: new Date(at + 1).toISOString(), model: e.model }))
  t.notOk(matches(e, { end_time: new Date(at).toISOString(), model: e.model }))
  t.ok(matches({ ...e, metadata: { tier: 2, beta: true } }, { 'metadata.tier': '2', 'metadata.beta': 'true' }), 'metadata numbers and booleans as their JSON text')
})

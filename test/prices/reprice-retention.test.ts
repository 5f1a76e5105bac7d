/**
 * Re-pricing through hours folded by retention (LLMSCOPE_RETENTION_DAYS): rows older than the
 * retained days are hour aggregates without their events, so the apply subtracts each changed
 * event's old cost and adds its new one per hour (once per re-pricing, also across a restart).
 * Every figure over whole hours equals the hand reference after the apply and after restarts.
 */
import t from 'tap'
import { ManualClock } from '../../src/clock.js'
import { adminHeaders, makeApp } from '../helpers/app.js'
import { HOUR, RefBook, T0, figures, ingest, makeEvents, putVersion, reference, referenceDiff } from './rig.js'

const iso = (ms: number) => new Date(ms).toISOString()
const env = { LLMSCOPE_RETENTION_DAYS: '1' }

t.test('a re-pricing of folded hours moves every whole-hour figure exactly, once', async (t) => {
  const clock = new ManualClock(T0 + 5 * 24 * HOUR)
  const a = await makeApp(t, { clock, env, inlinePricing: true })
  const book = new RefBook()
  await putVersion(a, book, 'zz-alpha', { input: 1, output: 2, cached_input: 0.5 }, T0)
  await putVersion(a, book, 'zz-beta', { input: 2, output: 2, cached_input: 1 }, T0)
  const events = makeEvents(3, 500)
  await ingest(a, events, book)
  await a.engine.sync()
  a.engine.retain()
  await a.engine.sync()
  t.equal(a.engine.topology.retentionStats().rawRows, 0, 'every row folded into hours')
  t.same(await figures(a), reference(events, book), 'before: folded hours exact')
  await putVersion(a, book, 'zz-alpha', { input: 5, output: 1, cached_input: 5 }, T0 + 2 * HOUR)
  const start = T0 + HOUR
  const end = T0 + 7 * HOUR
  const want = referenceDiff(events, book, start, end, null)
  t.ok(want.changed > 20)
  const r = await a.app.inject({ method: 'POST', url: '/prices/reprice', headers: adminHeaders, payload: { start_time: iso(start), end_time: iso(end), dry_run: false } })
  t.equal(r.statusCode, 200)
  t.match(r.json(), { ...want, reprice_id: /^rp_/ })
  book.addReprice(start, end, null)
  t.same(await figures(a), reference(events, book), 'after the apply')
  await a.close()
  const b = await makeApp(t, { clock, env, inlinePricing: true, dir: a.dir })
  t.same(await figures(b), reference(events, book), 'after a graceful restart (applied once)')
  await b.engine.destroy()
  const c = await makeApp(t, { clock, env, inlinePricing: true, dir: a.dir })
  t.same(await figures(c), reference(events, book), 'after a crash')
  t.equal(c.engine.topology.retentionStats().rawRows, 0, 'still folded')

  // A second re-pricing whose record a crash left unapplied: the next start applies it to the folded hours, once.
  await putVersion(c, book, 'zz-beta', { input: 9, output: 3, cached_input: 9 }, T0)
  await c.engine.sync()
  await c.engine.snapshotNow()
  t.ok(referenceDiff(events, book, T0, T0 + 8 * HOUR, 'zz-beta').changed > 20)
  await c.engine.priceStore.putReprice({ project: 'default', start: T0, end: T0 + 8 * HOUR, model: 'zz-beta', rev: c.engine.book.rev }, 0)
  await c.engine.destroy()
  book.addReprice(T0, T0 + 8 * HOUR, 'zz-beta')
  const d = await makeApp(t, { clock, env, inlinePricing: true, dir: a.dir })
  t.same(await figures(d), reference(events, book), 'the start re-applied it to the folded hours')
  await d.close()
  const e = await makeApp(t, { clock, env, inlinePricing: true, dir: a.dir })
  t.same(await figures(e), reference(events, book), 'and only once')
})

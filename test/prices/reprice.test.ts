/**
 * POST /prices/reprice (DESIGN §8): a dry run changes nothing and its before/after/difference
 * are exact; an apply moves every figure of the range — metrics, costs, breakdown, timeseries,
 * GET /events/:id, GET /events sort=cost (order), export — exactly to the reference, leaves
 * events outside the range or of other models and caller-cost events alone, outdates sort=cost
 * cursors of the range (409), and survives restarts: graceful, and a crash after the record was
 * committed but before memory took it (the next start re-applies it).
 */
import t, { type Test } from 'tap'
import { ManualClock } from '../../src/clock.js'
import { adminHeaders, makeApp, type TestApp } from '../helpers/app.js'
import { HOUR, RefBook, T0, figures, ingest, makeEvents, putVersion, reference, referenceDiff } from './rig.js'

const iso = (ms: number) => new Date(ms).toISOString()

async function reprice(a: TestApp, body: Record<string, unknown>) {
  const r = await a.app.inject({ method: 'POST', url: '/prices/reprice', headers: adminHeaders, payload: body })
  if (r.statusCode !== 200) throw new Error(`reprice: ${r.statusCode} ${r.body}`)
  return r.json()
}

async function setUp(t: Test, dir?: string) {
  const a = await makeApp(t, { inlinePricing: true, dir })
  const book = new RefBook()
  await putVersion(a, book, 'zz-alpha', { input: 1, output: 2, cached_input: 0.5 }, T0 - HOUR)
  await putVersion(a, book, 'zz-beta', { input: 3, output: 5, cached_input: 3 }, T0 + 2 * HOUR)
  const events = makeEvents(7, 600)
  await ingest(a, events, book)
  // New prices after the events: nothing changes until a re-pricing.
  await putVersion(a, book, 'zz-alpha', { input: 4, output: 8, cached_input: 1 }, T0 + 3 * HOUR)
  await putVersion(a, book, 'zz-gamma', { input: 2, output: 2, cached_input: 2 }, T0)
  await putVersion(a, book, 'zz-beta', { input: 6, output: 7, cached_input: 1 }, T0 + 2 * HOUR) // replaces the first at the same instant
  return { a, book, events }
}

t.test('dry run: exact diff, nothing changed; apply: every figure moves exactly, nothing else', async (t) => {
  const { a, book, events } = await setUp(t)
  const before = await figures(a)
  t.same(before, reference(events, book), 'the figures before equal the reference (PUTs changed no accepted event)')

  const start = T0 + 2 * HOUR + 1234
  const end = T0 + 6 * HOUR
  const want = referenceDiff(events, book, start, end, 'zz-alpha')
  t.ok(want.changed > 10, `the re-pricing changes ${want.changed} events`)
  const dry = await reprice(a, { start_time: iso(start), end_time: iso(end), model: 'zz-alpha' })
  t.same(dry, { ...want, dry_run: true, reprice_id: null }, 'dry run (the default): before, after, difference per model, exact')
  t.same(await figures(a), before, 'a dry run changes nothing')
  t.equal(a.engine.priceStore.reprices().length, 0, 'and records nothing')

  // A sort=cost page of the range, and a sort=time one, before the apply.
  const page1 = (await a.app.inject({ url: `/events?sort=cost&limit=5&start_time=${iso(T0)}&end_time=${iso(T0 + 8 * HOUR)}`, headers: adminHeaders })).json()
  const timePage = (await a.app.inject({ url: `/events?sort=time&limit=5`, headers: adminHeaders })).json()
  const elsewhere = (await a.app.inject({ url: `/events?sort=cost&limit=5&start_time=${iso(T0)}&end_time=${iso(T0 + HOUR)}`, headers: adminHeaders })).json()

  const applied = await reprice(a, { start_time: iso(start), end_time: iso(end), model: 'zz-alpha', dry_run: false })
  t.match(applied, { ...want, dry_run: false, reprice_id: /^rp_/ }, 'the apply answers the same diff')
  book.addReprice(start, end, 'zz-alpha')
  const after = await figures(a)
  t.same(after, reference(events, book), 'every figure equals the reference after the apply')
  t.not(after.total, before.total)

  // Caller-cost events keep their cost.
  for (const e of events.filter((x) => x.cost !== null)) t.equal(after.events[e.id!].cost, e.cost)

  // Export (NDJSON) shows the new costs too.
  const exp = await a.app.inject({ url: `/events?format=ndjson&start_time=${iso(T0)}&end_time=${iso(T0 + 8 * HOUR)}`, headers: adminHeaders })
  const lines = exp.body.trim().split('\n').map((l) => JSON.parse(l) as { id: string; cost: number })
  t.equal(lines.length, events.length)
  t.same(Object.fromEntries(lines.map((l) => [l.id, l.cost])), Object.fromEntries(Object.entries(after.events).map(([id, v]) => [id, v.cost])), 'export')

  // Cursors: sort=cost over the re-priced range is outdated; sort=time and a range it does not touch are not.
  const stale = await a.app.inject({ url: `/events?sort=cost&limit=5&start_time=${iso(T0)}&end_time=${iso(T0 + 8 * HOUR)}&cursor=${page1.next_cursor}`, headers: adminHeaders })
  t.equal(stale.statusCode, 409)
  t.match(stale.json(), { code: 'LLMS_ERR_CONFLICT', details: [{ path: '(query) cursor' }] })
  t.equal((await a.app.inject({ url: `/events?sort=time&limit=5&cursor=${timePage.next_cursor}`, headers: adminHeaders })).statusCode, 200)
  t.equal((await a.app.inject({ url: `/events?sort=cost&limit=5&start_time=${iso(T0)}&end_time=${iso(T0 + HOUR)}&cursor=${elsewhere.next_cursor}`, headers: adminHeaders })).statusCode, 200, 'a range the re-pricing did not touch')

  // The same re-pricing again changes nothing.
  const again = await reprice(a, { start_time: iso(start), end_time: iso(end), model: 'zz-alpha', dry_run: false })
  t.match(again, { changed: 0, reprice_id: null, total: { difference: 0 } })

  // A graceful restart keeps it.
  const dir = a.dir
  await a.close()
  const b = await makeApp(t, { inlinePricing: true, dir })
  t.same(await figures(b), reference(events, book), 'after a restart')
})

t.test('all models, and a record committed but not applied (crash) is re-applied at the next start', async (t) => {
  const { a, book, events } = await setUp(t)
  const start = T0
  const end = T0 + 5 * HOUR
  const want = referenceDiff(events, book, start, end, null)
  t.same(await reprice(a, { start_time: iso(start), end_time: iso(end), dry_run: true }), { ...want, dry_run: true, reprice_id: null })
  // What a kill -9 right after step 3's commit leaves: the record, memory and snapshot without it.
  await a.engine.sync()
  const old = await figures(a)
  await a.engine.snapshotNow()
  await a.engine.priceStore.putReprice({ project: 'default', start, end, model: null, rev: a.engine.book.rev }, Date.now())
  const dir = a.dir
  await a.engine.destroy()
  book.addReprice(start, end, null)
  const b = await makeApp(t, { inlinePricing: true, dir })
  t.equal(b.engine.recovery?.snapshot, 'loaded')
  t.not(reference(events, book).total, old.total, 'the re-pricing changes the total')
  t.same(await figures(b), reference(events, book), 'the start re-applied it: every figure new')
  await b.close()
  const c = await makeApp(t, { inlinePricing: true, dir })
  t.same(await figures(c), reference(events, book), 'and it stays applied once (no double apply after the next restart)')
})

t.test('ingestion during an apply, and two applies at once (the second waits its turn)', async (t) => {
  const { a, book, events } = await setUp(t)
  const start = T0
  const end = T0 + 8 * HOUR
  const want = referenceDiff(events, book, start, end, null)
  const body = { start_time: iso(start), end_time: iso(end), dry_run: false }
  const first = reprice(a, body)
  const second = reprice(a, body)
  // Events accepted while it runs carry the book's current revision: priced with it, unchanged by it.
  const more = makeEvents(99, 300)
  await ingest(a, more, book)
  const [r1, r2] = await Promise.all([first, second])
  t.match(r1, { ...want, dry_run: false, reprice_id: /^rp_/ })
  book.addReprice(start, end, null)
  events.push(...more)
  t.match(r2, { changed: 0, reprice_id: null, total: { difference: 0 } }, 'the second found everything at the book\'s prices')
  t.same(await figures(a), reference(events, book), 'every figure, the events that arrived meanwhile included')
})

t.test('budgets and alert windows follow a re-pricing', async (t) => {
  const clock = new ManualClock(T0 + 8 * HOUR)
  const a = await makeApp(t, { inlinePricing: true, clock })
  const book = new RefBook()
  await putVersion(a, book, 'zz-alpha', { input: 1, output: 2, cached_input: 0.5 }, T0)
  const events = makeEvents(11, 300)
  await ingest(a, events, book)
  await putVersion(a, book, 'zz-alpha', { input: 3, output: 7, cached_input: 3 }, T0)
  const budget = (await a.app.inject({ method: 'POST', url: '/budgets', headers: adminHeaders, payload: { name: 'day', amount: 1000, period: 'day', thresholds: [0.999] } })).json()
  const rule = (await a.app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: { name: 'spend', condition: 'cost_per_hour', threshold: 1e9, window_seconds: 8 * 3600 } })).json()
  const windowValue = async () => {
    await a.engine.sync()
    clock.advance(1)
    a.engine.topology.alerts.send({ type: 'tick' })
    await a.engine.topology.system.idle()
    return a.engine.ruleState(rule.id)?.lastValue
  }
  const spent = async () => (await a.app.inject({ url: `/budgets/${budget.id}`, headers: adminHeaders })).json().spent
  const oldTotal = reference(events, book).total
  t.equal(await spent(), oldTotal, 'budget: spent before')
  const v0 = await windowValue()
  t.ok(typeof v0 === 'number' && v0 > 0)
  await reprice(a, { start_time: iso(T0), end_time: iso(T0 + 8 * HOUR), dry_run: false })
  book.addReprice(T0, T0 + 8 * HOUR, null)
  const newTotal = reference(events, book).total
  t.not(newTotal, oldTotal)
  t.equal(await spent(), newTotal, 'budget: spent after, exact')
  const v1 = await windowValue()
  t.ok(Math.abs(v1! / v0! - newTotal / oldTotal) < 1e-9, `the rule's cost window moved by the same factor (${v0} → ${v1})`)
})

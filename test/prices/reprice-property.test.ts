/**
 * Re-pricing, property (fast-check, bounded runs): random price versions (several per model,
 * same-instant replacements), ingestion between them, re-pricings of random ranges and models
 * (dry runs and applies), graceful restarts, crashes (engine.destroy: no drain, no final
 * snapshot) and crashes right after a re-pricing's record was committed but before memory took
 * it. After every step every cost figure (metrics, costs, breakdown, timeseries, each event,
 * sort=cost order) equals the hand reference (test/prices/rig.ts), and every re-pricing's
 * answer equals the reference diff: a restart never leaves a mix of old and new prices.
 */
import t from 'tap'
import fc from 'fast-check'
import { mkdtempSync } from 'node:fs'
import { join } from 'node:path'
import { adminHeaders, makeApp, type TestApp } from '../helpers/app.js'
import { HOUR, MODELS, RefBook, T0, figures, ingest, makeEvents, putVersion, reference, referenceDiff, type RefEvent } from './rig.js'

type Action =
  | { type: 'ingest'; seed: number; n: number }
  | { type: 'put'; model: number; input: number; output: number; fromHour: number }
  | { type: 'reprice'; startHour: number; hours: number; model: number | null; dryRun: boolean }
  | { type: 'putThenReprice'; model: number; input: number; output: number; fromHour: number; startHour: number; hours: number }
  | { type: 'restart' }
  | { type: 'crash' }
  | { type: 'crashAfterRecord'; startHour: number; hours: number; model: number | null }

const hourArb = fc.integer({ min: -1, max: 8 })
const actionArb: fc.Arbitrary<Action> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ type: fc.constant('ingest' as const), seed: fc.nat(), n: fc.integer({ min: 10, max: 80 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({ type: fc.constant('put' as const), model: fc.integer({ min: 0, max: 2 }), input: fc.integer({ min: 0, max: 9 }), output: fc.integer({ min: 0, max: 9 }), fromHour: hourArb })
  },
  {
    weight: 4,
    arbitrary: fc.record({ type: fc.constant('reprice' as const), startHour: hourArb, hours: fc.integer({ min: 0, max: 9 }), model: fc.option(fc.integer({ min: 0, max: 2 })), dryRun: fc.constantFrom(true, false, false) })
  },
  {
    weight: 3,
    arbitrary: fc.record({
      type: fc.constant('putThenReprice' as const),
      model: fc.integer({ min: 0, max: 2 }),
      input: fc.integer({ min: 0, max: 9 }),
      output: fc.integer({ min: 0, max: 9 }),
      fromHour: hourArb,
      startHour: hourArb,
      hours: fc.integer({ min: 1, max: 9 })
    })
  },
  { weight: 1, arbitrary: fc.constant({ type: 'restart' as const }) },
  { weight: 1, arbitrary: fc.constant({ type: 'crash' as const }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('crashAfterRecord' as const), startHour: hourArb, hours: fc.integer({ min: 1, max: 9 }), model: fc.option(fc.integer({ min: 0, max: 2 })) }) }
)

const iso = (ms: number) => new Date(ms).toISOString()
/** JSON with object keys sorted (arrays keep their order): equal figures, whatever the insertion order. */
const canon = (x: unknown): string =>
  JSON.stringify(x, (_k, v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as object).sort(([p], [q]) => (p < q ? -1 : 1))) : v))

t.test('random versions, re-pricings, restarts and crashes: every figure equals the reference', async (t) => {
  const root = t.testdir()
  let runs = 0
  let applied = 0
  let reapplied = 0
  let reappliedChanging = 0
  await fc.assert(
    fc.asyncProperty(fc.array(actionArb, { minLength: 4, maxLength: 9 }), async (actions) => {
      const dir = mkdtempSync(join(root, 'run-'))
      runs++
      const book = new RefBook()
      const events: RefEvent[] = []
      let a: TestApp = await makeApp(t, { dir, inlinePricing: true })
      // Something to price from the start.
      await putVersion(a, book, MODELS[0], { input: 1, output: 2, cached_input: 1 }, T0)
      const base = makeEvents(runs, 60, 8, 11)
      await ingest(a, base, book)
      events.push(...base)
      try {
        for (const act of actions) {
          if (act.type === 'ingest') {
            const evs = makeEvents(act.seed, act.n, 8, 11)
            await ingest(a, evs, book)
            events.push(...evs)
          } else if (act.type === 'put') {
            await putVersion(a, book, MODELS[act.model], { input: act.input, output: act.output, cached_input: act.input / 2 }, T0 + act.fromHour * HOUR)
          } else if (act.type === 'reprice' || act.type === 'putThenReprice') {
            if (act.type === 'putThenReprice') await putVersion(a, book, MODELS[act.model], { input: act.input, output: act.output, cached_input: act.input / 2 }, T0 + act.fromHour * HOUR)
            const start = T0 + act.startHour * HOUR + 17
            const end = start + act.hours * HOUR
            const model = act.type === 'putThenReprice' ? MODELS[act.model] : act.model === null ? null : MODELS[act.model]
            const dryRun = act.type === 'reprice' && act.dryRun
            const want = referenceDiff(events, book, start, end, model)
            const r = await a.app.inject({ method: 'POST', url: '/prices/reprice', headers: adminHeaders, payload: { start_time: iso(start), end_time: iso(end), ...(model === null ? {} : { model }), dry_run: dryRun } })
            if (r.statusCode !== 200) throw new Error(`reprice ${r.statusCode} ${r.body}`)
            const { reprice_id: id, dry_run: _d, ...got } = r.json()
            if (canon(got) !== canon(want)) throw new Error(`reprice answer ${JSON.stringify(got)} != reference ${JSON.stringify(want)}`)
            if (!dryRun && want.changed > 0) {
              if (typeof id !== 'string') throw new Error('an apply that changed events has no id')
              book.addReprice(start, end, model)
              applied++
            }
          } else if (act.type === 'restart' || act.type === 'crash') {
            if (act.type === 'restart') await a.close()
            else await a.engine.destroy()
            a = await makeApp(t, { dir, inlinePricing: true })
          } else {
            // kill -9 between step 3's commit and memory: the record is durable, nothing else.
            const start = T0 + act.startHour * HOUR + 17
            const end = start + act.hours * HOUR
            const model = act.model === null ? null : MODELS[act.model]
            if (a.engine.book.rev !== book.rev) throw new Error(`book revision ${a.engine.book.rev} != reference ${book.rev}`)
            await a.engine.sync()
            if (referenceDiff(events, book, start, end, model).changed > 0) reappliedChanging++
            await a.engine.priceStore.putReprice({ project: 'default', start, end, model, rev: a.engine.book.rev }, 0)
            await a.engine.destroy()
            book.addReprice(start, end, model)
            a = await makeApp(t, { dir, inlinePricing: true })
            reapplied++
          }
          const got = await figures(a, 9)
          const want = reference(events, book, 9)
          if (canon(got) !== canon(want)) {
            t.same(got, want, `after ${act.type}`)
            throw new Error(`figures differ after ${JSON.stringify(act)} in ${JSON.stringify(actions)}`)
          }
        }
      } finally {
        await a.close()
      }
    }),
    {
      numRuns: 16,
      endOnFailure: true,
      // One run that surely re-prices and re-applies a changing record after a crash: the counts
      // below must not depend on what the random runs happened to draw.
      examples: [
        [
          [
            { type: 'put', model: 0, input: 5, output: 7, fromHour: 0 },
            { type: 'crashAfterRecord', startHour: -1, hours: 9, model: null },
            { type: 'putThenReprice', model: 0, input: 3, output: 4, fromHour: 0, startHour: -1, hours: 9 },
            { type: 'ingest', seed: 7, n: 20 }
          ]
        ]
      ]
    }
  )
  t.ok(runs >= 16, `${runs} runs`)
  t.ok(applied > 0, `${applied} re-pricings applied`)
  t.ok(reapplied > 0, `${reapplied} re-applied after a crash`)
  t.ok(reappliedChanging > 0, `${reappliedChanging} of them changed costs`)
})

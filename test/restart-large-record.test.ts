/**
 * Regression: restart-large-record — a crash restart replays a log record of more events than
 * a call can take as arguments. The replay once copied each record with push(...batch), which
 * overflows the stack past ~100,000 events, and a record that large is what one big append
 * (a group commit of many batches) left: the server then never became ready. Appends are now
 * stored as records of at most RECORD_MAX events, but a log written by an earlier release
 * still holds such records: the test writes one (format 1, rows) from the crashed log's events.
 */
import t from 'tap'
import { Engine } from '../src/engine.js'
import { silentLog } from '../src/log.js'
import { crashedLog, DAY, T0 } from './helpers/crashed-log.js'
import { openStores } from '../src/store/db.js'
import { EventLog } from '../src/store/event-log.js'

const N = 200_000

t.test('a record of 200,000 events replays after kill -9', async (t) => {
  const dir = t.testdir()
  const { config, clock, want } = await crashedLog(dir, N)
  {
    // Every event in one record, as one ingest call of all of them was stored before RECORD_MAX.
    const stores = openStores(dir)
    const events = [...new EventLog(stores.events).readFrom(0)].flat()
    t.ok(events.every((e) => e.project === 'default' && e.user === null && e.session === null && e.tags === null && e.meta === null), 'format 1 can hold these events')
    const rows = events.map((e) => [e.id, e.ts, e.recv, e.model, e.provider, e.prompt, e.completion, e.total, e.cached, e.reasoning, e.latency, e.ttft, e.error ? 1 : 0, e.cost, e.meta])
    await stores.events.clearAsync()
    await stores.events.put(0, { v: 1, ev: rows })
    await stores.close()
  }
  const second = new Engine({ config, logger: silentLog, clock, inlinePricing: true, alertTickMs: 0 })
  t.teardown(() => second.destroy())
  const records = [...second.log.readFrom(0)].map((b) => b.length)
  t.ok(Math.max(...records) > 150_000, `the log holds a record of more than 150,000 events (largest ${Math.max(...records)})`)
  const r = await second.recover()
  t.equal(r.snapshot, 'none')
  t.equal(r.replayed, N)
  t.same(await second.analytics.metrics({ project: 'default', start: T0, end: T0 + DAY }), want, 'the replayed state answers as before the crash')
})

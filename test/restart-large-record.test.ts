/**
 * Regression: restart-large-record — a crash restart replays a log record of more events than
 * a call can take as arguments. The replay once copied each record with push(...batch), which
 * overflows the stack past ~100,000 events, and a record that large is what one big append
 * (a group commit of many batches) leaves: the server then never became ready.
 */
import t from 'tap'
import { Engine } from '../src/engine.js'
import { silentLog } from '../src/log.js'
import { crashedLog, DAY, T0 } from './helpers/crashed-log.js'

const N = 200_000

t.test('a record of 200,000 events replays after kill -9', async (t) => {
  // One ingest call of all of them: one log record.
  const { config, clock, want } = await crashedLog(t.testdir(), N)
  const second = new Engine({ config, logger: silentLog, clock, inlinePricing: true, alertTickMs: 0 })
  t.teardown(() => second.destroy())
  const records = [...second.log.readFrom(0)].map((b) => b.length)
  t.ok(Math.max(...records) > 150_000, `the log holds a record of more than 150,000 events (largest ${Math.max(...records)})`)
  const r = await second.recover()
  t.equal(r.snapshot, 'none')
  t.equal(r.replayed, N)
  t.same(await second.analytics.metrics({ project: 'default', start: T0, end: T0 + DAY }), want, 'the replayed state answers as before the crash')
})

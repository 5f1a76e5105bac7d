/**
 * Regression: restart-large-record — a crash restart replays a log record of more events than
 * a call can take as arguments. The replay once copied each record with push(...batch), which
 * overflows the stack past ~100,000 events, and a record that large is what one big append
 * (a group commit of many batches) leaves: the server then never became ready.
 */
import t from 'tap'
import { loadConfig } from '../src/config.js'
import { Engine } from '../src/engine.js'
import { silentLog } from '../src/log.js'
import { ManualClock } from '../src/clock.js'
import { fastPending, type PendingEvent } from '../src/events.js'

const T0 = Date.parse('2026-03-01T00:00:00Z')
const N = 200_000

t.test('a record of 200,000 events replays after kill -9', async (t) => {
  const dir = t.testdir()
  const config = loadConfig({ LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: 'k'.repeat(32), LLMSCOPE_SNAPSHOT_INTERVAL_S: '3600' }, [])
  const clock = new ManualClock(T0 + 86_400_000)
  const first = new Engine({ config, logger: silentLog, clock, inlinePricing: true, alertTickMs: 0 })
  await first.recover()
  const pending: PendingEvent[] = []
  for (let i = 0; i < N; i++) {
    const p = fastPending({ timestamp: new Date(T0 + ((i * 7_919) % 86_400_000)).toISOString(), model: `m-${i % 3}`, provider: 'acme', prompt_tokens: i % 100, completion_tokens: 1, latency_ms: i % 50 }, config.metadata, clock.now(), () => 'acme')
    if (p === null) throw new Error('event refused')
    pending.push(p)
  }
  await first.ingest(pending)
  await first.sync()
  const want = await first.analytics.metrics({ project: 'default', start: T0, end: T0 + 86_400_000 })
  // What a crash leaves: the log, no final snapshot.
  await first.destroy()

  const second = new Engine({ config, logger: silentLog, clock, inlinePricing: true, alertTickMs: 0 })
  t.teardown(() => second.destroy())
  const records = [...second.log.readFrom(0)].map((b) => b.length)
  t.ok(Math.max(...records) > 150_000, `the log holds a record of more than 150,000 events (largest ${Math.max(...records)})`)
  const r = await second.recover()
  t.equal(r.snapshot, 'none')
  t.equal(r.replayed, N)
  t.same(await second.analytics.metrics({ project: 'default', start: T0, end: T0 + 86_400_000 }), want, 'the replayed state answers as before the crash')
})

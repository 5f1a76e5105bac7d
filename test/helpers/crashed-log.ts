/**
 * A data dir whose log holds `n` events and no snapshot, as a crash leaves it (the engine is
 * destroyed, not closed): what the replay tests restart from. Events of a day from T0 over
 * `models` models, ingested `batch` at a time (one call of all `n` makes one log record).
 * Returns the config and clock to restart with and the metrics the replay must give back.
 */
import { loadConfig, type Config } from '../../src/config.js'
import { Engine } from '../../src/engine.js'
import { silentLog } from '../../src/log.js'
import { ManualClock } from '../../src/clock.js'
import { fastPending, type PendingEvent } from '../../src/events.js'

export const T0 = Date.parse('2026-03-01T00:00:00Z')
export const DAY = 86_400_000

export async function crashedLog(dir: string, n: number, opts: { batch?: number; models?: number } = {}): Promise<{ config: Config; clock: ManualClock; want: unknown }> {
  const batch = opts.batch ?? n
  const models = opts.models ?? 3
  const config = loadConfig({ LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: 'k'.repeat(32), LLMSCOPE_SNAPSHOT_INTERVAL_S: '3600' }, [])
  const clock = new ManualClock(T0 + DAY)
  const first = new Engine({ config, logger: silentLog, clock, inlinePricing: true, alertTickMs: 0 })
  await first.recover()
  for (let from = 0; from < n; from += batch) {
    const pending: PendingEvent[] = []
    for (let i = from; i < Math.min(n, from + batch); i++) {
      const p = fastPending({ timestamp: new Date(T0 + ((i * 7_919) % DAY)).toISOString(), model: `m-${i % models}`, provider: 'acme', prompt_tokens: i % 100, completion_tokens: 1, latency_ms: i % 50 }, config.metadata, clock.now(), () => 'acme')
      if (p === null) throw new Error('event refused')
      pending.push(p)
    }
    await first.ingest(pending)
  }
  await first.sync()
  const want = await first.analytics.metrics({ project: 'default', start: T0, end: T0 + DAY })
  await first.destroy()
  return { config, clock, want }
}

import t, { type Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../src/config.js'
import { Engine } from '../src/engine.js'
import { silentLog } from '../src/log.js'
import { metrics, timeseries, type RangeQuery } from '../src/queries.js'
import type { Aggregate } from '../src/analytics/series.js'
import type { PendingEvent } from '../src/events.js'

const HOUR = 3_600_000
const DAY = 24 * HOUR
const T0 = Date.parse('2026-03-01T00:00:00Z')
const MODELS = ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022', 'my-model']

/** Deterministic pseudo-random numbers (mulberry32). */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

function pending(n: number, seed: number): PendingEvent[] {
  const r = rng(seed)
  return Array.from({ length: n }, () => {
    const m = Math.floor(r() * MODELS.length)
    const ts = T0 + Math.floor(r() * 3 * DAY)
    const prompt = Math.floor(r() * 3000)
    const completion = Math.floor(r() * 900)
    return { ts, recv: ts, model: MODELS[m], provider: m === 2 ? 'anthropic' : r() < 0.2 ? 'azure' : 'openai', prompt, completion, total: prompt + completion, cached: 0, reasoning: 0, latency: Math.floor(r() * 2_000_000) / 1000, ttft: null, error: r() < 0.05, cost: null, meta: null, project: 'default', user: null, session: null, tags: null }
  })
}

/** Ranges of every kind: hour-aligned, within one hour, across days, fractional, unbounded. */
function ranges(seed: number): RangeQuery[] {
  const r = rng(seed)
  const out: RangeQuery[] = [
    { start: -Infinity, end: Infinity },
    { start: T0, end: T0 + DAY },
    { start: T0 + 90 * 60_000, end: T0 + 100 * 60_000 },
    { start: T0 + 0.5, end: T0 + 2 * HOUR + 0.5 },
    { start: -Infinity, end: T0 + 30 * HOUR + 17 },
    { start: T0 + 30 * HOUR + 17, end: Infinity }
  ]
  for (let i = 0; i < 40; i++) {
    const a = T0 - HOUR + Math.floor(r() * 4 * DAY)
    const b = T0 - HOUR + Math.floor(r() * 4 * DAY)
    out.push({ start: Math.min(a, b), end: Math.max(a, b) })
  }
  return out
}

const json = (a: Aggregate) => JSON.stringify({ totals: a.totals, sketch: a.sketch.toJSON() })

/** Unfiltered queries use the rollup; listing every model forces the per-series path. */
function compare(t: Test, engine: Engine, label: string) {
  const every = new Set(MODELS)
  let checked = 0
  for (const q of ranges(11)) {
    const viaRollup = metrics(engine.topology, q)
    const perSeries = metrics(engine.topology, { ...q, models: every })
    if (json(viaRollup) !== json(perSeries)) t.fail(`${label}: metrics differ for [${q.start}, ${q.end})`)
    for (const interval of [HOUR, DAY]) {
      const a = timeseries(engine.topology, q, interval)
      const b = timeseries(engine.topology, { ...q, models: every }, interval)
      const same = a.length === b.length && a.every((x, i) => x.start === b[i].start && json(x) === json(b[i]))
      if (!same) t.fail(`${label}: ${interval} ms timeseries differ for [${q.start}, ${q.end})`)
    }
    checked++
  }
  t.equal(checked, 46, `${label}: every range compared`)
  t.ok(metrics(engine.topology, { start: -Infinity, end: Infinity }).totals.requests > 0, `${label}: the data is there`)
}

async function open(dir: string, env: Record<string, string> = {}) {
  const config = loadConfig({ LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: 'test-key-123456', ...env })
  const engine = new Engine({ config, logger: silentLog, clock: { now: () => T0 + 3 * DAY } })
  await engine.recover()
  return engine
}

t.test('all-model queries through the rollup equal the per-series answers, before and after a restart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'llmscope-rollup-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let engine = await open(dir)
  await engine.ingest(pending(3000, 1))
  await engine.sync()
  compare(t, engine, 'live')
  const before = json(metrics(engine.topology, { start: -Infinity, end: Infinity }))
  await engine.close()
  // Restart: the rollup is rebuilt from the restored series' hours.
  engine = await open(dir)
  t.equal(json(metrics(engine.topology, { start: -Infinity, end: Infinity })), before, 'restored rollup answers as before')
  compare(t, engine, 'restored')
  // Events after the restart go to the seeded rollup and the series alike.
  await engine.ingest(pending(500, 2))
  await engine.sync()
  compare(t, engine, 'restored + new')
  await engine.close()
})

t.test('the rollup agrees with series whose old hours were folded by retention', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'llmscope-rollup-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const engine = await open(dir, { LLMSCOPE_RETENTION_EVENTS: '100' })
  await engine.ingest(pending(3000, 3))
  await engine.sync()
  engine.retain()
  await engine.sync()
  t.ok(engine.topology.retentionStats().coarseRows > 0, 'some hours are coarse')
  compare(t, engine, 'retained')
  await engine.close()
})

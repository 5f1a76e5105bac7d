/**
 * queries.ts `scan` hands every visited row its event's log position (seq), as its last
 * argument, on each of its paths: rows from memory (whole range, postings cells of one user),
 * and the log (a value past a dimension cap; hours folded by retention).
 */
import t, { type Test } from 'tap'
import { loadConfig } from '../../src/config.js'
import { Engine } from '../../src/engine.js'
import { silentLog } from '../../src/log.js'
import { scan, type RangeQuery } from '../../src/queries.js'
import type { PendingEvent, StoredEvent } from '../../src/events.js'

const HOUR = 3_600_000
const T0 = Date.parse('2026-03-01T00:00:00Z')

async function open(t: Test, env: Record<string, string> = {}): Promise<Engine> {
  const config = loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), LLMSCOPE_API_KEYS: 'test-key-123456', ...env })
  const engine = new Engine({ config, logger: silentLog, clock: { now: () => T0 + 48 * HOUR } })
  await engine.recover()
  t.teardown(() => engine.close())
  return engine
}

function pending(n: number): PendingEvent[] {
  return Array.from({ length: n }, (_, i) => {
    const ts = T0 + i * 97_001
    return { ts, recv: ts, model: i % 3 === 0 ? 'gpt-4o' : 'gpt-4o-mini', provider: 'openai', prompt: i, completion: 1, total: i + 1, cached: 0, reasoning: 0, latency: 10 + (i % 50), ttft: null, error: i % 5 === 0, cost: 0.001, meta: null, project: 'default', user: `u${i % 7}`, session: null, tags: null, clientId: null, costSource: null } as PendingEvent
  })
}

/** (seq, ts) of every row `scan` visits, with which path (event given or not), sorted by seq. */
function visited(engine: Engine, q: RangeQuery): { rows: Array<[number, number]>; fromLog: number } {
  const rows: Array<[number, number]> = []
  let fromLog = 0
  scan(engine.source, 'default', q, (_v, _f, _u, _s, _a, ts, _series, e, seq) => {
    rows.push([seq, ts])
    if (e !== null) {
      fromLog++
      if (e.seq !== seq) throw new Error(`log path: seq ${seq} is not the event's ${e.seq}`)
    }
  })
  return { rows: rows.sort((a, b) => a[0] - b[0]), fromLog }
}

const want = (stored: StoredEvent[], keep: (e: StoredEvent) => boolean) =>
  stored.filter(keep).map((e) => [e.seq, e.ts] as [number, number]).sort((a, b) => a[0] - b[0])

t.test('memory paths: every row visited with its own seq', async (t) => {
  const engine = await open(t)
  const stored = await engine.ingest(pending(600))
  await engine.sync()
  const all = visited(engine, { start: -Infinity, end: Infinity, status: 'error' })
  t.equal(all.fromLog, 0, 'answered from memory')
  t.same(all.rows, want(stored, (e) => e.error))
  const one = visited(engine, { start: T0 + HOUR, end: T0 + 10 * HOUR, user_id: 'u3' })
  t.equal(one.fromLog, 0, 'answered from the postings cells')
  t.same(one.rows, want(stored, (e) => e.user === 'u3' && e.ts >= T0 + HOUR && e.ts < T0 + 10 * HOUR))
  t.ok(one.rows.length > 10)
})

t.test('log paths: a value past a cap, and hours folded by retention, give e.seq', async (t) => {
  const capped = await open(t, { LLMSCOPE_MAX_DIMENSION_VALUES: '3' })
  const stored = await capped.ingest(pending(300))
  await capped.sync()
  const past = visited(capped, { start: -Infinity, end: Infinity, user_id: 'u6' })
  t.equal(past.fromLog, past.rows.length, 'answered from the log')
  t.same(past.rows, want(stored, (e) => e.user === 'u6'))
  t.ok(past.rows.length > 10)

  const folded = await open(t, { LLMSCOPE_RETENTION_EVENTS: '50' })
  const stored2 = await folded.ingest(pending(300))
  await folded.sync()
  folded.retain()
  await folded.sync()
  t.ok(folded.topology.retentionStats().coarseRows > 0, 'some hours are coarse')
  const old = visited(folded, { start: -Infinity, end: Infinity, status: 'success' })
  t.ok(old.fromLog > 0, 'answered from the log')
  t.same(old.rows, want(stored2, (e) => !e.error))
})

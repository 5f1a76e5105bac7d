/**
 * Raw-event retention end to end (LLMSCOPE_RETENTION_DAYS / LLMSCOPE_RETENTION_EVENTS): rows
 * past retention fold into hour aggregates in each aggregator; totals stay exact, hour-aligned
 * ranges stay exact, snapshots and restarts keep the folded hours, the log keeps every event,
 * and the raw rows held stay bounded under a steady stream.
 */
import t from 'tap'
import { makeApp, adminHeaders, type TestApp } from './helpers/app.js'
import { ManualClock } from '../src/clock.js'
import { openStores } from '../src/store/db.js'

const DAY = 86_400_000
const HOUR = 3_600_000
const T0 = Date.parse('2026-03-01T00:00:00.000Z')
const NOW = T0 + 5 * DAY + 12 * HOUR // day 5, noon

/** 5.5 days of events, one every 7 minutes, three models; tokens vary so sums check. */
function events(from = T0, to = NOW, step = 7 * 60_000) {
  const out = []
  let i = 0
  for (let ts = from; ts < to; ts += step, i++) {
    out.push({
      timestamp: new Date(ts + (i % 60) * 997).toISOString(),
      model: ['gpt-4', 'gpt-4o', 'my-model'][i % 3],
      prompt_tokens: 100 + (i % 50),
      completion_tokens: 10 + (i % 7),
      latency_ms: 50 + (i % 300),
      status: i % 13 === 0 ? 'error' : 'success'
    })
  }
  return out
}

async function ingest(app: TestApp['app'], list: object[]): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < list.length; i += 1000) {
    const res = await app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: list.slice(i, i + 1000) })
    if (res.statusCode !== 202) throw new Error(res.body)
    ids.push(...res.json().event_ids)
  }
  return ids
}

const get = async (app: TestApp['app'], url: string) => (await app.inject({ url, headers: adminHeaders })).json()
const iso = (ms: number) => new Date(ms).toISOString()

/** Only hour-aligned ranges: what retention promises to keep exact. */
async function observe(app: TestApp['app']) {
  return {
    all: await get(app, '/analytics/metrics'),
    days: await get(app, `/analytics/metrics?start_time=${iso(T0 + DAY)}&end_time=${iso(T0 + 3 * DAY)}`),
    hours: await get(app, `/analytics/metrics?start_time=${iso(T0 + 2 * DAY + 5 * HOUR)}&end_time=${iso(T0 + 4 * DAY + 17 * HOUR)}`),
    model: await get(app, '/analytics/metrics?model=gpt-4o'),
    costs: await get(app, '/analytics/costs'),
    costsRange: await get(app, `/analytics/costs?start_time=${iso(T0 + 3 * HOUR)}&end_time=${iso(T0 + 4 * DAY)}`),
    ts: await get(app, `/analytics/timeseries?interval=1h&start_time=${iso(T0)}&end_time=${iso(NOW)}`)
  }
}

function rawRows(app: TestApp): number {
  return app.engine.topology.retentionStats().rawRows
}

t.test('RETENTION_DAYS: old rows fold into hours, hour-aligned answers and totals unchanged, restart keeps them', async (t) => {
  const clock = new ManualClock(NOW)
  // Reference: the same events without retention.
  const ref = await makeApp(t, { clock })
  const list = events()
  await ingest(ref.app, list)
  const want = await observe(ref.app)
  t.equal(want.all.total_requests, list.length)

  const a = await makeApp(t, { clock, env: { LLMSCOPE_RETENTION_DAYS: '2' } })
  const ids = await ingest(a.app, list)
  await a.engine.sync()
  t.equal(rawRows(a), list.length, 'nothing folded before retention runs')
  a.engine.retain()
  await a.engine.sync()
  await a.engine.topology.system.idle()
  // Days 4 and 5 (today) stay raw.
  const keep = list.filter((e) => Date.parse(e.timestamp) >= T0 + 4 * DAY).length
  t.equal(rawRows(a), keep, `raw rows: only the last 2 days (${keep} of ${list.length})`)
  t.same(await observe(a.app), want, 'every hour-aligned answer equals the one without retention')

  // The log keeps every event: an old one is still readable.
  const old = await a.app.inject({ url: `/events/${ids[0]}`, headers: adminHeaders })
  t.equal(old.statusCode, 200)

  // A late event for a folded day is counted (at hour resolution).
  await ingest(a.app, [{ timestamp: iso(T0 + 3 * HOUR + 5), model: 'gpt-4', prompt_tokens: 1, latency_ms: 1 }])
  await ingest(ref.app, [{ timestamp: iso(T0 + 3 * HOUR + 5), model: 'gpt-4', prompt_tokens: 1, latency_ms: 1 }])
  t.equal(rawRows(a), keep, 'a late event into a coarse hour keeps no row')
  const want2 = await observe(ref.app)
  t.same(await observe(a.app), want2)

  // Graceful restart: the coarse hours come back from the snapshot.
  await a.close()
  const b = await makeApp(t, { clock, dir: a.dir, env: { LLMSCOPE_RETENTION_DAYS: '2' } })
  t.equal(b.engine.recovery?.snapshot, 'loaded')
  t.equal(b.engine.recovery?.replayed, 0)
  t.equal(rawRows(b), keep)
  t.same(await observe(b.app), want2, 'restart restores the folded state exactly')

  // A damaged snapshot: the whole log is replayed, and retention folds it again while it does.
  await b.close()
  const stores = openStores(a.dir)
  const raw = Buffer.from(stores.meta.get('snapshot')!)
  raw[raw.length - 3] ^= 0xff
  await stores.meta.put('snapshot', raw)
  await stores.close()
  const c = await makeApp(t, { clock, dir: a.dir, env: { LLMSCOPE_RETENTION_DAYS: '2' } })
  t.equal(c.engine.recovery?.snapshot, 'rejected')
  t.equal(c.engine.recovery?.replayed, list.length + 1)
  await c.engine.topology.system.idle()
  t.equal(rawRows(c), keep)
  t.same(await observe(c.app), want2, 'a rebuild from the log gives the same folded answers')
})

t.test('RETENTION_EVENTS: raw rows stay bounded under a steady stream, totals exact', async (t) => {
  const clock = new ManualClock(T0)
  const limit = 500
  const a = await makeApp(t, { clock, env: { LLMSCOPE_RETENTION_EVENTS: String(limit) } })
  let sent = 0
  let tokens = 0
  let peak = 0
  // 48 rounds: each an hour of 120 events for one model, then the snapshot timer's retention.
  for (let round = 0; round < 48; round++) {
    const from = T0 + round * HOUR
    const list = events(from, from + HOUR, 30_000).map((e) => ({ ...e, model: 'gpt-4' }))
    clock.set(from + HOUR)
    await ingest(a.app, list)
    sent += list.length
    for (const e of list) tokens += e.prompt_tokens
    await a.engine.snapshotNow()
    peak = Math.max(peak, rawRows(a))
  }
  // Bound: 1.25 × the limit, plus the current hour (never folded by count).
  t.ok(peak <= limit * 1.25 + 1 + 120, `raw rows peaked at ${peak} (limit ${limit})`)
  t.ok(peak >= limit, 'the limit was reached')
  const m = await get(a.app, '/analytics/metrics')
  t.equal(m.total_requests, sent)
  t.equal(m.prompt_tokens, tokens)
  // Restart (crash after the last snapshot): the bound and the totals hold.
  await a.engine.destroy()
  await a.close()
  const b = await makeApp(t, { clock, dir: a.dir, env: { LLMSCOPE_RETENTION_EVENTS: String(limit) } })
  // Recovery runs retention before serving: never more raw rows than before the crash.
  t.ok(rawRows(b) <= rawRows(a) && rawRows(b) <= limit * 1.25 + 1 + 120, `raw rows after restart: ${rawRows(b)}`)
  t.same(await get(b.app, '/analytics/metrics'), m)
})

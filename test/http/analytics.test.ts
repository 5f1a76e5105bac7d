import t from 'tap'
import { makeApp, adminHeaders, readHeaders, event } from '../helpers/app.js'

const T0 = Date.parse('2026-03-01T10:00:00.000Z')
const at = (ms: number) => new Date(T0 + ms).toISOString()

async function seed(t: Parameters<typeof makeApp>[0]) {
  const built = await makeApp(t)
  // Out of order on purpose: late events still count in the right place.
  const events = [
    event({ timestamp: at(90_000), model: 'gpt-4', provider: 'openai', prompt_tokens: 1000, completion_tokens: 0, latency_ms: 300 }),
    event({ timestamp: at(0), model: 'gpt-4', provider: 'openai', prompt_tokens: 1000, completion_tokens: 500, latency_ms: 100 }),
    event({ timestamp: at(59_999), model: 'gpt-4', provider: 'openai', prompt_tokens: 0, completion_tokens: 1000, latency_ms: 200, status: 'error' }),
    event({ timestamp: at(60_000), model: 'mystery-model', provider: 'acme', prompt_tokens: 10, completion_tokens: 10, latency_ms: 50 }),
    event({ timestamp: at(3_600_000), model: 'gpt-4o', provider: 'openai', prompt_tokens: 100, completion_tokens: 100, latency_ms: 400, cost: 2 })
  ]
  const res = await built.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: events })
  t.equal(res.statusCode, 202)
  return built
}

t.test('metrics over all time and exact half-open ranges', async (t) => {
  const { app } = await seed(t)
  const all = (await app.inject({ url: '/analytics/metrics', headers: readHeaders })).json()
  t.equal(all.total_requests, 5)
  t.equal(all.prompt_tokens, 2110)
  t.equal(all.completion_tokens, 1610)
  t.equal(all.total_tokens, 3720)
  t.equal(all.avg_latency_ms, 210)
  t.equal(all.error_count, 1)
  t.equal(all.unpriced_requests, 1)
  // gpt-4: 2000 in × $30/M + 1500 out × $60/M = 0.06 + 0.09; gpt-4o caller cost 2.
  t.equal(all.total_cost, 2.15)
  t.ok(Math.abs(all.p50_latency_ms - 200) <= 2, `p50 ${all.p50_latency_ms} ≈ 200`)
  t.equal(all.p99_latency_ms, 400, 'p99 of five is the slowest (nearest rank ⌈0.99·5⌉ = 5)')

  // [T0, T0+60000): the events at 0 and 59_999, not the one at 60_000.
  const first = (await app.inject({ url: `/analytics/metrics?start_time=${at(0)}&end_time=${at(60_000)}`, headers: readHeaders })).json()
  t.equal(first.total_requests, 2)
  t.equal(first.total_cost, 0.03 + 0.03 + 0.06)
  t.equal(first.start_time, at(0))
  // One millisecond shifts exactly one event in or out.
  const shifted = (await app.inject({ url: `/analytics/metrics?start_time=${at(1)}&end_time=${at(60_001)}`, headers: readHeaders })).json()
  t.equal(shifted.total_requests, 2, '59_999 and 60_000')
  t.equal(shifted.unpriced_requests, 1)
  const empty = (await app.inject({ url: `/analytics/metrics?start_time=${at(5)}&end_time=${at(5)}`, headers: readHeaders })).json()
  t.equal(empty.total_requests, 0)
  t.equal(empty.avg_latency_ms, 0)
  t.equal(empty.p95_latency_ms, null)
  // Epoch milliseconds are accepted too.
  const epoch = (await app.inject({ url: `/analytics/metrics?start_time=${T0}&end_time=${T0 + 60_000}`, headers: readHeaders })).json()
  t.equal(epoch.total_requests, 2)
})

t.test('metrics filter by model and provider (comma lists)', async (t) => {
  const { app } = await seed(t)
  const m = (await app.inject({ url: '/analytics/metrics?model=gpt-4', headers: readHeaders })).json()
  t.equal(m.total_requests, 3)
  const two = (await app.inject({ url: '/analytics/metrics?model=gpt-4,gpt-4o', headers: readHeaders })).json()
  t.equal(two.total_requests, 4)
  const p = (await app.inject({ url: '/analytics/metrics?provider=acme', headers: readHeaders })).json()
  t.equal(p.total_requests, 1)
  const none = (await app.inject({ url: '/analytics/metrics?model=nope', headers: readHeaders })).json()
  t.equal(none.total_requests, 0)
})

t.test('costs breakdown: most costly first, unpriced rows flagged', async (t) => {
  const { app } = await seed(t)
  const c = (await app.inject({ url: '/analytics/costs', headers: readHeaders })).json()
  t.same(c.breakdown.map((r: { model: string }) => r.model), ['gpt-4o', 'gpt-4', 'mystery-model'])
  t.equal(c.breakdown[0].total_cost, 2)
  t.equal(c.breakdown[1].total_cost, 0.15)
  t.equal(c.breakdown[1].requests, 3)
  t.equal(c.breakdown[1].provider, 'openai')
  t.equal(c.breakdown[2].unpriced, true)
  t.equal(c.breakdown[2].unpriced_requests, 1)
  t.equal(c.breakdown[0].unpriced, false)
  t.equal(c.total_cost, 2.15)
  const ranged = (await app.inject({ url: `/analytics/costs?start_time=${at(60_000)}&end_time=${at(3_600_000)}`, headers: readHeaders })).json()
  t.same(ranged.breakdown.map((r: { model: string; requests: number }) => [r.model, r.requests]), [['gpt-4', 1], ['mystery-model', 1]])
})

t.test('timeseries buckets, filled for charts', async (t) => {
  const { app } = await seed(t)
  const r = await app.inject({ url: `/analytics/timeseries?interval=1m&start_time=${at(0)}&end_time=${at(180_000)}`, headers: readHeaders })
  t.equal(r.statusCode, 200)
  const ts = r.json()
  t.equal(ts.interval, '1m')
  t.same(ts.buckets.map((b: { timestamp: string; requests: number }) => [b.timestamp, b.requests]), [[at(0), 2], [at(60_000), 2], [at(120_000), 0]])
  t.equal(ts.buckets[0].cost, 0.12)
  t.equal(ts.buckets[0].errors, 1)
  const hourly = (await app.inject({ url: `/analytics/timeseries?interval=1h&start_time=${at(0)}&end_time=${at(7_200_000)}&model=gpt-4o`, headers: readHeaders })).json()
  t.same(hourly.buckets.map((b: { requests: number }) => b.requests), [0, 1])
  const tooMany = await app.inject({ url: `/analytics/timeseries?interval=1m&start_time=${at(0)}&end_time=${at(30 * 86_400_000)}`, headers: readHeaders })
  t.equal(tooMany.statusCode, 400)
})

t.test('bad query parameters → 400 naming the parameter', async (t) => {
  const { app } = await seed(t)
  const cases: Array<[string, string]> = [
    ['/analytics/metrics?start_time=yesterday', '(query) start_time'],
    ['/analytics/metrics?end_time=2026-01-01T00:00:00', '(query) end_time'],
    [`/analytics/metrics?start_time=${at(10)}&end_time=${at(0)}`, '(query) end_time'],
    ['/analytics/metrics?modle=gpt-4', '(query) (body)'],
    ['/analytics/timeseries?interval=2m', '(query) interval'],
    ['/analytics/costs?start_time=2026-13-01T00:00:00Z', '(query) start_time']
  ]
  for (const [url, path] of cases) {
    const res = await app.inject({ url, headers: readHeaders })
    t.equal(res.statusCode, 400, url)
    t.equal(res.json().code, 'LLMS_ERR_BAD_QUERY')
    t.ok(res.json().details.some((d: { path: string }) => d.path === path || (path.endsWith('(body)') && d.path.startsWith('(query)'))), `${url} names ${path}: ${JSON.stringify(res.json().details)}`)
  }
})

t.test('a query right after a 202 sees the event (read-your-writes)', async (t) => {
  const { app } = await makeApp(t)
  for (let i = 1; i <= 20; i++) {
    await app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event() })
    const m = (await app.inject({ url: '/analytics/metrics', headers: readHeaders })).json()
    t.equal(m.total_requests, i)
  }
})

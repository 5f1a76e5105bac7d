/**
 * GET /metrics (prom-client): real values after real traffic — ingest requests, events and
 * latency by route and outcome, LMDB commits, actors, snapshots, OTLP — plus the process
 * metrics; one registry per app, so two apps in one process do not share counts.
 */
import t from 'tap'
import { makeApp, adminHeaders, ingestHeaders, event } from '../helpers/app.js'
import { ManualClock } from '../../src/clock.js'
import { loadConfig } from '../../src/config.js'
import { buildApp, loggerOptions } from '../../src/app.js'
import { ingestLogLevel, outcomeOf } from '../../src/http/metrics.js'
import { Writable } from 'node:stream'
import { readFileSync } from 'node:fs'

/** The value of one sample (`name{labels} value`), or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const sp = line.lastIndexOf(' ')
    if (line.slice(0, sp) === series) return Number(line.slice(sp + 1))
  }
  return undefined
}

const otlpRequest = {
  resourceSpans: [
    {
      resource: { attributes: [] },
      scopeSpans: [
        {
          scope: { name: 'test' },
          spans: [
            {
              traceId: 'f'.repeat(32),
              spanId: '0'.repeat(15) + '1',
              name: 'openai.chat',
              startTimeUnixNano: '1767225600000000000',
              endTimeUnixNano: '1767225600500000000',
              attributes: [
                { key: 'gen_ai.system', value: { stringValue: 'openai' } },
                { key: 'gen_ai.request.model', value: { stringValue: 'gpt-4o' } },
                { key: 'gen_ai.usage.input_tokens', value: { intValue: '100' } },
                { key: 'gen_ai.usage.output_tokens', value: { intValue: 20 } }
              ]
            },
            { traceId: 'f'.repeat(32), spanId: '0'.repeat(15) + '2', name: 'GET /', startTimeUnixNano: '1767225600000000000', endTimeUnixNano: '1767225600500000000', attributes: [] }
          ]
        }
      ]
    }
  ]
}

t.test('after traffic, /metrics reports what happened, by route and outcome', async (t) => {
  const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'))
  const { app, engine } = await makeApp(t, { clock, inlinePricing: true })
  const json = { ...ingestHeaders, 'content-type': 'application/json' }

  t.equal((await app.inject({ method: 'POST', url: '/events/ingest', headers: json, payload: JSON.stringify(event()) })).statusCode, 202)
  t.equal((await app.inject({ method: 'POST', url: '/events/batch', headers: json, payload: JSON.stringify([event(), event(), event({ model: 'gpt-4o' })]) })).statusCode, 202)
  const nd = [event(), event()].map((e) => JSON.stringify(e)).join('\n')
  t.equal((await app.inject({ method: 'POST', url: '/events/batch', headers: { ...ingestHeaders, 'content-type': 'application/x-ndjson' }, payload: nd })).statusCode, 202)
  t.equal((await app.inject({ method: 'POST', url: '/events/batch', headers: json, payload: JSON.stringify([event(), event({ prompt_tokens: -1 })]) })).statusCode, 400)
  t.equal((await app.inject({ method: 'POST', url: '/events/ingest', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(event()) })).statusCode, 401)
  t.equal((await app.inject({ method: 'POST', url: '/v1/traces', headers: json, payload: JSON.stringify(otlpRequest) })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/analytics/metrics', headers: adminHeaders })).statusCode, 200, 'not an ingest route: not counted')
  await engine.sync()

  const res = await app.inject({ url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8')
  const m = res.body

  // Ingest requests and events, by route and outcome.
  t.equal(sample(m, 'llmscope_ingest_requests_total{route="/events/ingest",outcome="accepted"}'), 1)
  t.equal(sample(m, 'llmscope_ingest_requests_total{route="/events/ingest",outcome="unauthorized"}'), 1)
  t.equal(sample(m, 'llmscope_ingest_requests_total{route="/events/batch",outcome="accepted"}'), 2)
  t.equal(sample(m, 'llmscope_ingest_requests_total{route="/events/batch",outcome="invalid"}'), 1)
  t.equal(sample(m, 'llmscope_ingest_requests_total{route="/v1/traces",outcome="accepted"}'), 1)
  t.equal(sample(m, 'llmscope_ingest_events_total{route="/events/batch",outcome="accepted"}'), 5, '3 as JSON + 2 as NDJSON')
  t.equal(sample(m, 'llmscope_ingest_events_total{route="/events/batch",outcome="invalid"}'), 2)
  t.equal(sample(m, 'llmscope_ingest_events_total{route="/v1/traces",outcome="accepted"}'), 1, 'GenAI spans only')
  t.notMatch(m, /route="\/analytics/)

  // Latency histogram: one observation per request, in +Inf and in _count.
  t.equal(sample(m, 'llmscope_ingest_duration_seconds_count{route="/events/batch",outcome="accepted"}'), 2)
  t.equal(sample(m, 'llmscope_ingest_duration_seconds_bucket{le="+Inf",route="/events/batch",outcome="accepted"}'), 2)
  t.ok(sample(m, 'llmscope_ingest_duration_seconds_sum{route="/events/batch",outcome="accepted"}')! > 0)

  // LMDB commits: four appends (1 + 3 + 2 + 1 events), each observed once.
  t.equal(sample(m, 'llmscope_log_commit_events_count'), 4)
  t.equal(sample(m, 'llmscope_log_commit_events_sum'), 7)
  t.equal(sample(m, 'llmscope_log_commit_events_bucket{le="1"}'), 2)
  t.equal(sample(m, 'llmscope_log_commit_duration_seconds_count'), 4)
  t.ok(sample(m, 'llmscope_log_commit_duration_seconds_sum')! > 0)
  t.equal(sample(m, 'llmscope_events_appended_total'), 7)
  t.equal(sample(m, 'llmscope_log_appends_total'), 4)
  t.equal(sample(m, 'llmscope_log_next_seq'), 7)
  t.equal(sample(m, 'llmscope_log_commit_failures_total'), 0)

  // Actors, per actor.
  t.equal(sample(m, 'llmscope_actor_mailbox_depth{actor="ingest-router"}'), 0)
  t.ok(sample(m, 'llmscope_actor_processed_total{actor="ingest-router"}')! >= 4)
  t.equal(sample(m, 'llmscope_actor_failed_total{actor="ingest-router"}'), 0)
  t.equal(sample(m, 'llmscope_models'), 2)
  t.equal(sample(m, 'llmscope_ready'), 1)
  t.equal(sample(m, 'llmscope_pipeline_in_flight_events'), 0)

  // OTLP.
  t.equal(sample(m, 'llmscope_otlp_requests_total'), 1)
  t.equal(sample(m, 'llmscope_otlp_spans_total{result="ingested"}'), 1)
  t.equal(sample(m, 'llmscope_otlp_spans_total{result="ignored"}'), 1)
  t.equal(sample(m, 'llmscope_otlp_spans_total{result="rejected"}'), 0)

  // WebSocket and alerts (no subscriber, no rule yet).
  t.equal(sample(m, 'llmscope_ws_subscribers'), 0)
  t.equal(sample(m, 'llmscope_ws_messages_dropped_total'), 0)
  t.equal(sample(m, 'llmscope_alert_notifications_total{kind="firing"}'), 0)

  // Process metrics (prom-client's default collectors).
  // User and system time are split by the kernel's tick samples, so under load the user share
  // can stay 0 for a short run (seen once on a loaded machine); their sum is the precise figure.
  t.ok(sample(m, 'process_cpu_seconds_total')! > 0, 'CPU time counted')
  t.ok(sample(m, 'process_cpu_user_seconds_total')! >= 0, 'user CPU time reported')
  t.ok(sample(m, 'nodejs_heap_size_used_bytes')! > 0)
  t.match(m, /^nodejs_eventloop_lag_seconds \d/m)
  t.match(m, /^llmscope_build_info\{version="\d+\.\d+\.\d+[^"]*"\} 1$/m)

  // Each metric is declared once.
  const types = [...m.matchAll(/^# TYPE (\S+) /gm)].map((x) => x[1])
  t.same(types.filter((n, i) => types.indexOf(n) !== i), [], 'no metric declared twice')
})

t.test('snapshot duration, size, position and age', async (t) => {
  const start = Date.parse('2026-01-01T00:00:00Z')
  const clock = new ManualClock(start)
  const { app, engine } = await makeApp(t, { clock, inlinePricing: true })
  clock.advance(90_000)
  let m = (await app.inject({ url: '/metrics' })).body
  t.equal(sample(m, 'llmscope_snapshot_bytes'), 0, 'no snapshot yet')
  t.equal(sample(m, 'llmscope_snapshot_age_seconds'), 90, 'counted from the start before the first snapshot')

  await app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload: JSON.stringify([event(), event()]) })
  await engine.snapshotNow()
  clock.advance(12_500)
  m = (await app.inject({ url: '/metrics' })).body
  t.equal(sample(m, 'llmscope_snapshot_seq'), 2)
  t.ok(sample(m, 'llmscope_snapshot_bytes')! > 0)
  t.ok(sample(m, 'llmscope_snapshot_duration_seconds')! >= 0)
  t.equal(sample(m, 'llmscope_snapshot_age_seconds'), 12.5)
})

t.test('one registry per app: two apps in one process count separately', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const b = await makeApp(t, { inlinePricing: true })
  const json = { ...adminHeaders, 'content-type': 'application/json' }
  await a.app.inject({ method: 'POST', url: '/events/ingest', headers: json, payload: JSON.stringify(event()) })
  await a.app.inject({ method: 'POST', url: '/events/ingest', headers: json, payload: JSON.stringify(event()) })
  await b.app.inject({ method: 'POST', url: '/events/ingest', headers: json, payload: JSON.stringify(event()) })
  const series = 'llmscope_ingest_requests_total{route="/events/ingest",outcome="accepted"}'
  t.equal(sample((await a.app.inject({ url: '/metrics' })).body, series), 2)
  t.equal(sample((await b.app.inject({ url: '/metrics' })).body, series), 1)
})

t.test('outcome labels are bounded', async (t) => {
  t.same([200, 202, 400, 413, 415, 401, 403, 429, 503, 500, 404].map(outcomeOf), ['accepted', 'accepted', 'invalid', 'invalid', 'invalid', 'unauthorized', 'unauthorized', 'rate_limited', 'unavailable', 'error', 'invalid'])
})

t.test('/metrics needs no key and answers while recovering', async (t) => {
  const config = loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), LLMSCOPE_API_KEYS: 'metrics-key-0001', LLMSCOPE_LOG_LEVEL: 'silent' })
  const { app } = await buildApp(config, { logger: false })
  t.teardown(() => app.close())
  const r = await app.inject({ url: '/metrics' })
  t.equal(r.statusCode, 200)
  t.equal(sample(r.body, 'llmscope_ready'), 0)
})

t.test('every llmscope_ metric the README names is served', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  // llmscope_cluster_* are served in cluster mode only (test/cluster/engine.test.ts checks them there).
  const named = [...new Set([...readme.matchAll(/`(llmscope_[a-z_]+)(?:\{[^}]*\})?`/g)].map((m) => m[1]))].filter((n) => !n.endsWith('_') && !n.startsWith('llmscope_cluster_'))
  t.ok(named.length >= 40, `${named.length} names`)
  const { app } = await makeApp(t)
  const declared = new Set([...(await app.inject({ url: '/metrics' })).body.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]))
  for (const name of named) t.ok(declared.has(name), `${name} is served`)
})

t.test('ingest routes write no per-request log lines at info (they are counted here); at debug they do', async (t) => {
  t.equal(ingestLogLevel('info'), 'warn')
  t.equal(ingestLogLevel('debug'), 'debug')
  t.equal(ingestLogLevel('error'), 'error')
  for (const level of ['info', 'debug'] as const) {
    let log = ''
    const stream = new Writable({
      write(chunk, _enc, cb) {
        log += chunk.toString()
        cb()
      }
    })
    const config = loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), LLMSCOPE_API_KEYS: 'test-admin-key-0001' })
    const built = await buildApp(config, { logger: { ...(loggerOptions(level) as object), stream }, inlinePricing: true })
    await built.engine.recover()
    const headers = { 'x-api-key': 'test-admin-key-0001' }
    t.equal((await built.app.inject({ method: 'POST', url: '/events/ingest', headers, payload: event() })).statusCode, 202)
    t.equal((await built.app.inject({ method: 'POST', url: '/events/batch', headers, payload: [event()] })).statusCode, 202)
    t.equal((await built.app.inject({ method: 'POST', url: '/events/ingest', headers, payload: { model: '' } })).statusCode, 400)
    t.equal((await built.app.inject({ url: '/health' })).statusCode, 200)
    await built.app.close()
    const urls = log.split('\n').filter((l) => l.includes('"incoming request"')).map((l) => JSON.parse(l).req.url as string)
    if (level === 'info') t.same(urls, ['/health'], 'at info only the non-ingest request is logged')
    else t.same(urls, ['/events/ingest', '/events/batch', '/events/ingest', '/health'], 'at debug every request is logged')
  }
})

t.test('/metrics (unauthenticated) names no project, model or user: aggregators and rollups are summed per kind', async (t) => {
  const { app, engine } = await makeApp(t)
  t.equal((await app.inject({ method: 'POST', url: '/projects', headers: adminHeaders, payload: { id: 'secret-team' } })).statusCode, 201)
  const sent = await app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'x-llmscope-project': 'secret-team' }, payload: [{ model: 'private-model-x', user_id: 'alice@example.com', metadata: { customer: 'acme' }, tags: ['vip'] }] })
  t.equal(sent.statusCode, 202)
  // The aggregators exist once the event went through the pipeline.
  await engine.sync()
  const body = (await app.inject({ url: '/metrics' })).body
  for (const word of ['secret-team', 'private-model-x', 'alice@example.com', 'acme', 'vip']) t.notOk(body.includes(word), `no ${word}`)
  t.match(body, /llmscope_actor_processed_total\{actor="aggregators"\} [1-9]/)
  t.match(body, /llmscope_actor_processed_total\{actor="rollups"\} [1-9]/)
})

t.test('duplicates of an id are counted, not appended', async (t) => {
  const { app, engine } = await makeApp(t)
  const json = { ...ingestHeaders, 'content-type': 'application/json' }
  for (let i = 0; i < 3; i++) {
    t.equal((await app.inject({ method: 'POST', url: '/events/ingest', headers: json, payload: JSON.stringify({ ...event(), id: 'retry-1' }) })).statusCode, 202)
  }
  await engine.sync()
  const m = (await app.inject({ url: '/metrics' })).body
  t.equal(sample(m, 'llmscope_events_appended_total'), 1, 'stored once')
  t.equal(sample(m, 'llmscope_events_duplicates_total'), 2, 'two copies answered as duplicates')
})

/**
 * Bad input, as a battery: every case names its answer (status, code, and the field the
 * details point at), and after each one the server's state — log position, metrics, rules,
 * keys — is exactly what it was. One app for the whole table.
 */
import t from 'tap'
import { makeApp, adminHeaders, event } from '../helpers/app.js'

interface Case {
  name: string
  method?: 'GET' | 'POST' | 'PATCH' | 'DELETE' | 'PUT'
  url: string
  /** A string is sent as is (with `type`); anything else as JSON. */
  body?: unknown
  type?: string
  status: number
  code: string
  /** A `details[].path` the answer must name. */
  field?: string
  /** The message must match. */
  message?: RegExp
}

const JSON_TYPE = 'application/json'
const NDJSON = 'application/x-ndjson'
const nd = (...lines: unknown[]) => lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n'
const deep = (levels: number): Record<string, unknown> => {
  let v: Record<string, unknown> = { leaf: 1 }
  for (let i = 1; i < levels; i++) v = { n: v }
  return v
}
const manyKeys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]))
const ingest = (name: string, body: unknown, status: number, code: string, field?: string, extra: Partial<Case> = {}): Case => ({ name, method: 'POST', url: '/events/ingest', body, status, code, field, ...extra })
const rule = { name: 'r', condition: 'avg_latency', threshold: 100 }

const V = 'LLMS_ERR_VALIDATION'
const Q = 'LLMS_ERR_BAD_QUERY'

const cases: Case[] = [
  // ── every event field's type and range ──
  ingest('model missing', event({ model: undefined }), 400, V, 'model'),
  ingest('model empty', event({ model: '' }), 400, V, 'model'),
  ingest('model too long', event({ model: 'm'.repeat(257) }), 400, V, 'model'),
  ingest('model a number', event({ model: 4 }), 400, V, 'model'),
  ingest('model null', event({ model: null }), 400, V, 'model'),
  ingest('provider empty', event({ provider: '' }), 400, V, 'provider'),
  ingest('provider too long', event({ provider: 'p'.repeat(65) }), 400, V, 'provider'),
  ingest('provider an object', event({ provider: { name: 'openai' } }), 400, V, 'provider'),
  ingest('prompt_tokens negative', event({ prompt_tokens: -1 }), 400, V, 'prompt_tokens'),
  ingest('prompt_tokens fractional', event({ prompt_tokens: 1.5 }), 400, V, 'prompt_tokens'),
  ingest('prompt_tokens a string', event({ prompt_tokens: '3' }), 400, V, 'prompt_tokens'),
  ingest('prompt_tokens a boolean', event({ prompt_tokens: true }), 400, V, 'prompt_tokens'),
  ingest('prompt_tokens null', event({ prompt_tokens: null }), 400, V, 'prompt_tokens'),
  ingest('prompt_tokens above 1e12', event({ prompt_tokens: 1e12 + 1 }), 400, V, 'prompt_tokens'),
  ingest('prompt_tokens 2^53 + 2', event({ prompt_tokens: 2 ** 53 + 2 }), 400, V, 'prompt_tokens'),
  ingest('completion_tokens negative', event({ completion_tokens: -5 }), 400, V, 'completion_tokens'),
  ingest('total_tokens below the sum', event({ total_tokens: 10 }), 400, V, 'total_tokens'),
  ingest('total_tokens negative', event({ total_tokens: -1 }), 400, V, 'total_tokens'),
  ingest('cached_tokens negative', event({ cached_tokens: -1 }), 400, V, 'cached_tokens'),
  ingest('reasoning_tokens fractional', event({ reasoning_tokens: 0.5 }), 400, V, 'reasoning_tokens'),
  ingest('latency_ms negative', event({ latency_ms: -1 }), 400, V, 'latency_ms'),
  ingest('latency_ms a string', event({ latency_ms: '5' }), 400, V, 'latency_ms'),
  ingest('latency_ms over a week', event({ latency_ms: 7 * 86_400_000 + 1 }), 400, V, 'latency_ms'),
  ingest('latency_ms 1e400 (Infinity)', '{"model":"gpt-4","latency_ms":1e400}', 400, V, 'latency_ms', { type: JSON_TYPE }),
  ingest('prompt_tokens 1e400 (Infinity)', '{"model":"gpt-4","prompt_tokens":1e400}', 400, V, 'prompt_tokens', { type: JSON_TYPE }),
  ingest('latency_ms -1e400 (-Infinity)', '{"model":"gpt-4","latency_ms":-1e400}', 400, V, 'latency_ms', { type: JSON_TYPE }),
  ingest('NaN is not JSON', '{"model":"gpt-4","latency_ms":NaN}', 400, 'FST_ERR_CTP_INVALID_JSON_BODY', '(body)', { type: JSON_TYPE }),
  ingest('Infinity is not JSON', '{"model":"gpt-4","latency_ms":Infinity}', 400, 'FST_ERR_CTP_INVALID_JSON_BODY', '(body)', { type: JSON_TYPE }),
  ingest('ttft_ms negative', event({ ttft_ms: -1 }), 400, V, 'ttft_ms'),
  ingest('status unknown', event({ status: 'maybe' }), 400, V, 'status'),
  ingest('cost negative', event({ cost: -0.01 }), 400, V, 'cost'),
  ingest('cost above a million', event({ cost: 1e6 + 1 }), 400, V, 'cost'),
  ingest('cost a string', event({ cost: 'free' }), 400, V, 'cost'),
  ingest('unknown field (a typo)', event({ promt_tokens: 5 }), 400, V, '(body)'),
  // ── impossible dates ──
  ingest('timestamp 30 February', event({ timestamp: '2026-02-30T00:00:00Z' }), 400, V, 'timestamp'),
  ingest('timestamp month 13', event({ timestamp: '2026-13-01T00:00:00Z' }), 400, V, 'timestamp'),
  ingest('timestamp hour 25', event({ timestamp: '2026-01-01T25:00:00Z' }), 400, V, 'timestamp'),
  ingest('timestamp without a zone', event({ timestamp: '2026-01-01T00:00:00' }), 400, V, 'timestamp'),
  ingest('timestamp a word', event({ timestamp: 'yesterday' }), 400, V, 'timestamp'),
  ingest('timestamp a number', event({ timestamp: 1767225600000 }), 400, V, 'timestamp'),
  ingest('timestamp beyond year 9999', event({ timestamp: '+275761-01-01T00:00:00Z' }), 400, V, 'timestamp'),
  // ── metadata bounds ──
  ingest('metadata an array', event({ metadata: [1, 2] }), 400, V, 'metadata'),
  ingest('metadata a string', event({ metadata: 'x' }), 400, V, 'metadata'),
  ingest('metadata too deep', event({ metadata: deep(9) }), 400, V, 'metadata', { message: /deeper than 8/ }),
  ingest('metadata too many keys', event({ metadata: manyKeys(257) }), 400, V, 'metadata', { message: /more than 256 keys/ }),
  ingest('metadata too many nested keys', event({ metadata: { a: manyKeys(200), b: manyKeys(60) } }), 400, V, 'metadata', { message: /more than 256 keys/ }),
  ingest('metadata too large', event({ metadata: { big: 'x'.repeat(16_384) } }), 400, V, 'metadata', { message: /bytes, more than 16384/ }),
  ingest('metadata too large in UTF-8', event({ metadata: { big: 'é'.repeat(8_200) } }), 400, V, 'metadata', { message: /bytes, more than 16384/ }),
  ingest('metadata nested 5,000 levels', `{"model":"m","metadata":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}`, 400, V, 'metadata', { type: JSON_TYPE }),
  ingest('metadata arrays nested 5,000 levels', `{"model":"m","metadata":{"a":${'['.repeat(5000)}${']'.repeat(5000)}}}`, 400, V, 'metadata', { type: JSON_TYPE }),
  // ── prototype keys: refused, never merged ──
  ingest('__proto__ in metadata', '{"model":"m","metadata":{"__proto__":{"polluted":true}}}', 400, 'FST_ERR_CTP_INVALID_JSON_BODY', '(body)', { type: JSON_TYPE }),
  ingest('__proto__ at the top', '{"model":"m","__proto__":{"admin":true}}', 400, 'FST_ERR_CTP_INVALID_JSON_BODY', '(body)', { type: JSON_TYPE }),
  ingest('constructor.prototype in metadata', '{"model":"m","metadata":{"constructor":{"prototype":{"polluted":true}}}}', 400, 'FST_ERR_CTP_INVALID_JSON_BODY', '(body)', { type: JSON_TYPE }),
  // ── body shape, JSON, content type ──
  ingest('malformed JSON', '{"model": ', 400, 'FST_ERR_CTP_INVALID_JSON_BODY', '(body)', { type: JSON_TYPE }),
  ingest('trailing garbage', '{"model":"m"} x', 400, 'FST_ERR_CTP_INVALID_JSON_BODY', '(body)', { type: JSON_TYPE }),
  ingest('empty body', '', 400, 'FST_ERR_CTP_EMPTY_JSON_BODY', '(body)', { type: JSON_TYPE }),
  ingest('an array', [event()], 400, V, '(body)', { message: /batch/ }),
  ingest('a JSON string', '"gpt-4"', 400, V, '(body)', { type: JSON_TYPE }),
  ingest('a JSON number', '42', 400, V, '(body)', { type: JSON_TYPE }),
  ingest('JSON null', 'null', 400, V, '(body)', { type: JSON_TYPE }),
  ingest('text/plain', 'model=gpt-4', 415, 'FST_ERR_CTP_INVALID_MEDIA_TYPE', '(content-type)', { type: 'text/plain' }),
  ingest('application/xml', '<event/>', 415, 'FST_ERR_CTP_INVALID_MEDIA_TYPE', '(content-type)', { type: 'application/xml' }),
  ingest('form-encoded', 'model=gpt-4', 415, 'FST_ERR_CTP_INVALID_MEDIA_TYPE', '(content-type)', { type: 'application/x-www-form-urlencoded' }),
  ingest('protobuf outside /v1/traces', 'xx', 415, 'FST_ERR_CTP_INVALID_MEDIA_TYPE', '(content-type)', { type: 'application/x-protobuf' }),
  ingest('oversize body', event({ metadata: { pad: 'x'.repeat(70_000) } }), 413, 'FST_ERR_CTP_BODY_TOO_LARGE', '(body)'),
  // ── batches ──
  { name: 'batch too large', method: 'POST', url: '/events/batch', body: Array.from({ length: 6 }, () => event()), status: 413, code: 'LLMS_ERR_BATCH_TOO_LARGE', field: '(body)' },
  { name: 'batch empty', method: 'POST', url: '/events/batch', body: [], status: 400, code: V, field: '(body)' },
  { name: 'batch an object', method: 'POST', url: '/events/batch', body: event(), status: 400, code: V, field: '(body)' },
  { name: 'batch with a bad event at index 2', method: 'POST', url: '/events/batch', body: [event(), event(), event({ prompt_tokens: -1 })], status: 400, code: V, field: '[2].prompt_tokens', message: /index 2/ },
  { name: 'batch with a non-object item', method: 'POST', url: '/events/batch', body: [event(), 7], status: 400, code: V, field: '[1]' },
  { name: 'batch of nulls', method: 'POST', url: '/events/batch', body: [null], status: 400, code: V, field: '[0]' },
  { name: 'NDJSON with a bad line', method: 'POST', url: '/events/batch', type: NDJSON, body: nd(event(), '', '{oops', event()), status: 400, code: 'LLMS_ERR_BAD_JSON', field: '[1]', message: /line 3/ },
  { name: 'NDJSON with an invalid event', method: 'POST', url: '/events/batch', type: NDJSON, body: nd(event(), event({ latency_ms: -1 })), status: 400, code: V, field: '[1].latency_ms' },
  { name: 'NDJSON too many lines', method: 'POST', url: '/events/batch', type: NDJSON, body: nd(...Array.from({ length: 6 }, () => event())), status: 413, code: 'LLMS_ERR_BATCH_TOO_LARGE', field: 'line 6' },
  { name: 'NDJSON empty', method: 'POST', url: '/events/batch', type: NDJSON, body: '\n\n', status: 400, code: V, field: '(body)' },
  { name: 'NDJSON with __proto__', method: 'POST', url: '/events/batch', type: NDJSON, body: nd(event(), '{"model":"m","metadata":{"__proto__":{"polluted":true}}}'), status: 400, code: 'LLMS_ERR_BAD_JSON', field: '[1]', message: /line 2/ },
  { name: 'NDJSON with an escaped __proto__', method: 'POST', url: '/events/batch', type: NDJSON, body: nd('{"model":"m","metadata":{"\\u005f_proto__":{"polluted":true}}}'), status: 400, code: 'LLMS_ERR_BAD_JSON', field: '[0]' },
  { name: 'NDJSON with constructor.prototype', method: 'POST', url: '/events/batch', type: NDJSON, body: nd('{"model":"m","metadata":{"constructor":{"prototype":{"x":1}}}}'), status: 400, code: 'LLMS_ERR_BAD_JSON', field: '[0]' },
  { name: 'NDJSON oversize', method: 'POST', url: '/events/batch', type: NDJSON, body: nd(event({ metadata: { pad: 'x'.repeat(70_000) } })), status: 413, code: 'FST_ERR_CTP_BODY_TOO_LARGE', field: '(body)' },
  { name: 'NDJSON nested 30,000 levels', method: 'POST', url: '/events/batch', type: NDJSON, body: `{"model":"m","metadata":{"a":${'['.repeat(30_000)}"\\u0041"${']'.repeat(30_000)}}}\n`, status: 400, code: V, field: '[0].metadata' },
  // ── query parameters ──
  { name: 'start_time a word', url: '/analytics/metrics?start_time=yesterday', status: 400, code: Q, field: '(query) start_time' },
  { name: 'start_time 30 February', url: '/analytics/metrics?start_time=2026-02-30T00:00:00Z', status: 400, code: Q, field: '(query) start_time' },
  { name: 'start_time 1e400', url: '/analytics/metrics?start_time=1e400', status: 400, code: Q, field: '(query) start_time' },
  { name: 'start_time past year 275760', url: '/analytics/metrics?start_time=9999999999999999', status: 400, code: Q, field: '(query) start_time' },
  { name: 'end_time before start_time', url: '/analytics/metrics?start_time=2026-01-02T00:00:00Z&end_time=2026-01-01T00:00:00Z', status: 400, code: Q, field: '(query) end_time' },
  { name: 'end before start on costs', url: '/analytics/costs?start_time=2000&end_time=1000', status: 400, code: Q, field: '(query) end_time' },
  { name: 'end before start on timeseries', url: '/analytics/timeseries?start_time=2000&end_time=1000', status: 400, code: Q, field: '(query) end_time' },
  { name: 'unknown query parameter', url: '/analytics/metrics?modle=gpt-4', status: 400, code: Q, field: '(query) modle' },
  { name: 'repeated parameter', url: '/analytics/metrics?start_time=1&start_time=2', status: 400, code: Q, field: '(query) start_time' },
  { name: 'empty model list', url: '/analytics/costs?model=,,', status: 400, code: Q, field: '(query) model' },
  { name: 'bad interval', url: '/analytics/timeseries?interval=2m', status: 400, code: Q, field: '(query) interval' },
  { name: 'too many buckets', url: '/analytics/timeseries?interval=1m&start_time=0&end_time=2026-01-01T00:00:00Z', status: 400, code: Q, field: '(query) interval' },
  { name: 'alert events limit 0', url: '/alerts/events?limit=0', status: 400, code: Q, field: '(query) limit' },
  { name: 'alert events limit a word', url: '/alerts/events?limit=ten', status: 400, code: Q, field: '(query) limit' },
  { name: 'alert events limit too large', url: '/alerts/events?limit=1001', status: 400, code: Q, field: '(query) limit' },
  { name: 'alert events since a word', url: '/alerts/events?since=later', status: 400, code: Q, field: '(query) since' },
  // ── alert rules ──
  { name: 'rule without a name', method: 'POST', url: '/alerts/rules', body: { ...rule, name: undefined }, status: 400, code: V, field: 'name' },
  { name: 'rule with a blank name', method: 'POST', url: '/alerts/rules', body: { ...rule, name: '   ' }, status: 400, code: V, field: 'name' },
  { name: 'rule with an unknown condition', method: 'POST', url: '/alerts/rules', body: { ...rule, condition: 'vibes' }, status: 400, code: V, field: 'condition' },
  { name: 'rule threshold a string', method: 'POST', url: '/alerts/rules', body: { ...rule, threshold: '5' }, status: 400, code: V, field: 'threshold' },
  { name: 'rule threshold 1e400', method: 'POST', url: '/alerts/rules', type: JSON_TYPE, body: '{"name":"r","condition":"avg_latency","threshold":1e400}', status: 400, code: V, field: 'threshold' },
  { name: 'rule window too short', method: 'POST', url: '/alerts/rules', body: { ...rule, window_seconds: 5 }, status: 400, code: V, field: 'window_seconds' },
  { name: 'rule comparator unknown', method: 'POST', url: '/alerts/rules', body: { ...rule, comparator: 'eq' }, status: 400, code: V, field: 'comparator' },
  { name: 'rule webhook not http', method: 'POST', url: '/alerts/rules', body: { ...rule, webhook_url: 'file:///etc/passwd' }, status: 400, code: V, field: 'webhook_url' },
  { name: 'rule enabled a string', method: 'POST', url: '/alerts/rules', body: { ...rule, enabled: 'yes' }, status: 400, code: V, field: 'enabled' },
  { name: 'rule with an unknown field', method: 'POST', url: '/alerts/rules', body: { ...rule, severity: 'high' }, status: 400, code: V, field: '(body)' },
  { name: 'rule an array', method: 'POST', url: '/alerts/rules', body: [rule], status: 400, code: V, field: '(body)' },
  { name: 'rule with __proto__', method: 'POST', url: '/alerts/rules', type: JSON_TYPE, body: '{"name":"r","condition":"avg_latency","threshold":1,"__proto__":{"enabled":false}}', status: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY', field: '(body)' },
  { name: 'PATCH an absent rule', method: 'PATCH', url: '/alerts/rules/rule_nope', body: { threshold: 1 }, status: 404, code: 'LLMS_ERR_NOT_FOUND', field: '(params) id' },
  { name: 'DELETE an absent rule', method: 'DELETE', url: '/alerts/rules/rule_nope', status: 404, code: 'LLMS_ERR_NOT_FOUND', field: '(params) id' },
  { name: 'GET an absent rule', url: '/alerts/rules/rule_nope', status: 404, code: 'LLMS_ERR_NOT_FOUND', field: '(params) id' },
  // ── keys ──
  { name: 'key without a scope', method: 'POST', url: '/keys', body: { name: 'k' }, status: 400, code: V, field: 'scope' },
  { name: 'key with its own secret', method: 'POST', url: '/keys', body: { name: 'k', scope: 'read', key: 'chosen-by-me-123' }, status: 400, code: V, field: '(body)' },
  { name: 'revoke an absent key', method: 'DELETE', url: '/keys/key_nope', status: 404, code: 'LLMS_ERR_NOT_FOUND', field: '(params) id' },
  // ── events and routes that do not exist ──
  { name: 'an unknown event id', url: '/events/evt_zz_AAAAAAAAAAAA', status: 404, code: 'LLMS_ERR_NOT_FOUND', field: '(params) id' },
  { name: 'an event id that is not one', url: '/events/..%2F..%2Fetc%2Fpasswd', status: 404, code: 'LLMS_ERR_NOT_FOUND', field: '(params) id' },
  { name: 'an unknown route', url: '/nope', status: 404, code: 'LLMS_ERR_NOT_FOUND', message: /route GET \/nope not found/ },
  { name: 'an unknown method', method: 'PUT', url: '/events/ingest', body: event(), status: 404, code: 'LLMS_ERR_NOT_FOUND', message: /route PUT/ },
  { name: 'a path traversal', url: '/../../etc/passwd', status: 404, code: 'LLMS_ERR_NOT_FOUND' }
]

t.test('bad input battery: each case answers its status, code and field, and changes nothing', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_MAX_BATCH: '5', LLMSCOPE_BODY_LIMIT_BYTES: '65536' } })
  // A rule exists, so PATCH cases on it are checked too (below).
  const created = await a.app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: rule })
  t.equal(created.statusCode, 201)
  const ruleId: string = created.json().id
  cases.push(
    { name: 'PATCH with nothing to change', method: 'PATCH', url: `/alerts/rules/${ruleId}`, body: {}, status: 400, code: V, field: '(body)' },
    { name: 'PATCH threshold null', method: 'PATCH', url: `/alerts/rules/${ruleId}`, body: { threshold: null }, status: 400, code: V, field: 'threshold' },
    { name: 'PATCH an unknown field', method: 'PATCH', url: `/alerts/rules/${ruleId}`, body: { id: 'rule_mine' }, status: 400, code: V, field: '(body)' },
    { name: 'PATCH name too long', method: 'PATCH', url: `/alerts/rules/${ruleId}`, body: { name: 'n'.repeat(201) }, status: 400, code: V, field: 'name' },
    { name: 'PATCH with __proto__', method: 'PATCH', url: `/alerts/rules/${ruleId}`, type: JSON_TYPE, body: '{"__proto__":{"threshold":0}}', status: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY', field: '(body)' }
  )

  const state = async () => ({
    seq: a.engine.stats().log.nextSeq,
    metrics: (await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json(),
    rules: (await a.app.inject({ url: '/alerts/rules', headers: adminHeaders })).json(),
    keys: (await a.app.inject({ url: '/keys', headers: adminHeaders })).json()
  })
  const before = await state()
  t.equal(before.seq, 0)

  for (const c of cases) {
    const headers: Record<string, string> = { ...adminHeaders }
    let payload: string | undefined
    if (c.body !== undefined) {
      payload = typeof c.body === 'string' ? c.body : JSON.stringify(c.body)
      headers['content-type'] = c.type ?? JSON_TYPE
    }
    const res = await a.app.inject({ method: c.method ?? 'GET', url: c.url, headers, payload })
    t.equal(res.statusCode, c.status, `${c.name}: ${c.status} (got ${res.body.slice(0, 300)})`)
    t.match(res.headers['content-type'], /^application\/json/, `${c.name}: JSON`)
    const body = res.json()
    t.equal(body.statusCode, c.status, `${c.name}: statusCode in the body`)
    t.equal(body.code, c.code, `${c.name}: code`)
    t.type(body.message, 'string')
    t.ok(Array.isArray(body.details), `${c.name}: details`)
    if (c.field !== undefined) t.ok(body.details.some((d: { path: string }) => d.path === c.field), `${c.name}: names ${c.field} in ${JSON.stringify(body.details).slice(0, 300)}`)
    if (c.message !== undefined) t.match(body.message, c.message, `${c.name}: message`)
    t.notMatch(res.body, /"stack"|\bat .+:\d+:\d+|node_modules|\/work\//, `${c.name}: no stack or path`)
    t.equal(a.engine.stats().log.nextSeq, before.seq, `${c.name}: nothing appended`)
  }

  t.same(await state(), before, 'log, metrics, rules and keys are unchanged')
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched')
  t.equal(({} as Record<string, unknown>).admin, undefined)

  // The same server still takes good input afterwards.
  const ok = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: event({ metadata: { constructor: 'x', toString: 'y', hasOwnProperty: 1, prototype: 2 } }) })
  t.equal(ok.statusCode, 202, 'keys merely named constructor/toString/prototype are plain data')
  const got = (await a.app.inject({ url: `/events/${ok.json().event_id}`, headers: adminHeaders })).json()
  t.same(got.metadata, { constructor: 'x', toString: 'y', hasOwnProperty: 1, prototype: 2 })
})

t.test('edge values that are valid are accepted and stored exactly', async (t) => {
  const a = await makeApp(t, { inlinePricing: true })
  const edge = [
    event({ prompt_tokens: 0, completion_tokens: 0, latency_ms: 0 }),
    event({ prompt_tokens: 1e12, completion_tokens: 0, total_tokens: 1e12, latency_ms: 7 * 86_400_000 }),
    event({ model: 'm'.repeat(256), provider: 'p'.repeat(64), cost: 1e6 }),
    event({ timestamp: '1970-01-01T00:00:00Z' }),
    event({ timestamp: '2026-01-01T00:00:00.123456+05:30' }),
    event({ metadata: deep(8) }),
    event({ metadata: manyKeys(256) }),
    event({ model: '🦙 llama', metadata: { 'ключ': 'значение', '': null } })
  ]
  const res = await a.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: edge })
  t.equal(res.statusCode, 202, res.body.slice(0, 300))
  const ids: string[] = res.json().event_ids
  const third = (await a.app.inject({ url: `/events/${ids[2]}`, headers: adminHeaders })).json()
  t.equal(third.model, 'm'.repeat(256))
  t.equal(third.cost, 1e6)
  t.equal((await a.app.inject({ url: `/events/${ids[4]}`, headers: adminHeaders })).json().timestamp, '2025-12-31T18:30:00.123Z')
  t.same((await a.app.inject({ url: `/events/${ids[7]}`, headers: adminHeaders })).json().metadata, { 'ключ': 'значение', '': null })
  const m = (await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json()
  t.equal(m.total_requests, edge.length)
})

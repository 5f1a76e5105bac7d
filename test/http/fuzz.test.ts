/**
 * Property tests: arbitrary JSON, raw garbage and mutated valid inputs thrown at every route
 * that takes input. For each request: never a 5xx; a 2xx exactly when the input is valid (the
 * zod schema, applied to what the server received, is the oracle); every refusal in the usual
 * error shape. After each property: the log, the metrics, the rules and the keys hold exactly
 * what the accepted requests put there.
 */
import t, { type Test } from 'tap'
import fc from 'fast-check'
import { makeApp, adminHeaders, event } from '../helpers/app.js'
import { eventSchema } from '../../src/events.js'
import { ruleCreateSchema, rulePatchSchema } from '../../src/store/rules.js'
import { keyCreateSchema } from '../../src/store/api-keys.js'

const RUNS = Number(process.env.LLMSCOPE_FUZZ_RUNS ?? 200)
const MAX_BATCH = 5

/** What the server sees: JSON drops undefined, turns -0 into 0 and Infinity into null. */
const wire = (v: unknown): unknown => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)))

/** fastify (and our NDJSON parser) refuse `__proto__` keys and `constructor.prototype`. */
function poisoned(v: unknown): boolean {
  if (v === null || typeof v !== 'object') return false
  if (Array.isArray(v)) return v.some(poisoned)
  for (const k of Object.keys(v)) {
    const child = (v as Record<string, unknown>)[k]
    if (k === '__proto__') return true
    if (k === 'constructor' && child !== null && typeof child === 'object' && Object.prototype.hasOwnProperty.call(child, 'prototype')) return true
    if (poisoned(child)) return true
  }
  return false
}

/** Sets `key` as an own property, even `__proto__`. */
function withField(obj: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const out = { ...obj }
  Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true })
  return out
}

const boundary = fc.constantFrom<unknown>(-1, 0, -0, 1, 1.5, 1e6 + 1, 1e12, 1e12 + 1, 2 ** 53, Number.MAX_VALUE, '', ' ', 'x'.repeat(257), '3', null, true, false, [], {}, [1], { a: 1 },
  '2026-02-30T00:00:00Z', '2026-01-01T00:00:00', '2026-01-01T00:00:00Z', 'success', 'error', 'gt', 'avg_latency', 'read', 'admin', 7 * 86_400_000 + 1, 'https://hooks.example.com/x', 'file:///etc/passwd')
const anyValue = fc.oneof(fc.jsonValue({ maxDepth: 3 }), boundary)

type Mutation = { kind: 'delete'; field: string } | { kind: 'set'; field: string; value: unknown }
function mutations(fields: readonly string[]): fc.Arbitrary<Mutation[]> {
  const names = fc.constantFrom(...fields, 'unknown_field', '__proto__', 'constructor', 'id')
  return fc.array(
    fc.oneof(
      fc.record({ kind: fc.constant('delete' as const), field: fc.constantFrom(...fields) }),
      fc.record({ kind: fc.constant('set' as const), field: names, value: anyValue })
    ),
    { minLength: 1, maxLength: 3 }
  )
}
function mutate(base: Record<string, unknown>, ms: Mutation[]): Record<string, unknown> {
  let out = { ...base }
  for (const m of ms) {
    if (m.kind === 'delete') delete out[m.field]
    else out = withField(out, m.field, m.value)
  }
  return out
}

const EVENT_FIELDS = ['timestamp', 'model', 'provider', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cached_tokens', 'reasoning_tokens', 'latency_ms', 'ttft_ms', 'status', 'cost', 'metadata'] as const
const validEvent = fc.record(
  {
    timestamp: fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString()),
    model: fc.string({ minLength: 1, maxLength: 40 }),
    provider: fc.string({ minLength: 1, maxLength: 20 }),
    prompt_tokens: fc.nat({ max: 1_000_000 }),
    completion_tokens: fc.nat({ max: 1_000_000 }),
    cached_tokens: fc.nat({ max: 1000 }),
    reasoning_tokens: fc.nat({ max: 1000 }),
    latency_ms: fc.double({ min: 0, max: 1e6, noNaN: true }),
    ttft_ms: fc.double({ min: 0, max: 1e5, noNaN: true }),
    status: fc.constantFrom('success', 'error'),
    cost: fc.double({ min: 0, max: 100, noNaN: true }),
    metadata: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5, noNullPrototype: true })
  },
  { requiredKeys: ['model'] }
)
const mutatedEvent = fc.tuple(validEvent, mutations(EVENT_FIELDS)).map(([e, ms]) => mutate(e, ms))
/** One item of a body: mostly events, valid or slightly wrong, sometimes anything at all. */
const eventLike = fc.oneof({ weight: 3, arbitrary: validEvent as fc.Arbitrary<unknown> }, { weight: 4, arbitrary: mutatedEvent }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) })

type App = Awaited<ReturnType<typeof makeApp>>
interface Answer {
  statusCode: number
  body: string
  json(): any
}

function checkAnswer(t: Test, res: Answer, what: string): boolean {
  if (res.statusCode >= 500) {
    t.fail(`${what}: ${res.statusCode} ${res.body.slice(0, 300)}`)
    return false
  }
  if (res.statusCode >= 400) {
    const b = res.json()
    const ok = b.statusCode === res.statusCode && typeof b.code === 'string' && typeof b.message === 'string' && Array.isArray(b.details) && !/"stack"|node_modules/.test(res.body)
    if (!ok) t.fail(`${what}: bad error shape ${res.body.slice(0, 300)}`)
    return ok
  }
  return true
}

async function metrics(a: App): Promise<{ total_requests: number }> {
  return (await a.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json()
}

t.test('fuzz', async (t) => {
  const a = await makeApp(t, { inlinePricing: true, env: { LLMSCOPE_MAX_BATCH: String(MAX_BATCH) } })
  const schema = eventSchema(a.engine.config.metadata)
  const validEv = (v: unknown) => !poisoned(v) && schema.safeParse(v).success
  let accepted = 0
  /** Outcomes per property: each must see both kinds, or it tests little. */
  const seen = new Map<string, { ok: number; refused: number }>()
  const tally = (name: string, ok: boolean) => {
    const s = seen.get(name) ?? { ok: 0, refused: 0 }
    if (ok) s.ok++
    else s.refused++
    seen.set(name, s)
  }
  const bothSeen = (t: Test, name: string) => {
    const s = seen.get(name) ?? { ok: 0, refused: 0 }
    t.ok(s.ok > 0 && s.refused > 0, `${name}: ${s.ok} accepted, ${s.refused} refused`)
  }

  const post = (url: string, payload: string, type = 'application/json', method: 'POST' | 'PATCH' = 'POST') =>
    a.app.inject({ method, url, headers: { ...adminHeaders, 'content-type': type }, payload })

  await t.test('POST /events/ingest: 202 exactly for valid events', async (t) => {
    await fc.assert(
      fc.asyncProperty(eventLike, async (body) => {
        const text = JSON.stringify(body) ?? 'null'
        const res = await post('/events/ingest', text)
        if (!checkAnswer(t, res, `ingest ${text.slice(0, 200)}`)) return false
        const valid = body !== null && typeof body === 'object' && !Array.isArray(body) && validEv(wire(body))
        if (valid !== (res.statusCode === 202)) {
          t.fail(`ingest: valid=${valid} but ${res.statusCode} for ${text.slice(0, 300)}: ${res.body.slice(0, 300)}`)
          return false
        }
        tally('ingest', res.statusCode === 202)
        if (res.statusCode === 202) accepted++
        else if (res.statusCode !== 400) return false
        return true
      }),
      { numRuns: RUNS }
    )
    bothSeen(t, 'ingest')
    t.equal(a.engine.stats().log.nextSeq, accepted, 'the log holds exactly the accepted events')
    t.equal((await metrics(a)).total_requests, accepted, 'so do the metrics')
  })

  await t.test('POST /events/ingest: raw garbage never gets past 4xx', async (t) => {
    const before = a.engine.stats().log.nextSeq
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), fc.constantFrom('application/json', 'application/x-ndjson', 'text/plain', 'application/octet-stream', 'application/json; charset=latin1'), async (raw, type) => {
        const res = await post(/ndjson/.test(type) ? '/events/batch' : '/events/ingest', raw, type)
        if (!checkAnswer(t, res, `raw ${type} ${JSON.stringify(raw)}`)) return false
        if (res.statusCode === 202) {
          // Only a raw string that happens to be a valid event (or NDJSON batch) may pass.
          accepted += res.json().accepted ?? 1
        }
        return res.statusCode === 202 || (res.statusCode >= 400 && res.statusCode < 500)
      }),
      { numRuns: RUNS }
    )
    t.equal(a.engine.stats().log.nextSeq - before, accepted - before)
  })

  await t.test('POST /events/batch (JSON and NDJSON): all or nothing', async (t) => {
    await fc.assert(
      fc.asyncProperty(fc.array(eventLike, { maxLength: MAX_BATCH + 2 }), fc.boolean(), async (items, asNdjson) => {
        const text = asNdjson ? items.map((i) => JSON.stringify(i)).join('\n') : JSON.stringify(items)
        const res = await post('/events/batch', text, asNdjson ? 'application/x-ndjson' : 'application/json')
        if (!checkAnswer(t, res, `batch ${text.slice(0, 200)}`)) return false
        const received = items.map(wire)
        const valid = received.length >= 1 && received.length <= MAX_BATCH && received.every((i) => i !== null && typeof i === 'object' && !Array.isArray(i) && validEv(i))
        if (valid !== (res.statusCode === 202)) {
          t.fail(`batch: valid=${valid} but ${res.statusCode} for ${text.slice(0, 300)}: ${res.body.slice(0, 300)}`)
          return false
        }
        tally('batch', res.statusCode === 202)
        if (res.statusCode === 202) {
          if (res.json().accepted !== items.length) return false
          accepted += items.length
        } else if (res.statusCode !== 400 && res.statusCode !== 413) return false
        if (res.statusCode === 413 && received.length <= MAX_BATCH) return false
        return true
      }),
      { numRuns: RUNS }
    )
    bothSeen(t, 'batch')
    t.equal(a.engine.stats().log.nextSeq, accepted, 'the log holds exactly the accepted events')
    t.equal((await metrics(a)).total_requests, accepted, 'so do the metrics')
  })

  const RULE_FIELDS = ['name', 'condition', 'threshold', 'enabled', 'model', 'window_seconds', 'comparator', 'cooldown_seconds', 'min_samples', 'webhook_url'] as const
  const validRule = fc.record(
    {
      name: fc.string({ minLength: 1, maxLength: 50 }),
      condition: fc.constantFrom('cost_per_hour', 'avg_latency', 'p95_latency', 'error_rate', 'requests_per_minute', 'tokens_per_minute'),
      threshold: fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e9, max: 1e9 }),
      enabled: fc.boolean(),
      model: fc.option(fc.string({ minLength: 1, maxLength: 30 })),
      window_seconds: fc.integer({ min: 10, max: 86_400 }),
      comparator: fc.constantFrom('gt', 'gte', 'lt', 'lte'),
      cooldown_seconds: fc.integer({ min: 0, max: 86_400 }),
      min_samples: fc.integer({ min: 1, max: 1000 }),
      webhook_url: fc.option(fc.webUrl())
    },
    { requiredKeys: ['name', 'condition', 'threshold'] }
  )
  const ruleLike = fc.oneof(validRule as fc.Arbitrary<unknown>, fc.tuple(validRule, mutations(RULE_FIELDS)).map(([r, ms]) => mutate(r, ms)), fc.jsonValue({ maxDepth: 2 }))

  await t.test('POST /alerts/rules: 201 exactly for valid rules', async (t) => {
    let created = (await a.app.inject({ url: '/alerts/rules', headers: adminHeaders })).json().rules.length
    await fc.assert(
      fc.asyncProperty(ruleLike, async (body) => {
        const text = JSON.stringify(body) ?? 'null'
        const res = await post('/alerts/rules', text)
        if (!checkAnswer(t, res, `rule ${text.slice(0, 200)}`)) return false
        const v = wire(body)
        const valid = !poisoned(v) && ruleCreateSchema.safeParse(v).success
        if (valid !== (res.statusCode === 201)) {
          t.fail(`rule: valid=${valid} but ${res.statusCode} for ${text.slice(0, 300)}: ${res.body.slice(0, 300)}`)
          return false
        }
        tally('rules', res.statusCode === 201)
        if (res.statusCode === 201) created++
        return res.statusCode === 201 || res.statusCode === 400
      }),
      { numRuns: RUNS }
    )
    bothSeen(t, 'rules')
    t.equal((await a.app.inject({ url: '/alerts/rules', headers: adminHeaders })).json().rules.length, created, 'exactly the accepted rules exist')
  })

  await t.test('PATCH /alerts/rules/:id: a refused patch leaves the rule as it was', async (t) => {
    const made = await post('/alerts/rules', JSON.stringify({ name: 'target', condition: 'avg_latency', threshold: 1 }))
    t.equal(made.statusCode, 201)
    let current = made.json()
    const patchLike = fc.oneof(
      fc.record({ name: fc.string({ maxLength: 210 }), threshold: anyValue, enabled: anyValue, window_seconds: anyValue, comparator: anyValue, webhook_url: anyValue, model: anyValue }, { requiredKeys: [] }),
      fc.tuple(validRule, mutations(RULE_FIELDS)).map(([r, ms]) => mutate(r, ms)),
      fc.jsonValue({ maxDepth: 2 })
    )
    await fc.assert(
      fc.asyncProperty(patchLike, async (body) => {
        const text = JSON.stringify(body) ?? 'null'
        const res = await post(`/alerts/rules/${current.id}`, text, 'application/json', 'PATCH')
        if (!checkAnswer(t, res, `patch ${text.slice(0, 200)}`)) return false
        const v = wire(body)
        const valid = !poisoned(v) && rulePatchSchema.safeParse(v).success
        if (valid !== (res.statusCode === 200)) {
          t.fail(`patch: valid=${valid} but ${res.statusCode} for ${text.slice(0, 300)}: ${res.body.slice(0, 300)}`)
          return false
        }
        tally('patch', res.statusCode === 200)
        const now = (await a.app.inject({ url: `/alerts/rules/${current.id}`, headers: adminHeaders })).json()
        if (res.statusCode === 200) {
          current = now
          return JSON.stringify(res.json()) === JSON.stringify(now)
        }
        return res.statusCode === 400 && JSON.stringify(now) === JSON.stringify(current)
      }),
      { numRuns: RUNS }
    )
    bothSeen(t, 'patch')
  })

  await t.test('analytics and alert-event query strings: 200 or a 400 naming the query', async (t) => {
    const names = fc.constantFrom('start_time', 'end_time', 'model', 'provider', 'interval', 'api_key', 'limit', 'since', 'rule_id', 'since_seq', 'x')
    const values = fc.oneof(
      fc.string({ maxLength: 30 }),
      fc.integer({ min: -1e15, max: 1e16 }).map(String),
      fc.date({ min: new Date('1900-01-01T00:00:00Z'), max: new Date('2200-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString()),
      fc.constantFrom('1m', '5m', '1h', '', 'NaN', '1e400', '-1', '0', 'gpt-4,gpt-4o', ',', '2026-02-30T00:00:00Z', '2026-01-01T00:00:00+14:00')
    )
    const routes = fc.constantFrom('/analytics/metrics', '/analytics/costs', '/analytics/timeseries', '/alerts/events', '/alerts/rules', '/keys')
    const before = await metrics(a)
    await fc.assert(
      fc.asyncProperty(routes, fc.array(fc.tuple(names, values), { maxLength: 4 }), async (route, pairs) => {
        const qs = new URLSearchParams(pairs).toString()
        const res = await a.app.inject({ url: `${route}?${qs}`, headers: adminHeaders })
        if (!checkAnswer(t, res, `${route}?${qs}`)) return false
        tally('query', res.statusCode === 200)
        if (res.statusCode === 400) return res.json().code === 'LLMS_ERR_BAD_QUERY' && res.json().details.every((d: { path: string }) => d.path.startsWith('(query)'))
        return res.statusCode === 200
      }),
      { numRuns: RUNS }
    )
    bothSeen(t, 'query')
    t.same(await metrics(a), before, 'queries change nothing')
  })

  await t.test('POST /keys: 201 exactly for a valid name and scope', async (t) => {
    const listApi = async () => (await a.app.inject({ url: '/keys', headers: adminHeaders })).json().keys.filter((k: { source: string }) => k.source === 'api')
    let made = (await listApi()).length
    const keyLike = fc.oneof(
      fc.record({ name: fc.string({ maxLength: 110 }), scope: fc.constantFrom('ingest', 'read', 'admin') }),
      fc.tuple(fc.record({ name: fc.string({ minLength: 1, maxLength: 20 }), scope: fc.constantFrom('ingest', 'read', 'admin') }), mutations(['name', 'scope'])).map(([k, ms]) => mutate(k, ms)),
      fc.jsonValue({ maxDepth: 2 })
    )
    await fc.assert(
      fc.asyncProperty(keyLike, async (body) => {
        const text = JSON.stringify(body) ?? 'null'
        const res = await post('/keys', text)
        if (!checkAnswer(t, res, `key ${text.slice(0, 200)}`)) return false
        const v = wire(body)
        const valid = !poisoned(v) && keyCreateSchema.safeParse(v).success
        if (valid !== (res.statusCode === 201)) {
          t.fail(`key: valid=${valid} but ${res.statusCode} for ${text.slice(0, 300)}: ${res.body.slice(0, 300)}`)
          return false
        }
        tally('keys', res.statusCode === 201)
        if (res.statusCode === 201) made++
        return res.statusCode === 201 || res.statusCode === 400
      }),
      { numRuns: Math.min(RUNS, 150) }
    )
    bothSeen(t, 'keys')
    t.equal((await listApi()).length, made, 'exactly the accepted keys exist')
  })

  await t.test('POST /v1/traces: arbitrary JSON and mutated spans never get a 5xx', async (t) => {
    const attr = fc.record({ key: fc.constantFrom('gen_ai.request.model', 'gen_ai.response.model', 'gen_ai.usage.input_tokens', 'gen_ai.usage.output_tokens', 'gen_ai.system', 'gen_ai.operation.name', 'x'), value: fc.oneof(fc.record({ stringValue: anyValue }), fc.record({ intValue: anyValue }), fc.record({ doubleValue: anyValue }), anyValue) })
    const span = fc.record(
      { traceId: fc.oneof(fc.constant('5b8efff798038103d269b633813fc60c'), anyValue), spanId: fc.oneof(fc.constant('eee19b7ec3c1b174'), anyValue), name: anyValue, startTimeUnixNano: fc.oneof(fc.constant('1767225600000000000'), anyValue), endTimeUnixNano: fc.oneof(fc.constant('1767225601000000000'), anyValue), attributes: fc.array(attr, { maxLength: 5 }), status: anyValue },
      { requiredKeys: [] }
    )
    const request = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.array(span, { maxLength: 4 }).map((spans) => ({ resourceSpans: [{ resource: { attributes: [] }, scopeSpans: [{ scope: { name: 'fuzz' }, spans }] }] })))
    await fc.assert(
      fc.asyncProperty(request, async (body) => {
        const res = await post('/v1/traces', JSON.stringify(body) ?? 'null')
        if (!checkAnswer(t, res, `traces ${JSON.stringify(body).slice(0, 200)}`)) return false
        tally('traces', res.statusCode === 200)
        if (res.statusCode === 200) return true
        return res.statusCode === 400 || res.statusCode === 413
      }),
      { numRuns: RUNS }
    )
    bothSeen(t, 'traces')
    accepted = a.engine.stats().log.nextSeq
    t.equal((await metrics(a)).total_requests, accepted, 'metrics hold exactly what the log holds')
  })

  // Finally: the server still works for a plain client.
  t.equal((await post('/events/ingest', JSON.stringify(event()))).statusCode, 202)
  t.equal(({} as Record<string, unknown>).polluted, undefined)
})

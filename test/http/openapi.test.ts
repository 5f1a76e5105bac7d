/**
 * /openapi.json and /docs: the document is generated from the routes' zod schemas, lists every
 * route with its parameters, scopes and examples, and attaching the schemas changed neither
 * validation nor error answers (the handlers still validate; see src/http/openapi.ts).
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { chromium } from 'playwright-core'
import { loadConfig } from '../../src/config.js'
import { buildApp } from '../../src/app.js'
import { makeApp, adminHeaders, readHeaders, event } from '../helpers/app.js'
import { acceptedBatchSchema, acceptedOneSchema, alertEventsSchema, costsSchema, errorSchema, metricsSchema, ruleSchema, rulesSchema, storedEventSchema, timeseriesSchema } from '../../src/http/openapi.js'

type Doc = {
  openapi: string
  info: { title: string; version: string }
  paths: Record<string, Record<string, Operation>>
}
type Operation = {
  summary?: string
  tags?: string[]
  security?: Array<Record<string, string[]>>
  parameters?: Array<{ name: string; in: string }>
  requestBody?: { content: Record<string, { schema: unknown; example?: unknown; examples?: unknown }> }
  responses: Record<string, unknown>
}

/** Every (method, path) fastify has registered, from printRoutes' tree; HEAD left out. */
function registeredRoutes(tree: string): Array<{ method: string; path: string }> {
  const out: Array<{ method: string; path: string }> = []
  const stack: string[] = []
  for (const line of tree.split('\n')) {
    const m = /^([\s│├└─]*)(\S+) \(([^)]+)\)$/.exec(line.trimEnd())
    if (m === null) continue
    const depth = Math.round(m[1].length / 4)
    stack.length = depth
    const path = (stack[depth - 1] ?? '') + m[2]
    stack[depth] = path
    for (const method of m[3].split(', ')) if (method !== 'HEAD') out.push({ method, path })
  }
  return out
}

/** fastify's `:id` as OpenAPI's `{id}`. */
const toOpenApiPath = (p: string) => p.replace(/:(\w+)/g, '{$1}')

/** The docs UI and the dashboard's static files are not API: they are hidden from the document. */
const notApi = (p: string) => p === '/' || p.startsWith('/docs') || p.startsWith('/assets/')

t.test('every registered route is in /openapi.json, with its path parameters; nothing else is', async (t) => {
  const { app } = await makeApp(t)
  const res = await app.inject({ url: '/openapi.json' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  const doc = res.json() as Doc
  t.equal(doc.openapi, '3.1.0')
  t.equal(doc.info.title, 'LLMScope')
  t.match(doc.info.version, /^\d+\.\d+\.\d+/)

  const routes = registeredRoutes(app.printRoutes({ commonPrefix: false })).filter((r) => !notApi(r.path))
  t.ok(routes.length >= 18, `found ${routes.length} routes`)
  for (const { method, path } of routes) {
    const op = doc.paths[toOpenApiPath(path)]?.[method.toLowerCase()]
    t.ok(op, `${method} ${path} is documented`)
    if (op === undefined) continue
    for (const [, name] of path.matchAll(/:(\w+)/g)) {
      t.ok(op.parameters?.some((p) => p.in === 'path' && p.name === name), `${method} ${path} documents its path parameter ${name}`)
    }
  }
  const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`))
  const registered = new Set(routes.map((r) => `${r.method} ${toOpenApiPath(r.path)}`))
  t.same(documented.filter((d) => !registered.has(d)), [], 'no documented route is missing from the server')
  for (const p of Object.keys(doc.paths)) t.notOk(notApi(p), `${p} is not in the document`)
})

t.test('query parameters come from the zod schemas the handlers parse with', async (t) => {
  const { app } = await makeApp(t)
  const doc = (await app.inject({ url: '/openapi.json' })).json() as Doc
  const query = (path: string, method = 'get') => (doc.paths[path][method].parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name).sort()
  const filters = ['model', 'project', 'provider', 'session_id', 'status', 'tag', 'user_id']
  t.same(query('/analytics/metrics'), ['api_key', 'end_time', ...filters, 'start_time'].sort())
  t.same(query('/analytics/costs'), ['api_key', 'end_time', ...filters, 'start_time'].sort())
  t.same(query('/analytics/timeseries'), ['api_key', 'end_time', 'interval', ...filters, 'start_time'].sort())
  t.same(query('/analytics/breakdown'), ['api_key', 'by', 'end_time', 'limit', ...filters, 'sort', 'start_time'].sort())
  t.same(query('/alerts/events'), ['api_key', 'limit', 'project', 'rule_id', 'since'])
  // `api_key` in the query is a security scheme on /ws (not a plain parameter).
  t.same(query('/ws'), ['model', 'project', 'provider', 'since_seq'])
  const interval = doc.paths['/analytics/timeseries'].get.parameters!.find((p) => p.name === 'interval') as unknown as { schema: { enum: string[]; default: string } }
  t.same(interval.schema.enum, ['1m', '5m', '1h'])
  t.equal(interval.schema.default, '1h')
})

t.test('bodies are the validating schemas, with the README examples; scopes become security', async (t) => {
  const { app } = await makeApp(t)
  const doc = (await app.inject({ url: '/openapi.json' })).json() as Doc

  const ingest = doc.paths['/events/ingest'].post
  const body = ingest.requestBody!.content['application/json'] as { schema: { properties: Record<string, unknown>; required: string[]; additionalProperties: boolean }; example: unknown }
  t.same(body.schema.required, ['model'])
  t.equal(body.schema.additionalProperties, false, 'unknown fields are refused, and documented so')
  t.same(Object.keys(body.schema.properties).sort(), ['cache_write_tokens', 'cached_tokens', 'client_id', 'completion_tokens', 'cost', 'cost_source', 'id', 'latency_ms', 'metadata', 'model', 'prompt_tokens', 'provider', 'reasoning_tokens', 'received_at', 'seq', 'session_id', 'status', 'tags', 'timestamp', 'total_tokens', 'ttft_ms', 'unpriced', 'user_id'])
  t.match(body.example, { model: 'gpt-4', provider: 'openai', prompt_tokens: 150, completion_tokens: 50, latency_ms: 1200, metadata: { user_id: 'u_123' } })
  t.same(ingest.security, [{ apiKey: [] }])
  t.ok(ingest.responses['202'] && ingest.responses['400'] && ingest.responses['401'] && ingest.responses['503'])

  const batch = doc.paths['/events/batch'].post.requestBody!.content
  t.same(Object.keys(batch).sort(), ['application/json', 'application/x-ndjson'], 'a JSON array or NDJSON')
  t.match(batch['application/json'].schema, { type: 'array', minItems: 1, maxItems: 10_000 })
  t.equal((batch['application/json'].example as unknown[]).length, 2)

  t.match(doc.paths['/alerts/rules'].post.requestBody!.content['application/json'].example, { name: 'High cost', condition: 'cost_per_hour', threshold: 10, enabled: true })
  t.match(doc.paths['/alerts/rules/{id}'].patch.requestBody!.content['application/json'].example, { enabled: false })
  t.same(Object.keys(doc.paths['/v1/traces'].post.requestBody!.content).sort(), ['application/json', 'application/x-protobuf'])

  t.same(doc.paths['/ws'].get.security, [{ apiKey: [] }, { apiKeyQuery: [] }], 'the WS key may be in the query')
  for (const p of ['/health', '/ready', '/metrics', '/openapi.json']) t.notOk(doc.paths[p].get.security, `${p} needs no key`)
  // Every keyed route says which scope it needs.
  for (const [p, ops] of Object.entries(doc.paths)) {
    for (const [m, op] of Object.entries(ops)) {
      if (op.security !== undefined) t.match((op as { description?: string }).description, /Needs an? `(ingest|read|admin|owner)` key/, `${m} ${p} names its scope`)
      t.ok(op.summary, `${m} ${p} has a summary`)
      t.ok(op.tags?.length, `${m} ${p} has a tag`)
    }
  }
})

t.test('attaching the schemas changed no error answer (handlers validate, byte for byte)', async (t) => {
  const { app } = await makeApp(t)
  const json = { ...adminHeaders, 'content-type': 'application/json' }
  const one = await app.inject({ method: 'POST', url: '/events/ingest', headers: json, payload: JSON.stringify(event({ prompt_tokens: -1, promt_tokens: 3 })) })
  t.equal(one.statusCode, 400)
  t.equal(
    one.body,
    '{"statusCode":400,"error":"Bad Request","code":"LLMS_ERR_VALIDATION","message":"invalid event: prompt_tokens: Too small: expected number to be >=0; (body): Unrecognized key: \\"promt_tokens\\"","details":[{"path":"prompt_tokens","message":"Too small: expected number to be >=0"},{"path":"(body)","message":"Unrecognized key: \\"promt_tokens\\""}]}'
  )
  const batch = await app.inject({ method: 'POST', url: '/events/batch', headers: json, payload: JSON.stringify([event(), event({ model: '' })]) })
  t.equal(batch.body, '{"statusCode":400,"error":"Bad Request","code":"LLMS_ERR_VALIDATION","message":"invalid event at index 1: [1].model: Too small: expected string to have >=1 characters","details":[{"path":"[1].model","message":"Too small: expected string to have >=1 characters"}]}')
  const empty = await app.inject({ method: 'POST', url: '/events/batch', headers: json, payload: '[]' })
  t.equal(empty.body, '{"statusCode":400,"error":"Bad Request","code":"LLMS_ERR_VALIDATION","message":"batch is empty","details":[{"path":"(body)","message":"expected at least one event"}]}', 'our message, not the schema\'s minItems')
  const query = await app.inject({ url: '/analytics/timeseries?interval=2m&foo=1', headers: readHeaders })
  t.equal(query.statusCode, 400)
  t.equal(query.json().code, 'LLMS_ERR_BAD_QUERY')
  t.ok(query.json().details.some((d: { path: string }) => d.path === '(query) interval'), 'names the parameter')
  const rule = await app.inject({ method: 'POST', url: '/alerts/rules', headers: json, payload: JSON.stringify({ name: 'x', condition: 'nope', threshold: 1 }) })
  t.equal(rule.statusCode, 400)
  t.equal(rule.json().code, 'LLMS_ERR_VALIDATION')
  t.same(rule.json().details.map((d: { path: string }) => d.path), ['condition'])
  // List parameters reach the handler as the raw string (zod's Set output would break it).
  const list = await app.inject({ url: '/analytics/metrics?model=gpt-4,gpt-4o', headers: readHeaders })
  t.equal(list.statusCode, 200)
})

t.test('real answers match the documented response schemas', async (t) => {
  const { app } = await makeApp(t)
  const json = { ...adminHeaders, 'content-type': 'application/json' }
  const check = (name: string, schema: { safeParse(x: unknown): { success: boolean; error?: unknown } }, body: unknown) => {
    const r = schema.safeParse(body)
    t.ok(r.success, `${name} matches its schema${r.success ? '' : `: ${JSON.stringify(r.error)}`}`)
  }
  const one = await app.inject({ method: 'POST', url: '/events/ingest', headers: json, payload: JSON.stringify(event()) })
  check('202 ingest', acceptedOneSchema, one.json())
  check('202 batch', acceptedBatchSchema, (await app.inject({ method: 'POST', url: '/events/batch', headers: json, payload: JSON.stringify([event(), event()]) })).json())
  check('GET /events/:id', storedEventSchema, (await app.inject({ url: `/events/${one.json().event_id}`, headers: adminHeaders })).json())
  check('metrics', metricsSchema, (await app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json())
  check('costs', costsSchema, (await app.inject({ url: '/analytics/costs', headers: adminHeaders })).json())
  check('timeseries', timeseriesSchema, (await app.inject({ url: '/analytics/timeseries?start_time=2026-01-01T00:00:00Z&end_time=2026-01-01T03:00:00Z', headers: adminHeaders })).json())
  const rule = await app.inject({ method: 'POST', url: '/alerts/rules', headers: json, payload: JSON.stringify({ name: 'High cost', condition: 'cost_per_hour', threshold: 10 }) })
  t.equal(rule.statusCode, 201)
  check('rule', ruleSchema, rule.json())
  check('rules', rulesSchema, (await app.inject({ url: '/alerts/rules', headers: adminHeaders })).json())
  check('alert events', alertEventsSchema, (await app.inject({ url: '/alerts/events', headers: adminHeaders })).json())
  check('error', errorSchema, (await app.inject({ url: '/events/evt_zz_AAAAAAAAAAAA', headers: adminHeaders })).json())
  const del = await app.inject({ method: 'DELETE', url: `/alerts/rules/${rule.json().id}`, headers: adminHeaders })
  t.equal(del.statusCode, 204)
  t.equal(del.body, '')
})

t.test('/docs serves swagger-ui and its assets from the package, with no key and no network', async (t) => {
  const { app } = await makeApp(t)
  const page = await app.inject({ url: '/docs' })
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.body, /<div id="swagger-ui">/)
  const refs = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1])
  t.ok(refs.length >= 4, `assets: ${refs.join(', ')}`)
  for (const ref of refs) {
    t.notMatch(ref, /^(https?:)?\/\//, `${ref} is served by this server`)
    const asset = await app.inject({ url: new URL(ref, 'http://x/docs').pathname })
    t.equal(asset.statusCode, 200, `${ref} answers`)
    t.ok(asset.rawPayload.length > 0, `${ref} is not empty`)
  }
  const init = await app.inject({ url: '/docs/static/swagger-initializer.js' })
  t.equal(init.statusCode, 200)
  t.match(init.body, /url: resolveUrl\('\.\/json'\)/, 'the initializer reads the document from this server')
  const spec = await app.inject({ url: '/docs/json' })
  t.equal(spec.statusCode, 200)
  t.same(spec.json().paths['/events/ingest'] !== undefined, true, 'the UI reads the same document')
})

t.test('the documentation answers while the log is still replaying', async (t) => {
  const config = loadConfig({ LLMSCOPE_DATA_DIR: t.testdir(), LLMSCOPE_API_KEYS: 'docs-key-00001', LLMSCOPE_LOG_LEVEL: 'silent' })
  const { app } = await buildApp(config, { logger: false })
  t.teardown(() => app.close())
  t.equal((await app.inject({ url: '/events/evt_0_AAAAAAAAAAAA', headers: { 'x-api-key': 'docs-key-00001' } })).statusCode, 503, 'the API is not ready')
  t.equal((await app.inject({ url: '/openapi.json' })).statusCode, 200)
  t.equal((await app.inject({ url: '/docs' })).statusCode, 200)
})

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
t.test('/docs renders every operation in a real browser, offline, under the CSP', { skip: existsSync(CHROMIUM) ? false : `Chromium not found at ${CHROMIUM}` }, async (t) => {
  const { app } = await makeApp(t)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'] })
  t.teardown(() => browser.close())
  const page = await browser.newPage()
  const problems: string[] = []
  const external: string[] = []
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`))
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`)
  })
  // Anything not from this server is refused and recorded: the UI must not need the network.
  await page.route('**/*', (route) => {
    const url = route.request().url()
    if (url.startsWith(base)) return route.continue()
    external.push(url)
    return route.abort()
  })
  await page.goto(`${base}/docs`)
  // Generous deadlines: a busy CI machine. The blocks may render in more than one pass: wait
  // until all of them are there (or the deadline), then count.
  await page.waitForSelector('.opblock', { timeout: 60_000 })
  const doc = (await app.inject({ url: '/openapi.json' })).json() as Doc
  const operations = Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0)
  const deadline = Date.now() + 60_000
  while ((await page.locator('.opblock').count()) < operations && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  t.equal(await page.locator('.opblock').count(), operations, 'one block per documented operation')
  t.match(await page.locator('.info .title').innerText(), /LLMScope/)
  t.same(external, [], 'no request left this server')
  t.same(problems, [], 'no error in the page (CSP included)')
})

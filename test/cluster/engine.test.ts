/**
 * Cluster mode in one process: two nodes (two apps on two data dirs) on one nats-server, and a
 * single-node reference fed the same events. Every analytics answer from either node equals the
 * reference's; ids work from both nodes; a 503 names the partition when an owner is gone.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { startNats } from '../helpers/nats.js'
import { makeApp, adminHeaders, type TestApp } from '../helpers/app.js'

t.setTimeout(240_000)

const nats = await startNats({ servers: 1 })
t.teardown(() => nats.stop())

const clusterEnv = (node: string) => ({
  LLMSCOPE_NATS_URL: nats.urls.join(','),
  LLMSCOPE_NODE_ID: node,
  LLMSCOPE_LEASE_S: '2',
  LLMSCOPE_PARTITIONS: '4',
  LLMSCOPE_CLUSTER_NAME: 'enginetest'
})

async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

const ready = async (a: TestApp) => (await a.app.inject({ url: '/ready' })).json() as { cluster?: { owned: number[]; partitions: number } }
async function allOwned(apps: TestApp[]): Promise<boolean> {
  const owned = new Set<number>()
  for (const a of apps) for (const p of (await ready(a)).cluster?.owned ?? []) owned.add(p)
  return owned.size === 4
}

const a = await makeApp(t, { env: clusterEnv('a') })
const b = await makeApp(t, { env: clusterEnv('b') })
const ref = await makeApp(t)
await waitFor('every partition owned', () => allOwned([a, b]))

t.test('answers from every node equal the single-node answer', async (t) => {
  for (const id of ['checkout', 'search']) {
    for (const x of [a, ref]) t.equal((await x.app.inject({ method: 'POST', url: '/projects', headers: adminHeaders, payload: { id } })).statusCode, 201)
  }
  await waitFor('project on b', async () => (await b.app.inject({ url: '/projects/search', headers: adminHeaders })).statusCode === 200)
  let seed = 7
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  const models = ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022', 'my-llm']
  const events = Array.from({ length: 400 }, (_, i) => ({
    timestamp: new Date(Date.UTC(2026, 0, 1) + Math.floor(rnd() * 3 * 86_400_000)).toISOString(),
    model: models[Math.floor(rnd() * models.length)],
    prompt_tokens: Math.floor(rnd() * 5000),
    completion_tokens: Math.floor(rnd() * 2000),
    latency_ms: Math.floor(rnd() * 3000) + 1,
    status: rnd() < 0.1 ? 'error' : 'success',
    user_id: `u${Math.floor(rnd() * 30)}`,
    session_id: `s${Math.floor(rnd() * 60)}`,
    tags: rnd() < 0.5 ? ['alpha'] : ['beta', 'gamma'],
    metadata: { feature: rnd() < 0.5 ? 'chat' : 'search' },
    _i: i
  }))
  const projectOf = (i: number) => ['default', 'checkout', 'search'][i % 3]
  // Through both nodes concurrently, batches of 20.
  const sends: Array<Promise<unknown>> = []
  for (let i = 0; i < events.length; i += 20) {
    const batch = events.slice(i, i + 20)
    for (const p of ['default', 'checkout', 'search']) {
      const body = batch.filter((e) => projectOf(e._i) === p).map(({ _i, ...e }) => e)
      if (body.length === 0) continue
      const node = (i / 20) % 2 === 0 ? a : b
      sends.push(node.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'x-llmscope-project': p }, payload: body }).then((r) => t.equal(r.statusCode, 202, r.body)))
      sends.push(ref.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'x-llmscope-project': p }, payload: body }).then((r) => t.equal(r.statusCode, 202)))
    }
  }
  await Promise.all(sends)
  const urls = [
    '/analytics/metrics',
    '/analytics/metrics?start_time=2026-01-01T05:30:00Z&end_time=2026-01-02T17:00:00Z',
    '/analytics/metrics?user_id=u3',
    '/analytics/metrics?tag=gamma&status=error',
    '/analytics/costs',
    '/analytics/costs?metadata.feature=chat',
    '/analytics/timeseries?interval=1h&start_time=2026-01-01T00:00:00Z&end_time=2026-01-04T00:00:00Z',
    '/analytics/timeseries?interval=5m&start_time=2026-01-01T00:00:00Z&end_time=2026-01-02T00:00:00Z&model=gpt-4o',
    '/analytics/breakdown?by=user_id',
    '/analytics/breakdown?by=user_id&limit=5&sort=requests',
    '/analytics/breakdown?by=tag',
    '/analytics/breakdown?by=model&start_time=2026-01-02T00:00:00Z',
    '/analytics/breakdown?by=metadata.feature&user_id=u1',
    '/analytics/breakdown?by=session_id&limit=3&tag=alpha',
    '/analytics/dimensions'
  ]
  for (const project of ['default', 'checkout', 'search']) {
    for (const url of urls) {
      const headers = { ...adminHeaders, 'x-llmscope-project': project }
      const want = await ref.app.inject({ url, headers })
      t.equal(want.statusCode, 200, `${project} ${url}: ${want.body}`)
      for (const [name, node] of [['a', a], ['b', b]] as const) {
        const got = await node.app.inject({ url, headers })
        t.equal(got.statusCode, 200, `${name} ${project} ${url}: ${got.body}`)
        t.same(got.json(), want.json(), `${name} ${project} ${url}`)
      }
    }
  }
  // Ids from the stream work from either node; another project's id is a 404.
  const { _i, ...one } = events[0]
  const r = await a.app.inject({ method: 'POST', url: '/events/ingest', headers: { ...adminHeaders, 'x-llmscope-project': 'checkout' }, payload: one })
  t.equal(r.statusCode, 202)
  const id = r.json().event_id as string
  for (const node of [a, b]) {
    const got = await node.app.inject({ url: `/events/${id}`, headers: { ...adminHeaders, 'x-llmscope-project': 'checkout' } })
    t.equal(got.statusCode, 200, got.body)
    t.equal(got.json().id, id)
    t.equal((await node.app.inject({ url: `/events/${id}`, headers: adminHeaders })).statusCode, 404)
  }
  // Read-your-writes: the event just acknowledged is counted at once, from the other node.
  const before = (await ref.app.inject({ url: '/analytics/metrics', headers: { ...adminHeaders, 'x-llmscope-project': 'checkout' } })).json().total_requests
  t.equal((await b.app.inject({ url: '/analytics/metrics', headers: { ...adminHeaders, 'x-llmscope-project': 'checkout' } })).json().total_requests, before + 1)
})

t.test('/metrics of a node serves every llmscope_cluster_ figure the README names, as /ready shows them', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const named = [...new Set([...readme.matchAll(/`(llmscope_cluster_[a-z_]+)`/g)].map((m) => m[1]))]
  t.ok(named.length >= 8, `${named.length} names`)
  const body = (await a.app.inject({ url: '/metrics' })).body
  for (const name of named) t.match(body, new RegExp(`^${name} \\d+$`, 'm'), `${name} is served`)
  const c = (await ready(a)).cluster!
  t.match(body, new RegExp(`^llmscope_cluster_partitions_owned ${c.owned.length}$`, 'm'), 'owned as /ready says')
  t.match(body, /^llmscope_cluster_partitions 4$/m)
})

t.test('a breakdown during ingestion is consistent (its two rounds read one state per partition)', async (t) => {
  let stop = false
  const load = (async () => {
    let n = 0
    while (!stop) {
      const body = Array.from({ length: 25 }, (_, i) => ({ model: i % 2 === 0 ? 'gpt-4o' : 'my-llm', prompt_tokens: 10 + i, completion_tokens: 5, latency_ms: 1 + ((n + i) % 97), user_id: `load${(n + i) % 40}`, tags: i % 3 === 0 ? ['x', 'y'] : ['x'] }))
      const r = await a.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'x-llmscope-project': 'search' }, payload: body })
      t.equal(r.statusCode, 202)
      n += 25
    }
  })()
  const headers = { ...adminHeaders, 'x-llmscope-project': 'search' }
  let answered = 0
  for (let i = 0; i < 12; i++) {
    const by = i % 2 === 0 ? 'user_id' : 'tag'
    const r = await b.app.inject({ url: `/analytics/breakdown?by=${by}&limit=3`, headers })
    // On a starved machine an owner may not catch up within the query timeout: then a 503 naming
    // the partition (the contract), never a partial figure.
    if (r.statusCode === 503) {
      t.match(r.json().message, /partition/, 'a 503 names the partition')
      continue
    }
    t.equal(r.statusCode, 200, r.body)
    answered++
    const body = r.json()
    const sum = body.groups.reduce((n: number, g: { requests: number }) => n + g.requests, 0) + (body.other?.requests ?? 0)
    if (by === 'user_id') t.equal(sum, body.total.requests, 'groups and other add up to the total')
    else t.ok(sum >= body.total.requests, 'tag groups count an event once per tag')
  }
  stop = true
  await load
  t.ok(answered > 0, `${answered} of 12 breakdowns answered during ingestion`)
})

t.test('an alert fires once for the cluster and is listed on every node', async (t) => {
  const rule = await a.app.inject({ method: 'POST', url: '/alerts/rules', headers: adminHeaders, payload: { name: 'busy', condition: 'requests_per_minute', threshold: 5, window_seconds: 60, cooldown_seconds: 3600 } })
  t.equal(rule.statusCode, 201, rule.body)
  const id = rule.json().id as string
  const now = Date.now()
  const body = Array.from({ length: 30 }, (_, i) => ({ timestamp: new Date(now - i * 100).toISOString(), model: 'gpt-4o', prompt_tokens: 10, completion_tokens: 5, latency_ms: 20 }))
  t.equal((await b.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: body })).statusCode, 202)
  const firings = async (node: TestApp) => ((await node.app.inject({ url: `/alerts/events?rule_id=${id}`, headers: adminHeaders })).json().events as Array<{ state: string }>).filter((e) => e.state === 'firing')
  await waitFor('the rule fires', async () => (await firings(a)).length > 0 && (await firings(b)).length > 0, 30_000)
  // Two more evaluations by the lease holder: still one firing notification cluster-wide (cooldown one hour).
  const holder = [a, b].find((n) => (n.engine.clusterStatus() as { alerts_lease: boolean }).alerts_lease)
  t.ok(holder !== undefined, 'one node holds the alert lease')
  const evaluated = holder!.engine.ruleState(id)?.lastEvalAt ?? 0
  await waitFor('two more evaluations', () => (holder!.engine.ruleState(id)?.lastEvalAt ?? 0) >= evaluated + 2000, 30_000)
  t.equal([a, b].filter((n) => (n.engine.clusterStatus() as { alerts_lease: boolean }).alerts_lease).length, 1, 'exactly one holder')
  t.equal((await firings(a)).length, 1, 'one firing record, seen from a')
  t.equal((await firings(b)).length, 1, 'the same one from b')
})

t.test('a partition without a live owner answers 503 naming it, then the other node takes over', async (t) => {
  await a.engine.destroy()
  const res = await b.app.inject({ url: '/analytics/metrics', headers: adminHeaders })
  if (res.statusCode === 503) t.match(res.json().message, /partition/)
  else t.equal(res.statusCode, 200, 'or already taken over')
  await waitFor('b owns every partition', async () => ((await ready(b)).cluster?.owned.length ?? 0) === 4, 30_000)
  t.equal((await b.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).statusCode, 200)
})

t.test('/ready answers 503 while the node is cut off from NATS, 200 again once it reconnects', async (t) => {
  await nats.servers[0].kill()
  await waitFor('/ready 503', async () => (await b.app.inject({ url: '/ready' })).statusCode === 503, 30_000)
  const r = await b.app.inject({ url: '/ready' })
  t.match(r.json().message, /not connected to the cluster/)
  const ingest = await b.app.inject({ method: 'POST', url: '/events/ingest', headers: adminHeaders, payload: { model: 'gpt-4o', prompt_tokens: 1, completion_tokens: 1, latency_ms: 1 } })
  t.equal(ingest.statusCode, 503, 'ingestion refused meanwhile')
  await nats.servers[0].restart()
  await waitFor('/ready 200', async () => (await b.app.inject({ url: '/ready' })).statusCode === 200, 60_000)
  t.pass('ready again')
})

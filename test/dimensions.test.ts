/**
 * Dimensions and projects end to end (DESIGN §5, §6): breakdowns and filtered figures through
 * the HTTP routes equal a naive scan of the events sent, in each project, caps included.
 */
import t from 'tap'
import { makeApp, adminHeaders } from './helpers/app.js'

const base = Date.parse('2026-03-01T00:00:00.000Z')

interface Sent {
  ts: number
  model: string
  user: string | null
  tags: string[]
  feature: string | null
  cost: number
  latency: number
  error: boolean
  prompt: number
}

function makeEvents(n: number, seed: number): Sent[] {
  let x = seed
  const r = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  const out: Sent[] = []
  for (let i = 0; i < n; i++) {
    out.push({
      ts: base + Math.floor(r() * 3 * 86_400_000),
      model: ['gpt-4o', 'claude-3-5-sonnet', 'local-llm'][Math.floor(r() * 3)],
      user: r() < 0.15 ? null : `user-${Math.floor(r() * 7)}`,
      tags: ['a', 'b', 'c', 'd'].filter(() => r() < 0.4),
      feature: r() < 0.2 ? null : ['search', 'chat', 'summary'][Math.floor(r() * 3)],
      cost: Math.floor(r() * 1e6) / 1e9 * 1000,
      latency: Math.floor(r() * 5000),
      error: r() < 0.1,
      prompt: Math.floor(r() * 1000)
    })
  }
  return out
}

const body = (e: Sent) => ({
  timestamp: new Date(e.ts).toISOString(),
  model: e.model,
  provider: 'p',
  prompt_tokens: e.prompt,
  completion_tokens: 7,
  latency_ms: e.latency,
  status: e.error ? 'error' : 'success',
  cost: e.cost,
  ...(e.user === null ? {} : { user_id: e.user }),
  ...(e.tags.length === 0 ? {} : { tags: e.tags }),
  ...(e.feature === null ? {} : { metadata: { feature: e.feature, n: 3 } })
})

/** Nearest rank: the ⌈q·n⌉-th smallest. */
const rank = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.max(1, Math.ceil(q * xs.length)) - 1]

t.test('breakdowns and filtered metrics equal a naive scan, per project, with caps hit', async (t) => {
  const app = await makeApp(t, { env: { LLMSCOPE_MAX_DIMENSION_VALUES: '4' } })
  const inject = (method: 'GET' | 'POST', url: string, project: string, payload?: unknown) =>
    app.app.inject({ method, url, headers: { ...adminHeaders, 'x-llmscope-project': project }, payload: payload as object })
  t.equal((await inject('POST', '/projects', 'default', { id: 'team-b' })).statusCode, 201)
  const sets: Record<string, Sent[]> = { default: makeEvents(400, 7), 'team-b': makeEvents(300, 11) }
  for (const [project, events] of Object.entries(sets)) {
    const res = await inject('POST', '/events/batch', project, events.map(body))
    t.equal(res.statusCode, 202, res.body)
  }
  const ranges: Array<[number, number]> = [
    [base - 1, base + 4 * 86_400_000],
    [base + 3_600_123, base + 30 * 3_600_000 + 17],
    [base + 86_400_000 + 5, base + 86_400_000 + 5 + 61_234]
  ]
  for (const [project, events] of Object.entries(sets)) {
    for (const [s, e] of ranges) {
      const inRange = events.filter((x) => x.ts >= s && x.ts < e)
      const range = `start_time=${s}&end_time=${e}`
      // by user_id: with a cap of 4 values, users past it count under "(other)"
      const res = await inject('GET', `/analytics/breakdown?by=user_id&${range}&limit=50&sort=requests`, project)
      t.equal(res.statusCode, 200, 'the breakdown answers')
      const b = res.json()
      const total = b.total
      t.equal(total.requests, inRange.length, `${project} total requests`)
      t.equal(total.total_cost, Math.round(inRange.reduce((a, x) => a + Math.round(x.cost * 1e9), 0)) / 1e9, `${project} total cost`)
      const seen = new Set<string | null>()
      const byUser = new Map<string | null, Sent[]>()
      for (const x of inRange) byUser.set(x.user, [...(byUser.get(x.user) ?? []), x])
      let otherCount = 0
      for (const g of b.groups) {
        seen.add(g.value)
        if (g.value === '(other)') {
          otherCount = g.requests
          continue
        }
        const want = byUser.get(g.value) ?? []
        t.equal(g.requests, want.length, `${project} user ${g.value} requests`)
        t.equal(g.prompt_tokens, want.reduce((a, x) => a + x.prompt, 0), `${project} user ${g.value} tokens`)
        const p95 = rank(want.map((x) => x.latency), 0.95)
        t.ok(Math.abs(g.p95_latency_ms - p95) <= p95 * 0.011 + 0.001, `${project} user ${g.value} p95 ${g.p95_latency_ms} ~ ${p95}`)
      }
      const named = b.groups.filter((g: { value: string | null }) => g.value !== '(other)').reduce((a: number, g: { requests: number }) => a + g.requests, 0)
      t.equal(named + otherCount, inRange.length, 'groups add up to the total')
      // a filter on a value past the cap is still exact (answered from the log)
      for (let u = 0; u < 7; u++) {
        const user = `user-${u}`
        const m = (await inject('GET', `/analytics/metrics?${range}&user_id=${user}&metadata.feature=search`, project)).json()
        const want = inRange.filter((x) => x.user === user && x.feature === 'search')
        t.equal(m.total_requests, want.length, `${project} ${user} search requests`)
        t.equal(m.total_cost, Math.round(want.reduce((a, x) => a + Math.round(x.cost * 1e9), 0)) / 1e9, `${project} ${user} search cost`)
      }
      // by tag: an event counts once in each of its tags
      const tags = (await inject('GET', `/analytics/breakdown?by=tag&${range}&limit=2&sort=cost`, project)).json()
      const tagCount = (tag: string | null) => inRange.filter((x) => (tag === null ? x.tags.length === 0 : x.tags.includes(tag))).length
      for (const g of tags.groups) t.equal(g.requests, tagCount(g.value), `${project} tag ${g.value}`)
      const allTagGroups = [null, 'a', 'b', 'c', 'd'].map(tagCount).filter((n) => n > 0)
      t.equal(tags.groups.reduce((a: number, g: { requests: number }) => a + g.requests, 0) + (tags.other?.requests ?? 0), allTagGroups.reduce((a, n) => a + n, 0), 'tag groups and other add up')
      // metadata and status filters, timeseries
      const ts = (await inject('GET', `/analytics/timeseries?interval=1h&${range}&metadata.feature=chat&status=error`, project)).json()
      const want = inRange.filter((x) => x.feature === 'chat' && x.error)
      t.equal(ts.buckets.reduce((a: number, x: { requests: number }) => a + x.requests, 0), want.length, `${project} chat errors by hour`)
      const num = (await inject('GET', `/analytics/metrics?${range}&metadata.n=3&model=local-llm`, project)).json()
      t.equal(num.total_requests, inRange.filter((x) => x.feature !== null && x.model === 'local-llm').length, 'a number metadata value filters as its JSON text')
    }
  }
  const dims = (await inject('GET', '/analytics/dimensions', 'team-b')).json()
  t.same(dims.dimensions.map((d: { name: string }) => d.name), ['user_id', 'tag', 'metadata.feature', 'metadata.n'])
  t.equal(dims.dimensions[0].capped, true, 'the user dictionary hit its cap of 4')
  const bad = await inject('GET', '/analytics/metrics?colour=red', 'default')
  t.equal(bad.statusCode, 400)
  t.match(bad.json().details[0].path, '(query) colour')
})

t.test('a breakdown by user over most of the events (all-time totals minus the rows outside) equals a naive scan, every sort', async (t) => {
  const app = await makeApp(t)
  const inject = (url: string) => app.app.inject({ method: 'GET', url, headers: adminHeaders })
  const events = makeEvents(600, 23)
  t.equal((await app.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: events.map(body) })).statusCode, 202)
  // The range holds ~5/6 of the events: the path that reads only the rows outside it.
  const [s, e] = [base + 12 * 3_600_000 + 17, base + 3 * 86_400_000]
  const inRange = events.filter((x) => x.ts >= s && x.ts < e)
  t.ok(inRange.length > events.length / 2 && inRange.length < events.length, `the range holds most events but not all (${inRange.length} of ${events.length})`)
  const byUser = new Map<string | null, Sent[]>()
  for (const x of inRange) byUser.set(x.user, [...(byUser.get(x.user) ?? []), x])
  const nanos = (xs: Sent[]) => xs.reduce((a, x) => a + Math.round(x.cost * 1e9), 0)
  const metric = { cost: nanos, requests: (xs: Sent[]) => xs.length, tokens: (xs: Sent[]) => xs.reduce((a, x) => a + x.prompt + 7, 0) }
  for (const sort of ['cost', 'requests', 'tokens'] as const) {
    const b = (await inject(`/analytics/breakdown?by=user_id&start_time=${s}&end_time=${e}&limit=3&sort=${sort}`)).json()
    const want = [...byUser].sort((x, y) => metric[sort](y[1]) - metric[sort](x[1]) || (x[0] === null ? 1 : y[0] === null ? -1 : x[0] < y[0] ? -1 : 1)).slice(0, 3)
    t.same(b.groups.map((g: { value: string | null }) => g.value), want.map((w) => w[0]), `sort=${sort}: the first 3 users`)
    for (const [i, g] of b.groups.entries()) {
      const xs = want[i][1]
      t.equal(g.requests, xs.length, `sort=${sort} ${g.value} requests`)
      t.equal(g.total_cost, nanos(xs) / 1e9, `sort=${sort} ${g.value} cost`)
      const rate = xs.filter((x) => x.error).length / xs.length
      t.ok(Math.abs(g.error_rate - rate) < 0.001, `sort=${sort} ${g.value} error rate ${g.error_rate} ~ ${rate}`)
      const p95 = rank(xs.map((x) => x.latency), 0.95)
      t.ok(Math.abs(g.p95_latency_ms - p95) <= p95 * 0.011 + 0.001, `sort=${sort} ${g.value} p95 ${g.p95_latency_ms} ~ ${p95}`)
    }
    const rest = inRange.length - b.groups.reduce((a: number, g: { requests: number }) => a + g.requests, 0)
    t.equal(b.other?.requests ?? 0, rest, `sort=${sort}: other holds the rest`)
    t.equal(b.total.requests, inRange.length, `sort=${sort}: total`)
  }
})

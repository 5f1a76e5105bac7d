/**
 * Re-pricing against kill -9, end to end: the real server (`node dist/main.js`) re-prices ten
 * thousand events and is killed with SIGKILL at several points of the apply — as soon as
 * the request was sent, right after its record was committed (the "re-pricing recorded" log
 * line: memory not yet, or only partly, changed), once memory took it (before the snapshot),
 * and after the answer. After each restart every figure shows the old prices or the new ones,
 * never a mix: the total, the per-model costs, the hourly series, and every sampled event.
 * When it is the old, running the re-pricing again brings the new.
 */
import t from 'tap'
import { FILE_TIMEOUT_MS, startServer, waitReady, type Server } from '../helpers/server.js'

t.setTimeout(FILE_TIMEOUT_MS)

const KEY = 'reprice-crash-key-1'
const headers = { 'x-api-key': KEY }
const jsonHeaders = { ...headers, 'content-type': 'application/json' }
const T0 = Date.parse('2026-02-01T00:00:00Z')
const HOURS = 12
const N = 10_000
const CONTROL = 500
const iso = (ms: number) => new Date(ms).toISOString()

/** Each cycle's price of `zz-crash` (dollars per 1M); every event is 1000 prompt + 100 completion tokens. */
const PRICES = [
  { input: 1, output: 1 },
  { input: 2, output: 3 },
  { input: 5, output: 1 },
  { input: 7, output: 2 },
  { input: 4, output: 4 }
]
const nanosOf = (p: { input: number; output: number }) => (1000 * p.input + 100 * p.output) * 1000
const CONTROL_NANOS = (1000 * 9 + 100 * 9) * 1000

async function json(url: string, init?: RequestInit): Promise<any> {
  const r = await fetch(url, init)
  if (r.status !== 200 && r.status !== 201 && r.status !== 202) throw new Error(`${url}: ${r.status} ${await r.text()}`)
  return r.json()
}

async function put(url: string, model: string, p: { input: number; output: number }) {
  await json(`${url}/prices`, { method: 'PUT', headers: jsonHeaders, body: JSON.stringify({ provider: 'selfhost', model, ...p, effective_from: iso(T0 - 1) }) })
}

async function ingest(url: string, model: string, n: number, salt: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i += 5000) {
    const batch = Array.from({ length: Math.min(5000, n - i) }, (_, k) => ({
      timestamp: iso(T0 + (((i + k) * 7919 + salt) % (HOURS * 3600_000))),
      model,
      provider: 'selfhost',
      prompt_tokens: 1000,
      completion_tokens: 100,
      latency_ms: 1
    }))
    ids.push(...(await json(`${url}/events/batch`, { method: 'POST', headers: jsonHeaders, body: JSON.stringify(batch) })).event_ids)
  }
  return ids
}

/** Which price every figure shows: the index into PRICES, or an error naming the mix. */
async function state(url: string, sample: string[]): Promise<number> {
  const q = `start_time=${iso(T0)}&end_time=${iso(T0 + HOURS * 3600_000)}`
  const m = await json(`${url}/analytics/metrics?${q}`, { headers })
  const costs = await json(`${url}/analytics/costs?${q}`, { headers })
  const ts = await json(`${url}/analytics/timeseries?interval=1h&model=zz-crash&${q}`, { headers })
  const per = (dollars: number, n: number) => Math.round((dollars * 1e9) / n)
  const seen = new Set<number>()
  const crash = costs.breakdown.find((r: { model: string }) => r.model === 'zz-crash')
  const control = costs.breakdown.find((r: { model: string }) => r.model === 'zz-control')
  if (crash.requests !== N || Math.round(control.total_cost * 1e9) !== CONTROL * CONTROL_NANOS) throw new Error(`counts or control moved: ${JSON.stringify(costs.breakdown)}`)
  seen.add(per(crash.total_cost, N))
  seen.add(per(m.total_cost - control.total_cost, N))
  // Every hour on its own: its cost over its requests.
  for (const b of ts.buckets) if (b.requests > 0) seen.add(Math.round((b.cost * 1e9) / b.requests))
  for (const id of sample) seen.add(Math.round((await json(`${url}/events/${id}`, { headers })).cost * 1e9))
  const top = await json(`${url}/events?sort=cost&limit=1&model=zz-crash&${q}`, { headers })
  seen.add(Math.round(top.events[0].cost * 1e9))
  if (seen.size !== 1) throw new Error(`a mix of prices: ${[...seen].join(', ')} nanos`)
  const [nanos] = seen
  const k = PRICES.findIndex((p) => nanosOf(p) === nanos)
  if (k < 0) throw new Error(`an unknown price: ${nanos} nanos`)
  return k
}

t.test('kill -9 at several points of a re-pricing: old or new prices everywhere, never a mix', async (t) => {
  const dir = t.testdir()
  const env = { LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: KEY, LLMSCOPE_SNAPSHOT_INTERVAL_S: '1' }
  let server: Server = await startServer(env)
  t.teardown(() => {
    server.proc.kill('SIGKILL')
  })
  await waitReady(server.url)
  await put(server.url, 'zz-crash', PRICES[0])
  await put(server.url, 'zz-control', { input: 9, output: 9 })
  const ids = await ingest(server.url, 'zz-crash', N, 1)
  await ingest(server.url, 'zz-control', CONTROL, 2)
  const sample = ids.filter((_, i) => i % 997 === 0)
  t.equal(await state(server.url, sample), 0, 'at the first prices')

  const points: Array<{ name: string; line: RegExp | null; answer?: boolean }> = [
    { name: 'right after the request was sent', line: null },
    { name: 'right after its record was committed', line: /re-pricing recorded/ },
    { name: 'once memory took it (before its snapshot)', line: /re-pricing applied/ },
    { name: 'after the answer', line: null, answer: true }
  ]
  let current = 0
  for (const [i, point] of points.entries()) {
    const next = i + 1
    await put(server.url, 'zz-crash', PRICES[next])
    t.equal(await state(server.url, sample), current, `cycle ${i}: a PUT changes no accepted event`)
    const before = server.lines().length
    const body = JSON.stringify({ start_time: iso(T0), end_time: iso(T0 + HOURS * 3600_000), dry_run: false })
    const req = fetch(`${server.url}/prices/reprice`, { method: 'POST', headers: jsonHeaders, body }).then((r) => r.status, () => 0)
    if (point.answer === true) t.equal(await req, 200)
    else if (point.line !== null) {
      const re = point.line
      const end = Date.now() + 120_000
      while (!server.lines().slice(before).some((l) => re.test(l)) && Date.now() < end) await new Promise((r) => setTimeout(r, 1))
    }
    server.proc.kill('SIGKILL')
    await server.exited

    server = await startServer(env)
    await waitReady(server.url)
    const k = await state(server.url, sample)
    // The restart's own log tells whether it found the record unapplied and applied it.
    if (server.lines().some((l) => /re-pricing recorded/.test(l))) t.comment(`cycle ${i}: the restart re-applied the committed record`)
    t.ok(k === current || k === next, `cycle ${i} (killed ${point.name}): all at ${k === next ? 'the new' : 'the old'} price`)
    if (point.line !== null || point.answer === true) t.equal(k, next, 'its record was committed: the restart finished it')
    if (k !== next) {
      const r = await json(`${server.url}/prices/reprice`, { method: 'POST', headers: jsonHeaders, body })
      t.equal(r.changed, N, 'running it again re-prices every event')
      t.equal(await state(server.url, sample), next, 'and every figure is new')
    }
    current = next
  }

  // A graceful restart: still the newest.
  server.proc.kill('SIGTERM')
  t.same(await server.exited, { code: 0, signal: null })
  server = await startServer(env)
  await waitReady(server.url)
  t.equal(await state(server.url, sample), current)
})

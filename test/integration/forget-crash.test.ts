/**
 * DELETE /events against kill -9, end to end: the real server (`node dist/main.js`) deletes one
 * user's events from a log of tens of thousands, and is killed with SIGKILL at several points
 * of the delete — as soon as it was sent, while its chunks are being removed, while it
 * finishes (snapshot, log purge, free pages). After each restart no event of any other user is
 * missing (counts and every sampled id), none of the user's is back beyond what the killed
 * delete had not reached, and running the delete again completes it exactly.
 */
import t from 'tap'
import { FILE_TIMEOUT_MS, startServer, waitReady, type Server } from '../helpers/server.js'
import { bytesIn } from '../forget-helpers.js'

t.setTimeout(FILE_TIMEOUT_MS)

const KEY = 'forget-crash-key-1'
const headers = { 'x-api-key': KEY }
const jsonHeaders = { ...headers, 'content-type': 'application/json' }
const TARGET = 'crash-target-user-5e1d'
const T0 = Date.parse('2026-02-01T00:00:00Z')

async function until<T>(get: () => Promise<T>, ok: (v: T) => boolean, what: string, ms = 120_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await get()
    if (ok(v)) return v
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(v)})`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

async function count(url: string, query = ''): Promise<{ requests: number; tokens: number }> {
  const r = await fetch(`${url}/analytics/metrics?${query}`, { headers })
  const m = (await r.json()) as { total_requests: number; total_tokens: number }
  return { requests: m.total_requests, tokens: m.total_tokens }
}

/** `n` events over 12 hours; every `every`-th belongs to TARGET. Answers the ids of the others. */
async function ingest(url: string, n: number, every: number, salt: number): Promise<{ others: string[]; target: number }> {
  const others: string[] = []
  let target = 0
  for (let i = 0; i < n; i += 5000) {
    const batch = Array.from({ length: Math.min(5000, n - i) }, (_, k) => {
      const j = i + k
      const mine = j % every === 0
      if (mine) target++
      return {
        timestamp: new Date(T0 + ((j * 7919 + salt) % (12 * 3600_000))).toISOString(),
        model: `m${j % 4}`,
        prompt_tokens: 1 + (j % 97),
        completion_tokens: j % 13,
        latency_ms: (j % 500) + 0.5,
        user_id: mine ? TARGET : `u${j % 50}`,
        metadata: { feature: j % 3 === 0 ? 'a' : 'b' }
      }
    })
    const r = await fetch(`${url}/events/batch`, { method: 'POST', headers: jsonHeaders, body: JSON.stringify(batch) })
    if (r.status !== 202) throw new Error(`ingest: ${r.status} ${await r.text()}`)
    const ids = ((await r.json()) as { event_ids: string[] }).event_ids
    ids.forEach((id, k) => {
      if ((i + k) % every !== 0) others.push(id)
    })
  }
  return { others, target }
}

interface DeleteStatus {
  id: string
  state: string
  matched: number
  deleted: number
}

const deletes = async (url: string) => ((await (await fetch(`${url}/events/deletes`, { headers })).json()) as { deletes: DeleteStatus[] }).deletes

t.test('kill -9 at several points of a large delete: nothing unmatched lost, nothing deleted back, a re-run completes it', async (t) => {
  const dir = t.testdir()
  const env = { LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: KEY, LLMSCOPE_SNAPSHOT_INTERVAL_S: '1' }
  let server: Server = await startServer(env)
  t.teardown(() => {
    server.proc.kill('SIGKILL')
  })
  await waitReady(server.url)
  const others: string[] = []
  let othersCount = { requests: 0, tokens: 0 }

  // Where each cycle kills the server, as seen through GET /events/deletes.
  const points: Array<{ name: string; when: (d: DeleteStatus | undefined) => boolean }> = [
    { name: 'right after the request was sent', when: () => true },
    { name: 'while chunks are being removed', when: (d) => d !== undefined && d.deleted >= 10_000 && d.state === 'running' },
    { name: 'while it finishes (snapshot, purge, free pages)', when: (d) => d !== undefined && d.state === 'finishing' }
  ]
  for (const [cycle, point] of points.entries()) {
    const added = await ingest(server.url, 60_000, 2, cycle)
    others.push(...added.others)
    const before = await count(server.url, `user_id=${TARGET}`)
    t.ok(before.requests >= added.target, `cycle ${cycle}: ${before.requests} events of the user`)
    othersCount = { requests: (await count(server.url)).requests - before.requests, tokens: (await count(server.url)).tokens - before.tokens }

    void fetch(`${server.url}/events?user_id=${TARGET}`, { method: 'DELETE', headers }).catch(() => {})
    if (cycle > 0) {
      // A machine fast enough to finish first still gets a kill, after the answer: said so.
      const seen = await until(async () => (await deletes(server.url))[0], (d) => point.when(d) || d?.state === 'done', `the delete ${point.name}`)
      if (seen?.state === 'done') t.comment(`cycle ${cycle}: the delete finished before the kill point was seen`)
    }
    server.proc.kill('SIGKILL')
    await server.exited

    server = await startServer(env)
    await waitReady(server.url)
    const left = await count(server.url, `user_id=${TARGET}`)
    const all = await count(server.url)
    t.comment(`cycle ${cycle} (killed ${point.name}): ${before.requests - left.requests} of ${before.requests} deleted before the kill`)
    t.ok(left.requests <= before.requests, 'none of the user\'s events came back')
    t.same({ requests: all.requests - left.requests, tokens: all.tokens - left.tokens }, othersCount, `cycle ${cycle}: every other event is still counted, exactly`)

    const r = await fetch(`${server.url}/events?user_id=${TARGET}`, { method: 'DELETE', headers })
    t.equal(r.status, 200)
    t.same(await r.json(), { deleted: left.requests }, 'the re-run deletes what was left')
    t.same(await count(server.url, `user_id=${TARGET}`), { requests: 0, tokens: 0 })
    t.same(await count(server.url), othersCount, 'only the other users remain')
  }

  // A sample of the other users' ids (every 37th): each still readable.
  let missing = 0
  for (let i = 0; i < others.length; i += 37) if ((await fetch(`${server.url}/events/${others[i]}`, { headers })).status !== 200) missing++
  t.equal(missing, 0, 'no other event lost')
  t.equal(bytesIn(dir, TARGET), 0, 'the user id is in no file of the data dir')

  // Restart once more, gracefully: still exact, nothing back.
  server.proc.kill('SIGTERM')
  t.same(await server.exited, { code: 0, signal: null })
  server = await startServer(env)
  await waitReady(server.url)
  t.same(await count(server.url), othersCount)
  t.same(await count(server.url, `user_id=${TARGET}`), { requests: 0, tokens: 0 })
})

/**
 * Exactly once across kill -9 (DESIGN §4, §7): the real server ingests events that carry ids
 * under concurrent load and is killed mid-stream; after the restart every id sent — answered
 * or not — is sent again, and each is stored exactly once: an acknowledged one is answered
 * with its first event_id, one whose request died after its commit is a duplicate too, one
 * that never committed is stored now. Nothing is counted twice, whatever the kill interrupted
 * (the dedupe entry commits in the log record's transaction).
 */
import t from 'tap'
import { FILE_TIMEOUT_MS, startServer, waitReady } from '../helpers/server.js'

t.setTimeout(FILE_TIMEOUT_MS)

const KEY = 'integration-key-dedupe'
const headers = { 'x-api-key': KEY, 'content-type': 'application/json' }
const RANGE = 'start_time=2026-01-01T00:00:00Z&end_time=2026-01-02T00:00:00Z'

interface Ev {
  id: string
  model: string
  prompt_tokens: number
  timestamp: string
}

async function metrics(url: string) {
  const r = await fetch(`${url}/analytics/metrics?${RANGE}`, { headers })
  return (await r.json()) as { total_requests: number; prompt_tokens: number }
}

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 120_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

async function send(url: string, batch: Ev[]): Promise<{ event_ids: string[]; accepted: number; duplicates: number }> {
  const r = await fetch(`${url}/events/batch`, { method: 'POST', headers, body: JSON.stringify(batch) })
  if (r.status !== 202) throw new Error(`batch answered ${r.status}: ${await r.text()}`)
  return (await r.json()) as { event_ids: string[]; accepted: number; duplicates: number }
}

t.test('kill -9 mid-stream: every id sent again after the restart is stored exactly once', async (t) => {
  const dir = t.testdir()
  const env = { LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: KEY, LLMSCOPE_SNAPSHOT_INTERVAL_S: '1' }
  const sent = new Map<string, Ev>()
  const acked = new Map<string, string>()

  const server = await startServer(env)
  await waitReady(server.url)
  let stop = false
  const client = async (c: number) => {
    for (let i = 0; !stop; i++) {
      const n = 1 + ((i * 5 + c) % 40)
      // Some batches resend ids of this client's previous batch (a retry), mixed with new ones.
      const batch: Ev[] = Array.from({ length: n }, (_, k) => ({ id: `c${c}-${i}-${k}`, model: `m${k % 3}`, prompt_tokens: 1 + ((i + k) % 9), timestamp: '2026-01-01T12:00:00Z' }))
      if (i > 0 && i % 4 === 0) batch.push({ ...sent.get(`c${c}-${i - 1}-0`)! })
      for (const e of batch) sent.set(e.id, e)
      try {
        const body = await send(server.url, batch)
        batch.forEach((e, k) => {
          const prev = acked.get(e.id)
          if (prev !== undefined && prev !== body.event_ids[k]) throw new Error(`${e.id} answered ${body.event_ids[k]}, first ${prev}`)
          acked.set(e.id, body.event_ids[k])
        })
      } catch (err) {
        if ((err as Error).message.includes('answered')) throw err
        return // the server died under us: this request was never answered
      }
    }
  }
  const clients = Array.from({ length: 6 }, (_, c) => client(c))
  try {
    await until(() => acked.size >= 800, '800 acknowledged ids')
  } finally {
    server.proc.kill('SIGKILL')
    await server.exited
    stop = true
    await Promise.all(clients)
  }
  t.comment(`sent ${sent.size} ids, ${acked.size} acknowledged before the kill`)

  const again = await startServer(env)
  t.teardown(() => {
    again.proc.kill('SIGKILL')
  })
  await waitReady(again.url)
  const before = await metrics(again.url)
  t.ok(before.total_requests >= acked.size, 'every acknowledged event survived')
  t.ok(before.total_requests <= sent.size, 'and nothing was stored twice before the restart')

  // Every id once more, in batches of 500.
  const all = [...sent.values()]
  let dupes = 0
  let fresh = 0
  let mismatched = 0
  for (let i = 0; i < all.length; i += 500) {
    const batch = all.slice(i, i + 500)
    const body = await send(again.url, batch)
    dupes += body.duplicates
    fresh += body.accepted
    batch.forEach((e, k) => {
      const first = acked.get(e.id)
      if (first !== undefined && first !== body.event_ids[k]) mismatched++
    })
  }
  t.equal(mismatched, 0, 'each acknowledged id answered with its first event_id')
  t.equal(dupes, before.total_requests, 'what was stored before the kill came back as duplicates: exactly those')
  t.equal(fresh, sent.size - before.total_requests, 'the rest (never committed) is stored now')
  const after = await metrics(again.url)
  t.equal(after.total_requests, sent.size, 'each id sent is counted exactly once')
  t.equal(after.prompt_tokens, all.reduce((s, e) => s + e.prompt_tokens, 0), 'tokens too')

  // A third time: nothing changes.
  for (let i = 0; i < all.length; i += 500) t.equal((await send(again.url, all.slice(i, i + 500))).accepted, 0)
  t.same(await metrics(again.url), after)
})

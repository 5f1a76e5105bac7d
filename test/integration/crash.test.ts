/**
 * The durability promise end to end: the real server process ingests under concurrent load,
 * is killed with SIGKILL mid-stream, restarts, and every event that got a 202 is there,
 * counted exactly once. Then a SIGTERM shutdown drains, snapshots and exits 0.
 */
import t from 'tap'
import { FILE_TIMEOUT_MS, startServer, waitReady } from '../helpers/server.js'

// Real processes on a possibly busy machine: more time than the suite's per-file default.
t.setTimeout(FILE_TIMEOUT_MS)

const KEY = 'integration-key-1'
const headers = { 'x-api-key': KEY, 'content-type': 'application/json' }

async function metrics(url: string) {
  const r = await fetch(`${url}/analytics/metrics`, { headers })
  return (await r.json()) as { total_requests: number; total_tokens: number; prompt_tokens: number }
}

async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)![1])
}

const nextSeq = (url: string) => gauge(url, 'llmscope_log_next_seq')

/** Polls `cond` until true; fails after a generous deadline naming what it waited for. */
async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 120_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

t.test('kill -9 mid-stream loses no acknowledged event and counts each once', async (t) => {
  const dir = t.testdir()
  const env = { LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: KEY, LLMSCOPE_SNAPSHOT_INTERVAL_S: '1' }
  const acked = new Set<string>()
  let ackedTokens = 0

  for (let cycle = 0; cycle < 2; cycle++) {
    const server = await startServer(env)
    await waitReady(server.url)
    const startSeq = await nextSeq(server.url)
    const startAcked = acked.size
    let stop = false
    // Eight concurrent clients; each event carries prompt_tokens = 1..20 so token totals check too.
    const client = async (c: number) => {
      let i = 0
      while (!stop) {
        const n = 1 + ((i * 7 + c) % 25)
        const batch = Array.from({ length: n }, (_, k) => ({ model: `m${(c + k) % 3}`, prompt_tokens: 1 + ((i + k) % 20), latency_ms: 10 }))
        try {
          const r = await fetch(`${server.url}/events/batch`, { method: 'POST', headers, body: JSON.stringify(batch) })
          if (r.status === 202) {
            const body = (await r.json()) as { event_ids: string[] }
            for (const id of body.event_ids) acked.add(id)
            for (const e of batch) ackedTokens += e.prompt_tokens
          }
        } catch {
          return // the server died under us: this request was never acknowledged
        }
        i++
        // Paced, so the check afterwards (one GET per acknowledged event) stays quick.
        await new Promise((r) => setTimeout(r, 15))
      }
    }
    const clients = Array.from({ length: 8 }, (_, c) => client(c))
    // Let a snapshot of this cycle's events happen, then kill at a moment that varies per cycle
    // (a number of events acknowledged since then, not a time: a busy machine is slower).
    try {
      await until(async () => (await gauge(server.url, 'llmscope_snapshot_seq')) > startSeq, 'a snapshot with new events')
      const snapshotAcked = acked.size
      const more = 60 + cycle * 90
      await until(() => acked.size - startAcked >= 60 && acked.size - snapshotAcked >= more, `${more} more acknowledged events`)
    } finally {
      server.proc.kill('SIGKILL')
      await server.exited
      stop = true
      await Promise.all(clients)
    }
  }
  t.ok(acked.size > 100, `acknowledged ${acked.size} events before the kills`)

  let t0 = Date.now()
  const server = await startServer(env)
  t.teardown(() => {
    server.proc.kill('SIGKILL')
  })
  await waitReady(server.url)
  t.comment(`restart to ready: ${Date.now() - t0} ms`)
  t0 = Date.now()
  let missing = 0
  for (const id of acked) {
    const r = await fetch(`${server.url}/events/${id}`, { headers })
    if (r.status !== 200) missing++
  }
  t.equal(missing, 0, 'every acknowledged event is stored')
  t.comment(`checked ${acked.size} ids in ${Date.now() - t0} ms`)
  const m = await metrics(server.url)
  const stored = await nextSeq(server.url)
  // Unacknowledged requests may or may not have committed; each stored event counts once.
  t.equal(m.total_requests, stored, 'metrics count every stored event exactly once')
  t.ok(m.total_requests >= acked.size, 'no acknowledged event missing from the metrics')
  t.ok(m.prompt_tokens >= ackedTokens, 'tokens of acknowledged events all counted')

  // A graceful stop now: drains, writes a final snapshot, exits 0; the restart replays nothing.
  server.proc.kill('SIGTERM')
  const exit = await server.exited
  t.same(exit, { code: 0, signal: null }, 'SIGTERM exits 0')
  t.match(server.output(), /shutting down/)
  const again = await startServer(env)
  t.teardown(() => {
    again.proc.kill('SIGKILL')
  })
  await waitReady(again.url)
  const ready = (await (await fetch(`${again.url}/ready`)).json()) as { recovery: { replayed: number; snapshot: string } }
  t.equal(ready.recovery.snapshot, 'loaded')
  t.equal(ready.recovery.replayed, 0, 'the final snapshot covered everything')
  t.same(await metrics(again.url), m, 'state after the graceful restart equals before')
})

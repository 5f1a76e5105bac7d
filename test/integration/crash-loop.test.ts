/**
 * kill -9 at random moments, several cycles, under concurrent ingest (the real server process).
 * After every restart: each event acknowledged in the cycle is stored, and the totals count every
 * stored event exactly once — the requests whose answer was lost to the kill either all count or
 * not at all, and the token sums match. Retention by count and 1 s snapshots are on, so kills
 * also land during snapshots and folds. The seed is printed; `CRASH_SEED=n` replays a run.
 */
import t from 'tap'
import { FILE_TIMEOUT_MS, startServer, waitReady, type Server } from '../helpers/server.js'
import { rng } from '../forget-helpers.js'

// Real processes on a possibly busy machine: more time than the suite's per-file default.
t.setTimeout(FILE_TIMEOUT_MS)

const KEY = 'crash-loop-key-1'
const headers = { 'x-api-key': KEY, 'content-type': 'application/json' }
const CYCLES = 5
const CLIENTS = 6
/** So that the run acknowledges more than 200 events over the cycles however slow the machine. */
const MIN_ACKED_PER_CYCLE = 50

/** Polls `cond` until true; fails after a generous deadline naming what it waited for. */
async function until(cond: () => boolean, what: string, ms = 120_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}


interface Totals {
  requests: number
  prompt: number
  completion: number
}

async function totals(url: string): Promise<Totals & { nextSeq: number }> {
  const m = (await (await fetch(`${url}/analytics/metrics`, { headers })).json()) as { total_requests: number; prompt_tokens: number; completion_tokens: number }
  const text = await (await fetch(`${url}/metrics`)).text()
  const nextSeq = Number(/^llmscope_log_next_seq (\d+)$/m.exec(text)![1])
  return { requests: m.total_requests, prompt: m.prompt_tokens, completion: m.completion_tokens, nextSeq }
}

/** Whether some subset of `unknown` adds up to `want` (the lost answers: ≤ CLIENTS requests). */
function subsetMatches(unknown: Totals[], want: Totals): boolean {
  const n = unknown.length
  for (let mask = 0; mask < 1 << n; mask++) {
    let r = 0
    let p = 0
    let c = 0
    for (let i = 0; i < n; i++) {
      if ((mask & (1 << i)) === 0) continue
      r += unknown[i].requests
      p += unknown[i].prompt
      c += unknown[i].completion
    }
    if (r === want.requests && p === want.prompt && c === want.completion) return true
  }
  return false
}

async function checkIds(url: string, ids: string[]): Promise<number> {
  let missing = 0
  for (let i = 0; i < ids.length; i += 32) {
    const res = await Promise.all(ids.slice(i, i + 32).map((id) => fetch(`${url}/events/${id}`, { headers }).then((r) => r.status)))
    missing += res.filter((s) => s !== 200).length
  }
  return missing
}

t.test('random kill -9 under concurrent ingest, cycle after cycle: every ack kept, everything counted once', async (t) => {
  const seed = Number(process.env.CRASH_SEED ?? Date.now() % 1_000_000_007)
  t.comment(`CRASH_SEED=${seed}`)
  const rand = rng(seed)
  const dir = t.testdir()
  const env = { LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: KEY, LLMSCOPE_SNAPSHOT_INTERVAL_S: '1', LLMSCOPE_RETENTION_EVENTS: '300' }
  const started = Date.now()
  let server: Server | null = null
  t.teardown(() => {
    server?.proc.kill('SIGKILL')
  })

  server = await startServer(env)
  await waitReady(server.url)
  let before = await totals(server.url)
  let allAcked: string[] = []
  const recoveries: string[] = []

  for (let cycle = 0; cycle < CYCLES; cycle++) {
    const url = server.url
    const acked: string[] = []
    const ackedSum: Totals = { requests: 0, prompt: 0, completion: 0 }
    const unknown: Totals[] = []
    let stop = false
    const client = async (c: number) => {
      while (!stop) {
        const n = rand() < 0.3 ? 1 : 1 + Math.floor(rand() * 20)
        // Timestamps over the last 6 hours: retention folds the older hours as it goes.
        const batch = Array.from({ length: n }, (_, k) => ({
          timestamp: new Date(Date.now() - Math.floor(rand() * 6 * 3_600_000)).toISOString(),
          model: `m${(c + k) % 4}`,
          prompt_tokens: 1 + Math.floor(rand() * 100_000),
          completion_tokens: Math.floor(rand() * 5000),
          latency_ms: Math.floor(rand() * 3000)
        }))
        const sum: Totals = { requests: n, prompt: 0, completion: 0 }
        for (const e of batch) {
          sum.prompt += e.prompt_tokens
          sum.completion += e.completion_tokens
        }
        const single = n === 1 && rand() < 0.5
        try {
          const r = await fetch(`${url}/events/${single ? 'ingest' : 'batch'}`, { method: 'POST', headers, body: JSON.stringify(single ? batch[0] : batch) })
          const body = (await r.json()) as { event_id?: string; event_ids?: string[] }
          if (r.status === 202) {
            acked.push(...(single ? [body.event_id!] : body.event_ids!))
            ackedSum.requests += sum.requests
            ackedSum.prompt += sum.prompt
            ackedSum.completion += sum.completion
          }
          // Refusals (503 while overloaded) stored nothing: not counted.
        } catch {
          // The kill took the answer: committed or not, all or nothing.
          unknown.push(sum)
          return
        }
        await new Promise((r) => setTimeout(r, 5 + rand() * 20))
      }
    }
    const clients = Array.from({ length: CLIENTS }, (_, c) => client(c))
    const killAfter = 200 + Math.floor(rand() * 1300)
    const t0 = Date.now()
    try {
      // A random moment, and not before some events of this cycle are acknowledged (on a busy
      // machine 200 ms may pass before the first answer).
      await until(() => Date.now() - t0 >= killAfter && acked.length >= MIN_ACKED_PER_CYCLE, `${MIN_ACKED_PER_CYCLE} acknowledged events in cycle ${cycle}`)
    } finally {
      server.proc.kill('SIGKILL')
      await server.exited
      stop = true
      await Promise.all(clients)
    }

    server = await startServer(env)
    await waitReady(server.url)
    const ready = (await (await fetch(`${server.url}/ready`)).json()) as { recovery: { snapshot: string; replayed: number } }
    recoveries.push(`${ready.recovery.snapshot}+${ready.recovery.replayed}`)
    const after = await totals(server.url)
    const missing = await checkIds(server.url, acked)
    t.equal(missing, 0, `cycle ${cycle} (kill after ${killAfter} ms): all ${acked.length} acknowledged events stored`)
    t.equal(after.requests, after.nextSeq, `cycle ${cycle}: metrics count every stored event exactly once (${after.requests})`)
    const extra: Totals = {
      requests: after.requests - before.requests - ackedSum.requests,
      prompt: after.prompt - before.prompt - ackedSum.prompt,
      completion: after.completion - before.completion - ackedSum.completion
    }
    t.ok(subsetMatches(unknown, extra), `cycle ${cycle}: beyond the ${ackedSum.requests} acknowledged, ${extra.requests} events / ${extra.prompt} prompt tokens are exactly some of the ${unknown.length} requests whose answer was lost`)
    allAcked = allAcked.concat(acked)
    before = after
  }
  t.comment(`recoveries (snapshot+replayed): ${recoveries.join(', ')}`)
  // Across all cycles: a sample of the earliest acknowledgements is still there after every restart.
  const sample = allAcked.filter((_, i) => i % Math.max(1, Math.floor(allAcked.length / 400)) === 0)
  t.equal(await checkIds(server.url, sample), 0, `a sample of ${sample.length} of all ${allAcked.length} acknowledged events is stored`)
  t.ok(allAcked.length > 200, `${allAcked.length} events acknowledged over ${CYCLES} kills`)
  t.comment(`crash loop took ${Date.now() - started} ms`)
})

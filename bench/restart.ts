/**
 * Question: how long from process start to /ready with a loaded state — after a graceful stop
 * (snapshot covers everything) and after kill -9 (snapshot + log tail replay)? The server is a
 * separate process; events are the dimensions bench's (bench/dim-data.ts: 50 models, 30 days,
 * user, session, tags and metadata), loaded over HTTP in batches of 1000.
 *
 * Sizes: LLMSCOPE_BENCH_RESTART_EVENTS (default 1,000,000; the goal is at 10,000,000)
 * and LLMSCOPE_BENCH_RESTART_TAIL (the events after the last snapshot at the kill, default
 * 100,000). Each row notes the load average at the restart and the server's own recovery
 * figures (/ready: snapshot load + replay, ms), so process start-up shows apart from restore.
 */
import { startLLMScope, startProcess, LLMSCOPE_ENTRY, BENCH_KEY, load1, type Row } from './lib.js'
import { dimEvents, toJson } from './dim-data.js'

/** Loads `n` events of the dimensions data (drawn from `seed`) in batches of 1000, 4 requests in flight (a 503 is retried after 20 ms). */
async function post(url: string, n: number, seed: number) {
  const events = dimEvents(n, seed)
  let sent = 0
  const nextBody = (): string | null => {
    if (sent >= n) return null
    const batch: unknown[] = []
    for (; batch.length < 1000 && sent < n; sent++) batch.push(toJson(events.next().value!, true))
    return JSON.stringify(batch)
  }
  const sender = async () => {
    for (let body = nextBody(); body !== null; body = nextBody()) {
      for (;;) {
        const r = await fetch(`${url}/events/batch`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': BENCH_KEY }, body })
        // Read every answer: an unread body keeps its connection from being reused.
        await r.arrayBuffer()
        if (r.status === 202) break
        await new Promise((res) => setTimeout(res, 20))
      }
    }
  }
  await Promise.all(Array.from({ length: 4 }, sender))
}

interface Recovery {
  snapshot: string
  replayed: number
  ms: number
}

async function timeToReady(dataDir: string) {
  const t0 = performance.now()
  const load = load1()
  const s = await startProcess(LLMSCOPE_ENTRY, { PORT: '0', LLMSCOPE_DATA_DIR: dataDir, LLMSCOPE_API_KEYS: BENCH_KEY, LLMSCOPE_LOG_LEVEL: 'info', LLMSCOPE_SNAPSHOT_INTERVAL_S: '3600' })
  let recovery: Recovery
  for (;;) {
    const r = await fetch(`${s.url}/ready`)
    const body = (await r.json()) as { recovery?: Recovery }
    if (r.status === 200) {
      recovery = body.recovery!
      break
    }
    await new Promise((r) => setTimeout(r, 10))
  }
  return { s, ms: performance.now() - t0, recovery, load }
}

const note = (r: { recovery: Recovery; load: number }) => `snapshot ${r.recovery.snapshot}, replayed ${r.recovery.replayed.toLocaleString('en-US')}, recovery ${r.recovery.ms.toLocaleString('en-US')} ms in the server; load ${r.load}`

export async function run(): Promise<Row[]> {
  const n = Number(process.env.LLMSCOPE_BENCH_RESTART_EVENTS ?? process.env.BENCH_RESTART_EVENTS ?? 1_000_000)
  const tail = Number(process.env.LLMSCOPE_BENCH_RESTART_TAIL ?? 100_000)
  const rows: Row[] = []
  // No snapshot but the final one: the kill -9 below then leaves exactly `tail` events to replay.
  const first = await startLLMScope({ LLMSCOPE_SNAPSHOT_INTERVAL_S: '3600' })
  const dataDir = first.dataDir!
  try {
    await post(first.url, n, 11)
    first.proc.kill('SIGTERM')
    await new Promise((r) => first.proc.on('exit', r))
    const graceful = await timeToReady(dataDir)
    rows.push({ bench: 'restart', metric: `start → /ready after SIGTERM, ${n.toLocaleString('en-US')} events`, value: graceful.ms, unit: 'ms', goal: '≤ 3000', note: note(graceful) })
    // Other events (another seed) of the same shape: the tail.
    await post(graceful.s.url, tail, 12)
    graceful.s.proc.kill('SIGKILL')
    await new Promise((r) => graceful.s.proc.on('exit', r))
    const crashed = await timeToReady(dataDir)
    rows.push({ bench: 'restart', metric: `start → /ready after kill -9, ${(n + tail).toLocaleString('en-US')} events (${tail.toLocaleString('en-US')}-event tail)`, value: crashed.ms, unit: 'ms', goal: '≤ 5000', note: note(crashed) })
    await crashed.s.stop()
  } finally {
    // LLMSCOPE_BENCH_RESTART_KEEP=1 keeps the data dir (stopped after a SIGTERM) for profiling a restart by hand.
    if (process.env.LLMSCOPE_BENCH_RESTART_KEEP === '1') console.log(`  restart: data dir kept at ${dataDir}`)
    else {
      const { rmSync } = await import('node:fs')
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
  return rows
}

/**
 * Question: how long from process start to /ready with a loaded state — after a graceful stop
 * (snapshot covers everything) and after kill -9 (snapshot + log tail replay)? The server is a
 * separate process; events are loaded over HTTP in batches of 1000.
 */
import { startLLMScope, startProcess, LLMSCOPE_ENTRY, BENCH_KEY, type Row } from './lib.js'

/** Loads `n` events in batches of 1000, 4 requests in flight (a 503 is retried after 20 ms). */
async function post(url: string, n: number, offset: number) {
  const body = JSON.stringify(Array.from({ length: 1000 }, (_, i) => ({ timestamp: new Date(Date.parse('2026-01-01T00:00:00Z') + ((offset + i) * 2_591) % (30 * 86_400_000)).toISOString(), model: `model-${(offset + i) % 50}`, prompt_tokens: 100 + (i % 900), completion_tokens: 50, latency_ms: 100 + (i % 900) })))
  let next = 0
  const sender = async () => {
    while (next < n) {
      next += 1000
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

async function timeToReady(dataDir: string) {
  const t0 = performance.now()
  const s = await startProcess(LLMSCOPE_ENTRY, { PORT: '0', LLMSCOPE_DATA_DIR: dataDir, LLMSCOPE_API_KEYS: BENCH_KEY, LLMSCOPE_LOG_LEVEL: 'info' })
  for (;;) {
    const r = await fetch(`${s.url}/ready`)
    await r.arrayBuffer()
    if (r.status === 200) break
    await new Promise((r) => setTimeout(r, 10))
  }
  return { s, ms: performance.now() - t0 }
}

export async function run(): Promise<Row[]> {
  const n = Number(process.env.BENCH_RESTART_EVENTS ?? 1_000_000)
  const tail = Math.round(n / 10)
  const rows: Row[] = []
  const first = await startLLMScope({ LLMSCOPE_SNAPSHOT_INTERVAL_S: '3600' })
  const dataDir = first.dataDir!
  try {
    await post(first.url, n, 0)
    first.proc.kill('SIGTERM')
    await new Promise((r) => first.proc.on('exit', r))
    const graceful = await timeToReady(dataDir)
    rows.push({ bench: 'restart', metric: `start → /ready after SIGTERM, ${n.toLocaleString('en-US')} events`, value: graceful.ms, unit: 'ms', goal: '≤ 3000' })
    await post(graceful.s.url, tail, n)
    graceful.s.proc.kill('SIGKILL')
    await new Promise((r) => graceful.s.proc.on('exit', r))
    const crashed = await timeToReady(dataDir)
    const ready = (await (await fetch(`${crashed.s.url}/ready`)).json()) as { recovery: { replayed: number } }
    rows.push({ bench: 'restart', metric: `start → /ready after kill -9 (${tail.toLocaleString('en-US')}-event tail)`, value: crashed.ms, unit: 'ms', goal: '≤ 3000', note: `replayed ${ready.recovery.replayed}` })
    await crashed.s.stop()
  } finally {
    const { rmSync } = await import('node:fs')
    rmSync(dataDir, { recursive: true, force: true })
  }
  return rows
}

/**
 * Question: how many events per second does durable, validated, priced, aggregated ingestion
 * take — single events and batches of 100 and 1000 (JSON and NDJSON) — next to a bare fastify
 * route that only parses the same body, all at 50 connections? And how long does a single
 * event's POST wait for its 202 (which comes only after the LMDB commit) at c=50?
 *
 * Rounds alternate A/B (bare, LLMScope, bare, LLMScope…) because this machine's speed drifts
 * between runs; a ratio is the median of the rounds' own ratios. Before each load the bench
 * waits until LLMScope has no CPU left over from the one before (pricing, aggregation, a
 * snapshot still running would slow whichever server is measured next). CPU per event is read
 * from /proc (both processes, all threads; LLMScope's until the work behind the accepted events
 * is done) as the figure least moved by other load.
 * Goals (issue 15): single ≥ 0.6 of bare, batch of 100 ≥ 0.45, batch of 1000 ≥ 0.5; 202 p99 ≤ 10 ms.
 */
import { cpuMs, load, startBare, startLLMScope, type Row, type Running } from './lib.js'

const ROUNDS = 3
const CONNECTIONS = 50

function event(i: number) {
  return { model: i % 3 === 0 ? 'gpt-4o' : i % 3 === 1 ? 'claude-3-5-sonnet-20241022' : 'gpt-4', prompt_tokens: 100 + (i % 900), completion_tokens: 50 + (i % 300), cached_tokens: i % 5 === 0 ? 50 : undefined, latency_ms: 200 + (i % 1000), metadata: { user: `u${i % 100}`, feature: 'chat' } }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** Waits (at most 20 s) until `server` spends under 10% of a core: the previous load's work is done. */
async function settle(server: Running): Promise<void> {
  for (let i = 0; i < 80; i++) {
    const c0 = cpuMs(server.proc.pid)
    await new Promise((r) => setTimeout(r, 250))
    if (cpuMs(server.proc.pid) - c0 <= 25) return
  }
}

export async function run(seconds: number): Promise<Row[]> {
  const single = JSON.stringify(event(1))
  const batch100 = JSON.stringify(Array.from({ length: 100 }, (_, i) => event(i)))
  const batch1000 = JSON.stringify(Array.from({ length: 1000 }, (_, i) => event(i)))
  const ndjson1000 = Array.from({ length: 1000 }, (_, i) => JSON.stringify(event(i))).join('\n') + '\n'

  const scenarios = [
    { name: 'ingest single', path: '/events/ingest', body: single, events: 1, goal: 'ratio ≥ 0.6', p99Goal: '≤ 10' },
    { name: 'batch 100 JSON', path: '/events/batch', body: batch100, events: 100, goal: 'ratio ≥ 0.45' },
    { name: 'batch 1000 JSON', path: '/events/batch', body: batch1000, events: 1000, goal: 'ratio ≥ 0.5' },
    { name: 'batch 1000 NDJSON', path: '/events/batch', body: ndjson1000, events: 1000, goal: 'ratio ≥ 0.5', contentType: 'application/x-ndjson' }
  ]
  const rows: Row[] = []
  const bare = await startBare()
  const scope = await startLLMScope()
  try {
    for (const s of scenarios) {
      const a: number[] = []
      const b: number[] = []
      const ratios: number[] = []
      const p99: number[] = []
      const p50: number[] = []
      const cpuA: number[] = []
      const cpuB: number[] = []
      let failures = 0
      for (let round = 0; round < ROUNDS; round++) {
        await settle(scope)
        let c0 = cpuMs(bare.proc.pid)
        const base = await load({ url: bare.url, path: s.path, body: s.body, contentType: s.contentType, connections: CONNECTIONS, seconds })
        cpuA.push(((cpuMs(bare.proc.pid) - c0) * 1000) / Math.max(1, base.reqPerSec * seconds * s.events))
        await settle(scope)
        c0 = cpuMs(scope.proc.pid)
        const real = await load({ url: scope.url, path: s.path, body: s.body, contentType: s.contentType, connections: CONNECTIONS, seconds })
        // Its CPU until the work behind the accepted events (pricing, aggregation) is done too.
        await settle(scope)
        cpuB.push(((cpuMs(scope.proc.pid) - c0) * 1000) / Math.max(1, real.reqPerSec * seconds * s.events))
        a.push(base.reqPerSec)
        b.push(real.reqPerSec)
        ratios.push(real.reqPerSec / base.reqPerSec)
        p50.push(real.p50)
        p99.push(real.p99)
        failures += real.non2xx + real.errors
      }
      const ratio = median(ratios)
      const note = `rounds ${ratios.map((r) => r.toFixed(2)).join(' ')}${failures > 0 ? `; ${failures} non-2xx/errors` : ''}`
      rows.push({ bench: 'ingest', metric: `${s.name}: events/s (c=${CONNECTIONS})`, value: median(b) * s.events, unit: 'ev/s', baseline: median(a) * s.events, ratio, goal: s.goal, note })
      rows.push({ bench: 'ingest', metric: `${s.name}: req/s (c=${CONNECTIONS})`, value: median(b), unit: 'req/s', baseline: median(a), ratio })
      rows.push({ bench: 'ingest', metric: `${s.name}: CPU per event (/proc, all threads)`, value: median(cpuB), unit: 'µs', baseline: median(cpuA), ratio: median(cpuB) / median(cpuA) })
      rows.push({ bench: 'ingest', metric: `${s.name}: p50`, value: median(p50), unit: 'ms' })
      rows.push({ bench: 'ingest', metric: `${s.name}: POST → 202 p99 (c=${CONNECTIONS})`, value: median(p99), unit: 'ms', goal: s.p99Goal, note: `rounds ${p99.join(' ')} ms` })
    }
  } finally {
    await scope.stop()
    await bare.stop()
  }
  return rows
}

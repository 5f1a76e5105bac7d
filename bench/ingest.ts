/**
 * Question: how many events per second does durable, validated, priced, aggregated ingestion
 * take — single events and batches of 1000 (JSON and NDJSON) — next to a bare fastify route
 * that only parses the same body? Rounds alternate A/B (bare, LLMScope, bare, LLMScope…)
 * because this machine's speed drifts between runs.
 */
import { load, startBare, startLLMScope, type Row } from './lib.js'

const ROUNDS = 2

function event(i: number) {
  return { model: i % 3 === 0 ? 'gpt-4o' : i % 3 === 1 ? 'claude-3-5-sonnet-20241022' : 'gpt-4', prompt_tokens: 100 + (i % 900), completion_tokens: 50 + (i % 300), cached_tokens: i % 5 === 0 ? 50 : undefined, latency_ms: 200 + (i % 1000), metadata: { user: `u${i % 100}`, feature: 'chat' } }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

export async function run(seconds: number): Promise<Row[]> {
  const single = JSON.stringify(event(1))
  const batch1000 = JSON.stringify(Array.from({ length: 1000 }, (_, i) => event(i)))
  const ndjson1000 = Array.from({ length: 1000 }, (_, i) => JSON.stringify(event(i))).join('\n') + '\n'
  const batch100 = JSON.stringify(Array.from({ length: 100 }, (_, i) => event(i)))

  const scenarios = [
    { name: 'ingest single', path: '/events/ingest', body: single, events: 1, connections: 50 },
    { name: 'batch 100 JSON', path: '/events/batch', body: batch100, events: 100, connections: 10 },
    { name: 'batch 1000 JSON', path: '/events/batch', body: batch1000, events: 1000, connections: 4 },
    { name: 'batch 1000 NDJSON', path: '/events/batch', body: ndjson1000, events: 1000, connections: 4, contentType: 'application/x-ndjson' }
  ]
  const rows: Row[] = []
  const bare = await startBare()
  const scope = await startLLMScope()
  try {
    for (const s of scenarios) {
      const a: number[] = []
      const b: number[] = []
      const p99: number[] = []
      const p50: number[] = []
      let failures = 0
      for (let round = 0; round < ROUNDS; round++) {
        const base = await load({ url: bare.url, path: s.path, body: s.body, contentType: s.contentType, connections: s.connections, seconds })
        const real = await load({ url: scope.url, path: s.path, body: s.body, contentType: s.contentType, connections: s.connections, seconds })
        a.push(base.reqPerSec)
        b.push(real.reqPerSec)
        p50.push(real.p50)
        p99.push(real.p99)
        failures += real.non2xx + real.errors
      }
      const baseline = median(a) * s.events
      const value = median(b) * s.events
      const note = failures > 0 ? `${failures} non-2xx/errors` : undefined
      rows.push({ bench: 'ingest', metric: `${s.name}: events/s`, value, unit: 'ev/s', baseline, ratio: value / baseline, note })
      rows.push({ bench: 'ingest', metric: `${s.name}: req/s (c=${s.connections})`, value: median(b), unit: 'req/s', baseline: median(a), ratio: median(b) / median(a) })
      rows.push({ bench: 'ingest', metric: `${s.name}: p50 / p99`, value: median(p50), unit: 'ms', note: `p99 ${median(p99).toFixed(1)} ms` })
    }
  } finally {
    await scope.stop()
    await bare.stop()
  }
  return rows
}

/**
 * Soak: does the server stay flat — memory, event-loop responsiveness, errors — under a long
 * mixed load once retention is reached?
 *
 *   npx tsc -p tsconfig.bench.json && node dist-bench/bench/soak.js
 *
 * Not part of `npm run bench` (it runs for minutes). Knobs (env): SOAK_SECONDS (600),
 * SOAK_SAMPLE_SECONDS (15), SOAK_RETENTION_EVENTS (100000, per series), SOAK_RATE (events/s
 * offered, 2000), SOAK_SNAPSHOT_SECONDS (10: the server's snapshot and retention interval).
 *
 * Three processes' worth of roles, two processes: LLMScope (startLLMScope, its own process)
 * and this one, which offers, all bounded in rate and on 127.0.0.1:
 *   - batch ingest: SOAK_RATE events/s in batches of 100 (3 models), timestamps walking through
 *     simulated history (2 s of event time per event, starting 30 days back) so retention by
 *     count keeps folding old hours while the stream goes on;
 *   - single-event ingest: 20 requests/s;
 *   - queries: metrics, costs, timeseries (1h and 1m over the newest simulated hour), 10/s;
 *   - WebSocket: 4 subscribers that read everything, and 1 that never reads (its socket is
 *     paused: the server must drop for it, then close it, and not grow);
 *   - a /health probe every 100 ms: its latency is the event-loop delay as a client sees it.
 * Every SOAK_SAMPLE_SECONDS: the server's RSS (VmRSS from /proc/<pid>/status), events acked,
 * query and /health latency (p50/p99/max of the interval), errors by kind, WebSocket messages
 * received, drop notices and closes. A table at the end, plus first/last/peak RSS.
 */
import { readFileSync } from 'node:fs'
import WebSocket from 'ws'
import { BENCH_KEY, machine, startLLMScope } from './lib.js'

const SECONDS = Number(process.env.SOAK_SECONDS ?? 600)
const SAMPLE_S = Number(process.env.SOAK_SAMPLE_SECONDS ?? 15)
const RETENTION = Number(process.env.SOAK_RETENTION_EVENTS ?? 100_000)
const RATE = Number(process.env.SOAK_RATE ?? 2000)
const BATCH = 100
const MODELS = ['gpt-4o', 'claude-3-5-sonnet-20241022', 'gpt-4']
const headers = { 'x-api-key': BENCH_KEY, 'content-type': 'application/json' }
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Per-interval counters; reset at each sample. */
class Interval {
  acked = 0
  queries: number[] = []
  health: number[] = []
  errors = new Map<string, number>()
  wsMessages = 0
  wsDropNotices = 0
  wsDroppedCount = 0
  error(kind: string) {
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1)
  }
}

const pct = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}

/** VmRSS, and its parts: RssAnon (heap, buffers) and RssFile (mostly LMDB's memory-mapped file, reclaimable page cache). */
function rssMiB(pid: number): { total: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024
  return { total: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') }
}

/** One sample of a Prometheus text metric (no labels), or NaN. */
function promValue(text: string, name: string): number {
  const m = new RegExp(`^${name} ([0-9.eE+-]+)$`, 'm').exec(text)
  return m === null ? NaN : Number(m[1])
}

async function scrape(url: string): Promise<string> {
  try {
    return await (await fetch(`${url}/metrics`)).text()
  } catch {
    return ''
  }
}

function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

let running: { stop(): Promise<void> } | null = null

async function main(): Promise<void> {
  const m = machine()
  console.log(`LLMScope soak — ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, node ${m.node}, commit ${m.commit}, ${m.date}`)
  console.log(`${SECONDS} s, ${RATE} ev/s offered in batches of ${BATCH} + 20 single/s, 10 queries/s, 4 reading + 1 stalled WebSocket, LLMSCOPE_RETENTION_EVENTS=${RETENTION}`)
  const server = await startLLMScope({ LLMSCOPE_RETENTION_EVENTS: String(RETENTION), LLMSCOPE_SNAPSHOT_INTERVAL_S: process.env.SOAK_SNAPSHOT_SECONDS ?? '10' })
  running = server
  const pid = server.proc.pid!
  server.proc.stdout!.resume()
  server.proc.stderr!.on('data', (d: Buffer) => process.stderr.write(`[server] ${d}`))
  let cur = new Interval()
  let stop = false
  const started = Date.now()
  const simBase = started - 30 * 86_400_000
  let simSeq = 0
  let totalAcked = 0
  let totalErrors = 0
  let wsClosed = 0
  let stalledClosedWith: number | null = null

  const timed = async (kind: string, fn: () => Promise<Response>, into: number[] | null): Promise<Response | null> => {
    const t0 = performance.now()
    try {
      const r = await fn()
      into?.push(performance.now() - t0)
      if (r.status >= 400) {
        cur.error(`${kind} ${r.status}`)
        totalErrors++
      }
      return r
    } catch (err) {
      cur.error(`${kind} ${(err as Error).name}`)
      totalErrors++
      return null
    }
  }

  // Batch ingest: RATE events/s, paced per request.
  const batchLoop = async (lane: number, lanes: number) => {
    const every = (1000 * BATCH * lanes) / RATE
    let next = performance.now()
    while (!stop) {
      const batch = Array.from({ length: BATCH }, (_, k) => {
        const i = simSeq++
        return { timestamp: new Date(simBase + i * 2000).toISOString(), model: MODELS[(i + k) % 3], prompt_tokens: 100 + (i % 900), completion_tokens: 20 + (i % 200), latency_ms: 100 + (i % 1500), metadata: { lane, user: `u${i % 50}` } }
      })
      const r = await timed('batch', () => fetch(`${server.url}/events/batch`, { method: 'POST', headers, body: JSON.stringify(batch) }), null)
      if (r !== null) {
        if (r.status === 202) {
          cur.acked += BATCH
          totalAcked += BATCH
        }
        await r.arrayBuffer()
      }
      next += every
      await sleep(Math.max(0, next - performance.now()))
    }
  }
  const singleLoop = async () => {
    while (!stop) {
      const r = await timed('single', () => fetch(`${server.url}/events/ingest`, { method: 'POST', headers, body: JSON.stringify({ model: 'gpt-4o-mini', prompt_tokens: 10, completion_tokens: 5, latency_ms: 80 }) }), null)
      if (r !== null) {
        if (r.status === 202) {
          cur.acked++
          totalAcked++
        }
        await r.arrayBuffer()
      }
      await sleep(50)
    }
  }
  const queryLoop = async () => {
    let i = 0
    while (!stop) {
      const simNow = simBase + simSeq * 2000
      const s = new Date(simNow - 3_600_000).toISOString()
      const e = new Date(simNow).toISOString()
      const paths = ['/analytics/metrics', `/analytics/costs?start_time=${new Date(simBase).toISOString()}`, `/analytics/timeseries?interval=1h&start_time=${new Date(simNow - 86_400_000).toISOString()}&end_time=${e}`, `/analytics/timeseries?interval=1m&start_time=${s}&end_time=${e}`]
      const r = await timed('query', () => fetch(`${server.url}${paths[i++ % paths.length]}`, { headers }), cur.queries)
      if (r !== null) await r.arrayBuffer()
      await sleep(100)
    }
  }
  const healthLoop = async () => {
    while (!stop) {
      const r = await timed('health', () => fetch(`${server.url}/health`), cur.health)
      if (r !== null) await r.arrayBuffer()
      await sleep(100)
    }
  }

  const wsUrl = server.url.replace('http', 'ws') + `/ws?api_key=${BENCH_KEY}`
  const sockets: WebSocket[] = []
  for (let i = 0; i < 4; i++) {
    const ws = new WebSocket(wsUrl)
    ws.on('message', (data) => {
      cur.wsMessages++
      const text = data.toString()
      if (text.startsWith('{"type":"dropped"')) {
        cur.wsDropNotices++
        cur.wsDroppedCount += (JSON.parse(text) as { count: number }).count
      }
    })
    ws.on('close', () => {
      if (!stop) wsClosed++
    })
    ws.on('error', () => cur.error('ws error'))
    sockets.push(ws)
  }
  // The subscriber that never reads: its socket stops reading as soon as it is open.
  const stalled = new WebSocket(wsUrl)
  stalled.on('open', () => (stalled as unknown as { _socket: { pause(): void } })._socket.pause())
  stalled.on('close', (code) => (stalledClosedWith = code))
  stalled.on('error', () => {})
  sockets.push(stalled)
  await Promise.all(sockets.map((ws) => new Promise((r) => (ws.readyState === WebSocket.OPEN ? r(null) : ws.once('open', r)))))

  const rows: string[][] = []
  const rss: number[] = []
  const anon: number[] = []
  let lastCpu = cpuSeconds(pid)
  const sampler = (async () => {
    let lastAt = Date.now()
    while (!stop) {
      await sleep(SAMPLE_S * 1000 - ((Date.now() - started) % (SAMPLE_S * 1000)))
      if (stop) break
      const iv = cur
      cur = new Interval()
      const now = Date.now()
      const r = rssMiB(pid)
      const cpu = cpuSeconds(pid)
      // Event-loop delay as the server measures it (prom-client's default metrics), when exposed.
      const prom = await scrape(server.url)
      const loop = `${(promValue(prom, 'nodejs_eventloop_lag_p99_seconds') * 1000).toFixed(1)} / ${(promValue(prom, 'nodejs_eventloop_lag_max_seconds') * 1000).toFixed(1)}`
      rss.push(r.total)
      anon.push(r.anon)
      const errs = [...iv.errors].map(([k, v]) => `${k}: ${v}`).join(', ')
      rows.push([
        String(Math.round((now - started) / 1000)),
        `${r.total.toFixed(0)} / ${r.anon.toFixed(0)} / ${r.file.toFixed(0)}`,
        ((cpu - lastCpu) / ((now - lastAt) / 1000) * 100).toFixed(0),
        String(Math.round(iv.acked / ((now - lastAt) / 1000))),
        `${pct(iv.queries, 0.5).toFixed(1)} / ${pct(iv.queries, 0.99).toFixed(1)}`,
        `${pct(iv.health, 0.5).toFixed(1)} / ${pct(iv.health, 0.99).toFixed(1)} / ${Math.max(...iv.health).toFixed(1)}`,
        loop,
        String(iv.wsMessages),
        String(iv.wsDropNotices),
        errs === '' ? '0' : errs
      ])
      console.log(rows[rows.length - 1].join('\t'))
      lastCpu = cpu
      lastAt = now
    }
  })()

  const lanes = 2
  const loops = [...Array.from({ length: lanes }, (_, l) => batchLoop(l, lanes)), singleLoop(), queryLoop(), healthLoop()]
  await sleep(SECONDS * 1000 + 200)
  stop = true
  await Promise.all(loops)
  await sampler
  const finalRss = rssMiB(pid)
  const prom = await scrape(server.url)
  const wsLine = ['llmscope_ws_subscribers', 'llmscope_ws_messages_dropped_total', 'llmscope_ws_closed_slow_total', 'llmscope_ws_reaped_total'].map((n) => `${n} ${promValue(prom, n)}`).join(', ')
  for (const ws of sockets) ws.terminate()
  await server.stop()

  const head = ['t (s)', 'RSS / anon / file (MiB)', 'CPU %', 'acked ev/s', 'query p50 / p99 (ms)', '/health p50 / p99 / max (ms)', 'loop delay p99 / max (ms)', 'ws msgs', 'drop notices', 'errors']
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |'
  console.log()
  console.log([line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n'))
  const half = anon.slice(Math.floor(anon.length / 2))
  console.log()
  console.log(`server, at the end: ${wsLine}`)
  console.log(`events acked: ${totalAcked}; errors: ${totalErrors}; reading subscribers closed early: ${wsClosed}; stalled subscriber closed with: ${stalledClosedWith ?? 'still open'}`)
  console.log(`RSS MiB: first sample ${rss[0]?.toFixed(0)}, peak ${Math.max(...rss).toFixed(0)}, at the end ${finalRss.total.toFixed(0)} (anon ${finalRss.anon.toFixed(0)}, file ${finalRss.file.toFixed(0)})`)
  console.log(`RssAnon MiB: first sample ${anon[0]?.toFixed(0)}, peak ${Math.max(...anon).toFixed(0)}, second half min ${Math.min(...half).toFixed(0)} / max ${Math.max(...half).toFixed(0)}`)
}

main().catch(async (err: unknown) => {
  console.error(err)
  await running?.stop()
  process.exit(1)
})

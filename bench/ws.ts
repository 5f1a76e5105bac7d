/**
 * Question: with 100 WebSocket subscribers and 10,000 events/s offered, how long does an event
 * take from "the app sends it" to "every subscriber has it", is every event delivered, and what
 * does the fan-out cost the server in CPU?
 *
 * Three processes: LLMScope (startLLMScope), this one (the sender), and one subscriber process
 * holding all 100 connections, so neither the sender nor the receivers steal the server's event
 * loop (they do share the machine's cores: see the machine line).
 *
 * What exactly is measured, per (event, subscriber):
 *   t0 = CLOCK_MONOTONIC (`process.hrtime.bigint()`) in the sender just before the POST
 *        /events/batch that carries the event (50 events per request, a request every 5 ms);
 *   t1 = CLOCK_MONOTONIC in the subscriber process when the TCP chunk holding the event's
 *        WebSocket frame is handed to JavaScript.
 * t1 − t0 covers HTTP, validation, the LMDB group commit, pricing in the worker, the broadcaster
 * flush tick and the kernel. CLOCK_MONOTONIC is one clock for all processes on Linux; t0 travels
 * inside the event as `latency_ms` (ms since a base the sender picks, ns resolution), which the
 * WebSocket message carries unchanged. Only events sent inside the measured window count
 * (1 s of warm-up first), and the window's accepted events × 100 is the delivery target.
 *
 * The subscribers parse frames by hand (header, then `"latency_ms":` in the payload) instead of
 * with `ws`: at 1M messages/s, a full client library would measure itself, not the server.
 *
 * CPU: the server's user+system time (/proc/<pid>/stat) over the window, once with no
 * subscriber and once with 100, at the same offered load: the difference is the fan-out cost.
 * Three such A/B rounds on one server (this machine's speed drifts); medians are shown.
 *
 * Server stalls: its own event-loop delay over each live window (from its /metrics) and
 * whether a state snapshot (LLMSCOPE_SNAPSHOT_INTERVAL_S, default 30 s) fell in the window.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { request } from 'node:http'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Socket } from 'node:net'
import { BENCH_KEY, startLLMScope, type Row } from './lib.js'

/** 100 per the question; `BENCH_WS_SUBSCRIBERS` changes it for diagnosis. */
const SUBSCRIBERS = Number(process.env.BENCH_WS_SUBSCRIBERS ?? 100)
const RATE = 10_000
const BATCH = 50
const WARMUP_MS = 1000
/** Latency histogram: 10 µs bins up to 2 s, 1 ms bins up to 60 s, then one overflow bin. */
const FINE = 200_000
const COARSE = 58_000
const BINS = FINE + COARSE
const binOf = (ms: number) => (ms < 2000 ? Math.max(0, Math.floor(ms * 100)) : Math.min(BINS, FINE + Math.floor(ms - 2000)))
const valueOf = (bin: number) => (bin < FINE ? (bin + 0.5) / 100 : bin < BINS ? 2000 + (bin - FINE) + 0.5 : Infinity)

const ROLE_ENV = 'LLMSCOPE_BENCH_ROLE'
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Milliseconds since `base` on CLOCK_MONOTONIC, ns resolution. */
const since = (base: bigint) => Number(process.hrtime.bigint() - base) / 1e6

// ───────────────────────────── subscriber process ─────────────────────────────

type ToChild = { type: 'window'; from: number; to: number } | { type: 'count' } | { type: 'report' }
type FromChild =
  | { type: 'ready' }
  | { type: 'count'; frames: number }
  | { type: 'report'; received: number[]; hist: Array<[number, number]>; maxMs: number; notices: number; droppedByServer: number; cpuSeconds: number }

interface Sub {
  received: number
  pending: Buffer | null
}

async function subscriberMain(): Promise<void> {
  const url = new URL(process.env.LLMSCOPE_BENCH_URL!)
  const base = BigInt(process.env.LLMSCOPE_BENCH_BASE!)
  const count = Number(process.env.LLMSCOPE_BENCH_SUBSCRIBERS)
  const hist = new Uint32Array(BINS + 1)
  const subs: Sub[] = []
  let frames = 0
  let maxMs = 0
  let notices = 0
  let droppedByServer = 0
  // Events sent outside the measured window (warm-up, stragglers) are parsed but not recorded.
  let windowFrom = Infinity
  let windowTo = -Infinity
  let cpuAtWindow = process.cpuUsage()
  const KEY = Buffer.from('"latency_ms":')

  const onFrames = (sub: Sub, chunk: Buffer, now: number, socket: Socket) => {
    const buf = sub.pending === null ? chunk : Buffer.concat([sub.pending, chunk])
    let i = 0
    for (;;) {
      if (buf.length - i < 2) break
      const op = buf[i] & 0x0f
      let len = buf[i + 1] & 0x7f
      let head = 2
      if (len === 126) {
        if (buf.length - i < 4) break
        len = buf.readUInt16BE(i + 2)
        head = 4
      } else if (len === 127) {
        if (buf.length - i < 10) break
        len = buf.readUInt32BE(i + 2) * 2 ** 32 + buf.readUInt32BE(i + 6)
        head = 10
      }
      if (buf.length - i < head + len) break
      const start = i + head
      const end = start + len
      if (op === 0x1) {
        frames++
        const k = buf.indexOf(KEY, start)
        if (k !== -1 && k < end) {
          const sentAt = parseDecimal(buf, k + KEY.length)
          if (sentAt >= windowFrom && sentAt < windowTo) {
            sub.received++
            const ms = now - sentAt
            if (ms > maxMs) maxMs = ms
            hist[binOf(ms)]++
          }
        } else if (buf.indexOf('"dropped"', start) !== -1) {
          notices++
          const c = buf.indexOf('"count":', start)
          droppedByServer += parseDecimal(buf, c + 8)
        }
      } else if (op === 0x9) {
        // Ping: answer with a masked pong (mask key 0, so the payload goes as is).
        const payload = buf.subarray(start, end)
        socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | payload.length, 0, 0, 0, 0]), payload]))
      }
      i = end
    }
    sub.pending = i === buf.length ? null : Buffer.from(buf.subarray(i))
  }

  const connect = () =>
    new Promise<void>((resolve, reject) => {
      const req = request({
        host: url.hostname,
        port: url.port,
        path: '/ws',
        headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': randomBytes(16).toString('base64'), 'x-api-key': BENCH_KEY }
      })
      req.on('upgrade', (_res, socket: Socket, head: Buffer) => {
        const sub: Sub = { received: 0, pending: null }
        subs.push(sub)
        socket.setNoDelay(true)
        if (head.length > 0) onFrames(sub, head, since(base), socket)
        socket.on('data', (chunk: Buffer) => onFrames(sub, chunk, since(base), socket))
        socket.on('error', () => {})
        resolve()
      })
      req.on('response', (res) => reject(new Error(`subscribe refused: HTTP ${res.statusCode}`)))
      req.on('error', reject)
      req.end()
    })

  for (let i = 0; i < count; i++) await connect()
  process.send!({ type: 'ready' } satisfies FromChild)
  process.on('message', (m: ToChild) => {
    switch (m.type) {
      case 'window':
        windowFrom = m.from
        windowTo = m.to
        cpuAtWindow = process.cpuUsage()
        return
      case 'count':
        process.send!({ type: 'count', frames } satisfies FromChild)
        return
      case 'report': {
        const nonzero: Array<[number, number]> = []
        for (let b = 0; b <= BINS; b++) if (hist[b] !== 0) nonzero.push([b, hist[b]])
        const u = process.cpuUsage(cpuAtWindow)
        process.send!({ type: 'report', received: subs.map((s) => s.received), hist: nonzero, maxMs, notices, droppedByServer, cpuSeconds: (u.user + u.system) / 1e6 } satisfies FromChild)
      }
    }
  })
}

/** Parses a non-negative JSON number (digits, optional fraction) starting at `i`. */
function parseDecimal(buf: Buffer, i: number): number {
  let int = 0
  while (buf[i] >= 0x30 && buf[i] <= 0x39) int = int * 10 + (buf[i++] - 0x30)
  if (buf[i] !== 0x2e) return int
  i++
  let frac = 0
  let scale = 1
  while (buf[i] >= 0x30 && buf[i] <= 0x39) {
    frac = frac * 10 + (buf[i++] - 0x30)
    scale *= 10
  }
  return int + frac / scale
}

if (process.env[ROLE_ENV] === 'ws-subscribers') await subscriberMain()

// ───────────────────────────── sender (the bench) ─────────────────────────────

const MODELS = ['gpt-4o', 'claude-3-5-sonnet-20241022', 'gpt-4']

/** CPU seconds (user + system) of a process so far, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // After the command: state is field 3, utime 14 and stime 15 (1-based) → indexes 11 and 12.
  return (Number(fields[11]) + Number(fields[12])) / 100
}

interface Offered {
  /** Events accepted (202) whose request left inside the window. */
  accepted: number
  failed: number
  windowFrom: number
  windowTo: number
  cpu: number
  /** Time to the 202 (ms) of each request sent inside the window, sorted. */
  acks: number[]
}

/** The measured window of a run starting now: warm-up first. */
function windowOf(base: bigint, seconds: number) {
  const start = since(base)
  return { start, windowFrom: start + WARMUP_MS, windowTo: start + WARMUP_MS + seconds * 1000 }
}

/** Offers RATE events/s from `start` to `windowTo`; returns what was accepted inside the window. */
async function offer(url: string, base: bigint, seconds: number, pid: number, w: ReturnType<typeof windowOf>): Promise<Offered> {
  const interval = (BATCH / RATE) * 1000
  const { start, windowFrom, windowTo } = w
  const inflight = new Set<Promise<void>>()
  let accepted = 0
  let failed = 0
  const acks: number[] = []
  let cpuFrom = NaN
  let i = 0
  for (let k = 0; ; k++) {
    const due = start + k * interval
    if (due >= windowTo) break
    const wait = due - since(base)
    if (wait >= 1) await sleep(wait)
    if (Number.isNaN(cpuFrom) && due >= windowFrom) cpuFrom = cpuSeconds(pid)
    const sentAt = since(base)
    const events = []
    for (let n = 0; n < BATCH; n++, i++) {
      events.push({ model: MODELS[i % 3], prompt_tokens: 100 + (i % 900), completion_tokens: 50 + (i % 300), latency_ms: sentAt, metadata: { user: `u${i % 100}` } })
    }
    const inWindow = sentAt >= windowFrom && sentAt < windowTo
    const p = fetch(`${url}/events/batch`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': BENCH_KEY }, body: JSON.stringify(events) })
      .then(async (r) => {
        await r.arrayBuffer()
        if (!inWindow) return
        if (r.status === 202) {
          accepted += BATCH
          acks.push(since(base) - sentAt)
        } else {
          failed += BATCH
        }
      }, () => {
        if (inWindow) failed += BATCH
      })
      .finally(() => inflight.delete(p))
    inflight.add(p)
  }
  const cpu = (cpuSeconds(pid) - cpuFrom) / seconds
  await Promise.all(inflight)
  acks.sort((a, b) => a - b)
  return { accepted, failed, windowFrom, windowTo, cpu, acks }
}

function ask(child: ChildProcess, m: ToChild, want: FromChild['type']): Promise<FromChild> {
  return new Promise((resolve) => {
    const on = (r: FromChild) => {
      if (r.type !== want) return
      child.off('message', on)
      resolve(r)
    }
    child.on('message', on)
    child.send(m)
  })
}

/** The q-quantile of sorted values. */
const at = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN

/** The q-quantile of a sparse histogram (bins ascending), at its bin's middle. */
function percentile(hist: Array<[number, number]>, q: number): number {
  let total = 0
  for (const [, c] of hist) total += c
  let rank = Math.ceil(q * total)
  for (const [bin, c] of hist) {
    rank -= c
    if (rank <= 0) return valueOf(bin)
  }
  return NaN
}

/** The server's /metrics as name → value (unlabelled series only). */
async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const out = new Map<string, number>()
  for (const m of text.matchAll(/^([a-zA-Z0-9_:]+) (\S+)$/gm)) out.set(m[1], Number(m[2]))
  return out
}

/**
 * The server's own event-loop delay over the live window (prom-client's monitorEventLoopDelay
 * histogram, which every scrape resets: one scrape as the window opens, one after it), and
 * the snapshot written inside the window, if any: a stall on the server shows here whatever
 * the sender and subscriber processes do.
 */
interface LoopDelay {
  p99: number
  max: number
  snapshot: { ms: number; bytes: number } | null
}

interface Round {
  idle: Offered
  live: Offered
  report: Extract<FromChild, { type: 'report' }>
  loop: LoopDelay
}

/** One A/B pair on a running server: no subscriber, then SUBSCRIBERS in a fresh process. */
async function round(url: string, pid: number, base: bigint, seconds: number): Promise<Round> {
  const idle = await offer(url, base, seconds, pid, windowOf(base, seconds))
  const child = fork(fileURLToPath(import.meta.url), [], {
    env: { ...process.env, [ROLE_ENV]: 'ws-subscribers', LLMSCOPE_BENCH_URL: url, LLMSCOPE_BENCH_BASE: String(base), LLMSCOPE_BENCH_SUBSCRIBERS: String(SUBSCRIBERS) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('message', (m: FromChild) => (m.type === 'ready' ? resolve() : reject(new Error(`unexpected ${m.type}`))))
      child.once('exit', (code) => reject(new Error(`subscriber process exited with ${code}`)))
    })
    const w = windowOf(base, seconds)
    child.send({ type: 'window', from: w.windowFrom, to: w.windowTo } satisfies ToChild)
    const opened = sleep(w.windowFrom - since(base)).then(() => scrape(url))
    const live = await offer(url, base, seconds, pid, w)
    await opened
    const m = await scrape(url)
    const inWindow = (m.get('llmscope_snapshot_age_seconds') ?? Infinity) * 1000 <= since(base) - w.windowFrom
    const loop: LoopDelay = {
      p99: (m.get('nodejs_eventloop_lag_p99_seconds') ?? NaN) * 1000,
      max: (m.get('nodejs_eventloop_lag_max_seconds') ?? NaN) * 1000,
      snapshot: inWindow ? { ms: (m.get('llmscope_snapshot_duration_seconds') ?? NaN) * 1000, bytes: m.get('llmscope_snapshot_bytes') ?? NaN } : null
    }
    // Wait for delivery to finish: the frame count stops moving (bounded).
    let last = -1
    for (let i = 0; i < 60; i++) {
      await sleep(250)
      const r = (await ask(child, { type: 'count' }, 'count')) as Extract<FromChild, { type: 'count' }>
      if (r.frames === last) break
      last = r.frames
    }
    const report = (await ask(child, { type: 'report' }, 'report')) as Extract<FromChild, { type: 'report' }>
    return { idle, live, report, loop }
  } finally {
    child.kill('SIGKILL')
  }
}

const ROUNDS = 3
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

export async function run(seconds: number): Promise<Row[]> {
  const scope = await startLLMScope()
  const base = process.hrtime.bigint()
  try {
    const rounds: Round[] = []
    for (let i = 0; i < ROUNDS; i++) rounds.push(await round(scope.url, scope.proc.pid!, base, seconds))
    const metrics = await (await fetch(`${scope.url}/metrics`)).text()
    const metric = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN)

    const each = rounds.map(({ idle, live, report, loop }) => {
      const got = report.received.reduce((a, b) => a + b, 0)
      return {
        delivered: got / (live.accepted * SUBSCRIBERS),
        worst: Math.min(...report.received) / live.accepted,
        p50: percentile(report.hist, 0.5),
        p99: percentile(report.hist, 0.99),
        p999: percentile(report.hist, 0.999),
        max: report.maxMs,
        ack50: at(live.acks, 0.5),
        ack99: at(live.acks, 0.99),
        rate: live.accepted / seconds,
        cpuIdle: idle.cpu,
        cpuLive: live.cpu,
        subCpu: report.cpuSeconds / seconds,
        loopP99: loop.p99,
        loopMax: loop.max,
        refused: idle.failed + live.failed,
        notices: report.notices
      }
    })
    const m = (k: keyof (typeof each)[number]) => median(each.map((e) => e[k]))
    const all = (k: keyof (typeof each)[number], digits = 1) => each.map((e) => e[k].toFixed(digits)).join(' / ')
    const tag = `median of ${ROUNDS} rounds`
    return [
      { bench: 'ws', metric: `delivered to ${SUBSCRIBERS} subscribers`, value: 100 * Math.min(...each.map((e) => e.delivered)), unit: '%', goal: '100', note: `worst round; worst socket ${(100 * Math.min(...each.map((e) => e.worst))).toFixed(2)}%; ${each.reduce((a, e) => a + e.notices, 0)} drop notices, ${metric('llmscope_ws_messages_dropped_total')} dropped` },
      { bench: 'ws', metric: 'offered → accepted', value: m('rate'), unit: 'ev/s', note: `${tag}; ${each.reduce((a, e) => a + e.refused, 0)} events refused` },
      { bench: 'ws', metric: 'ingest → WS latency p50', value: m('p50'), unit: 'ms', note: `${tag}; rounds ${all('p50')}` },
      { bench: 'ws', metric: 'ingest → WS latency p99', value: m('p99'), unit: 'ms', note: `rounds ${all('p99')}; p99.9 ${all('p999')}; max ${all('max')}` },
      { bench: 'ws', metric: 'same load: POST → 202 p50', value: m('ack50'), unit: 'ms', note: `p99 ${all('ack99')} (part of the WS latency)` },
      {
        bench: 'ws',
        metric: 'server event-loop delay p99 (live window)',
        value: m('loopP99'),
        unit: 'ms',
        note: `rounds ${all('loopP99')}; max ${all('loopMax')}; snapshots in window: ${rounds.map((r, i) => (r.loop.snapshot === null ? null : `round ${i + 1} (${r.loop.snapshot.ms.toFixed(0)} ms, ${(r.loop.snapshot.bytes / 1e6).toFixed(1)} MB)`)).filter((x) => x !== null).join(', ') || 'none'}`
      },
      { bench: 'ws', metric: `server CPU, ${SUBSCRIBERS} subscribers`, value: m('cpuLive'), unit: 'cores', baseline: m('cpuIdle'), ratio: m('cpuLive') / m('cpuIdle'), note: `baseline: same load, no subscriber; ${tag}` },
      { bench: 'ws', metric: 'fan-out cost (difference)', value: m('cpuLive') - m('cpuIdle'), unit: 'cores', goal: '< 1', note: `subscriber process (the load side) ${m('subCpu').toFixed(2)} cores` }
    ]
  } finally {
    await scope.stop()
  }
}

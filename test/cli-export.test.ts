/**
 * Moving events between two servers with the CLI (README: Export and import): events ingested
 * into server A are exported (`llmscope export`, a real `node dist/main.js` process, and the
 * command function in-process) and imported into server B (`llmscope import`); every analytics
 * figure of B then equals A's. Importing the same file again changes nothing (ids). An import
 * interrupted midway — a server whose answer is lost and that then fails, or the process
 * killed with SIGKILL — resumed with --resume, completes exactly. The CSV export parses back
 * to the same events.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import { makeApp, adminHeaders, ADMIN_KEY, READ_KEY, INGEST_KEY, type TestApp } from './helpers/app.js'
import { ENTRY, FILE_TIMEOUT_MS, START_TIMEOUT_MS } from './helpers/server.js'
import { exportCommand } from '../src/cli/export.js'
import { importCommand, readState, STATE_SUFFIX } from '../src/cli/import.js'
import type { CliIO } from '../src/cli/common.js'

t.setTimeout(FILE_TIMEOUT_MS)

const BASE = Date.parse('2026-11-02T00:00:00.000Z')
const RANGE = 'start_time=2026-11-01T00:00:00Z&end_time=2026-11-04T00:00:00Z'
const N = 1500

/** The events of server A: models priced and not, caller costs, errors, every dimension. */
function fixture(): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = []
  for (let i = 0; i < N; i++) {
    const e: Record<string, unknown> = {
      // ~16 hours, some events sharing a millisecond.
      timestamp: new Date(BASE + Math.floor(i / 2) * 77_000 + (i % 2) * (i % 3)).toISOString(),
      model: ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022', 'house-model-x'][i % 4],
      prompt_tokens: 100 + ((i * 7919) % 3000),
      completion_tokens: (i * 104_729) % 800,
      latency_ms: 40 + ((i * 31) % 4000) + (i % 3 === 0 ? 0.25 : 0)
    }
    if (i % 6 === 0) e.cached_tokens = 50
    if (i % 9 === 0) e.ttft_ms = 30
    if (i % 13 === 0) e.status = 'error'
    if (i % 17 === 0) e.cost = 0.0123
    if (i % 11 !== 0) e.user_id = `u_${i % 7}`
    if (i % 3 !== 0) e.session_id = `s_${i % 23}`
    e.tags = i % 5 === 0 ? ['batch'] : ['prod', i % 2 === 1 ? 'chat' : 'search']
    if (i % 4 !== 3) e.metadata = { feature: ['chat', 'search', 'report'][i % 3], plan: i % 4 === 0 ? 'free' : 'pro', nested: { i } }
    out.push(e)
  }
  return out
}

/** An app listening on 127.0.0.1 (a free port); its URL. */
async function serve(t: Test): Promise<{ app: TestApp; url: string }> {
  const app = await makeApp(t, { inlinePricing: true })
  const url = await app.app.listen({ port: 0, host: '127.0.0.1' })
  return { app, url }
}

async function ingest(a: TestApp, events: Array<Record<string, unknown>>): Promise<void> {
  for (let i = 0; i < events.length; i += 500) {
    const r = await a.app.inject({ method: 'POST', url: '/events/batch', headers: adminHeaders, payload: events.slice(i, i + 500) })
    if (r.statusCode !== 202) throw new Error(`ingest: ${r.statusCode} ${r.body}`)
  }
}

/** Every analytics answer the comparison covers. */
const FIGURES = [
  `/analytics/metrics?${RANGE}`,
  `/analytics/costs?${RANGE}`,
  `/analytics/timeseries?interval=1h&${RANGE}`,
  `/analytics/breakdown?by=user_id&limit=1000&${RANGE}`,
  `/analytics/breakdown?by=tag&${RANGE}`,
  `/analytics/breakdown?by=metadata.feature&sort=requests&${RANGE}`,
  `/analytics/breakdown?by=model&${RANGE}`,
  `/analytics/metrics?user_id=u_3&status=error&${RANGE}`,
  `/analytics/metrics?metadata.plan=free&tag=prod&${RANGE}`
]

async function figures(a: TestApp): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  for (const url of FIGURES) {
    const r = await a.app.inject({ method: 'GET', url, headers: adminHeaders })
    if (r.statusCode !== 200) throw new Error(`${url}: ${r.statusCode} ${r.body}`)
    out[url] = r.json()
  }
  const p = await a.app.inject({ method: 'GET', url: '/projects/default', headers: adminHeaders })
  out.events = (p.json() as { events: number }).events
  return out
}

/** A `node dist/main.js …` process, its exit code and output. */
function cli(args: string[], env: Record<string, string> = {}): { done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>; kill: () => void } {
  const proc = spawn(process.execPath, [ENTRY, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const timer = setTimeout(() => proc.kill('SIGKILL'), START_TIMEOUT_MS)
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    proc.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  )
  return { done, kill: () => proc.kill('SIGKILL') }
}

class Sink extends Writable {
  text = ''
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString()
    cb()
  }
}

/** In-process streams for the command functions. */
function io(env: Record<string, string> = {}) {
  const stdin = new PassThrough()
  stdin.end()
  return { stdin, stdout: new Sink(), stderr: new Sink(), env } satisfies CliIO
}

/**
 * A proxy in front of `target` for POST /events/batch: `decide(n)` for the n-th batch says
 * whether it passes, reaches the server but loses its answer (the socket is cut after the
 * server took it), or fails with 503 without reaching the server. `delayMs` slows each answer.
 */
async function proxy(t: Test, target: string, decide: (n: number) => 'pass' | 'lose-answer' | 'fail', delayMs = 0): Promise<{ url: string; batches: () => number; settled: () => Promise<boolean> }> {
  let n = 0
  /** Requests passed on to `target` whose answer has not come back yet. */
  let forwarding = 0
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', async () => {
      const what = decide(++n)
      if (what === 'fail') {
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '0' })
        res.end(JSON.stringify({ statusCode: 503, error: 'Service Unavailable', code: 'LLMS_ERR_UNAVAILABLE', message: 'the proxy is failing on purpose' }))
        return
      }
      const headers: Record<string, string> = {}
      for (const h of ['content-type', 'x-api-key', 'x-llmscope-project']) if (typeof req.headers[h] === 'string') headers[h] = req.headers[h] as string
      forwarding++
      let answer: Response
      let text: string
      try {
        answer = await fetch(target + (req.url ?? '/'), { method: req.method, headers, body: req.method === 'GET' ? undefined : Buffer.concat(chunks) })
        text = await answer.text()
      } finally {
        forwarding--
      }
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs))
      if (what === 'lose-answer') {
        res.socket?.destroy()
        return
      }
      res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' })
      res.end(text)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    batches: () => n,
    // No client connected and nothing on its way to the target: the target holds all it will get.
    settled: () => new Promise<boolean>((resolve, reject) => server.getConnections((err, count) => (err ? reject(err) : resolve(count === 0 && forwarding === 0))))
  }
}

/** RFC 4180 rows (quoted fields with commas, quotes and newlines; CRLF or LF). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = []
  let row: string[] = []
  let field = ''
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"'
        i++
      } else if (c === '"') quoted = false
      else field += c
    } else if (c === '"') quoted = true
    else if (c === ',') {
      row.push(field)
      field = ''
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++
      row.push(field)
      rows.push(row)
      row = []
      field = ''
    } else field += c
  }
  if (field !== '' || row.length > 0) {
    row.push(field)
    rows.push(row)
  }
  return rows
}

const parseLines = (text: string) => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>)

/** An event as analytics sees it: without what the server that stored it made. */
const content = (e: Record<string, unknown>) => {
  const { id: _id, seq: _seq, received_at: _r, client_id: _c, ...rest } = e
  return rest
}

t.test('export from A, import into B: every figure equal; the same file again changes nothing', async (t) => {
  const A = await serve(t)
  const B = await serve(t)
  await ingest(A.app, fixture())
  const dir = t.testdir()
  const file = join(dir, 'a.ndjson')

  // A real process, as a user runs it; the key from the environment.
  const ex = await cli(['export', '--url', A.url, '-o', file], { LLMSCOPE_API_KEY: READ_KEY }).done
  t.equal(ex.code, 0, ex.stderr)
  t.equal(ex.stdout, '')
  t.match(ex.stderr, new RegExp(`^exported ${N.toLocaleString('en-US')} events \\([\\d.]+ [kM]B\\) to .*a\\.ndjson in \\d+\\.\\d s\\n$`))
  t.notOk(existsSync(`${file}.part`))
  const exported = parseLines(readFileSync(file, 'utf8'))
  t.equal(exported.length, N)
  t.equal(new Set(exported.map((e) => e.id)).size, N, 'every event once')
  const times = exported.map((e) => Date.parse(e.timestamp as string))
  t.ok(times.every((x, i) => i === 0 || x <= times[i - 1]), 'newest first')

  const before = await figures(A.app)
  const o = io({ LLMSCOPE_URL: B.url, LLMSCOPE_API_KEY: INGEST_KEY })
  t.equal(await importCommand(['--batch-size', '400', file], o), 0, o.stderr.text)
  t.match(o.stderr.text, new RegExp(`^imported ${N.toLocaleString('en-US')} events from .*a\\.ndjson in 4 batches, .*: ${N.toLocaleString('en-US')} new, 0 already there\\n$`))
  t.notOk(existsSync(`${file}${STATE_SUFFIX}`))
  t.same(await figures(B.app), before, "B's figures are A's")

  const again = io({ LLMSCOPE_URL: B.url, LLMSCOPE_API_KEY: INGEST_KEY })
  t.equal(await importCommand([file], again), 0, again.stderr.text)
  t.match(again.stderr.text, new RegExp(`: 0 new, ${N.toLocaleString('en-US')} already there\\n$`))
  t.same(await figures(B.app), before, 'importing the same file twice changes nothing')

  // B's events are A's: every field but those B made itself; B keeps A's id as client_id.
  const fromB = io({ LLMSCOPE_API_KEY: READ_KEY })
  t.equal(await exportCommand(['--url', B.url], fromB), 0, fromB.stderr.text)
  const bEvents = parseLines(fromB.stdout.text)
  t.equal(bEvents.length, N)
  const byClientId = new Map(bEvents.map((e) => [e.client_id, e]))
  t.same(exported.map((a) => content(byClientId.get(a.id) ?? {})), exported.map(content), "every event of A is in B under A's id, field for field")

  // Filters and sort reach the server: u_3's events, slowest first, to stdout.
  const slow = await cli(['export', '--url', A.url, '--key', READ_KEY, '--user', 'u_3', '--sort', 'latency', '--metadata.plan', 'pro', '-q']).done
  t.equal(slow.code, 0, slow.stderr)
  t.equal(slow.stderr, '', '-q: no summary')
  const u3 = parseLines(slow.stdout)
  const expected = fixture().filter((e) => e.user_id === 'u_3' && (e.metadata as { plan?: string } | undefined)?.plan === 'pro').length
  t.equal(u3.length, expected)
  t.ok(u3.every((e) => e.user_id === 'u_3' && (e.metadata as { plan: string }).plan === 'pro'))
  t.ok(u3.every((e, i) => i === 0 || (e.latency_ms as number) <= (u3[i - 1].latency_ms as number)), 'slowest first')

  // A refusal is the server's message, exit 1.
  const bad = await cli(['export', '--url', A.url, '--key', 'not-a-key-000', '-o', join(dir, 'never.ndjson')]).done
  t.equal(bad.code, 1)
  t.equal(bad.stderr, 'llmscope export: the server refused the export: HTTP 401 LLMS_ERR_UNAUTHORIZED: invalid API key\n')
  t.notOk(existsSync(join(dir, 'never.ndjson')) || existsSync(join(dir, 'never.ndjson.part')))
  const help = await cli(['import', '--help']).done
  t.equal(help.code, 0)
  t.match(help.stdout, /^Usage: llmscope import/)
})

t.test('an import whose answer is lost and whose server then fails, resumed, completes exactly', async (t) => {
  const A = await serve(t)
  const C = await serve(t)
  await ingest(A.app, fixture())
  const dir = t.testdir()
  const file = join(dir, 'a.ndjson')
  const o = io({ LLMSCOPE_API_KEY: ADMIN_KEY })
  t.equal(await exportCommand(['--url', A.url, '-o', file], o), 0, o.stderr.text)

  // Batches 1-3 pass; batch 4 reaches C but its answer is lost; then every request fails.
  const p = await proxy(t, C.url, (n) => (n <= 3 ? 'pass' : n === 4 ? 'lose-answer' : 'fail'))
  const first = io({ LLMSCOPE_API_KEY: ADMIN_KEY })
  t.equal(await importCommand(['--url', p.url, '--batch-size', '200', '--max-retries', '2', file], { ...first, sleep: async () => {} }), 1)
  t.match(first.stderr.text, /^llmscope import: HTTP 503 LLMS_ERR_UNAVAILABLE: the proxy is failing on purpose \(gave up after 2 retries of lines 601 to 800\)\n\(the server acknowledged lines 1 to 600; `llmscope import --resume` with the same input continues after them\)\n$/)
  t.equal(p.batches(), 6)
  t.match(readState(`${file}${STATE_SUFFIX}`), { line: 600, events: 600 })
  t.equal((await figures(C.app)).events, 800, 'C took the batch whose answer was lost')

  const resumed = io({ LLMSCOPE_API_KEY: ADMIN_KEY })
  t.equal(await importCommand(['--url', C.url, '--batch-size', '200', '--resume', file], resumed), 0, resumed.stderr.text)
  t.match(resumed.stderr.text, /^imported 900 events from .* in 5 batches, .*: 700 new, 200 already there; resumed after line 600\n$/)
  t.notOk(existsSync(`${file}${STATE_SUFFIX}`))
  t.same(await figures(C.app), await figures(A.app), "C's figures are A's: nothing lost, nothing twice")
})

t.test('an import killed with SIGKILL midway, resumed, completes exactly', async (t) => {
  const A = await serve(t)
  const D = await serve(t)
  await ingest(A.app, fixture())
  const dir = t.testdir()
  const file = join(dir, 'a.ndjson')
  const o = io({ LLMSCOPE_API_KEY: ADMIN_KEY })
  t.equal(await exportCommand(['--url', A.url, '-o', file], o), 0, o.stderr.text)
  const state = `${file}${STATE_SUFFIX}`

  // Slow answers, so that the process is still sending when it is killed.
  const p = await proxy(t, D.url, () => 'pass', 40)
  const run = cli(['import', '--url', p.url, '--key', ADMIN_KEY, '--batch-size', '50', file])
  const deadline = Date.now() + START_TIMEOUT_MS
  let acknowledged = 0
  while (Date.now() < deadline) {
    acknowledged = existsSync(state) ? (() => { try { return readState(state).line } catch { return 0 } })() : 0
    if (acknowledged >= 300) break
    await new Promise((r) => setTimeout(r, 10))
  }
  run.kill()
  const killed = await run.done
  t.equal(killed.signal, 'SIGKILL', `killed after ${acknowledged} lines were acknowledged (${killed.stderr})`)
  // A batch the proxy was passing on when the importer died still reaches D: counted once it has.
  while (!(await p.settled())) {
    if (Date.now() > deadline) throw new Error('the proxy still passes a batch on')
    await new Promise((r) => setTimeout(r, 10))
  }
  const kept = readState(state)
  t.ok(kept.line >= 300 && kept.line < N, `the state file says ${kept.line}`)
  t.equal(kept.line % 50, 0, 'at the end of a batch')
  const partial = (await figures(D.app)).events as number
  t.ok(partial >= kept.line && partial < N, `D holds ${partial} events`)

  const resumed = await cli(['import', '--url', D.url, '--key', ADMIN_KEY, '--resume', file]).done
  t.equal(resumed.code, 0, resumed.stderr)
  t.match(resumed.stderr, new RegExp(`: ${(N - partial).toLocaleString('en-US')} new, ${(partial - kept.line).toLocaleString('en-US')} already there; resumed after line ${kept.line.toLocaleString('en-US')}\\n$`))
  t.notOk(existsSync(state))
  t.same(await figures(D.app), await figures(A.app), "D's figures are A's")
})

t.test('CSV export: a header of EVENT fields, and rows that parse back to the NDJSON events', async (t) => {
  const A = await serve(t)
  const events = fixture().slice(0, 300)
  // Values CSV must quote: commas, quotes, newlines.
  events[0].metadata = { note: 'a, "quoted"\nline', n: 1 }
  events[1].user_id = 'user,with,commas'
  events[2].tags = ['tag "q"', 'x']
  await ingest(A.app, events)
  const dir = t.testdir()
  const o = io({ LLMSCOPE_API_KEY: READ_KEY })
  t.equal(await exportCommand(['--url', A.url, '-o', join(dir, 'a.csv')], o), 0, o.stderr.text)
  t.match(o.stderr.text, /^exported 300 rows /)
  const o2 = io({ LLMSCOPE_API_KEY: READ_KEY })
  t.equal(await exportCommand(['--url', A.url, '-o', join(dir, 'a.ndjson')], o2), 0, o2.stderr.text)
  const rows = parseCsv(readFileSync(join(dir, 'a.csv'), 'utf8'))
  const json = parseLines(readFileSync(join(dir, 'a.ndjson'), 'utf8'))
  const header = rows[0]
  t.same(header, Object.keys(json[0]), 'the header is EVENT\'s fields')
  t.equal(rows.length - 1, json.length)
  // Each row read back with the type its NDJSON value has: the same event.
  const back = json.map((e, i) => {
    const row = Object.fromEntries(header.map((h, k) => [h, rows[i + 1][k]]))
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(e)) {
      const cell = row[k]
      if (v === null) out[k] = cell === '' ? null : cell
      else if (typeof v === 'object') out[k] = JSON.parse(cell)
      else if (typeof v === 'number') out[k] = Number(cell)
      else if (typeof v === 'boolean') out[k] = cell === 'true'
      else out[k] = cell
    }
    return out
  })
  t.same(back, json, 'every row is its event')
  t.ok(json.some((e) => (e.metadata as { note?: string } | null)?.note === 'a, "quoted"\nline'), 'the awkward values are in the export')

  // No match: the header alone.
  const none = io({ LLMSCOPE_API_KEY: READ_KEY })
  t.equal(await exportCommand(['--url', A.url, '--user', 'nobody', '--format', 'csv'], none), 0, none.stderr.text)
  t.equal(none.stdout.text.trim(), header.join(','))
  t.match(none.stderr.text, /^exported 0 rows /)
})

/**
 * `llmscope import` and `llmscope export` against a scripted HTTP server (no LLMScope behind
 * it): batching by count and bytes, ids, retries and their backoff, 413 halving, a refused or
 * unreadable line (stop, or skip with --skip-invalid), the --resume state file, stdin, the
 * progress line, and export's failures (refusal, broken stream, wrong content type, -O).
 * test/cli-export.test.ts runs both commands between two real servers.
 */
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PassThrough, Writable } from 'node:stream'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { importCommand, importPlan, derivedId, refusedIndex, readState, STATE_SUFFIX, IMPORT_USAGE } from '../src/cli/import.js'
import { exportCommand, exportPlan, suggestedName, EXPORT_USAGE } from '../src/cli/export.js'
import { parseFlags, connection, describeRefusal, bytes, ProgressLine, UsageError, type CliIO } from '../src/cli/common.js'

interface Req {
  url: string
  headers: IncomingMessage['headers']
  body: string
}
type Handler = (req: Req, res: ServerResponse, n: number) => void

/** An HTTP server on 127.0.0.1:0 answering with `handler`; every request is recorded. */
async function stub(t: Test, handler: Handler): Promise<{ url: string; requests: Req[] }> {
  const requests: Req[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const r = { url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') }
      requests.push(r)
      handler(r, res, requests.length)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  t.teardown(() => server.closeAllConnections())
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests }
}

/** Answers a batch as the server does: 202 with the count, and `duplicates` when told. */
function accept(res: ServerResponse, body: string, duplicates = 0): void {
  const n = body.split('\n').filter((l) => l.trim() !== '').length
  res.writeHead(202, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ status: 'accepted', accepted: n, event_ids: Array.from({ length: n }, (_, i) => `evt_${i}_x`), duplicates }))
}

function refuse(res: ServerResponse, status: number, body: object, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers })
  res.end(JSON.stringify(body))
}

class Sink extends Writable {
  text = ''
  isTTY?: boolean
  columns?: number
  constructor(tty = false) {
    super()
    if (tty) {
      this.isTTY = true
      this.columns = 1000
    }
  }
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString()
    cb()
  }
}

/** The streams and environment of one in-process run; `waits` records every backoff wait. */
function io(opts: { stdin?: string | PassThrough; tty?: boolean; env?: Record<string, string> } = {}) {
  const stdin = typeof opts.stdin === 'string' || opts.stdin === undefined ? new PassThrough() : opts.stdin
  if (typeof opts.stdin === 'string') stdin.end(opts.stdin)
  else if (opts.stdin === undefined) stdin.end()
  const waits: number[] = []
  const out = { stdin, stdout: new Sink(), stderr: new Sink(opts.tty), env: { LLMSCOPE_API_KEY: 'k-test-0001', ...opts.env }, sleep: async (ms: number) => void waits.push(ms) }
  return { io: out as CliIO & typeof out, waits }
}

const line = (i: number, extra: Record<string, unknown> = {}) => JSON.stringify({ timestamp: '2026-11-02T09:00:00Z', model: 'gpt-4', prompt_tokens: i, ...extra })
const lines = (from: number, to: number, extra: Record<string, unknown> = {}) => Array.from({ length: to - from + 1 }, (_, k) => line(from + k, extra))
const sentLines = (requests: Req[]) => requests.flatMap((r) => r.body.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>))

t.test('flags: usage errors exit 2 with one reason, --help prints the usage', async (t) => {
  const bad: Array<[string[], RegExp, Record<string, string>?]> = [
    [['a.ndjson', 'b.ndjson'], /one input at most/],
    [['--resume'], /--resume with stdin needs --state/],
    [['--batch-size', '10001', 'f'], /--batch-size: "10001" is not an integer from 1 to 10000/],
    [['--batch-size', '1.5', 'f'], /--batch-size/],
    [['--frobnicate', 'f'], /--frobnicate is not a known flag/],
    [['--url'], /--url needs a value/],
    [['--resume=yes', 'f'], /--resume takes no value/],
    [['--url', 'ftp://x', 'f'], /not an http or https URL/],
    [['--url', 'not a url', 'f'], /is not a URL/],
    [['--url', 'http://h/?a=1', 'f'], /must not carry a query/],
    [['--project', 'Bad Name', 'f'], /is not a project id/],
    [['f'], /no API key/, {}],
    [['--key', 'k1', '--key', 'k2', 'f'], /--key is given twice/]
  ]
  for (const [argv, re, env] of bad) {
    const { io: o } = io()
    if (env !== undefined) (o as CliIO).env = env
    t.equal(await importCommand(argv, o), 2, argv.join(' '))
    t.match(o.stderr.text, re)
    t.match(o.stderr.text, /llmscope import --help lists the options/)
  }
  const { io: tty } = io()
  tty.stdin.isTTY = true
  t.equal(await importCommand([], tty), 2)
  t.match(tty.stderr.text, /no input: give a FILE, or pipe NDJSON to stdin/)
  const { io: h } = io()
  t.equal(await importCommand(['--help'], h), 0)
  t.equal(h.stdout.text, IMPORT_USAGE)
  t.equal(h.stderr.text, '')

  const plan = importPlan(['--url', 'http://h:1/base/', '--project', 'search', '--batch-size=50', 'x.ndjson'], { LLMSCOPE_KEY: 'readme-key' })
  t.match(plan, { conn: { url: 'http://h:1/base', key: 'readme-key', project: 'search' }, input: 'x.ndjson', statePath: `x.ndjson${STATE_SUFFIX}`, batchSize: 50, ids: true, resume: false })
  t.match(importPlan(['--state', 's.json', '--resume', '-'], { LLMSCOPE_API_KEY: 'k' }), { input: null, statePath: 's.json', resume: true })
  t.equal(connection(new Map(), { LLMSCOPE_API_KEY: 'a', LLMSCOPE_KEY: 'b', LLMSCOPE_URL: 'https://x.example' }).key, 'a', 'LLMSCOPE_API_KEY before LLMSCOPE_KEY')
  t.equal(connection(new Map(), { LLMSCOPE_KEY: 'b' }).url, 'http://127.0.0.1:3000')
  t.same(parseFlags(['--', '--not-a-flag'], { values: {}, switches: {} }).positionals, ['--not-a-flag'])
  t.throws(() => parseFlags(['--filter', 'nope'], { values: {}, switches: {}, filters: true }), UsageError)
  t.throws(() => parseFlags(['--filter', 'color=red'], { values: {}, switches: {}, filters: true }), /not a filter/)
  t.throws(() => parseFlags(['--metadata.a', '1', '--filter', 'metadata.a=2'], { values: {}, switches: {}, filters: true }), /given twice/)
})

t.test('batches: by count and by bytes, NDJSON with the key and project, every line once and in order', async (t) => {
  const s = await stub(t, (r, res) => accept(res, r.body))
  const dir = t.testdir({ 'in.ndjson': lines(1, 25).join('\n') + '\n' })
  const { io: o } = io()
  t.equal(await importCommand(['--url', s.url, '--project', 'search', '--batch-size', '10', join(dir, 'in.ndjson')], o), 0, o.stderr.text)
  t.same(s.requests.map((r) => r.body.split('\n').filter(Boolean).length), [10, 10, 5])
  for (const r of s.requests) {
    t.equal(r.url, '/events/batch')
    t.equal(r.headers['content-type'], 'application/x-ndjson')
    t.equal(r.headers['x-api-key'], 'k-test-0001')
    t.equal(r.headers['x-llmscope-project'], 'search')
  }
  t.same(sentLines(s.requests).map((e) => e.prompt_tokens), Array.from({ length: 25 }, (_, i) => i + 1))
  t.match(o.stderr.text, /^imported 25 events from .*in\.ndjson in 3 batches, \d+\.\d s \([\d,]+ events\/s\): 25 new, 0 already there\n$/)
  t.equal(o.stdout.text, '')
  t.notOk(existsSync(join(dir, `in.ndjson${STATE_SUFFIX}`)), 'the state file is removed once complete')

  // 1 KiB batches: every body within the bound, nothing lost; a last line without a newline counts.
  const b = await stub(t, (r, res) => accept(res, r.body))
  const big = lines(1, 40, { metadata: { pad: 'x'.repeat(150) } })
  writeFileSync(join(dir, 'big.ndjson'), big.join('\n'))
  const { io: o2 } = io()
  t.equal(await importCommand(['--url', b.url, '--batch-bytes', '1024', '--quiet', join(dir, 'big.ndjson')], o2), 0, o2.stderr.text)
  t.ok(b.requests.length >= 8, `${b.requests.length} requests`)
  for (const r of b.requests) t.ok(Buffer.byteLength(r.body) <= 1024, `a body of ${Buffer.byteLength(r.body)} bytes`)
  t.same(sentLines(b.requests).map((e) => e.prompt_tokens), Array.from({ length: 40 }, (_, i) => i + 1))
  t.equal(o2.stderr.text, '', '--quiet prints nothing')
})

t.test('ids: a line without one gets a stable one derived from the line; ids and client_ids are kept; --no-ids sends lines as they are', async (t) => {
  const s = await stub(t, (r, res) => accept(res, r.body))
  const input = [line(1), line(2, { id: 'mine-2' }), line(3, { client_id: 'c-3', id: 'evt_9_abc' }), '', '  ' + line(1) + '  \r', line(5, { client_id: null, id: 'evt_a_def' })]
  const dir = t.testdir({ 'in.ndjson': input.join('\n') + '\n' })
  const file = join(dir, 'in.ndjson')
  const { io: o1 } = io()
  t.equal(await importCommand(['--url', s.url, file], o1), 0, o1.stderr.text)
  const first = sentLines(s.requests)
  t.equal(first.length, 5, 'the blank line is not an event')
  t.equal(first[0].id, derivedId(1, Buffer.from(line(1))))
  t.match(first[0].id, /^imp-[A-Za-z0-9_-]{22}-1$/)
  t.same(first[1], JSON.parse(input[1]), 'an id is kept')
  t.same(first[2], JSON.parse(input[2]), 'a client_id is kept (and the EVENT id beside it)')
  t.equal(first[3].id, derivedId(5, Buffer.from(line(1))), 'the same event on another line is another event')
  t.not(first[3].id, first[0].id)
  t.same(first[4], JSON.parse(input[5]), 'an EVENT without client_id keeps its id')
  t.equal(s.requests[0].body.split('\n')[1], input[1], 'lines with an id go out byte for byte')

  const { io: o2 } = io()
  t.equal(await importCommand(['--url', s.url, file], o2), 0)
  t.same(sentLines(s.requests.slice(1)), first, 'a second import sends the same ids')

  const { io: o3 } = io()
  t.equal(await importCommand(['--url', s.url, '--no-ids', file], o3), 0)
  t.same(sentLines(s.requests.slice(2))[0], JSON.parse(line(1)), '--no-ids: as written')
  t.ok(/^[A-Za-z0-9_-]{1,64}$/.test(derivedId(123_456_789, Buffer.from('x'))), 'within the 1–64 id alphabet')
})

t.test('retries: 429/503 honour Retry-After, 5xx and network errors back off, a batch is resent whole; duplicates are counted', async (t) => {
  const s = await stub(t, (r, res, n) => {
    if (n === 1) return refuse(res, 503, { statusCode: 503, code: 'LLMS_ERR_OVERLOADED', message: 'busy' }, { 'retry-after': '2' })
    if (n === 2) return res.socket!.destroy() // the answer is lost
    if (n === 3) return refuse(res, 429, { statusCode: 429, message: 'slow down' })
    accept(res, r.body, 4)
  })
  const dir = t.testdir({ 'in.ndjson': lines(1, 6).join('\n') + '\n' })
  const { io: o, waits } = io()
  t.equal(await importCommand(['--url', s.url, join(dir, 'in.ndjson')], o), 0, o.stderr.text)
  t.equal(s.requests.length, 4)
  t.ok(s.requests.every((r) => r.body === s.requests[0].body), 'the same batch each time')
  t.equal(waits.length, 3)
  t.ok(waits[0] >= 2000 && waits[0] <= 2200, `Retry-After 2 → ${waits[0]} ms`)
  t.ok(waits[1] <= 1000 && waits[2] <= 2000, `full jitter: ${waits.slice(1)}`)
  t.match(o.stderr.text, /imported 6 events .*: 2 new, 4 already there; 3 retries\n$/)

  // Past --max-retries: exit 1 with the server's message; what was acknowledged is resumable.
  const f = await stub(t, (r, res, n) => (n === 1 ? accept(res, r.body) : refuse(res, 503, { statusCode: 503, code: 'LLMS_ERR_OVERLOADED', message: 'the pipeline is full' })))
  const { io: o2, waits: w2 } = io()
  t.equal(await importCommand(['--url', f.url, '--batch-size', '4', '--max-retries', '2', join(dir, 'in.ndjson')], o2), 1)
  t.equal(w2.length, 2)
  t.match(o2.stderr.text, /^llmscope import: HTTP 503 LLMS_ERR_OVERLOADED: the pipeline is full \(gave up after 2 retries of lines 5 to 6\)\n\(the server acknowledged lines 1 to 4; `llmscope import --resume` with the same input continues after them\)\n$/)
  t.match(readState(join(dir, `in.ndjson${STATE_SUFFIX}`)), { offset: Buffer.byteLength(lines(1, 4).join('\n') + '\n'), line: 4, events: 4 })

  // Nobody listening: a network failure, retried, then one line.
  const closed = createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const deadPort = (closed.address() as AddressInfo).port
  await new Promise<void>((resolve) => closed.close(() => resolve()))
  const { io: o3 } = io()
  t.equal(await importCommand(['--url', `http://127.0.0.1:${deadPort}`, '--max-retries', '1', '--state', join(dir, 'other.state'), '-'], { ...o3, stdin: (() => { const p = new PassThrough(); p.end(line(1) + '\n'); return p })() }), 1)
  t.match(o3.stderr.text, /^llmscope import: cannot reach http:\/\/127\.0\.0\.1:\d+: fetch failed: ECONNREFUSED \(gave up after 1 retry of lines 1 to 1\)\n$/)

  // A refusal that is not worth retrying: at once.
  const u = await stub(t, (_r, res) => refuse(res, 401, { statusCode: 401, code: 'LLMS_ERR_UNAUTHORIZED', message: 'invalid API key' }))
  const { io: o4, waits: w4 } = io()
  t.equal(await importCommand(['--url', u.url, join(dir, 'in.ndjson')], o4), 1)
  t.equal(w4.length, 0)
  t.match(o4.stderr.text, /llmscope import: the server refused the import: HTTP 401 LLMS_ERR_UNAUTHORIZED: invalid API key\n/)
})

t.test('413: the batch is halved (and later batches with it) until the server takes it; one event too large stops', async (t) => {
  const s = await stub(t, (r, res) => {
    const n = r.body.split('\n').filter(Boolean).length
    if (n > 3) return refuse(res, 413, { statusCode: 413, code: 'LLMS_ERR_BATCH_TOO_LARGE', message: 'a batch holds at most 3 events' })
    accept(res, r.body)
  })
  const dir = t.testdir({ 'in.ndjson': lines(1, 20).join('\n') + '\n', 'huge.ndjson': line(1, { metadata: { big: 'y'.repeat(5000) } }) + '\n' })
  const { io: o } = io()
  t.equal(await importCommand(['--url', s.url, '--batch-size', '12', join(dir, 'in.ndjson')], o), 0, o.stderr.text)
  const accepted = s.requests.filter((r) => r.body.split('\n').filter(Boolean).length <= 3)
  t.same(sentLines(accepted).map((e) => e.prompt_tokens), Array.from({ length: 20 }, (_, i) => i + 1), 'every line once, in order')
  t.ok(s.requests.length <= 14, `${s.requests.length} requests: the smaller size is kept for later batches`)

  const h = await stub(t, (_r, res) => refuse(res, 413, { statusCode: 413, code: 'LLMS_ERR_BODY_TOO_LARGE', message: 'body too large' }))
  const { io: o2 } = io()
  t.equal(await importCommand(['--url', h.url, join(dir, 'huge.ndjson')], o2), 1)
  t.match(o2.stderr.text, /^llmscope import: line 1: the server takes no event this large: HTTP 413 LLMS_ERR_BODY_TOO_LARGE: body too large\n$/)
})

t.test('a bad line stops the import at its number (what came before is sent); --skip-invalid reports it and goes on', async (t) => {
  // The server refuses events with prompt_tokens < 0, naming the index as LLMScope does.
  const handler: Handler = (r, res) => {
    const evs = r.body.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { prompt_tokens: number })
    const i = evs.findIndex((e) => e.prompt_tokens < 0)
    if (i < 0) return accept(res, r.body)
    refuse(res, 400, { statusCode: 400, code: 'LLMS_ERR_VALIDATION', message: `invalid event at index ${i}: [${i}].prompt_tokens: Too small`, details: [{ path: `[${i}].prompt_tokens`, message: 'Too small: expected number to be >=0' }] })
  }
  const input = [line(1), line(2), line(-3), line(4), '{"model": oops', line(6), '[1,2]', line(8)]
  const dir = t.testdir({ 'in.ndjson': input.join('\n') + '\n' })
  const file = join(dir, 'in.ndjson')

  const s = await stub(t, handler)
  const { io: o } = io()
  t.equal(await importCommand(['--url', s.url, file], o), 1)
  t.match(o.stderr.text, /^llmscope import: line 3: refused by the server: prompt_tokens: Too small: expected number to be >=0\n\(the server acknowledged lines 1 to 2; /)
  t.same(sentLines(s.requests.filter((r) => !r.body.includes('-3'))).map((e) => e.prompt_tokens), [1, 2])
  t.match(readState(`${file}${STATE_SUFFIX}`), { line: 2 })

  // Fixed on the spot, then resumed: from line 3 on, stopping at the line that is not JSON.
  writeFileSync(file, [line(1), line(2), line(3), ...input.slice(3)].join('\n') + '\n')
  const { io: o2 } = io()
  t.equal(await importCommand(['--url', s.url, '--resume', file], o2), 1)
  t.match(o2.stderr.text, /^llmscope import: line 5: not valid JSON: /)
  t.same(sentLines(s.requests.slice(-1)).map((e) => e.prompt_tokens), [3, 4], 'lines 3 and 4 went before stopping')

  const k = await stub(t, handler)
  writeFileSync(file, input.join('\n') + '\n')
  const { io: o3 } = io()
  t.equal(await importCommand(['--url', k.url, '--skip-invalid', file], o3), 0, o3.stderr.text)
  t.match(o3.stderr.text, /llmscope import: line 3 skipped: refused by the server: prompt_tokens: Too small/)
  t.match(o3.stderr.text, /llmscope import: line 5 skipped: not valid JSON/)
  t.match(o3.stderr.text, /llmscope import: line 7 skipped: not a JSON object \(one event per line\)/)
  t.match(o3.stderr.text, /imported 5 events .*: 5 new, 0 already there; 3 invalid lines skipped\n$/)
  t.same(sentLines(k.requests.filter((r) => !r.body.includes('-3'))).map((e) => e.prompt_tokens), [1, 2, 4, 6, 8])

  // A 400 naming no event, or one outside the batch: the batch is refused as a whole.
  const w = await stub(t, (_r, res) => refuse(res, 400, { statusCode: 400, code: 'LLMS_ERR_VALIDATION', message: 'body must be NDJSON' }))
  const { io: o4 } = io()
  t.equal(await importCommand(['--url', w.url, '--skip-invalid', file], o4), 1)
  t.match(o4.stderr.text, /the server refused a batch \(lines 1 to 8\): HTTP 400 LLMS_ERR_VALIDATION: body must be NDJSON/)
  t.equal(refusedIndex(JSON.stringify({ message: 'line 4 (event index 3) is not valid JSON' })), 3)
  t.equal(refusedIndex('<html>'), null)
})

t.test('--resume: starts after the last acknowledged batch; a state file that does not fit the input is refused', async (t) => {
  const s = await stub(t, (r, res) => accept(res, r.body))
  const text = lines(1, 10).join('\n') + '\n'
  const dir = t.testdir({ 'in.ndjson': text })
  const file = join(dir, 'in.ndjson')
  const state = `${file}${STATE_SUFFIX}`
  const offset = Buffer.byteLength(lines(1, 6).join('\n') + '\n')
  writeFileSync(state, JSON.stringify({ version: 1, offset, line: 6, events: 6 }))
  const { io: o } = io()
  t.equal(await importCommand(['--url', s.url, '--resume', file], o), 0, o.stderr.text)
  t.same(sentLines(s.requests).map((e) => e.prompt_tokens), [7, 8, 9, 10])
  t.equal(sentLines(s.requests)[0].id, derivedId(7, Buffer.from(line(7))), 'line numbers go on from the state file')
  t.match(o.stderr.text, /imported 4 events .*resumed after line 6\n$/)
  t.notOk(existsSync(state))

  // Without --resume, a left-over state file is said and everything is sent (ids make it safe).
  writeFileSync(state, JSON.stringify({ version: 1, offset, line: 6, events: 6 }))
  const { io: o2 } = io()
  t.equal(await importCommand(['--url', s.url, file], o2), 0)
  t.match(o2.stderr.text, /is left from an earlier import: starting from the top anyway/)
  t.equal(sentLines(s.requests).length, 14)

  const { io: o3 } = io()
  t.equal(await importCommand(['--url', s.url, '--resume', file], o3), 0)
  t.match(o3.stderr.text, /no state file .*: nothing to resume, starting from the top/)

  for (const [st, re] of [
    [{ version: 1, offset: offset + 3, line: 6, events: 6 }, /byte [\d,]+ does not end a line/],
    [{ version: 1, offset: 1_000_000, line: 6, events: 6 }, /it says 1,000,000 bytes were sent, the file has/],
    [{ version: 2, offset: 0, line: 0, events: 0 }, /is not one this version wrote/],
    ['{', /cannot read the state file/]
  ] as const) {
    writeFileSync(state, typeof st === 'string' ? st : JSON.stringify(st))
    const { io: ob } = io()
    t.equal(await importCommand(['--url', s.url, '--resume', file], ob), 1)
    t.match(ob.stderr.text, re)
  }
  const { io: unwritable } = io()
  t.equal(await importCommand(['--url', s.url, '--state', join(dir, 'no', 'such', 'dir', 'state'), file], unwritable), 1)
  t.match(unwritable.stderr.text, /^llmscope import: cannot write the state file .*state: ENOENT.* \(--state PATH puts it elsewhere\)\n$/)
  const { io: missing } = io()
  t.equal(await importCommand(['--url', s.url, join(dir, 'nope.ndjson')], missing), 1)
  t.match(missing.stderr.text, /cannot read .*nope\.ndjson: ENOENT/)
})

t.test('stdin: read to the end; with --state it resumes by skipping the acknowledged bytes', async (t) => {
  const s = await stub(t, (r, res) => accept(res, r.body))
  const dir = t.testdir()
  const state = join(dir, 'stdin.state')
  const text = lines(1, 5).join('\n') + '\n'
  const pipe = new PassThrough()
  const { io: o } = io({ stdin: pipe })
  const done = importCommand(['--url', s.url, '--state', state, '--batch-size', '2'], o)
  // Written in small pieces, a line split across writes.
  for (let i = 0; i < text.length; i += 7) pipe.write(text.slice(i, i + 7))
  pipe.end()
  t.equal(await done, 0, o.stderr.text)
  t.same(sentLines(s.requests).map((e) => e.prompt_tokens), [1, 2, 3, 4, 5])
  t.match(o.stderr.text, /from stdin in 3 batches/)

  writeFileSync(state, JSON.stringify({ version: 1, offset: Buffer.byteLength(lines(1, 3).join('\n') + '\n'), line: 3, events: 3 }))
  const { io: o2 } = io({ stdin: text })
  t.equal(await importCommand(['--url', s.url, '--state', state, '--resume', '-'], o2), 0, o2.stderr.text)
  t.same(sentLines(s.requests.slice(3)).map((e) => e.prompt_tokens), [4, 5])

  writeFileSync(state, JSON.stringify({ version: 1, offset: 5, line: 1, events: 1 }))
  const { io: o3 } = io({ stdin: text })
  t.equal(await importCommand(['--url', s.url, '--state', state, '--resume', '-'], o3), 1)
  t.match(o3.stderr.text, /does not fit this input: byte 5 does not end a line/)

  writeFileSync(state, JSON.stringify({ version: 1, offset: 10_000, line: 99, events: 99 }))
  const { io: o4 } = io({ stdin: text })
  t.equal(await importCommand(['--url', s.url, '--state', state, '--resume', '-'], o4), 1)
  t.match(o4.stderr.text, /the input ended before byte 10,000/)
})

t.test('progress: a rewritten line on a terminal, nothing but the summary off one', async (t) => {
  let n = 0
  const s = await stub(t, (r, res) => (++n === 2 ? refuse(res, 503, { statusCode: 503, message: 'busy' }, { 'retry-after': '0' }) : accept(res, r.body)))
  const dir = t.testdir({ 'in.ndjson': lines(1, 30).join('\n') + '\n' })
  const { io: o } = io({ tty: true })
  t.equal(await importCommand(['--url', s.url, '--batch-size', '10', join(dir, 'in.ndjson')], o), 0)
  t.match(o.stderr.text, /\r\x1b\[Kimporting .*in\.ndjson: \d+% · line 10 · 10 sent · 0 already there · [\d,]+ events\/s/)
  t.match(o.stderr.text, /HTTP 503: busy; retry 1 in 0\.\d s/)
  t.match(o.stderr.text, /\r\x1b\[Kimported 30 events/, 'the line is cleared before the summary')

  const { io: plain } = io()
  t.equal(await importCommand(['--url', s.url, '--batch-size', '10', join(dir, 'in.ndjson')], plain), 0)
  t.equal(plain.stderr.text.split('\n').length, 2, 'one line')
  t.notMatch(plain.stderr.text, /\r/)

  const narrow = new Sink(true)
  narrow.columns = 20
  const p = new ProgressLine(narrow, 0)
  p.show('a long line that does not fit in twenty columns')
  t.equal(narrow.text, '\r\x1b[Ka long line that d…')
  p.done()
  p.done()
  t.equal(narrow.text, '\r\x1b[Ka long line that d…\r\x1b[K', 'cleared once')
})

t.test('export: the request it makes, its refusals, a broken stream leaves no file, -O takes the server\'s name', async (t) => {
  const plan = exportPlan(['--url', 'http://h:1', '--key', 'k', '--start', '2026-11-02T00:00:00Z', '--end', '1800000000000', '--user', 'u 1', '--metadata.plan', 'pro', '--filter', 'tag=prod', '--model', 'gpt-4o,gpt-4', '--sort', 'latency', '-o', 'out.csv'], {})
  t.not(plan, 'help')
  if (plan === 'help') return
  t.equal(plan.format, 'csv', '-o FILE.csv picks csv')
  t.equal(plan.headers.accept, 'text/csv')
  const u = new URL(plan.url)
  t.equal(u.pathname, '/events')
  t.same(Object.fromEntries(u.searchParams), { format: 'csv', sort: 'latency', start_time: '2026-11-02T00:00:00Z', end_time: '1800000000000', model: 'gpt-4o,gpt-4', user_id: 'u 1', 'metadata.plan': 'pro', tag: 'prod' })
  t.match(exportPlan(['--key', 'k', '--format', 'ndjson', '-o', 'x.csv'], {}), { format: 'ndjson', output: 'x.csv' }, '--format wins')
  t.match(exportPlan(['--key', 'k', '-o', '-'], {}), { output: null }, '- is stdout')
  for (const [argv, re] of [
    [['--format', 'xml'], /--format: "xml" is not ndjson or csv/],
    [['--sort', 'tokens'], /--sort: "tokens" is not time, latency or cost/],
    [['-O', '-o', 'f'], /-O and -o exclude each other/],
    [['--user', 'a', '--filter', 'user_id=b'], /the filter user_id is given twice/],
    [['out.ndjson'], /unexpected argument "out.ndjson" \(the output file is -o FILE\)/]
  ] as const) {
    const { io: o } = io()
    t.equal(await exportCommand([...argv], o), 2, argv.join(' '))
    t.match(o.stderr.text, re)
  }
  const { io: h } = io()
  t.equal(await exportCommand(['-h'], h), 0)
  t.equal(h.stdout.text, EXPORT_USAGE)

  const dir = t.testdir()
  // Busy, then refused: the server's message, exit 1, no file.
  const r = await stub(t, (_q, res, n) => (n === 1 ? refuse(res, 503, { statusCode: 503, code: 'LLMS_ERR_UNAVAILABLE', message: 'recovering' }, { 'retry-after': '1' }) : refuse(res, 400, { statusCode: 400, code: 'LLMS_ERR_VALIDATION', message: 'unknown format' })))
  const { io: o1, waits } = io()
  t.equal(await exportCommand(['--url', r.url, '-o', join(dir, 'a.ndjson')], o1), 1)
  t.equal(waits.length, 1)
  t.equal(o1.stderr.text, 'llmscope export: the server refused the export: HTTP 400 LLMS_ERR_VALIDATION: unknown format\n')
  t.notOk(existsSync(join(dir, 'a.ndjson')) || existsSync(join(dir, 'a.ndjson.part')))

  // The answer breaks off midway: exit 1, neither the file nor its .part is left.
  const b = await stub(t, (_q, res) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' })
    res.write(line(1) + '\n' + line(2) + '\n')
    setTimeout(() => res.socket!.destroy(), 20)
  })
  const { io: o2 } = io()
  t.equal(await exportCommand(['--url', b.url, '-o', join(dir, 'b.ndjson')], o2), 1)
  t.match(o2.stderr.text, /^llmscope export: the export broke off after \d+ B: .*\(nothing was kept\)\n$/)
  t.notOk(existsSync(join(dir, 'b.ndjson')) || existsSync(join(dir, 'b.ndjson.part')))

  // A server that answers JSON pages (no export): said, not written as if it were one.
  const j = await stub(t, (_q, res) => refuse(res, 200, { events: [], next_cursor: null }))
  const { io: o3 } = io()
  t.equal(await exportCommand(['--url', j.url], o3), 1)
  t.match(o3.stderr.text, /the server answered application\/json, not application\/x-ndjson: does it export/)
  t.equal(o3.stdout.text, '')

  // -O: the name from Content-Disposition, in the working directory; stdout otherwise untouched.
  const n = await stub(t, (_q, res) => {
    res.writeHead(200, { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': 'attachment; filename="../llmscope-events-default-20261102T090000.csv"' })
    res.end('id,model\nevt_1,gpt-4\n')
  })
  const cwd = process.cwd()
  process.chdir(dir)
  t.teardown(() => process.chdir(cwd))
  const { io: o4 } = io()
  t.equal(await exportCommand(['--url', n.url, '--format', 'csv', '-O'], o4), 0, o4.stderr.text)
  t.equal(readFileSync(join(dir, 'llmscope-events-default-20261102T090000.csv'), 'utf8'), 'id,model\nevt_1,gpt-4\n')
  t.match(o4.stderr.text, /^exported 1 row \(21 B\) to llmscope-events-default-20261102T090000\.csv in \d+\.\d s\n$/)
  const none = await stub(t, (_q, res) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' })
    res.end('')
  })
  const { io: o5 } = io()
  t.equal(await exportCommand(['--url', none.url, '-O'], o5), 1)
  t.match(o5.stderr.text, /-O: the server suggested no file name/)
  const { io: o6 } = io()
  t.equal(await exportCommand(['--url', none.url, '-o', join(dir, 'no', 'such', 'dir.ndjson')], o6), 1)
  t.match(o6.stderr.text, /cannot write .*dir\.ndjson: ENOENT/)

  // stdout closed by its reader (`| head -1`): the export stops, quietly, exit 1; another write
  // failure is said.
  const many = await stub(t, (_q, res) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' })
    res.end(lines(1, 2000).join('\n') + '\n')
  })
  for (const [code, said] of [['EPIPE', ''], ['ENOSPC', 'llmscope export: cannot write stdout: write ENOSPC\n']] as const) {
    let writes = 0
    const closing = new Writable({
      highWaterMark: 16,
      write(_c, _e, cb) {
        if (++writes === 1) cb()
        else cb(Object.assign(new Error(`write ${code}`), { code }))
      }
    })
    const { io: o7 } = io()
    t.equal(await exportCommand(['--url', many.url], { ...o7, stdout: closing }), 1, code)
    t.equal(o7.stderr.text, said, code)
  }

  t.equal(suggestedName("attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.ndjson"), 'r_sum_.ndjson')
  t.equal(suggestedName('attachment; filename=plain.csv'), 'plain.csv')
  t.equal(suggestedName('attachment; filename=".."'), null)
  t.equal(suggestedName('attachment'), null)
  t.equal(suggestedName(null), null)
  t.equal(describeRefusal(502, '<html>Bad gateway</html>'), 'HTTP 502: <html>Bad gateway</html>')
  t.equal(describeRefusal(500, ''), 'HTTP 500')
  t.equal(bytes(999), '999 B')
  t.equal(bytes(1_500_000), '1.5 MB')
})

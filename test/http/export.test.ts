/**
 * Export (DESIGN §7): GET /events with `format=ndjson|csv` or an Accept header streams every
 * match as a download — NDJSON lines exactly EVENT, CSV parsed back to the same values, the
 * attachment's name, an empty export, backpressure (a paused reader holds the export where it
 * is: the server does not buffer the rest), and the round trip: the NDJSON posted to another
 * server's /events/batch reproduces its analytics.
 */
import t from 'tap'
import fc from 'fast-check'
import net from 'node:net'
import { Writable } from 'node:stream'
import { makeApp, readHeaders, ingestHeaders, adminHeaders, type TestApp } from '../helpers/app.js'
import { toPublic, type PricedEvent } from '../../src/events.js'
import { CSV_HEADER, EVENT_FIELDS, FAST_LINES, LineWriter, csvLine, exportFilename, exportStats, exportStream, ndjsonLine, type ExportSource } from '../../src/http/export.js'
import type { SearchHit } from '../../src/analytics/search.js'

const BASE = Date.parse('2026-04-01T00:00:00.000Z')

/** Varied events: several models (one unknown: unpriced), users, tags, metadata, caller costs, errors, odd strings. */
function events(n: number, from = 0): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = []
  for (let j = 0; j < n; j++) {
    const i = from + j
    const e: Record<string, unknown> = {
      timestamp: new Date(BASE + Math.floor(i / 2) * 61_000).toISOString(),
      model: ['gpt-4o', 'claude-3-5-sonnet-20241022', 'my-own-model', 'gpt-4o-mini'][i % 4],
      prompt_tokens: 100 + (i % 17) * 10,
      completion_tokens: 20 + (i % 5),
      cached_tokens: i % 6 === 0 ? 50 : undefined,
      latency_ms: 100 + (i % 9) * 33.25,
      ttft_ms: i % 4 === 0 ? 40 : undefined
    }
    if (i % 11 === 0) e.cost = 0.0125
    if (i % 7 === 0) e.status = 'error'
    if (i % 2 === 0) e.user_id = `user-${i % 13}`
    if (i % 3 === 0) e.session_id = `sess,${i % 4}`
    if (i % 5 !== 0) e.tags = i % 2 === 0 ? ['prod', 'say "hi"'] : ['dev']
    if (i % 4 !== 3) e.metadata = { feature: ['search', 'chat, long'][i % 2], n: i % 3, note: 'line1\nline2', deep: { a: [1, 2] } }
    for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k]
    out.push(e)
  }
  return out
}

async function ingest(app: TestApp, list: Array<Record<string, unknown>>, headers: Record<string, string> = ingestHeaders): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < list.length; i += 10_000) {
    const res = await app.app.inject({ method: 'POST', url: '/events/batch', headers, payload: list.slice(i, i + 10_000) })
    if (res.statusCode !== 202) throw new Error(`batch: ${res.statusCode} ${res.body}`)
    ids.push(...(res.json().event_ids as string[]))
  }
  return ids
}

/** Every page of GET /events (the order exports must follow). */
async function pages(app: TestApp, query: string): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = []
  let cursor: string | null = null
  do {
    const res: { statusCode: number; body: string; json(): { events: Array<Record<string, unknown>>; next_cursor: string | null } } = await app.app.inject({ url: `/events?${query}&limit=1000${cursor === null ? '' : `&cursor=${cursor}`}`, headers: readHeaders })
    if (res.statusCode !== 200) throw new Error(`GET /events: ${res.statusCode} ${res.body}`)
    out.push(...res.json().events)
    cursor = res.json().next_cursor
  } while (cursor !== null)
  return out
}

/** RFC 4180 parser (quoted fields, doubled quotes, CRLF rows). */
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
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(field)
      rows.push(row)
      row = []
      field = ''
      i++
    } else field += c
  }
  if (field !== '' || row.length > 0) throw new Error('CSV does not end with CRLF')
  return rows
}

/** An EVENT value as the CSV writes it. */
const csvText = (v: unknown) => (v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v))

const ATTACHMENT = /^attachment; filename="llmscope-events-default-\d{8}T\d{6}\.(ndjson|csv)"$/

t.test('format=ndjson streams every match, in the search order, each line exactly EVENT', async (t) => {
  const app = await makeApp(t)
  // More than one export page (5,000 hits) of the time walk.
  const ids = await ingest(app, events(12_000))
  const res = await app.app.inject({ url: '/events?format=ndjson', headers: readHeaders })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'application/x-ndjson; charset=utf-8')
  t.match(res.headers['content-disposition'], ATTACHMENT)
  t.match(res.headers['content-disposition'], /\.ndjson"$/)
  const lines = res.body.split('\n')
  t.equal(lines.pop(), '', 'ends with a newline')
  t.equal(lines.length, 12_000, 'every event, no limit')
  const got = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  t.same(new Set(got.map((e) => e.id)), new Set(ids), 'each event once')
  const want = await pages(app, 'sort=time')
  t.same(got, want, 'the same EVENTs in the same order as the pages of GET /events')
  for (const i of [0, 1, 5000, 11_999]) {
    const one = (await app.app.inject({ url: `/events/${got[i].id as string}`, headers: readHeaders })).body
    t.equal(lines[i], one, `line ${i} is byte for byte GET /events/:id`)
  }
  // Filters and the other sorts apply as to the pages.
  for (const query of ['sort=latency&tag=prod', 'sort=cost&user_id=user-4', 'sort=time&metadata.feature=chat%2C%20long&status=success', 'model=my-own-model&sort=cost']) {
    const r = await app.app.inject({ url: `/events?${query}&format=ndjson`, headers: readHeaders })
    const exported = r.body.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l))
    t.same(exported, await pages(app, query), `${query}: equals the pages`)
  }
})

t.test('format=csv: a header of EVENT field names, rows that parse back to the EVENT values', async (t) => {
  const app = await makeApp(t)
  await ingest(app, events(300))
  const res = await app.app.inject({ url: '/events?format=csv&sort=latency', headers: readHeaders })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'text/csv; charset=utf-8')
  t.match(res.headers['content-disposition'], /\.csv"$/)
  const rows = parseCsv(res.body)
  const want = await pages(app, 'sort=latency')
  t.same(rows[0], Object.keys(want[0]), 'header: EVENT field names in order')
  t.same(rows[0], EVENT_FIELDS)
  t.equal(rows.length, 301)
  for (let i = 0; i < want.length; i++) {
    const expected = Object.values(want[i]).map(csvText)
    if (JSON.stringify(rows[i + 1]) !== JSON.stringify(expected)) {
      t.same(rows[i + 1], expected, `row ${i}`)
      break
    }
  }
  t.same(rows.slice(1).map((r) => r[0]), want.map((e) => e.id), 'every row, in order')
  const tagsCol = rows[0].indexOf('tags')
  t.ok(rows.slice(1).some((r) => r[tagsCol] === '["prod","say \\"hi\\""]'), 'tags as JSON text, quotes quoted')
  t.ok(res.body.includes('"{""feature"":""chat, long""'), 'metadata as JSON text in a quoted field')
})

t.test('Accept header picks the format; format= wins; unknown format 400; empty export', async (t) => {
  const app = await makeApp(t)
  await ingest(app, events(20))
  const csv = await app.app.inject({ url: '/events', headers: { ...readHeaders, accept: 'text/csv' } })
  t.equal(csv.headers['content-type'], 'text/csv; charset=utf-8')
  t.equal(parseCsv(csv.body).length, 21)
  const nd = await app.app.inject({ url: '/events', headers: { ...readHeaders, accept: 'application/x-ndjson;q=0.9, */*;q=0.1' } })
  t.equal(nd.headers['content-type'], 'application/x-ndjson; charset=utf-8')
  t.equal(nd.body.split('\n').filter((l) => l !== '').length, 20)
  const json = await app.app.inject({ url: '/events', headers: { ...readHeaders, accept: 'application/json, text/csv' } })
  t.match(json.headers['content-type'], /^application\/json/)
  t.equal(json.json().events.length, 20)
  const browser = await app.app.inject({ url: '/events', headers: { ...readHeaders, accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } })
  t.match(browser.headers['content-type'], /^application\/json/, 'a browser gets the JSON page')
  const wins = await app.app.inject({ url: '/events?format=ndjson', headers: { ...readHeaders, accept: 'text/csv' } })
  t.equal(wins.headers['content-type'], 'application/x-ndjson; charset=utf-8', 'format= wins over Accept')
  const bad = await app.app.inject({ url: '/events?format=parquet', headers: readHeaders })
  t.equal(bad.statusCode, 400)
  t.same(bad.json().details.map((d: { path: string }) => d.path), ['(query) format'])
  const none = '&start_time=2020-01-01T00:00:00Z&end_time=2020-01-02T00:00:00Z'
  const emptyCsv = await app.app.inject({ url: `/events?format=csv${none}`, headers: readHeaders })
  t.equal(emptyCsv.statusCode, 200)
  t.equal(emptyCsv.body, CSV_HEADER, 'no match: the header only')
  const emptyNd = await app.app.inject({ url: `/events?format=ndjson${none}`, headers: readHeaders })
  t.equal(emptyNd.statusCode, 200)
  t.equal(emptyNd.body, '', 'no match: an empty NDJSON body')
  t.equal((await app.app.inject({ url: '/events?format=csv', headers: ingestHeaders })).statusCode, 403, 'an ingest key may not export')
  // An export may start at a page's cursor: the rest, in order.
  const first = (await app.app.inject({ url: '/events?limit=5', headers: readHeaders })).json()
  const rest = await app.app.inject({ url: `/events?format=ndjson&cursor=${first.next_cursor as string}`, headers: readHeaders })
  const all = (await pages(app, 'sort=time')).map((e) => e.id)
  t.same(rest.body.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l).id), all.slice(5), 'from a cursor: the rest')
})

t.test('the attachment name: project and UTC time of the export', async (t) => {
  t.equal(exportFilename('default', Date.parse('2026-07-04T09:08:07.654Z'), 'csv'), 'llmscope-events-default-20260704T090807.csv')
  t.equal(exportFilename('team-b', Date.parse('2026-12-31T23:59:59.999Z'), 'ndjson'), 'llmscope-events-team-b-20261231T235959.ndjson')
})

/** A priced event from fast-check, with the strings and numbers an event can hold. */
const arbEvent = fc.record({
  seq: fc.nat({ max: 2 ** 40 }),
  ts: fc.integer({ min: -8.64e15, max: 8.64e15 }),
  recv: fc.integer({ min: 0, max: 4e12 }),
  model: fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme' }),
  provider: fc.string({ minLength: 1, maxLength: 10 }),
  prompt: fc.nat({ max: 1e12 }),
  completion: fc.nat(),
  total: fc.nat(),
  cached: fc.nat(),
  reasoning: fc.nat(),
  latency: fc.double({ min: 0, max: 6e8, noNaN: true }),
  ttft: fc.option(fc.double({ min: 0, max: 6e8, noNaN: true })),
  error: fc.boolean(),
  cost: fc.option(fc.double({ min: 0, max: 1e6, noNaN: true })),
  meta: fc.option(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 }))),
  user: fc.option(fc.string({ minLength: 1, unit: 'binary' })),
  session: fc.option(fc.string({ minLength: 1 })),
  tags: fc.option(fc.uniqueArray(fc.string({ minLength: 1, maxLength: 8 }), { maxLength: 4 })),
  costNanos: fc.nat({ max: 1e15 }),
  unpriced: fc.boolean()
}).map((r) => ({ ...r, id: `evt_${r.seq.toString(36)}_abcdefghijkl`, project: 'default', ...(r.seq % 3 === 0 ? { cacheWrite: (r.completion % 5000) + 1 } : {}) }) as PricedEvent)

t.test('the hand-written lines are toPublic, byte for byte (and in use)', async (t) => {
  t.ok(FAST_LINES, 'toPublic has the fields ndjsonLine writes (else it falls back to JSON.stringify)')
  fc.assert(
    fc.property(arbEvent, (e) => {
      t.equal(ndjsonLine(e), JSON.stringify(toPublic(e)) + '\n')
      const row = parseCsv(CSV_HEADER + csvLine(e))
      t.same(row[1], Object.values(toPublic(e)).map(csvText))
    }),
    { numRuns: 300 }
  )
})

t.test('timestamps written as digits are toISOString, year 1970 to 9999, leap days and edges included', async (t) => {
  const edges = ['1970-01-01T00:00:00.000Z', '1972-02-29T23:59:59.999Z', '2000-02-29T12:00:00.000Z', '2000-03-01T00:00:00.000Z', '2100-02-28T23:59:59.999Z', '2100-03-01T00:00:00.000Z', '2024-12-31T23:59:59.999Z', '9999-12-31T23:59:59.999Z'].map(Date.parse)
  const ms = fc.oneof(fc.integer({ min: 0, max: 253_402_300_799_999 }), fc.constantFrom(...edges), fc.double({ min: 0, max: 1e13, noNaN: true }))
  fc.assert(
    fc.property(arbEvent, ms, ms, (e, ts, recv) => {
      const x = { ...e, ts, recv }
      t.equal(ndjsonLine(x), JSON.stringify(toPublic(x)) + '\n')
    }),
    { numRuns: 400 }
  )
})

t.test('numbers written as digits are String(n): thousandths, nanodollar costs, and what falls back', async (t) => {
  const thousandths = fc.oneof(fc.integer({ min: 0, max: 1e15 }).map((k) => k / 1000), fc.integer({ min: 0, max: 9999 }).map((k) => k / 1000), fc.constantFrom(0.001, 0.1, 0.3, 1e12 - 0.001, 999_999_999_999.999, 1e12 + 0.5, 1e15 - 0.125, 2 ** 53, -0))
  const nanos = fc.oneof(fc.nat({ max: 1e15 }), fc.constantFrom(0, 1, 999, 1000, 1001, 1e9, 1e15 - 1, 1e15, 2 ** 53 - 1), fc.double({ min: 0, max: 1e15, noNaN: true }))
  fc.assert(
    fc.property(arbEvent, thousandths, fc.option(thousandths), nanos, (e, latency, ttft, costNanos) => {
      const x = { ...e, latency, ttft, costNanos }
      t.equal(ndjsonLine(x), JSON.stringify(toPublic(x)) + '\n')
      t.same(parseCsv(CSV_HEADER + csvLine(x))[1], Object.values(toPublic(x)).map(csvText))
    }),
    { numRuns: 500 }
  )
})

t.test('LineWriter: lines written back to back, a small buffer growing, chunks taken anywhere', async (t) => {
  // Fields far longer than the writer's buffer (ASCII, non-ASCII, escapes) make it grow mid-line.
  const long = fc.constantFrom('x'.repeat(70_000), 'é"\\\n'.repeat(9_000), '😀'.repeat(20_000))
  const arbLong = fc.tuple(arbEvent, fc.option(long), fc.nat({ max: 3 })).map(([e, s, where]) => {
    if (s === null) return e
    if (where === 0) return { ...e, meta: { s } }
    if (where === 1) return { ...e, user: s }
    if (where === 2) return { ...e, model: s }
    return { ...e, tags: [s] }
  })
  fc.assert(
    fc.property(fc.array(fc.tuple(arbLong, fc.boolean()), { minLength: 1, maxLength: 12 }), fc.boolean(), (lines, csv) => {
      const w = new LineWriter(64)
      const chunks: Buffer[] = []
      let expected = ''
      for (const [e, take] of lines) {
        if (csv) w.csv(e)
        else w.ndjson(e)
        expected += csv ? csvLine(e) : JSON.stringify(toPublic(e)) + '\n'
        if (take) chunks.push(w.take())
      }
      chunks.push(w.copy())
      t.equal(Buffer.concat(chunks).toString('utf8'), expected)
    }),
    { numRuns: 60 }
  )
})

/** An export source over an in-memory list (hits in order), counting what was read. */
function fakeSource(list: PricedEvent[]): ExportSource & { read: number; searches: number } {
  const hits: SearchHit[] = list.map((e) => ({ seq: e.seq, ts: e.ts, key: e.ts }))
  const src = {
    read: 0,
    searches: 0,
    search: async (after: { key: number; seq: number } | null, limit: number) => {
      src.searches++
      const from = after === null ? 0 : hits.findIndex((h) => h.key < after.key || (h.key === after.key && h.seq < after.seq))
      return from < 0 ? [] : hits.slice(from, from + limit)
    },
    each: async (seqs: number[], visit: (i: number, e: PricedEvent) => void) => {
      src.read += seqs.length
      // In another order than asked, as the log hands events over.
      for (let i = seqs.length - 1; i >= 0; i--) {
        const e = list.find((x) => x.seq === seqs[i])
        if (e !== undefined) visit(i, e)
      }
    }
  }
  return src
}

const priced = (i: number, over: Partial<PricedEvent> = {}): PricedEvent =>
  ({ seq: i, id: `evt_${i.toString(36)}_abcdefghijkl`, ts: BASE - i * 1000, recv: BASE, model: 'm', provider: 'p', prompt: 1, completion: 1, total: 2, cached: 0, reasoning: 0, latency: 1, ttft: null, error: false, cost: null, meta: { pad: 'x'.repeat(200) }, project: 'default', user: null, session: null, tags: null, costNanos: 5, unpriced: false, ...over }) as PricedEvent

t.test('exportStream: pages through every hit, skips events gone or of another project', async (t) => {
  const list = Array.from({ length: 23 }, (_, i) => priced(i, i === 4 ? { project: 'other' } : {}))
  const src = fakeSource(list)
  const gone = new Set([7])
  const each = src.each
  src.each = (seqs, visit) => each(seqs, (i, e) => (gone.has(e.seq) ? undefined : visit(i, e)))
  const first = await src.search(null, 5)
  const stream = exportStream(src, { format: 'ndjson', project: 'default', pageSize: 5, readBatch: 2, first })
  let text = ''
  for await (const chunk of stream) text += String(chunk)
  const seqs = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l).seq)
  t.same(seqs, list.map((e) => e.seq).filter((s) => s !== 4 && s !== 7))
  t.equal(src.searches, 5, 'pages of 5: 23 hits take 5 searches (the last one short)')
})

t.test('exportStream: a consumer that does not read stops the export (backpressure)', async (t) => {
  const list = Array.from({ length: 20_000 }, (_, i) => priced(i))
  const src = fakeSource(list)
  const first = await src.search(null, 5000)
  const stream = exportStream(src, { format: 'ndjson', project: 'default', pageSize: 5000, readBatch: 100, first })
  // A sink that takes one chunk and never calls back: the pipe must stop pulling.
  let taken = 0
  const sink = new Writable({ highWaterMark: 1, write: (_chunk, _enc, _cb) => void taken++ })
  stream.pipe(sink)
  // Wait until the pipe is stalled: the sink holds a chunk and the stream's buffer is full.
  while (!(taken === 1 && stream.readableLength >= stream.readableHighWaterMark)) await new Promise((r) => setImmediate(r))
  const read = src.read
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r))
  t.equal(src.read, read, 'nothing more is read while the consumer holds')
  t.ok(read <= 500, `at most a few read batches ahead (read ${read} of 20,000)`)
  stream.destroy()
})

t.test('a slow reader over a real socket: the server holds the export, then finishes it', async (t) => {
  const app = await makeApp(t)
  // ~45 MB of NDJSON: far more than the socket buffers of both ends.
  const pad = 'p'.repeat(1500)
  const list = events(30_000).map((e) => ({ ...e, metadata: { ...(e.metadata as object), pad } }))
  await ingest(app, list)
  await app.app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.app.server.address() as net.AddressInfo).port
  let response: import('node:http').ServerResponse | undefined
  app.app.server.on('request', (req, res) => {
    if (req.url?.startsWith('/events?format=ndjson') === true) response = res
  })
  const before = exportStats.events
  const sock = net.connect(port, '127.0.0.1')
  await new Promise((r) => sock.once('connect', r))
  sock.write(`GET /events?format=ndjson HTTP/1.1\r\nHost: x\r\nX-API-Key: ${readHeaders['x-api-key']}\r\nConnection: close\r\n\r\n`)
  const chunks: Buffer[] = []
  await new Promise<void>((resolve) => {
    sock.once('data', (chunk: Buffer) => {
      chunks.push(chunk)
      sock.pause()
      resolve()
    })
  })
  // Wait until the server's response is stalled on the socket (its write buffer over the mark).
  while (response === undefined || !response.writableNeedDrain) await new Promise((r) => setImmediate(r))
  for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r))
  const produced = exportStats.events - before
  const buffered = response.writableLength
  for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r))
  t.equal(exportStats.events - before, produced, 'nothing more is produced while the reader pauses')
  t.ok(produced < 10_000, `the server stopped early: ${produced} of 30,000 events produced`)
  t.ok(buffered < 1024 * 1024, `the response buffers ${buffered} bytes in user space`)
  // Resume: the rest arrives, complete.
  sock.on('data', (c: Buffer) => chunks.push(c))
  sock.resume()
  await new Promise((r) => sock.once('end', r))
  const raw = Buffer.concat(chunks)
  const head = raw.indexOf('\r\n\r\n')
  t.match(raw.subarray(0, head).toString(), /transfer-encoding: chunked/i)
  const lines = dechunk(raw.subarray(head + 4)).toString().split('\n')
  t.equal(lines.pop(), '')
  t.equal(lines.length, 30_000, 'every event arrived')
  t.equal(new Set(lines.map((l) => JSON.parse(l).id)).size, 30_000, 'each once')
  t.equal(exportStats.events - before, 30_000, 'every event produced once')
})

/** The body of an HTTP/1.1 chunked transfer encoding. */
function dechunk(b: Buffer): Buffer {
  const parts: Buffer[] = []
  let pos = 0
  for (;;) {
    const eol = b.indexOf('\r\n', pos)
    const size = parseInt(b.subarray(pos, eol).toString(), 16)
    if (size === 0) return Buffer.concat(parts)
    parts.push(b.subarray(eol + 2, eol + 2 + size))
    pos = eol + 2 + size + 2
  }
}

t.test('round trip: the NDJSON export posted to another server reproduces its analytics', async (t) => {
  const a = await makeApp(t)
  const b = await makeApp(t)
  await ingest(a, events(2_500))
  const exported = (await a.app.inject({ url: '/events?format=ndjson', headers: readHeaders })).body
  const lines = exported.split('\n').filter((l) => l !== '')
  t.equal(lines.length, 2_500)
  const post = async () => {
    for (let i = 0; i < lines.length; i += 1000) {
      const res = await b.app.inject({ method: 'POST', url: '/events/batch', headers: { ...ingestHeaders, 'content-type': 'application/x-ndjson' }, payload: lines.slice(i, i + 1000).join('\n') })
      t.equal(res.statusCode, 202, `batch ${i / 1000}: ${res.statusCode === 202 ? 'accepted' : res.body}`)
    }
  }
  await post()
  const routes = [
    '/analytics/metrics',
    '/analytics/metrics?status=error',
    '/analytics/costs',
    '/analytics/breakdown?by=user_id&limit=5',
    '/analytics/breakdown?by=tag',
    '/analytics/breakdown?by=metadata.feature&sort=tokens',
    '/analytics/breakdown?by=model&sort=requests',
    '/analytics/timeseries?interval=1h&start_time=2026-04-01T00:00:00Z&end_time=2026-04-02T00:00:00Z',
    '/analytics/dimensions'
  ]
  const compare = async (what: string) => {
    for (const r of routes) {
      const x = await a.app.inject({ url: r, headers: readHeaders })
      const y = await b.app.inject({ url: r, headers: readHeaders })
      t.equal(y.statusCode, 200, `${r}: 200`)
      t.same(y.json(), x.json(), `${what}: ${r} equal`)
    }
  }
  await compare('after the import')
  // The events themselves: the same but for what the new server made (id, seq, received_at); the key is the old id.
  const again = (await b.app.inject({ url: '/events?format=ndjson', headers: readHeaders })).body.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l))
  const orig = lines.map((l) => JSON.parse(l))
  const strip = (e: Record<string, unknown>) => {
    const { id: _id, seq: _seq, received_at: _r, client_id: _c, ...rest } = e
    return rest
  }
  // Equal times keep their relative order only up to the seqs the import gave: match by the key.
  const byKey = new Map(again.map((e) => [e.client_id as string, e]))
  t.equal(byKey.size, orig.length, 'one event per original')
  let same = 0
  for (const o of orig) {
    const e = byKey.get(o.client_id ?? o.id)
    if (e !== undefined && JSON.stringify(strip(e)) === JSON.stringify(strip(o))) same++
    else if (same >= 0) {
      t.same(e === undefined ? e : strip(e), strip(o), `${o.id as string}: every field kept, cost and cost_source included`)
      same = -Infinity
    }
  }
  t.equal(same, orig.length, 'every event kept every field (the original id is its client_id)')
  // Posting it twice changes nothing.
  await post()
  await compare('after posting twice')
  t.equal((await b.app.inject({ url: '/analytics/metrics', headers: adminHeaders })).json().total_requests, 2_500)
})

/**
 * Export (DESIGN §7): every match of a `GET /events` query, streamed as NDJSON (one EVENT per
 * line, exactly `GET /events/:id`'s JSON) or CSV (a header row of EVENT's field names, then one
 * row per event; `tags` and `metadata` as JSON text; RFC 4180 quoting).
 *
 * Bounded memory with backpressure: the body is a Readable pulled by the socket
 * (`Readable.from` over an async generator): the generator runs only when the socket has taken
 * what was handed over, so a slow reader holds the export where it is — one page of hits
 * (some thousands of (key, seq) pairs) and one read batch's lines, never the whole result.
 *
 * Speed: an export runs at the pace of the log reads and of turning events into bytes, so lines
 * are written by hand, straight into the Buffer handed to the socket ({@link LineWriter}: for
 * NDJSON the same bytes as `JSON.stringify(toPublic(e)) + '\n'`, without that object, a
 * string per field, a string per line or a UTF-8 conversion per chunk).
 * If `toPublic` ever gains, loses or reorders a field that this module does not know, the
 * module notices at load ({@link FAST_LINES} false) and falls back to `JSON.stringify(toPublic(e))`,
 * so the output stays exactly EVENT; test/http/export.test.ts pins that the fast path is on.
 */
import { Readable } from 'node:stream'
import { ByteBuffer } from '../byte-buffer.js'
import { toPublic, type PricedEvent } from '../events.js'
import type { SearchAfter, SearchHit } from '../analytics/search.js'

export type ExportFormat = 'ndjson' | 'csv'

export const EXPORT_FORMATS: readonly ExportFormat[] = ['ndjson', 'csv']

/** Content types of the export formats (also what `Accept` asks for). */
export const EXPORT_TYPES: Record<ExportFormat, string> = { ndjson: 'application/x-ndjson', csv: 'text/csv' }

/** A priced event with every field set, for reading toPublic's field list. */
const SAMPLE = {
  seq: 0, id: 'evt_0_sample', ts: 0, recv: 0, model: 'm', provider: 'p', prompt: 0, completion: 0, total: 0, cached: 0, reasoning: 0,
  latency: 0, ttft: null, error: false, cost: null, meta: null, project: 'default', user: null, session: null, tags: null, costNanos: 0, unpriced: false
} as unknown as PricedEvent

/** EVENT's field names in toPublic's order: the CSV header. */
export const EVENT_FIELDS: readonly string[] = Object.keys(toPublic(SAMPLE))

/** The fields {@link ndjsonLine} and {@link csvLine} write by hand, in order (`client_id` written when toPublic has it). */
const KNOWN_FIELDS = [
  'id', 'client_id', 'seq', 'timestamp', 'received_at', 'model', 'provider', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cached_tokens',
  'cache_write_tokens', 'reasoning_tokens', 'latency_ms', 'ttft_ms', 'status', 'cost', 'cost_source', 'unpriced', 'metadata', 'user_id', 'session_id', 'tags'
]
const HAS_CLIENT_ID = EVENT_FIELDS.includes('client_id')
const written = HAS_CLIENT_ID ? KNOWN_FIELDS : KNOWN_FIELDS.filter((f) => f !== 'client_id')

/** Whether the hand-written lines are in use (toPublic's fields are the ones they write). */
export const FAST_LINES = EVENT_FIELDS.length === written.length && EVENT_FIELDS.every((f, i) => f === written[i])

/** The optional stored fields of an event (the idempotency key; an imported event's cost source; cache writes). */
type Extra = { clientId?: string | null; costSource?: string | null; cacheWrite?: number }

// ---------------------------------------------------------------------------------------------
// Lines are written byte by byte into the Buffer handed to the socket: no string per field, no
// string per line, no UTF-8 conversion of a chunk. Field names are pre-encoded, numbers and
// timestamps written as digits, strings copied as they are when they are printable ASCII
// without `"` or `\` (what JSON.stringify leaves alone), else through JSON.stringify. Built as
// strings and concatenated, then converted, the same lines cost about twice as long
// (see bench/RESULTS.md).

const DAY = 86_400_000
/** 10000-01-01T00:00:00Z: from there on (and before 1970, for simplicity) toISOString itself. */
const FAST_ISO_END = 253_402_300_800_000
/** Room made once per line for what is not a string field: names, numbers, timestamps, literals (< 700 bytes). */
const LINE_FIXED = 1024

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0))
/** NDJSON's fixed pieces, in line order (`client_id` written when toPublic has it). */
const J = {
  id: ascii('{"id":'),
  clientId: ascii(',"client_id":'),
  seq: ascii(',"seq":'),
  ts: ascii(',"timestamp":"'),
  recv: ascii('","received_at":"'),
  model: ascii('","model":'),
  provider: ascii(',"provider":'),
  prompt: ascii(',"prompt_tokens":'),
  completion: ascii(',"completion_tokens":'),
  total: ascii(',"total_tokens":'),
  cached: ascii(',"cached_tokens":'),
  cacheWrite: ascii(',"cache_write_tokens":'),
  reasoning: ascii(',"reasoning_tokens":'),
  latency: ascii(',"latency_ms":'),
  ttft: ascii(',"ttft_ms":'),
  status: ascii(',"status":'),
  cost: ascii(',"cost":'),
  costSource: ascii(',"cost_source":"'),
  unpriced: ascii('","unpriced":'),
  meta: ascii(',"metadata":'),
  user: ascii(',"user_id":'),
  session: ascii(',"session_id":'),
  tags: ascii(',"tags":'),
  end: ascii('}\n'),
  null: ascii('null'),
  error: ascii('"error"'),
  success: ascii('"success"'),
  true: ascii('true'),
  false: ascii('false')
}

/** toPublic's `cost_source`. */
const costSource = (e: PricedEvent) => (e as Extra).costSource ?? (e.cost !== null ? 'caller' : e.unpriced ? 'unpriced' : 'computed')

/**
 * Export lines (NDJSON or CSV) written into one Buffer; {@link LineWriter.take} hands the bytes
 * over (no copy) and starts a fresh Buffer. Each line is the bytes of the string the format
 * defines (`JSON.stringify(toPublic(e)) + '\n'`, or the CSV row), as UTF-8.
 */
export class LineWriter extends ByteBuffer {
  /** The bytes written, handed over as they are; the writer goes on in a fresh buffer of the same size. */
  take(): Buffer {
    const out = this.buf.subarray(0, this.pos)
    this.buf = Buffer.allocUnsafe(this.buf.length)
    this.pos = 0
    return out
  }

  /** The bytes written, as text. */
  override toString(): string {
    return this.buf.toString('utf8', 0, this.pos)
  }

  /** Any text, as UTF-8. */
  text(s: string): void {
    this.room(s.length * 3)
    this.pos += this.buf.write(s, this.pos, 'utf8')
  }

  #bytes(a: Uint8Array): void {
    const b = this.buf
    let p = this.pos
    for (let i = 0; i < a.length; i++) b[p++] = a[i]
    this.pos = p
  }

  /** A number as `String(n)` writes it (JSON's form of a finite number); digits by hand for non-negative integers and thousandths. */
  #number(n: number): void {
    if (n >= 0 && n < 1e15) {
      if (Number.isInteger(n)) return this.#digits(n)
      // Latencies are milliseconds to the microsecond (k below 1e15: see #decimal).
      const k = Math.round(n * 1000)
      if (n < 1e12 && k / 1000 === n) return this.#decimal(k, 3, 1000)
    }
    this.ascii(String(n))
  }

  /** A cost, `String(nanos / 1e9)`. */
  #cost(nanos: number): void {
    if (Number.isInteger(nanos) && nanos >= 1000 && nanos < 1e15) this.#decimal(nanos, 9, 1e9)
    else this.ascii(String(nanos / 1e9))
  }

  /** A non-negative integer below 2^53, in decimal digits. */
  #digits(n: number): void {
    const b = this.buf
    let len = 1
    for (let x = n; x >= 10; x = Math.floor(x / 10)) len++
    let p = this.pos + len
    this.pos = p
    do {
      const q = Math.floor(n / 10)
      b[--p] = 48 + n - q * 10
      n = q
    } while (n > 0)
  }

  /**
   * `String(k / 10^f)` for an integer k in [1, 1e15), `scale` = 10^f, f ≤ 9: the digits of that
   * decimal without trailing zeros. Exact: a decimal of at most 15 significant digits is the
   * shortest one that reads back as the double nearest it, which is what String writes, and
   * from 1e-6 up String writes no exponent.
   */
  #decimal(k: number, f: number, scale: number): void {
    const whole = Math.floor(k / scale)
    let frac = k - whole * scale
    this.#digits(whole)
    if (frac === 0) return
    let len = f
    while (frac % 10 === 0) {
      frac /= 10
      len--
    }
    const b = this.buf
    b[this.pos] = 46 // .
    let p = this.pos + 1 + len
    this.pos = p
    for (let i = 0; i < len; i++) {
      const q = Math.floor(frac / 10)
      b[--p] = 48 + frac - q * 10
      frac = q
    }
  }

  /** Two digits of 0–99. */
  #two(n: number, p: number): void {
    const t = (n / 10) | 0
    this.buf[p] = 48 + t
    this.buf[p + 1] = 48 + n - t * 10
  }

  /** Four digits of 0–9999 at `p`. */
  #four(n: number, p: number): void {
    const h = (n / 100) | 0
    this.#two(h, p)
    this.#two(n - h * 100, p + 2)
  }

  /**
   * `new Date(ms).toISOString()` as digits: the civil date from the day number (Howard Hinnant's
   * `civil_from_days`, exact for the proleptic Gregorian calendar), then the time of day. The
   * events of an export span many days in any order, so no per-day cache.
   */
  #iso(ms: number): void {
    if (!(ms >= 0 && ms < FAST_ISO_END) || !Number.isInteger(ms)) return this.ascii(new Date(ms).toISOString())
    const day = Math.floor(ms / DAY)
    let r = ms - day * DAY
    // Days since 0000-03-01, in 400-year eras of 146,097 days.
    const z = day + 719_468
    const era = Math.floor(z / 146_097)
    const doe = z - era * 146_097
    const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365)
    const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100))
    const mp = Math.floor((5 * doy + 2) / 153)
    const d = doy - Math.floor((153 * mp + 2) / 5) + 1
    const m = mp < 10 ? mp + 3 : mp - 9
    const y = yoe + era * 400 + (m <= 2 ? 1 : 0)
    const h = Math.floor(r / 3_600_000)
    r -= h * 3_600_000
    const min = Math.floor(r / 60_000)
    r -= min * 60_000
    const s = Math.floor(r / 1000)
    r -= s * 1000
    const p = this.pos
    const b = this.buf
    this.#four(y, p)
    b[p + 4] = 45 // -
    this.#two(m, p + 5)
    b[p + 7] = 45
    this.#two(d, p + 8)
    b[p + 10] = 84 // T
    this.#two(h, p + 11)
    b[p + 13] = 58 // :
    this.#two(min, p + 14)
    b[p + 16] = 58
    this.#two(s, p + 17)
    b[p + 19] = 46 // .
    b[p + 20] = 48 + Math.floor(r / 100)
    this.#two(r % 100, p + 21)
    b[p + 23] = 90 // Z
    this.pos = p + 24
  }

  /** `JSON.stringify(s)`: printable ASCII without `"` or `\` copied byte by byte, anything else through JSON.stringify. */
  #string(s: string): void {
    // JSON.stringify writes at most 6 characters per UTF-16 unit (\u00XX), UTF-8 at most 3 bytes.
    this.room(s.length * 6 + 2)
    const b = this.buf
    let p = this.pos
    b[p++] = 34
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i)
      if (c < 0x20 || c === 34 || c === 92 || c > 0x7e) {
        this.pos += this.buf.write(JSON.stringify(s), this.pos, 'utf8')
        return
      }
      b[p++] = c
    }
    b[p++] = 34
    this.pos = p
  }

  /** A string or null. */
  #nullable(s: string | null | undefined): void {
    if (s === null || s === undefined) this.#bytes(J.null)
    else this.#string(s)
  }

  /** Any JSON value or null. */
  #json(v: unknown): void {
    if (v === null) this.#bytes(J.null)
    else this.text(JSON.stringify(v))
  }

  /** One NDJSON line: the bytes of `JSON.stringify(toPublic(e)) + '\n'`. */
  ndjson(e: PricedEvent): void {
    if (!FAST_LINES) return this.text(JSON.stringify(toPublic(e)) + '\n')
    // Room for the fixed pieces is made before each run of them (a string field makes its own).
    this.room(LINE_FIXED)
    this.#bytes(J.id)
    this.#string(e.id)
    if (HAS_CLIENT_ID) {
      this.room(LINE_FIXED)
      this.#bytes(J.clientId)
      this.#nullable((e as Extra).clientId)
    }
    this.room(LINE_FIXED)
    this.#bytes(J.seq)
    this.#number(e.seq)
    this.#bytes(J.ts)
    this.#iso(e.ts)
    this.#bytes(J.recv)
    this.#iso(e.recv)
    this.#bytes(J.model)
    this.#string(e.model)
    this.room(LINE_FIXED)
    this.#bytes(J.provider)
    this.#string(e.provider)
    this.room(LINE_FIXED)
    this.#bytes(J.prompt)
    this.#number(e.prompt)
    this.#bytes(J.completion)
    this.#number(e.completion)
    this.#bytes(J.total)
    this.#number(e.total)
    this.#bytes(J.cached)
    this.#number(e.cached)
    this.#bytes(J.cacheWrite)
    this.#number((e as Extra).cacheWrite ?? 0)
    this.#bytes(J.reasoning)
    this.#number(e.reasoning)
    this.#bytes(J.latency)
    this.#number(e.latency)
    this.#bytes(J.ttft)
    if (e.ttft === null) this.#bytes(J.null)
    else this.#number(e.ttft)
    this.#bytes(J.status)
    this.#bytes(e.error ? J.error : J.success)
    this.#bytes(J.cost)
    this.#cost(e.costNanos)
    this.#bytes(J.costSource)
    this.ascii(costSource(e))
    this.#bytes(J.unpriced)
    this.#bytes(e.unpriced ? J.true : J.false)
    this.#bytes(J.meta)
    this.#json(e.meta)
    this.room(LINE_FIXED)
    this.#bytes(J.user)
    this.#nullable(e.user)
    this.room(LINE_FIXED)
    this.#bytes(J.session)
    this.#nullable(e.session)
    this.room(LINE_FIXED)
    this.#bytes(J.tags)
    this.#json(e.tags)
    this.room(LINE_FIXED)
    this.#bytes(J.end)
  }

  /** A CSV field (see {@link csvField}). */
  #csv(s: string): void {
    this.text(csvField(s))
  }

  /** A value of EVENT as CSV text (see {@link csvValueText}). */
  #csvValue(v: unknown): void {
    if (v !== null && v !== undefined) this.text(csvValueText(v))
  }

  /** `,`, room made for the next fixed field. */
  #comma(): void {
    this.room(LINE_FIXED)
    this.buf[this.pos++] = 44
  }

  /** One CSV row (with its CRLF), the columns of {@link CSV_HEADER}. */
  csv(e: PricedEvent): void {
    if (!FAST_LINES) {
      const o = toPublic(e) as Record<string, unknown>
      return this.text(EVENT_FIELDS.map((f) => csvValueText(o[f])).join(',') + '\r\n')
    }
    this.#csv(e.id)
    if (HAS_CLIENT_ID) {
      this.#comma()
      this.#csvValue((e as Extra).clientId)
    }
    this.#comma()
    this.#number(e.seq)
    this.#comma()
    this.#iso(e.ts)
    this.#comma()
    this.#iso(e.recv)
    this.#comma()
    this.#csv(e.model)
    this.#comma()
    this.#csv(e.provider)
    this.#comma()
    this.#number(e.prompt)
    this.#comma()
    this.#number(e.completion)
    this.#comma()
    this.#number(e.total)
    this.#comma()
    this.#number(e.cached)
    this.#comma()
    this.#number((e as Extra).cacheWrite ?? 0)
    this.#comma()
    this.#number(e.reasoning)
    this.#comma()
    this.#number(e.latency)
    this.#comma()
    if (e.ttft !== null) this.#number(e.ttft)
    this.#comma()
    this.ascii(e.error ? 'error' : 'success')
    this.#comma()
    this.#cost(e.costNanos)
    this.#comma()
    this.ascii(costSource(e))
    this.#comma()
    this.ascii(e.unpriced ? 'true' : 'false')
    this.#comma()
    this.#csvValue(e.meta)
    this.#comma()
    this.#csvValue(e.user)
    this.#comma()
    this.#csvValue(e.session)
    this.#comma()
    this.#csvValue(e.tags)
    this.room(2)
    this.buf[this.pos++] = 13
    this.buf[this.pos++] = 10
  }
}

/** One line's writer, for the string forms below. */
const single = new LineWriter(4096)

/** One NDJSON line (with its newline): `JSON.stringify(toPublic(e)) + '\n'`, as {@link LineWriter.ndjson} writes it. */
export function ndjsonLine(e: PricedEvent): string {
  single.reset()
  single.ndjson(e)
  return single.toString()
}

/** A CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF, quotes doubled. */
export function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s
}

/** A value of EVENT as CSV text: null empty, objects and arrays as JSON text. */
function csvValueText(v: unknown): string {
  if (v === null || v === undefined) return ''
  if (typeof v === 'string') return csvField(v)
  if (typeof v === 'object') return csvField(JSON.stringify(v))
  return String(v)
}

/** The CSV header row (with its CRLF). */
export const CSV_HEADER = EVENT_FIELDS.join(',') + '\r\n'

/** One CSV row (with its CRLF), the columns of {@link CSV_HEADER}, as {@link LineWriter.csv} writes it. */
export function csvLine(e: PricedEvent): string {
  single.reset()
  single.csv(e)
  return single.toString()
}

/** `llmscope-events-<project>-<UTC yyyymmddThhmmss>.<ext>` */
export function exportFilename(project: string, now: number, format: ExportFormat): string {
  const stamp = new Date(now).toISOString().replace(/[-:]/g, '').slice(0, 15)
  return `llmscope-events-${project}-${stamp}.${format}`
}

/** Where an export reads: pages of hits in order, and the events of a page by seq. */
export interface ExportSource {
  /** The next `limit` hits strictly after `after` (null: from the first). */
  search(after: SearchAfter | null, limit: number): Promise<SearchHit[]>
  /**
   * Visits the events at these seqs, in any order: `visit(i, e)` for `seqs[i]`; a seq whose
   * event is gone since the page was found is not visited. `e` is not kept by the export.
   */
  each(seqs: number[], visit: (i: number, e: PricedEvent) => void): Promise<void>
}

export interface ExportOptions {
  format: ExportFormat
  /** Only events of this project are written (hits come from it; this is a second guard). */
  project: string
  /** Hits per search call. */
  pageSize: number
  /** Events per log read: their lines are written as they are read (in log order), then put in the page's order. */
  readBatch?: number
  /** The first page, already fetched (so that a failure before any byte is a proper error answer). */
  first: SearchHit[]
}

/** A chunk is handed to the socket once it holds this many bytes (or its read batch ends). */
const CHUNK_BYTES = 256 * 1024

/** Exports in progress and events written by exports, since start (for tests and /metrics). */
export const exportStats = { running: 0, events: 0 }

/** Chunks of the whole export, page by page, pulled by the consumer. */
async function* exportChunks(src: ExportSource, opts: ExportOptions): AsyncGenerator<Buffer> {
  const csv = opts.format === 'csv'
  const batch = opts.readBatch ?? 1000
  // A full chunk, plus room for the line that fills it (a longer line grows the buffer).
  const out = new LineWriter(CHUNK_BYTES + 64 * 1024)
  // One read batch's lines in the order the log hands its events over, and where each lies
  // (`at[2i]`, `at[2i + 1]`: start and end of hit i's line, -1 for none). Events are read in log
  // order and the export is in the page's: lines are kept rather than events (a decoded event
  // is several times its line, and is garbage as soon as its line is written).
  const lines = new LineWriter(1 << 20)
  let at = new Int32Array(0)
  // A chunk is handed over as it lies in the writer's buffer (the writer starts a fresh one);
  // a small one (the end of a read batch) is copied, and the buffer written on.
  const chunk = () => {
    if (out.length >= CHUNK_BYTES / 4) return out.take()
    const c = out.copy()
    out.reset()
    return c
  }
  exportStats.running++
  try {
    if (csv) yield Buffer.from(CSV_HEADER)
    let hits = opts.first
    for (;;) {
      for (let i = 0; i < hits.length; i += batch) {
        const part = hits.slice(i, i + batch)
        if (at.length < part.length * 2) at = new Int32Array(part.length * 2)
        at.fill(-1, 0, part.length * 2)
        lines.reset()
        await src.each(
          part.map((h) => h.seq),
          (k, e) => {
            if (e.project !== opts.project) return
            at[2 * k] = lines.length
            if (csv) lines.csv(e)
            else lines.ndjson(e)
            at[2 * k + 1] = lines.length
          }
        )
        for (let k = 0; k < part.length; k++) {
          if (at[2 * k] < 0) continue
          out.append(lines, at[2 * k], at[2 * k + 1])
          exportStats.events++
          if (out.length >= CHUNK_BYTES) yield out.take()
        }
        if (out.length > 0) yield chunk()
      }
      if (hits.length < opts.pageSize) return
      const last = hits[hits.length - 1]
      hits = await src.search({ key: last.key, seq: last.seq }, opts.pageSize)
    }
  } finally {
    exportStats.running--
  }
}

/**
 * The export as a byte stream: chunks of at most a read batch or about 256 KiB, produced
 * only as fast as the consumer takes them (the stream's 64 KiB buffer, plus the read batch in
 * hand, is what an export holds besides its page of hits).
 */
export function exportStream(src: ExportSource, opts: ExportOptions): Readable {
  return Readable.from(exportChunks(src, opts), { objectMode: false, highWaterMark: 64 * 1024 })
}

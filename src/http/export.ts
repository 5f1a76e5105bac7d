/**
 * Export (DESIGN §7): every match of a `GET /events` query, streamed as NDJSON (one EVENT per
 * line, exactly `GET /events/:id`'s JSON) or CSV (a header row of EVENT's field names, then one
 * row per event; `tags` and `metadata` as JSON text; RFC 4180 quoting).
 *
 * Bounded memory with backpressure: the body is a Readable pulled by the socket
 * (`Readable.from` over an async generator): the generator runs only when the socket has taken
 * what was handed over, so a slow reader holds the export where it is — one page of hits
 * (a few thousand (key, seq) pairs) and one batch of events, never the whole result.
 *
 * Speed: an export runs at the pace of the log reads and of turning events into text, so lines
 * are written by hand ({@link ndjsonLine}: the same bytes as `JSON.stringify(toPublic(e))`,
 * about twice as fast — no intermediate object, timestamps formatted from a per-day cache).
 * If `toPublic` ever gains, loses or reorders a field that this module does not know, the
 * module notices at load ({@link FAST_LINES} false) and falls back to `JSON.stringify(toPublic(e))`,
 * so the output stays exactly EVENT; test/http/export.test.ts pins that the fast path is on.
 */
import { Readable } from 'node:stream'
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
// Timestamps: `Date#toISOString` is most of an event's serialisation cost; events of one export
// mostly share their day, so the date part is cached and the time of day formatted from tables.

const PAD2 = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0'))
const PAD3 = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'))
const DAY = 86_400_000
/** 10000-01-01T00:00:00Z: from there on (and before 1970, for simplicity) toISOString itself. */
const FAST_ISO_END = 253_402_300_800_000

/** `new Date(ms).toISOString()` with the day's `YYYY-MM-DDT` cached. */
class IsoFormatter {
  #day = NaN
  #prefix = ''

  format(ms: number): string {
    if (!(ms >= 0 && ms < FAST_ISO_END) || !Number.isInteger(ms)) return new Date(ms).toISOString()
    const day = Math.floor(ms / DAY)
    if (day !== this.#day) {
      this.#day = day
      this.#prefix = new Date(day * DAY).toISOString().slice(0, 11)
    }
    let r = ms - day * DAY
    const h = Math.floor(r / 3_600_000)
    r -= h * 3_600_000
    const m = Math.floor(r / 60_000)
    r -= m * 60_000
    const s = Math.floor(r / 1000)
    return this.#prefix + PAD2[h] + ':' + PAD2[m] + ':' + PAD2[s] + '.' + PAD3[r - s * 1000] + 'Z'
  }
}

const tsIso = new IsoFormatter()
const recvIso = new IsoFormatter()
const q = JSON.stringify

/** toPublic's `cost_source`. */
const costSource = (e: PricedEvent) => (e as Extra).costSource ?? (e.cost !== null ? 'caller' : e.unpriced ? 'unpriced' : 'computed')

/** `,"client_id":…` when EVENT has it. */
const clientIdJson = (e: PricedEvent) => {
  if (!HAS_CLIENT_ID) return ''
  const c = (e as Extra).clientId
  return c === null || c === undefined ? ',"client_id":null' : ',"client_id":' + q(c)
}

/** One NDJSON line (with its newline): the bytes of `JSON.stringify(toPublic(e)) + '\n'`. */
export function ndjsonLine(e: PricedEvent): string {
  if (!FAST_LINES) return JSON.stringify(toPublic(e)) + '\n'
  return (
    '{"id":' + q(e.id) +
    clientIdJson(e) +
    ',"seq":' + e.seq +
    ',"timestamp":"' + tsIso.format(e.ts) +
    '","received_at":"' + recvIso.format(e.recv) +
    '","model":' + q(e.model) +
    ',"provider":' + q(e.provider) +
    ',"prompt_tokens":' + e.prompt +
    ',"completion_tokens":' + e.completion +
    ',"total_tokens":' + e.total +
    ',"cached_tokens":' + e.cached +
    ',"cache_write_tokens":' + ((e as Extra).cacheWrite ?? 0) +
    ',"reasoning_tokens":' + e.reasoning +
    ',"latency_ms":' + e.latency +
    ',"ttft_ms":' + (e.ttft === null ? 'null' : e.ttft) +
    ',"status":' + (e.error ? '"error"' : '"success"') +
    ',"cost":' + e.costNanos / 1e9 +
    ',"cost_source":"' + costSource(e) +
    '","unpriced":' + e.unpriced +
    ',"metadata":' + (e.meta === null ? 'null' : q(e.meta)) +
    ',"user_id":' + (e.user === null ? 'null' : q(e.user)) +
    ',"session_id":' + (e.session === null ? 'null' : q(e.session)) +
    ',"tags":' + (e.tags === null ? 'null' : q(e.tags)) +
    '}\n'
  )
}

/** A CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF, quotes doubled. */
export function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s
}

/** A value of EVENT as CSV text: null empty, objects and arrays as JSON text. */
function csvValue(v: unknown): string {
  if (v === null || v === undefined) return ''
  if (typeof v === 'string') return csvField(v)
  if (typeof v === 'object') return csvField(JSON.stringify(v))
  return String(v)
}

/** The CSV header row (with its CRLF). */
export const CSV_HEADER = EVENT_FIELDS.join(',') + '\r\n'

/** One CSV row (with its CRLF), the columns of {@link CSV_HEADER}. */
export function csvLine(e: PricedEvent): string {
  if (!FAST_LINES) {
    const o = toPublic(e) as Record<string, unknown>
    return EVENT_FIELDS.map((f) => csvValue(o[f])).join(',') + '\r\n'
  }
  return (
    csvField(e.id) + (HAS_CLIENT_ID ? ',' + csvValue((e as Extra).clientId) : '') + ',' + e.seq + ',' + tsIso.format(e.ts) + ',' + recvIso.format(e.recv) + ',' + csvField(e.model) + ',' + csvField(e.provider) + ',' +
    e.prompt + ',' + e.completion + ',' + e.total + ',' + e.cached + ',' + ((e as Extra).cacheWrite ?? 0) + ',' + e.reasoning + ',' + e.latency + ',' + (e.ttft === null ? '' : e.ttft) + ',' +
    (e.error ? 'error' : 'success') + ',' + e.costNanos / 1e9 + ',' + costSource(e) + ',' + e.unpriced + ',' + csvValue(e.meta) + ',' +
    csvValue(e.user) + ',' + csvValue(e.session) + ',' + csvValue(e.tags) + '\r\n'
  )
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
  /** The events at these seqs (undefined: gone since the page was found), in that order. */
  events(seqs: number[]): Promise<Array<PricedEvent | undefined>>
}

export interface ExportOptions {
  format: ExportFormat
  /** Only events of this project are written (hits come from it; this is a second guard). */
  project: string
  /** Hits per search call. */
  pageSize: number
  /** Events per log read (and per chunk handed to the socket). */
  readBatch?: number
  /** The first page, already fetched (so that a failure before any byte is a proper error answer). */
  first: SearchHit[]
}

/** A chunk is handed to the socket once it holds this many characters (or its read batch ends). */
const CHUNK_CHARS = 256 * 1024

/** Exports in progress and events written by exports, since start (for tests and /metrics). */
export const exportStats = { running: 0, events: 0 }

/** Chunks of text of the whole export, page by page, pulled by the consumer. */
async function* exportChunks(src: ExportSource, opts: ExportOptions): AsyncGenerator<string> {
  const line = opts.format === 'csv' ? csvLine : ndjsonLine
  const batch = opts.readBatch ?? 1000
  exportStats.running++
  try {
    if (opts.format === 'csv') yield CSV_HEADER
    let hits = opts.first
    for (;;) {
      for (let i = 0; i < hits.length; i += batch) {
        const part = hits.slice(i, i + batch)
        const events = await src.events(part.map((h) => h.seq))
        let chunk = ''
        for (const e of events) {
          if (e === undefined || e.project !== opts.project) continue
          chunk += line(e)
          exportStats.events++
          if (chunk.length >= CHUNK_CHARS) {
            yield chunk
            chunk = ''
          }
        }
        if (chunk !== '') yield chunk
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
 * The export as a byte stream: text chunks of at most a read batch or about 256 KiB, produced
 * only as fast as the consumer takes them (the stream's 64 KiB buffer, plus the read batch in
 * hand, is what an export holds besides its page of hits).
 */
export function exportStream(src: ExportSource, opts: ExportOptions): Readable {
  return Readable.from(exportChunks(src, opts), { objectMode: false, highWaterMark: 64 * 1024 })
}

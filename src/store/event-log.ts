/**
 * The durable event log. `append()` assigns consecutive log positions (seq) and ids to a
 * group of events and writes them with ONE put keyed by the first seq; the returned promise
 * resolves once LMDB has committed the transaction holding it. Concurrent appends share a
 * commit (lmdb-js batches every write issued in the same turn).
 *
 * Invariant: seqs are assigned synchronously in call order, so positions are unique and
 * increasing. A failed put leaves a gap, which readers skip.
 *
 * Record formats (`v`), all read, the newest written:
 * - v1: `{ v: 1, ev: Row[] }`, one array per event. Still written for appends of fewer than
 *   {@link COLUMNS_FROM} events (cheaper there) and for an append with more than 65,536
 *   distinct model/provider names, which v2's Uint16 indexes cannot hold.
 * - v2: columns (see EventRecordV2 in db.ts): numbers as typed-array bytes, token counts as
 *   Uint32 when they fit, model/provider as indexes into the record's distinct names, the
 *   ids' random parts in one string, metadata as an array. lmdb-js (msgpackr) copies bytes
 *   where a row costs a type dispatch per field: msgpack of rows was a visible share of
 *   main-thread time in a batch-ingest profile. Columns are faster to append and to read back
 *   (recovery, since_seq replay) for large appends, at the same size on disk (figures in
 *   bench/RESULTS.md, "Micro-benchmark notes").
 * - v3/v4: v1/v2 plus each event's project and dimensions, when any event has them.
 * - v5/v6: v1/v2 plus client ids and imported costs (ExtrasV5 in db.ts), when any event has
 *   one (or a cache write count, `cw`); project and dimensions optional inside. Rows appends
 *   still write v3/v5; columns appends wrote v4/v6 up to this release, and they are still read.
 * - v7: v2's columns, and each event's metadata, project and dimensions as a msgpack value of
 *   its own (EventRecordV7 in db.ts), written for columns appends where any event has
 *   metadata, a project, dimensions or an extra. A v4/v6 record is one msgpack value: reading
 *   one event of it decoded all of its events' metadata objects and tuples (~0.4 ms for 1,000),
 *   which a search page or an export in time order paid per event, their events lying in
 *   different records. A v7 event is read by unpacking its own part.
 * A record of a format this release does not know is an error, never misread.
 */
import type { Database } from 'lmdb'
import { Unpackr } from 'msgpackr'
import type { EventRecord, EventRecordV1, EventRecordV2, EventRecordV3, EventRecordV4, EventRecordV5, EventRecordV6, EventRecordV7, ExtrasV5 } from './db.js'
import { DEFAULT_PROJECT, makeEventId, markDuplicate, seqOfEventId, withExtras, type PendingEvent, type StoredEvent } from '../events.js'
import { dedupeKey, type DedupeIndex } from './dedupe.js'
import { intern } from '../intern.js'
import { MsgpackWriter } from './msgpack-writer.js'
import type { Appended, DurableLog, LogPosition, LogReadOptions } from './durable-log.js'

type Row = [
  id: string, ts: number, recv: number, model: string, provider: string,
  prompt: number, completion: number, total: number, cached: number, reasoning: number,
  latency: number, ttft: number | null, error: 0 | 1, cost: number | null, meta: Record<string, unknown> | null
]

/** An event's project and dimensions in a v3/v4 record; null = project `default`, none of them. */
export type DimsTuple = [project: string, user: string | null, session: string | null, tags: readonly string[] | null]

/** Code of StoredEvent.costSource in a v5/v6 record's `cs` (0 = none). */
const COST_SOURCES = [null, 'computed', 'unpriced'] as const
const costSourceCode = (s: StoredEvent['costSource']): 0 | 1 | 2 => (s === 'computed' ? 1 : s === 'unpriced' ? 2 : 0)

function fromRow(seq: number, r: Row, dx: DimsTuple | null | undefined, x: ExtrasV5 | null, i: number): StoredEvent {
  const e: StoredEvent = {
    seq, id: r[0], ts: r[1], recv: r[2], model: r[3], provider: r[4], prompt: r[5], completion: r[6],
    total: r[7], cached: r[8], reasoning: r[9], latency: r[10], ttft: r[11], error: r[12] === 1, cost: r[13], meta: r[14],
    project: dx?.[0] ?? DEFAULT_PROJECT, user: dx?.[1] ?? null, session: dx?.[2] ?? null, tags: dx?.[3] ?? null
  }
  return x === null ? e : withCacheWrite(withExtras(e, clientIdAt(x, i), x.cs === undefined ? null : COST_SOURCES[x.cs[i]]), x, i)
}

/** Sets event `i`'s cache write count from a v5/v6/v7 record's `cw` when it is nonzero (absent: none, read as 0). */
function withCacheWrite(e: StoredEvent, x: { cw?: number[] }, i: number): StoredEvent {
  const cw = x.cw?.[i]
  if (cw !== undefined && cw > 0) e.cacheWrite = cw
  return e
}

/** Sets an event's acceptance price revision from its record's `pr` (absent or 0: left unset, read as 0). */
function withPriceRev(e: StoredEvent, pr: number | undefined): StoredEvent {
  if (pr !== undefined && pr > 0) e.priceRev = pr
  return e
}

/** A record's client ids split once (cached per decoded record: its events are read one by one). */
const splitIds = new WeakMap<ExtrasV5, string[]>()

/** Event `i`'s client id in a v5/v6 record, or null. */
function clientIdAt(x: ExtrasV5, i: number): string | null {
  let ids = splitIds.get(x)
  if (ids === undefined) {
    ids = x.cid.split('\n')
    splitIds.set(x, ids)
  }
  const id = ids[i]
  return id === '' || id === undefined ? null : id
}

/** The `cs` (imported costs' source) and `cw` (cache writes) columns of `events`, each absent when no event has one. */
function costColumns(events: ReadonlyArray<StoredEvent | null>): { cs?: Array<0 | 1 | 2>; cw?: number[] } {
  let anyCost = false
  let anyWrite = false
  for (const e of events) {
    if (e === null) continue
    if (e.costSource !== null && e.costSource !== undefined) anyCost = true
    if (e.cacheWrite !== undefined && e.cacheWrite > 0) anyWrite = true
  }
  const x: { cs?: Array<0 | 1 | 2>; cw?: number[] } = {}
  if (anyCost) x.cs = events.map((e) => (e === null ? 0 : costSourceCode(e.costSource)))
  if (anyWrite) x.cw = events.map((e) => e?.cacheWrite ?? 0)
  return x
}

/**
 * The v5/v6 extras of `events`, or undefined when none has a client id or an imported cost.
 * Client ids go as one string (`\n` between them, empty for none: ids never hold a newline
 * nor are empty), which msgpack copies in one go where an array costs a dispatch per id.
 */
function extrasOf(events: ReadonlyArray<StoredEvent | null>): { cid: string; cs?: Array<0 | 1 | 2>; cw?: number[] } | undefined {
  const any = events.some((e) => e !== null && e.clientId !== null && e.clientId !== undefined)
  const cols = costColumns(events)
  if (!any && cols.cs === undefined && cols.cw === undefined) return undefined
  let cid = ''
  for (let i = 0; i < events.length; i++) {
    if (i > 0) cid += '\n'
    cid += events[i]?.clientId ?? ''
  }
  return { cid, ...cols }
}

/** The event's v3/v4 tuple, or null when it has the defaults (project `default`, no dimensions). */
function dimsOf(e: StoredEvent): DimsTuple | null {
  if (isPlain(e)) return null
  return [e.project, e.user, e.session, e.tags]
}

/** The events' tuples, or undefined when every event has the defaults (then v1/v2 is written). */
function dimsColumn(events: readonly StoredEvent[]): Array<DimsTuple | null> | undefined {
  let any = false
  const dx: Array<DimsTuple | null> = new Array(events.length)
  for (let i = 0; i < events.length; i++) {
    dx[i] = dimsOf(events[i])
    if (dx[i] !== null) any = true
  }
  return any ? dx : undefined
}

/** Length of an id's random part (`evt_<seq>_<this>`). */
const RND = 12
/**
 * Appends of at least this many events are written as v2 columns, smaller ones as v1 rows.
 * Columns cost a few typed arrays per record, which small appends do not earn back: rows are
 * cheaper per event below about 64 events, columns from there on (figures in
 * bench/RESULTS.md, "Micro-benchmark notes"). Single-event requests, most of them one event
 * per append, stay on rows.
 */
export const COLUMNS_FROM = 64
/**
 * Most events in one record: a larger append is stored as several records (keyed by each
 * one's first seq, put in the same turn, so in one transaction). Reading one event copies its
 * whole record out of LMDB (lmdb-js copies a value into its read buffer): ~180 KB for 1,000
 * events with dimensions, 40–70 µs once the log is larger than the CPU's caches — most of a
 * search page's or a time-ordered export's cost per event. 256 events copy ~47 KB.
 */
export const RECORD_MAX = 256

const bytesOf = (a: Float64Array | Uint32Array | Uint16Array | Uint8Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

/**
 * A v7 record's part of one event: `[meta, project, user, session, tags, clientId]`, trailing
 * nulls left out (an event with metadata alone is `[meta]`), or nil for an event with none of them.
 */
type Part = [meta: Record<string, unknown> | null, project?: string | null, user?: string | null, session?: string | null, tags?: readonly string[] | null, clientId?: string | null]

/** Parts are plain msgpack (maps with their keys, no shared structures): each decodes alone. */
const partWriter = new MsgpackWriter()
const partUnpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })
/** msgpack's nil: the whole part of an event without metadata, project or dimensions. */
const NIL = 0xc0

/** Whether `e` has the defaults a v1/v2 record implies: project `default`, no dimensions. */
const isPlain = (e: StoredEvent): boolean => e.project === DEFAULT_PROJECT && e.user === null && e.session === null && e.tags === null

/** Writes the part of `e` (see {@link Part}): its fields up to the last one set, or nil. */
function writePart(w: MsgpackWriter, e: StoredEvent): void {
  const cid = e.clientId ?? null
  const len = cid !== null ? 6 : e.tags !== null ? 5 : e.session !== null ? 4 : e.user !== null ? 3 : e.project !== DEFAULT_PROJECT ? 2 : e.meta !== null ? 1 : 0
  if (len === 0) return w.nil()
  w.arrayHeader(len)
  w.value(e.meta)
  if (len === 1) return
  w.string(e.project)
  if (len === 2) return
  w.value(e.user)
  if (len === 3) return
  w.value(e.session)
  if (len === 4) return
  w.value(e.tags)
  if (len === 5) return
  w.string(cid!)
}

/** The parts of `events` back to back, and where each ends (v7's `px` and `po`); a hole's part is nil. */
function partsOf(events: ReadonlyArray<StoredEvent | null>): { px: Buffer; po: Buffer } {
  const n = events.length
  const ends = new Uint32Array(n)
  const w = partWriter
  w.reset()
  for (let i = 0; i < n; i++) {
    const e = events[i]
    if (e === null) w.nil()
    else writePart(w, e)
    ends[i] = w.length
  }
  return { px: w.copy(), po: bytesOf(ends) }
}

/** Event `i`'s part of a v7 record: unpacked on its own, or taken from the record's parts when all were unpacked at once. */
function partAt(rec: Columns, i: number): Part | null {
  if (rec.parts !== null) return rec.parts[i]
  const po = rec.po!
  const start = rec.window ? po[0] : i === 0 ? 0 : po[i - 1]
  const end = rec.window ? po[1] : po[i]
  if (end - start === 1 && rec.px![start] === NIL) return null
  return partUnpackr.unpack(rec.px!.subarray(start, end)) as Part
}

/**
 * The columns record of `events` (consecutive seqs, at most {@link RECORD_MAX}, so their
 * distinct model/provider names fit v2's Uint16 indexes; `rnd` holds their ids' random parts):
 * v2 when no event has metadata, a project, dimensions or an extra, else v7. A null is a hole
 * (a purged event: see {@link withHoles}): v7 with `gone`, its columns zero, its part nil.
 */
function encodeRecord(events: ReadonlyArray<StoredEvent | null>, rnd: string): EventRecordV2 | EventRecordV7 {
  const n = events.length
  const num = new Float64Array(n * 5)
  const tokF = new Float64Array(n * 5)
  const err = new Uint8Array(n)
  const str = new Uint16Array(n * 2)
  const names: string[] = []
  const index = new Map<string, number>()
  // Whether any event needs v7 (metadata, a project, dimensions, a client id) rather than v2.
  let needsParts = false
  let tok32 = true
  let gone: Uint8Array | null = null
  for (let i = 0; i < n; i++) {
    const e = events[i]
    if (e === null) {
      ;(gone ??= new Uint8Array(n))[i] = 1
      continue
    }
    const o = i * 5
    num[o] = e.ts
    num[o + 1] = e.recv
    num[o + 2] = e.latency
    // NaN stands for null: validated ttft and cost are finite.
    num[o + 3] = e.ttft ?? NaN
    num[o + 4] = e.cost ?? NaN
    tokF[o] = e.prompt
    tokF[o + 1] = e.completion
    tokF[o + 2] = e.total
    tokF[o + 3] = e.cached
    tokF[o + 4] = e.reasoning
    if (e.total > 0xffffffff || e.prompt > 0xffffffff || e.completion > 0xffffffff || e.cached > 0xffffffff || e.reasoning > 0xffffffff) tok32 = false
    err[i] = e.error ? 1 : 0
    str[i * 2] = intern(index, names, e.model)
    str[i * 2 + 1] = intern(index, names, e.provider)
    if (e.meta !== null || !isPlain(e) || (e.clientId !== null && e.clientId !== undefined)) needsParts = true
  }
  const tok = tok32 ? bytesOf(Uint32Array.from(tokF)) : bytesOf(tokF)
  const cols = { n, num: bytesOf(num), tok, tok32, err: bytesOf(err), str: bytesOf(str), names, rnd }
  // Client ids are in the parts; where imported costs came from, and cache writes, are columns.
  const x = costColumns(events)
  if (gone === null && !needsParts && x.cs === undefined && x.cw === undefined) return { v: 2, ...cols, meta: new Array<null>(n).fill(null) }
  // v7 keeps the random parts as bytes (ASCII): a view when read, where a string is decoded whole.
  const out: EventRecordV7 = { v: 7, ...cols, rnd: Buffer.from(rnd, 'latin1'), ...partsOf(events) }
  if (gone !== null) out.gone = bytesOf(gone)
  if (x.cs !== undefined) out.cs = x.cs
  if (x.cw !== undefined) out.cw = x.cw
  return out
}

const toRow = (e: StoredEvent): Row => [e.id, e.ts, e.recv, e.model, e.provider, e.prompt, e.completion, e.total, e.cached, e.reasoning, e.latency, e.ttft, e.error ? 1 : 0, e.cost, e.meta]

/** The v1 record of `events` (rows), v3 when any carries a project or dimensions, v5 when any carries a client id or an imported cost. */
function encodeRowsRecord(events: readonly StoredEvent[]): EventRecord {
  const dx = dimsColumn(events)
  const x = extrasOf(events)
  if (x !== undefined) return dx === undefined ? { v: 5, ev: events.map(toRow), ...x } : { v: 5, ev: events.map(toRow), dx, ...x }
  return dx === undefined ? { v: 1, ev: events.map(toRow) } : { v: 3, ev: events.map(toRow), dx }
}

/** A hole's random id part in a rewritten record: never read (a hole has no event). */
const HOLE_RND = '0'.repeat(RND)

/**
 * The record holding `events` with holes (null) where a purge removed one: how a purge
 * rewrites a record. Positions never move, so the other events keep their seqs and ids. A
 * record of {@link COLUMNS_FROM} to {@link RECORD_MAX} events is rewritten in columns (v7 with
 * `gone`), so its events are still read one by one; a smaller one, or a larger one that an
 * earlier release wrote, in rows: v3 (v5 when an event keeps a client id or an imported cost).
 * Nothing of a removed event stays in the record: its columns are zero and its part is nil.
 */
function withHoles(events: ReadonlyArray<StoredEvent | null>): EventRecordV3 | EventRecordV5 | EventRecordV7 {
  const pr = events.find((e) => e !== null)?.priceRev
  if (events.length >= COLUMNS_FROM && events.length <= RECORD_MAX) {
    let rnd = ''
    for (const e of events) rnd += e === null ? HOLE_RND : e.id.slice(-RND)
    // Holes force v7 (v2 has none).
    const columns = encodeRecord(events, rnd) as EventRecordV7
    if (pr !== undefined && pr > 0) columns.pr = pr
    return columns
  }
  const ev = events.map((e) => (e === null ? null : toRow(e)))
  const dx = events.map((e) => (e === null ? null : dimsOf(e)))
  const x = extrasOf(events)
  const out: EventRecordV3 | EventRecordV5 = x === undefined ? { v: 3, ev, dx } : { v: 5, ev, dx, ...x }
  // The append's price revision stays with its events (every event of a record shares it).
  if (pr !== undefined && pr > 0) out.pr = pr
  return out
}

type ColumnsRecord = EventRecordV2 | EventRecordV4 | EventRecordV6 | EventRecordV7

/**
 * A v2/v4/v6/v7 record's columns as typed arrays: the whole record's (views of the decoded
 * record's own bytes, or aligned copies), or one event's window of them ({@link eventWindow}).
 */
interface Columns {
  record: ColumnsRecord
  /** Whether the arrays hold event `base` alone (a window), not the whole record. */
  window: boolean
  /** The event the arrays start at: 0 for a whole record. */
  base: number
  num: Float64Array
  tok: Float64Array | Uint32Array
  err: Uint8Array
  str: Uint16Array
  /** v7: the parts' bytes and where each ends, or a window's [start, end] (null in v2/v4/v6). */
  px: Uint8Array | null
  po: Uint32Array | null
  /** v7: every part, when the whole record was unpacked at once (else null: each is unpacked when read). */
  parts: Array<Part | null> | null
}

function copyInto<T extends Float64Array | Uint32Array | Uint16Array | Uint8Array>(target: T, bytes: Uint8Array): T {
  new Uint8Array(target.buffer).set(bytes)
  return target
}

type ColumnArray = Float64ArrayConstructor | Uint32ArrayConstructor | Uint16ArrayConstructor | Uint8ArrayConstructor

/**
 * `bytes` as a typed array of `length` elements: a view when they are aligned for it (lmdb-js
 * hands each binary field over as a copy of its own, at offset 0), else a copy.
 */
function columnOf<C extends ColumnArray>(Type: C, bytes: Uint8Array, length: number): InstanceType<C> {
  const size = Type.BYTES_PER_ELEMENT
  if (bytes.byteOffset % size === 0 && bytes.byteLength === length * size) return new Type(bytes.buffer as ArrayBuffer, bytes.byteOffset, length) as InstanceType<C>
  return copyInto(new Type(length), bytes) as InstanceType<C>
}

/** `all`: a v7 record's parts are unpacked at once (every event will be read), else one by one as read. */
function columnsOf(r: ColumnsRecord, all: boolean): Columns {
  const n = r.n
  const v7 = r.v === 7
  return {
    record: r,
    window: false,
    base: 0,
    num: columnOf(Float64Array, r.num, n * 5),
    tok: r.tok32 ? columnOf(Uint32Array, r.tok, n * 5) : columnOf(Float64Array, r.tok, n * 5),
    err: columnOf(Uint8Array, r.err, n),
    str: columnOf(Uint16Array, r.str, n * 2),
    px: v7 ? r.px : null,
    po: v7 ? columnOf(Uint32Array, r.po, n) : null,
    parts: v7 && all ? (partUnpackr.unpackMultiple(r.px) as Array<Part | null>) : null
  }
}

function unknownFormat(key: number, r: unknown): Error {
  return new Error(`event log record at seq ${key} has format v${String((r as { v?: unknown }).v)}, which this release cannot read`)
}

/** Events in a stored record, of any format. */
function recordLength(key: number, r: EventRecord): number {
  if (r.v === 2 || r.v === 4 || r.v === 6 || r.v === 7) return r.n
  if (r.v === 1 || r.v === 3 || r.v === 5) return r.ev.length
  throw unknownFormat(key, r)
}

/**
 * One event's columns, copied out by {@link eventWindow}: shared, so a window is good until the
 * next one is made (decode its event first). 48 bytes hold ts…cost (40) or the Float64 token
 * counts (40); the Uint32 counts (20), the names (4), the part's ends (8) fit too.
 */
const WINDOW = {
  num: new Float64Array(5),
  tokF: new Float64Array(5),
  tok32: new Uint32Array(5),
  str: new Uint16Array(2),
  err: new Uint8Array(1),
  po: new Uint32Array(2)
}
const windowBytes = {
  num: new Uint8Array(WINDOW.num.buffer),
  tokF: new Uint8Array(WINDOW.tokF.buffer),
  tok32: new Uint8Array(WINDOW.tok32.buffer),
  str: new Uint8Array(WINDOW.str.buffer),
  po: new Uint8Array(WINDOW.po.buffer)
}

/** Copies `n` bytes of `from` at `at` into `to` (a few bytes: a loop, no views made). */
function copyBytes(to: Uint8Array, from: Uint8Array, at: number, n: number): void {
  for (let b = 0; b < n; b++) to[b] = from[at + b]
}

/**
 * Event `i` of a columns record as a window: its own numbers copied out (a few bytes, where the
 * whole record's columns are tens of KB, into the shared {@link WINDOW}), and, in v7, where its
 * part lies. For a record read without copies ({@link EventLog}'s peek): decode the event
 * before the database is read again, and before the next window is made.
 */
function eventWindow(r: ColumnsRecord, i: number): Columns {
  let po: Uint32Array | null = null
  if (r.v === 7) {
    if (i === 0) {
      windowBytes.po.fill(0, 0, 4)
      copyBytes(windowBytes.po.subarray(4), r.po, 0, 4)
    } else copyBytes(windowBytes.po, r.po, (i - 1) * 4, 8)
    po = WINDOW.po
  }
  copyBytes(windowBytes.num, r.num, i * 40, 40)
  if (r.tok32) copyBytes(windowBytes.tok32, r.tok, i * 20, 20)
  else copyBytes(windowBytes.tokF, r.tok, i * 40, 40)
  copyBytes(windowBytes.str, r.str, i * 4, 4)
  WINDOW.err[0] = r.err[i]
  return {
    record: r,
    window: true,
    base: i,
    num: WINDOW.num,
    tok: r.tok32 ? WINDOW.tok32 : WINDOW.tokF,
    err: WINDOW.err,
    str: WINDOW.str,
    px: r.v === 7 ? r.px : null,
    po,
    parts: null
  }
}

/** Event `i` of a stored record ready to decode alone: rows as they are, columns as {@link eventWindow}. */
function readableAt(key: number, r: EventRecord, i: number): EventRecordV1 | EventRecordV3 | EventRecordV5 | Columns {
  return isRows(key, r) ? r : eventWindow(r, i)
}

/** Whether `r` is a rows record (v1/v3/v5) rather than columns (v2/v4/v6/v7); a format this release does not know throws. */
function isRows(key: number, r: EventRecord): r is EventRecordV1 | EventRecordV3 | EventRecordV5 {
  if (r.v === 1 || r.v === 3 || r.v === 5) return true
  if (r.v !== 2 && r.v !== 4 && r.v !== 6 && r.v !== 7) throw unknownFormat(key, r)
  return false
}

/**
 * A stored record ready to decode: rows as they are, columns copied out once. `all`: every
 * event of it will be read (a v7 record's parts are then unpacked in one go).
 */
function readable(key: number, r: EventRecord, all = false): EventRecordV1 | EventRecordV3 | EventRecordV5 | Columns {
  return isRows(key, r) ? r : columnsOf(r, all)
}

/** Event `i`'s id's random part: a slice of v2/v4/v6's string, or v7's 12 bytes (ASCII). */
function randomPartAt(r: ColumnsRecord, i: number): string {
  if (typeof r.rnd === 'string') return r.rnd.slice(i * RND, i * RND + RND)
  const b = r.rnd
  const o = i * RND
  return String.fromCharCode(b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5], b[o + 6], b[o + 7], b[o + 8], b[o + 9], b[o + 10], b[o + 11])
}

/** Event `i` of the record stored at `key`, or null where a purge left a hole. */
function decodeAt(key: number, rec: EventRecordV1 | EventRecordV3 | EventRecordV5 | Columns, i: number): StoredEvent | null {
  const seq = key + i
  if ('v' in rec) {
    const row = rec.ev[i] as Row | null
    if (row === null) return null
    if (rec.v === 5) return withPriceRev(fromRow(seq, row, rec.dx?.[i], rec, i), rec.pr)
    return withPriceRev(fromRow(seq, row, rec.v === 3 ? rec.dx[i] : null, null, i), rec.pr)
  }
  const { num, tok, err, str, record: r } = rec
  if (r.v === 7 && r.gone !== undefined && r.gone[i] === 1) return null
  const j = i - rec.base
  let meta: Record<string, unknown> | null = null
  let project: string | null | undefined
  let user: string | null | undefined
  let session: string | null | undefined
  let tags: readonly string[] | null | undefined
  let clientId: string | null | undefined
  if (r.v === 7) {
    const p = partAt(rec, i)
    if (p !== null) [meta, project, user, session, tags, clientId] = p
  } else {
    meta = r.meta[i] ?? null
    const dx = r.v === 4 || r.v === 6 ? r.dx?.[i] : null
    if (dx !== null && dx !== undefined) [project, user, session, tags] = dx
    if (r.v === 6) clientId = clientIdAt(r, i)
  }
  const o = j * 5
  const ttft = num[o + 3]
  const cost = num[o + 4]
  const e: StoredEvent = {
    seq,
    id: `evt_${seq.toString(36)}_${randomPartAt(r, i)}`,
    ts: num[o],
    recv: num[o + 1],
    model: r.names[str[j * 2]],
    provider: r.names[str[j * 2 + 1]],
    prompt: tok[o],
    completion: tok[o + 1],
    total: tok[o + 2],
    cached: tok[o + 3],
    reasoning: tok[o + 4],
    latency: num[o + 2],
    ttft: Number.isNaN(ttft) ? null : ttft,
    error: err[j] === 1,
    cost: Number.isNaN(cost) ? null : cost,
    meta,
    project: project ?? DEFAULT_PROJECT,
    user: user ?? null,
    session: session ?? null,
    tags: tags ?? null
  }
  if (r.pr !== undefined && r.pr > 0) e.priceRev = r.pr
  if (r.v !== 6 && r.v !== 7) return e
  return withCacheWrite(withExtras(e, clientId, r.cs === undefined ? null : COST_SOURCES[r.cs[i]]), r, i)
}

/** The events of a record that `kept` no longer holds (a purge's victims). */
function* droppedOf(key: number, rec: EventRecordV1 | EventRecordV3 | EventRecordV5 | Columns, n: number, kept: ReadonlyArray<StoredEvent | null>): Generator<StoredEvent> {
  for (let i = 0; i < n; i++) {
    if (kept[i] !== null) continue
    const e = decodeAt(key, rec, i)
    if (e !== null) yield e
  }
}

/** The record an append last decoded while looking for its own ids (EventLog.#own). */
interface Reading {
  key: number
  n: number
  rec: EventRecordV1 | EventRecordV3 | EventRecordV5 | Columns | null
}

export type { Appended } from './durable-log.js'

/** How full the database may get: appends are refused once `used()` reaches `max`. */
export interface SpaceLimit {
  used(): number
  max: number
}

const resolved = Promise.resolve()

/**
 * Rewrites a purge may leave in flight between its turns: past this many it waits for their
 * commit. Waiting at every turn made each turn's few rewrites a commit of their own, and the
 * purge waited on ~800 commits (6.4 s of a 10 s purge of 195,000 events in 4,800 records);
 * left in flight, the rewrites of later turns share the commits lmdb-js runs meanwhile.
 * `npm run bench search` at 2M (DELETE status=success of 195,496 events under a live ingest of
 * 10-event batches): 256 took 15.7 s, ingest p50 36 / p99 252 ms; 16 took 34.0 s, p50 68 /
 * p99 145 ms (format 6 with a commit per turn: 34.8 s, p50 23 / p99 75 ms).
 */
const PURGE_IN_FLIGHT = 256

/**
 * `put`, marked handled: a purge awaits its rewrites turns later (Promise.all still rejects with
 * a failure), and a rejection nobody handles by then would end the process.
 */
function inFlight(put: Promise<boolean>): Promise<boolean> {
  put.catch(noop)
  return put
}

/** `pending` once at most {@link PURGE_IN_FLIGHT} are left unsettled (all settled past it: an empty list). */
async function settleSome(pending: Array<Promise<boolean>>): Promise<Array<Promise<boolean>>> {
  if (pending.length < PURGE_IN_FLIGHT) return pending
  await Promise.all(pending)
  return []
}
const noop = (): void => {}

export class EventLog implements DurableLog {
  readonly #db: Database<EventRecord, number>
  readonly #space: SpaceLimit | undefined
  /**
   * The dedupe index of client ids (DESIGN §7, Idempotency), or null: then every event is
   * stored, client id or not. DELETE /events drops a deleted event's entry through it.
   */
  readonly dedupe: DedupeIndex | null
  /**
   * The price book's current revision (engine: `() => book.rev`), read synchronously as each
   * append's seqs are given and stamped on its record (`pr`) and events (StoredEvent.priceRev).
   */
  priceRev: () => number = () => 0
  #used = 0
  #usedAt = -Infinity
  #nextSeq: number
  #appends = 0
  #appendedEvents = 0
  /**
   * Every record's key (its first seq), ascending: read from the database on the first read by
   * seq, then kept by appends (records are only ever added, and a purge rewrites them in
   * place). A binary search here finds a seq's record in well under a µs, where an LMDB
   * reverse range took ~9 µs of a search page's ~20 µs per event. A key whose put failed
   * stays: its record reads as absent, as its seqs do.
   */
  #keys: number[] | null = null
  #duplicates = 0

  constructor(db: Database<EventRecord, number>, space?: SpaceLimit, dedupe?: DedupeIndex) {
    this.#db = db
    this.#space = space
    this.dedupe = dedupe ?? null
    // The index's sweep reads an expired append's keys from its record here.
    this.dedupe?.attach((seq) => this.#recordEvents(seq))
    this.#nextSeq = 0
    for (const { key, value } of db.getRange({ reverse: true, limit: 1 })) {
      this.#nextSeq = key + recordLength(key, value)
    }
  }

  /** The seq the next event will get. */
  get nextSeq(): number {
    return this.#nextSeq
  }

  get stats() {
    return { appends: this.#appends, appendedEvents: this.#appendedEvents, duplicates: this.#duplicates, nextSeq: this.#nextSeq }
  }

  /**
   * Assigns positions and ids, enqueues one put, and returns the stored events at once.
   *
   * Exactly once (with a dedupe index): an event whose client id was accepted in its project
   * within the window — earlier, in an append still in flight, or earlier in this very call —
   * or is the id of an event this log holds in that project (an export posted back) is not
   * stored again. Its pending object takes the original's `seq` and `id` and is marked
   * (`isDuplicate`); it is left out of `events` (what was stored, in log order: what goes
   * downstream), and `committed` also waits for the original's commit when that is in flight.
   * The new events' index entries are written in this turn, so in the log record's transaction.
   */
  append(pending: readonly PendingEvent[]): Appended {
    const d = this.dedupe
    let fresh = pending
    let dups: Array<{ e: StoredEvent; of: { seq: number; id: string } }> | null = null
    let waits: Promise<void>[] | null = null
    if (d !== null) {
      let i = 0
      while (i < pending.length && (pending[i].clientId === null || pending[i].clientId === undefined)) i++
      if (i < pending.length) {
        // Some event has a client id: split the call into what is new and what is a duplicate.
        const out: PendingEvent[] = pending.slice(0, i)
        let here: Map<string, StoredEvent> | null = null
        let reading: Reading | null = null
        for (; i < pending.length; i++) {
          const p = pending[i]
          const cid = p.clientId
          if (cid === null || cid === undefined) {
            out.push(p)
            continue
          }
          const key = dedupeKey(p.project, cid)
          const same = here?.get(key)
          if (same !== undefined) {
            // Given ids once positions are assigned below (the same object).
            ;(dups ??= []).push({ e: p as StoredEvent, of: same })
            continue
          }
          const orig = d.find(key, p.recv) ?? this.#own(cid, p.project, (reading ??= { key: -1, n: 0, rec: null }))
          if (orig !== undefined) {
            ;(dups ??= []).push({ e: p as StoredEvent, of: orig })
            if (orig.committed !== null) (waits ??= []).push(orig.committed)
            continue
          }
          ;(here ??= new Map()).set(key, p as StoredEvent)
          out.push(p)
        }
        fresh = out
      }
    }
    const appended = fresh.length > 0 ? this.#store(fresh) : { events: [], committed: resolved }
    if (dups !== null) {
      for (const { e, of } of dups) {
        e.seq = of.seq
        e.id = of.id
        markDuplicate(e)
      }
      this.#duplicates += dups.length
      d!.countDuplicates(dups.length)
    }
    if (waits !== null) appended.committed = Promise.all([appended.committed, ...waits]).then(noop)
    return appended
  }

  /**
   * This log's own event whose id is `id`, in `project`: an export posted back to the server it
   * came from (its EVENTs' key is their own `evt_…` id, which no dedupe entry holds) is a
   * duplicate of the events it copies, window or not. Consecutive ids mostly share a record:
   * `reading` keeps the last one decoded, so a whole export costs one decode per record.
   */
  #own(id: string, project: string, reading: Reading): { seq: number; id: string; committed: null } | undefined {
    const seq = seqOfEventId(id)
    if (seq === null || seq >= this.#nextSeq) return undefined
    if (reading.rec === null || seq < reading.key || seq >= reading.key + reading.n) {
      reading.rec = null
      for (const { key, value } of this.#db.getRange({ start: seq, reverse: true, limit: 1 })) {
        reading.key = key
        reading.n = recordLength(key, value)
        reading.rec = readable(key, value, true)
      }
      if (reading.rec === null || seq >= reading.key + reading.n) return undefined
    }
    const e = decodeAt(reading.key, reading.rec, seq - reading.key)
    return e !== null && e.id === id && e.project === project ? { seq, id, committed: null } : undefined
  }

  /** Stores new events: positions, ids, one put per {@link RECORD_MAX} events (and their dedupe entries, in the same turn). */
  #store(pending: readonly PendingEvent[]): Appended {
    if (this.#space !== undefined) {
      // Reading LMDB's used size is not free: at most every 5 ms (the quota is soft by that much).
      const now = performance.now()
      if (now - this.#usedAt >= 5) {
        this.#used = this.#space.used()
        this.#usedAt = now
      }
      const used = this.#used
      if (used >= this.#space.max) {
        // Refused before any position is assigned: no gap, nothing half-written.
        return { events: [], committed: Promise.reject(new Error(`the database is full (${used} of ${this.#space.max} bytes, LLMSCOPE_MAX_DB_BYTES)`)) }
      }
    }
    const first = this.#nextSeq
    this.#nextSeq += pending.length
    // The price book's revision as these seqs are given (src/pricing/book.ts): it fixes their cost.
    const pr = this.priceRev()
    const events: StoredEvent[] = new Array(pending.length)
    // v2 keeps only the ids' random parts: `evt_<seq base36>_` follows from the position.
    const columns = pending.length >= COLUMNS_FROM
    let rnd = ''
    for (let i = 0; i < pending.length; i++) {
      const seq = first + i
      const e = pending[i] as StoredEvent
      e.seq = seq
      e.id = makeEventId(seq)
      if (pr > 0) e.priceRev = pr
      if (columns) rnd += e.id.slice(-RND)
      events[i] = e
    }
    this.#appends++
    this.#appendedEvents += pending.length
    // Puts of one turn share a transaction: every record of the append commits, or none.
    const chunks: StoredEvent[][] = []
    const puts: Array<Promise<boolean>> = []
    for (let from = 0; from < events.length; from += RECORD_MAX) {
      const chunk = events.length <= RECORD_MAX ? events : events.slice(from, from + RECORD_MAX)
      const record = chunk.length >= COLUMNS_FROM ? encodeRecord(chunk, rnd.slice(from * RND, (from + chunk.length) * RND)) : encodeRowsRecord(chunk)
      if (pr > 0) record.pr = pr
      puts.push(this.#db.put(chunk[0].seq, record))
      this.#keys?.push(chunk[0].seq)
      chunks.push(chunk)
    }
    const put = puts.length === 1 ? puts[0] : Promise.all(puts).then((oks) => oks.every(Boolean))
    const committed = put.then(
      (ok) => {
        if (!ok) throw new Error('event log put was not applied')
      },
      (err: { commitError?: Promise<unknown> } & Error) => {
        // lmdb-js also rejects a `commitError` promise (the OS error, e.g. ENOSPC) that nobody
        // awaits: left alone it is an unhandled rejection that kills the process.
        if (err.commitError !== undefined) {
          return err.commitError.then(
            () => Promise.reject(err),
            (os: Error) => Promise.reject(new Error(`the event log commit failed: ${os.message.split(':')[0]}`))
          )
        }
        throw err
      }
    )
    // Same turn as the puts above: one transaction (see DedupeIndex). One journal entry per
    // record: a sweep reads an expired one's keys from the record at its first seq.
    if (this.dedupe !== null) for (const chunk of chunks) this.dedupe.record(chunk, committed)
    return { events, committed }
  }

  /** The stored events of the record whose first seq is `key` (holes left out; none when there is no such record). */
  #recordEvents(key: number): StoredEvent[] {
    const value = this.#db.get(key)
    if (value === undefined) return []
    const n = recordLength(key, value)
    const rec = readable(key, value, true)
    const out: StoredEvent[] = []
    for (let i = 0; i < n; i++) {
      const e = decodeAt(key, rec, i)
      if (e !== null) out.push(e)
    }
    return out
  }

  /**
   * The record holding `seq` if any (the last at or before it), decoded without copying its
   * binary fields: they are views of lmdb-js's read buffer, which the next read of this
   * database overwrites. A v7 record's columns and parts are ~170 KB for 1,000 events: copying
   * them (what `get` does) took ~75 µs, most of reading one event.
   */
  #peek(seq: number): { key: number; value: EventRecord } | undefined {
    const key = this.#recordKey(seq)
    if (key === undefined) return undefined
    // Undefined when the record's put failed (its seqs hold nothing).
    const bytes = this.#db.getBinaryFast(key)
    if (bytes === undefined) return undefined
    // lmdb-js's own `get` decodes the same bytes with this decoder, copying binary fields.
    const decoder = (this.#db as unknown as { decoder: { copyBuffers: boolean; decode(bytes: Uint8Array): EventRecord } }).decoder
    decoder.copyBuffers = false
    try {
      return { key, value: decoder.decode(bytes) }
    } finally {
      decoder.copyBuffers = true
    }
  }

  /** The key of the last record at or before `seq` (see {@link #keys}), or undefined. */
  #recordKey(seq: number): number | undefined {
    const keys = (this.#keys ??= Array.from(this.#db.getKeys({}), Number))
    let lo = 0
    let hi = keys.length - 1
    if (hi < 0 || keys[0] > seq) return undefined
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (keys[mid] <= seq) lo = mid
      else hi = mid - 1
    }
    return keys[lo]
  }

  /** The event at `seq`, or undefined. A synchronous keyed read (memory-mapped), decoding that event alone. */
  get(seq: number): StoredEvent | undefined {
    const at = this.#peek(seq)
    if (at === undefined) return undefined
    const i = seq - at.key
    if (i >= recordLength(at.key, at.value)) return undefined
    return decodeAt(at.key, readableAt(at.key, at.value, i), i) ?? undefined
  }

  /**
   * The stored events at `sorted` (ascending log positions), each record holding one of them
   * read once, and only the asked events of it decoded: yields [k, event] for the k-th
   * position where an event is stored (holes and positions past the log are skipped).
   */
  *atSeqs(sorted: readonly number[]): Generator<[number, StoredEvent]> {
    let k = 0
    while (k < sorted.length) {
      const at = this.#peek(sorted[k])
      const n = at === undefined ? 0 : recordLength(at.key, at.value)
      if (at === undefined || sorted[k] >= at.key + n) {
        k++ // in no record
        continue
      }
      // Every asked event of the record is decoded before the first is yielded: the record is
      // a view of the read buffer, and the consumer may read the database in between.
      const out: Array<[number, StoredEvent]> = []
      for (; k < sorted.length && sorted[k] < at.key + n; k++) {
        const i = sorted[k] - at.key
        const e = decodeAt(at.key, readableAt(at.key, at.value, i), i)
        if (e !== null) out.push([k, e])
      }
      yield* out
    }
  }

  /** Every stored event with seq >= `from`, one array per stored append, in log order. */
  *readFrom(from: number): Generator<StoredEvent[]> {
    // The append holding `from` may start before it.
    let start = from
    for (const { key } of this.#db.getRange({ start: from, reverse: true, limit: 1 })) start = key
    for (const { key, value } of this.#db.getRange({ start })) {
      const out: StoredEvent[] = []
      const n = recordLength(key, value)
      const rec = readable(key, value, true)
      for (let i = Math.max(0, from - key); i < n; i++) {
        const e = decodeAt(key, rec, i)
        if (e !== null) out.push(e)
      }
      if (out.length > 0) yield out
    }
  }

  /** {@link DurableLog.read}: `readFrom` with its filters, as an async iterable (the single node has one partition, 0). */
  async *read(from: number, opts: LogReadOptions = {}): AsyncIterable<StoredEvent[]> {
    if (opts.partition !== undefined && opts.partition !== 0) return
    const to = opts.to ?? this.#nextSeq - 1
    for (const batch of this.readFrom(Math.max(0, from))) {
      const out = batch.filter((e) => e.seq <= to && (opts.project === undefined || e.project === opts.project))
      if (out.length > 0) yield out
      if (batch[batch.length - 1].seq >= to) return
    }
  }

  /** The last position written (-1 when empty: LMDB positions start at 0). */
  async lastSeq(): Promise<number> {
    return this.#nextSeq - 1
  }

  /** One partition, 0, ending where the log does. */
  async positions(): Promise<LogPosition[]> {
    return [{ partition: 0, last: this.#nextSeq - 1 }]
  }

  /**
   * Removes every stored event `drop` selects: each record holding one is rewritten with a hole
   * in its place (positions, and so the other events' seqs and ids, never move; a record of
   * holes only is kept, so the log's end never moves back and no seq is given twice). Runs a
   * few records per event-loop turn, many puts sharing a commit; resolves after the last commit
   * with the number of events removed. Idempotent: running it again after a crash completes it.
   */
  async purge(drop: (e: StoredEvent) => boolean, opts: { recordsPerTurn?: number } = {}): Promise<number> {
    const perTurn = opts.recordsPerTurn ?? 64
    let removed = 0
    let pending: Promise<boolean>[] = []
    let seen = 0
    // Keys first: the rewrite must not disturb the range being walked.
    const keys: number[] = []
    for (const key of this.#db.getKeys()) keys.push(key)
    for (const key of keys) {
      const value = this.#db.get(key)
      if (value === undefined) continue
      const n = recordLength(key, value)
      const rec = readable(key, value, true)
      const kept: Array<StoredEvent | null> = new Array(n)
      let hit = 0
      for (let i = 0; i < n; i++) {
        const e = decodeAt(key, rec, i)
        if (e !== null && drop(e)) {
          kept[i] = null
          hit++
        } else {
          kept[i] = e
        }
      }
      if (hit > 0) {
        removed += hit
        pending.push(inFlight(this.#db.put(key, withHoles(kept))))
        // In this turn, so in the rewrite's transaction: a re-sent copy of a purged event is new.
        if (this.dedupe !== null) this.dedupe.forgetNow(droppedOf(key, rec, n, kept))
      }
      if (++seen % perTurn === 0) {
        pending = await settleSome(pending)
        await new Promise((r) => setImmediate(r))
      }
    }
    await Promise.all(pending)
    return removed
  }

  // --- DELETE /events: purge by log position (src/forget.ts) -------------------------------

  /**
   * Removes the events at `seqs` (DELETE /events): each record holding one is rewritten with a
   * hole in its place, as {@link purge} does, but only the records holding those seqs are read
   * (records are keyed by their first seq). A seq with no event (a hole already, or never
   * written) is skipped; `removed` hears each event before its record is rewritten, and the
   * dedupe index forgets its client id in the rewrite's transaction. Runs a few
   * records per event-loop turn; resolves after the last commit with the number of events
   * removed. Idempotent: running it again after a crash completes it. Callers keep it from
   * running beside {@link purge} (both rewrite records read earlier).
   */
  async purgeSeqs(seqs: Iterable<number>, opts: { recordsPerTurn?: number; removed?: (e: StoredEvent) => void } = {}): Promise<number> {
    const perTurn = opts.recordsPerTurn ?? 64
    // Largest value LMDB keeps inside a leaf page of 4 KiB (larger ones go to overflow pages).
    const INLINE_MAX = 2048
    const sorted = Float64Array.from(seqs).sort()
    let removed = 0
    let pending: Promise<boolean>[] = []
    let records = 0
    const rewritten: number[] = []
    const TURN_MS = 4
    let turn = performance.now()
    let i = 0
    while (i < sorted.length) {
      let key = -1
      let value: EventRecord | undefined
      for (const r of this.#db.getRange({ start: sorted[i], reverse: true, limit: 1 })) {
        key = r.key
        value = r.value
      }
      const n = value === undefined ? 0 : recordLength(key, value)
      if (value === undefined || sorted[i] >= key + n) {
        i++ // in no record
        continue
      }
      const rec = readable(key, value, true)
      const kept: Array<StoredEvent | null> = new Array(n)
      for (let k = 0; k < n; k++) kept[k] = decodeAt(key, rec, k)
      const gone: StoredEvent[] = []
      for (; i < sorted.length && sorted[i] < key + n; i++) {
        const e = kept[sorted[i] - key]
        if (e === null) continue
        opts.removed?.(e)
        kept[sorted[i] - key] = null
        gone.push(e)
      }
      if (gone.length > 0) {
        removed += gone.length
        rewritten.push(key)
        pending.push(inFlight(this.#db.put(key, withHoles(kept))))
        // In this turn, so in the rewrite's transaction: a re-sent copy of a deleted event is new.
        if (this.dedupe !== null) this.dedupe.forgetNow(gone)
      }
      // A record of an earlier release may hold 10,000 events: yield by time too, not only by records.
      if (++records % perTurn === 0 || performance.now() - turn > TURN_MS) {
        pending = await settleSome(pending)
        await new Promise((r) => setImmediate(r))
        turn = performance.now()
      }
    }
    await Promise.all(pending)
    // LMDB shifts nodes inside a leaf page when a record it holds shrinks, and the bytes left
    // between the page's nodes and its free end are written with it: the old record, user ids
    // included. A record small enough to sit in its leaf is put again, in later transactions:
    // that copies the page (its used parts only, onto zeros) and leaves nothing behind.
    pending = []
    for (const [k, key] of rewritten.entries()) {
      if ((this.#db.getBinaryFast(key)?.length ?? Infinity) > INLINE_MAX) continue
      const value = this.#db.get(key)
      if (value !== undefined) pending.push(this.#db.put(key, value))
      if ((k + 1) % perTurn === 0) {
        await Promise.all(pending)
        pending = []
        await new Promise((r) => setImmediate(r))
      }
    }
    await Promise.all(pending)
    return removed
  }
}

/**
 * `seqs` ascending, as {@link EventLog.atSeqs} takes them (`sorted`), and where each stood in
 * `seqs` (`order[k]` is the index of `sorted[k]`). A seq and its index are packed into one
 * number (seq · 2^b + index, exact below 2^53) so that a typed array's native sort orders them:
 * a sort of indexes with a comparator took ~0.8 µs an event of an export.
 */
export function sortedPositions(seqs: readonly number[]): { order: number[]; sorted: number[] } {
  const n = seqs.length
  const scale = 2 ** Math.max(1, Math.ceil(Math.log2(n + 1)))
  let max = 0
  let integers = true
  for (let i = 0; i < n; i++) {
    const s = seqs[i]
    if (s > max) max = s
    if (!Number.isInteger(s) || s < 0) integers = false
  }
  const order: number[] = new Array(n)
  const sorted: number[] = new Array(n)
  if (!integers || (max + 1) * scale > Number.MAX_SAFE_INTEGER) {
    const idx = Array.from(seqs.keys()).sort((a, b) => seqs[a] - seqs[b])
    for (let k = 0; k < n; k++) {
      order[k] = idx[k]
      sorted[k] = seqs[idx[k]]
    }
    return { order, sorted }
  }
  const packed = new Float64Array(n)
  for (let i = 0; i < n; i++) packed[i] = seqs[i] * scale + i
  packed.sort()
  for (let k = 0; k < n; k++) {
    const i = packed[k] % scale
    order[k] = i
    sorted[k] = (packed[k] - i) / scale
  }
  return { order, sorted }
}

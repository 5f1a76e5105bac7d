/**
 * Cluster mode (DESIGN §9): mergeable partial answers of every analytics query. Each partition
 * owner answers a {@link PartialRequest} from its own partition's state ({@link answerPartial},
 * synchronous, JSON-safe reply); the coordinator sends one request to every partition (`ask`)
 * and merges the replies into exactly what the single-node query (queries.ts) returns on the
 * union of the partitions' events: sums add, sketches merge (a DDSketch merge is the sketch
 * of the union), group lists merge by value string (ids differ between partitions' dictionaries).
 *
 * Breakdowns take two rounds, as breakdown() takes two passes: round 1 (`breakdown`) every
 * group's ten sums plus the total aggregate from each owner; the coordinator merges by value,
 * sorts exactly as breakdown() does (metric descending, then value), keeps `limit` and sums the
 * rest into `other`; round 2 (`breakdown-sketches`) asks for the latency sketches of the shown
 * values and of the rest. A breakdown by user or session without filters over a range holding
 * at least half the project's events is answered on a single node from all-time totals
 * (breakdownFromTotals): its shown sketches are "all-time minus outside the range" and its
 * `other` sketch "total minus shown", whose min/max come from buckets — round 2 then asks for
 * exactly those parts (`from: 'totals'`) so the quantiles are the single-node ones too.
 *
 * Between the rounds an owner's state must not move (an event applied in between would count in
 * the sketches but not in the sums): both rounds carry the same `qid`, and the owner should hold
 * applying new events of that partition from a `breakdown` until the `breakdown-sketches` of the
 * same qid (or the query timeout). The coordinator checks every merged sketch's count against the
 * round-1 sums and throws {@link PartitionMovedError} when they disagree: never a silently
 * inconsistent answer. Round 2 is always sent (possibly with no value), so it always releases.
 *
 * Differences from a single node, inherent to partitioning (per partition in cluster mode): the
 * dimension caps (values per user/session/tag/metadata key, metadata keys, attribute sets) and
 * the model cap count per partition, so which values land in "(other)" (or which models in the
 * overflow aggregator) may differ from one node holding everything; totals stay exact either
 * way. Identical answers are guaranteed while no cap is reached.
 *
 * Wire form: JSON-safe objects; Sets as sorted arrays, ±Infinity as '-inf'/'+inf'; a sketch as
 * a base64 string of varints (zero count, buckets as key deltas and counts, exact min/max); a
 * breakdown's group sums as one base64 varint column block. Replies can exceed NATS's 1 MB
 * default payload (a breakdown by a dimension with ~100,000 values, a 10,000-bucket
 * timeseries): {@link chunk} and {@link unchunk} split and join a reply.
 */
import { randomUUID } from 'node:crypto'
import { metrics, costs, timeseries, isBreakdownDimension, scan, scanLog, groupBy, groupNeedsLog, cmpValue, sumsOutside, type Breakdown, type BreakdownSort, type QuerySource, type RangeQuery } from '../queries.js'
import { addSums, addValues, mergeInto, mergeTimeseries, type Aggregate, type TimeBucket } from './aggregate.js'
import type { RowVisitor } from './series.js'
import { createTotals, type Totals } from './totals.js'
import { DiscardSketch, LatencySketch } from './sketch.js'
import { NULL_ID, OTHER_ID, OTHER_VALUE, type ValueDictionary } from './dimensions.js'
import { needsRows, type Filters, type ProjectView, type WindowQuery } from './reader.js'
import { DIM_FIELDS } from './dim-totals.js'
import type { PricedEvent } from '../events.js'

// ---------------------------------------------------------------------------------------------
// Wire types

/** A bound on the wire: a finite number, or an infinity as a string (JSON has none). */
export type WireTime = number | '-inf' | '+inf'

/** {@link Filters} on the wire (Sets as sorted arrays). */
export interface WireFilters {
  models?: string[]
  providers?: string[]
  status?: 'success' | 'error'
  user_id?: string
  session_id?: string
  tag?: string
  metadata?: Record<string, string>
}

/** {@link RangeQuery} on the wire. */
export interface WireQuery extends WireFilters {
  start: WireTime
  end: WireTime
  project?: string
}

/** What a coordinator sends an owner (JSON-safe). The lead adds its own fields (e.g. `upTo`). */
export type PartialRequest =
  | { kind: 'metrics'; q: WireQuery }
  | { kind: 'costs'; q: WireQuery }
  | { kind: 'timeseries'; q: WireQuery; interval: number }
  /** Round 1: every group's ten sums plus the total aggregate (and what decides the totals path). */
  | { kind: 'breakdown'; qid: string; q: WireQuery; by: string }
  /**
   * Round 2: `from: 'rows'` the sketch of each shown value and of every other value (a row in
   * several tag groups counts in each); `from: 'totals'` (by user/session, unfiltered) each shown
   * value's all-time sketch and its sketch outside the range.
   */
  | { kind: 'breakdown-sketches'; qid: string; q: WireQuery; by: string; shown: Array<string | null>; from: 'rows' | 'totals' }
  | { kind: 'dimensions'; project: string }
  /** Many alert windows at once (one per enabled rule). */
  | { kind: 'windows'; windows: Array<{ project: string; q: WireQuery }> }

/** Totals (ten numbers, {@link totalsArray} order) and a sketch (base64, '' when empty). */
export interface WireAggregate {
  t: number[]
  s: string
}

/** Coordinator side: sends `req` to every partition, resolves with every reply (or rejects: the query fails). */
export type Ask = (req: PartialRequest) => Promise<unknown[]>

/** Round 2 disagreed with round 1 (an owner applied events in between): retry, or answer 503. */
export class PartitionMovedError extends Error {
  constructor(what: string) {
    super(`a partition's state moved between the rounds of a breakdown (${what}); ask again`)
    this.name = 'PartitionMovedError'
  }
}

// ---------------------------------------------------------------------------------------------
// Queries on the wire

const wireTime = (x: number): WireTime => (x === -Infinity ? '-inf' : x === Infinity ? '+inf' : x)

function readTime(x: unknown, what: string): number {
  if (x === '-inf') return -Infinity
  if (x === '+inf') return Infinity
  if (typeof x !== 'number' || !Number.isFinite(x)) throw new TypeError(`partial query: ${what} must be a finite number, '-inf' or '+inf'`)
  return x
}

function encodeFilters(f: Filters): WireFilters {
  const out: WireFilters = {}
  if (f.models !== undefined) out.models = [...f.models].sort()
  if (f.providers !== undefined) out.providers = [...f.providers].sort()
  if (f.status !== undefined) out.status = f.status
  if (f.user_id !== undefined) out.user_id = f.user_id
  if (f.session_id !== undefined) out.session_id = f.session_id
  if (f.tag !== undefined) out.tag = f.tag
  if (f.metadata !== undefined) out.metadata = { ...f.metadata }
  return out
}

/** A {@link RangeQuery} as JSON-safe data. */
export function encodeQuery(q: RangeQuery): WireQuery {
  const out: WireQuery = { start: wireTime(q.start), end: wireTime(q.end), ...encodeFilters(q) }
  if (q.project !== undefined) out.project = q.project
  return out
}

const isStr = (x: unknown): x is string => typeof x === 'string'

/** {@link encodeQuery} undone; throws a TypeError naming the field on malformed input. */
export function decodeQuery(x: unknown): RangeQuery {
  if (typeof x !== 'object' || x === null) throw new TypeError('partial query: not an object')
  const w = x as Record<string, unknown>
  const q: RangeQuery = { start: readTime(w.start, 'start'), end: readTime(w.end, 'end') }
  const strings = (v: unknown, what: string): Set<string> => {
    if (!Array.isArray(v) || !v.every(isStr)) throw new TypeError(`partial query: ${what} must be an array of strings`)
    return new Set(v)
  }
  const str = (v: unknown, what: string): string => {
    if (!isStr(v)) throw new TypeError(`partial query: ${what} must be a string`)
    return v
  }
  if (w.project !== undefined) q.project = str(w.project, 'project')
  if (w.models !== undefined) q.models = strings(w.models, 'models')
  if (w.providers !== undefined) q.providers = strings(w.providers, 'providers')
  if (w.status !== undefined) {
    if (w.status !== 'success' && w.status !== 'error') throw new TypeError("partial query: status must be 'success' or 'error'")
    q.status = w.status
  }
  if (w.user_id !== undefined) q.user_id = str(w.user_id, 'user_id')
  if (w.session_id !== undefined) q.session_id = str(w.session_id, 'session_id')
  if (w.tag !== undefined) q.tag = str(w.tag, 'tag')
  if (w.metadata !== undefined) {
    const m = w.metadata
    if (typeof m !== 'object' || m === null || Array.isArray(m) || !Object.values(m).every(isStr)) throw new TypeError('partial query: metadata must map keys to strings')
    q.metadata = { ...(m as Record<string, string>) }
  }
  return q
}

// ---------------------------------------------------------------------------------------------
// Compact numbers and sketches

/** Unsigned LEB128 varints of safe integers, and float64s, into a growable buffer. */
class Writer {
  #buf = new Uint8Array(64)
  #view = new DataView(this.#buf.buffer)
  #n = 0

  #room(k: number): void {
    if (this.#n + k <= this.#buf.length) return
    const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#n + k))
    grown.set(this.#buf.subarray(0, this.#n))
    this.#buf = grown
    this.#view = new DataView(grown.buffer)
  }

  uint(x: number): void {
    this.#room(8)
    while (x >= 128) {
      this.#buf[this.#n++] = (x % 128) | 128
      x = Math.floor(x / 128)
    }
    this.#buf[this.#n++] = x
  }

  f64(x: number): void {
    this.#room(8)
    this.#view.setFloat64(this.#n, x, true)
    this.#n += 8
  }

  base64(): string {
    return Buffer.from(this.#buf.buffer, 0, this.#n).toString('base64')
  }
}

class Reader {
  readonly #buf: Buffer
  #pos = 0

  constructor(b64: string) {
    this.#buf = Buffer.from(b64, 'base64')
  }

  get done(): boolean {
    return this.#pos >= this.#buf.length
  }

  uint(): number {
    let x = 0
    let mul = 1
    for (;;) {
      if (this.#pos >= this.#buf.length) throw new Error('partial reply: truncated number')
      const b = this.#buf[this.#pos++]
      x += (b & 127) * mul
      if (b < 128) return x
      mul *= 128
      if (mul > 2 ** 56) throw new Error('partial reply: number too long')
    }
  }

  f64(): number {
    if (this.#pos + 8 > this.#buf.length) throw new Error('partial reply: truncated number')
    const x = this.#buf.readDoubleLE(this.#pos)
    this.#pos += 8
    return x
  }
}

const isCount = (x: number) => Number.isSafeInteger(x) && x >= 0

/**
 * A sketch as a compact string (base64 varints): zero count, bucket count, then — when not
 * empty — the exact min and max (varint when a safe integer, else float64), then each bucket
 * as its key's delta from the previous key and its count. '' for an empty sketch.
 */
export function encodeSketch(s: LatencySketch): string {
  if (s.count === 0) return ''
  const j = s.toJSON()
  const w = new Writer()
  w.uint(j.zeroCount)
  w.uint(j.keys.length)
  const min = j.min as number
  const max = j.max as number
  w.uint((isCount(min) ? 1 : 0) | (isCount(max) ? 2 : 0))
  if (isCount(min)) w.uint(min)
  else w.f64(min)
  if (isCount(max)) w.uint(max)
  else w.f64(max)
  let prev = 0
  for (let i = 0; i < j.keys.length; i++) {
    w.uint(j.keys[i] - prev)
    prev = j.keys[i]
    w.uint(j.counts[i])
  }
  return w.base64()
}

/** {@link encodeSketch} undone (a sparse sketch; validated by LatencySketch.fromJSON). */
export function decodeSketch(b64: unknown): LatencySketch {
  if (b64 === '' || b64 === undefined) return new LatencySketch()
  if (typeof b64 !== 'string') throw new TypeError('partial reply: a sketch must be a string')
  const r = new Reader(b64)
  const zeroCount = r.uint()
  const n = r.uint()
  const flags = r.uint()
  const min = (flags & 1) !== 0 ? r.uint() : r.f64()
  const max = (flags & 2) !== 0 ? r.uint() : r.f64()
  const keys = new Array<number>(n)
  const counts = new Array<number>(n)
  let prev = 0
  for (let i = 0; i < n; i++) {
    prev += r.uint()
    keys[i] = prev
    counts[i] = r.uint()
  }
  return LatencySketch.fromJSON({ version: 1, relativeAccuracy: 0.01, zeroCount, keys, counts, min, max })
}

/** Non-negative safe integers as one base64 varint string, else (a fraction, a negative) the numbers themselves. */
function packNumbers(xs: ArrayLike<number>, n: number): string | number[] {
  const w = new Writer()
  for (let i = 0; i < n; i++) {
    if (!isCount(xs[i])) return Array.from({ length: n }, (_, k) => xs[k])
    w.uint(xs[i])
  }
  return w.base64()
}

function unpackNumbers(x: unknown, n: number): Float64Array {
  const out = new Float64Array(n)
  if (Array.isArray(x)) {
    if (x.length !== n || !x.every((v) => typeof v === 'number')) throw new TypeError('partial reply: malformed sums')
    out.set(x as number[])
    return out
  }
  if (typeof x !== 'string') throw new TypeError('partial reply: malformed sums')
  const r = new Reader(x)
  for (let i = 0; i < n; i++) out[i] = r.uint()
  if (!r.done) throw new TypeError('partial reply: sums longer than announced')
  return out
}

// ---------------------------------------------------------------------------------------------
// Totals and aggregates on the wire

/** Totals as ten numbers: requests, prompt, completion, total, cached, reasoning, latency µs, cost, errors, unpriced. */
function totalsArray(t: Totals): number[] {
  return [t.requests, t.promptTokens, t.completionTokens, t.totalTokens, t.cachedTokens, t.reasoningTokens, t.latencyUsSum, t.costNanos, t.errors, t.unpriced]
}

/** Ten sums from offset `o` as Totals (the order of {@link totalsArray}, as queries.ts accTotals). */
function totalsOf(a: ArrayLike<number>, o = 0): Totals {
  return {
    requests: a[o],
    promptTokens: a[o + 1],
    completionTokens: a[o + 2],
    totalTokens: a[o + 3],
    cachedTokens: a[o + 4],
    reasoningTokens: a[o + 5],
    latencyUsSum: a[o + 6],
    costNanos: a[o + 7],
    errors: a[o + 8],
    unpriced: a[o + 9]
  }
}

function readTotals(x: unknown): Totals {
  if (!Array.isArray(x) || x.length !== FIELDS || !x.every((v) => typeof v === 'number')) throw new TypeError('partial reply: totals must be ten numbers')
  return totalsOf(x as number[])
}

const encodeAgg = (a: Aggregate): WireAggregate => ({ t: totalsArray(a.totals), s: encodeSketch(a.sketch) })

function decodeAgg(x: unknown): Aggregate {
  const w = x as WireAggregate
  if (typeof w !== 'object' || w === null) throw new TypeError('partial reply: an aggregate must be an object')
  return { totals: readTotals(w.t), sketch: decodeSketch(w.s) }
}

/** An accumulator as queries build theirs (dense sketch: merged into many times). */
const accumulator = (): Aggregate => ({ totals: createTotals(), sketch: LatencySketch.dense() })

/** Ten sums per group, as breakdown() keeps them. */
const FIELDS = 10

// ---------------------------------------------------------------------------------------------
// Owner side

interface BreakdownReply {
  /** Group values (null: the null group; "(other)": past a cap), parallel to the sums. */
  values: Array<string | null>
  /** FIELDS sums per group. */
  sums: string | number[]
  total: WireAggregate
  /** By user/session without filters: what decides the all-time totals path (see breakdownFromTotals). */
  fromTotals?: { all: number; rowsOk: boolean; totalsOk: boolean }
}

/** Whether a single node could answer this breakdown from all-time totals (before looking at the data). */
function totalsCandidate(q: RangeQuery, by: string): by is 'user_id' | 'session_id' {
  return (by === 'user_id' || by === 'session_id') && !needsRows(q) && q.models === undefined && q.providers === undefined
}

function stores(view: ProjectView) {
  const out = []
  for (const agg of view.aggregators()) out.push(...agg.view().values())
  return out
}

/** Row keys of the breakdown, as breakdown()'s `run` gives them (memory, or the log for a key past the cap). */
function breakdownRows(src: QuerySource, q: RangeQuery, by: string, visit: (v: Float64Array, flags: number, keys: Array<number | string>, name: (k: number | string) => string | null) => void): void {
  const project = q.project ?? 'default'
  const view = src.reader.project(project)
  const g = groupBy(view, by)
  if (g === null) throw new RangeError(`cannot group by ${by}`)
  const keys: Array<number | string> = []
  const name = (k: number | string) => g.name(k)
  if (groupNeedsLog(view, by)) {
    scanLog(src, project, q, (v, flags, e) => {
      g.keys(keys, 0, 0, 0, e, e)
      visit(v, flags, keys, name)
    })
    return
  }
  scan(src, project, q, (v, flags, u, s, a, _ts, series, e: PricedEvent | null) => {
    g.keys(keys, u, s, a, series, e)
    visit(v, flags, keys, name)
  })
}

/** Round 1 of a breakdown on one partition: every group's sums, and the total. */
function answerBreakdown(src: QuerySource, q: RangeQuery, by: string): BreakdownReply {
  const project = q.project ?? 'default'
  const view = src.reader.project(project)
  const values: Array<string | null> = []
  const index = new Map<string | null, number>()
  let sums = new Float64Array(FIELDS * 64)
  const slot = (value: string | null): number => {
    let i = index.get(value)
    if (i === undefined) {
      i = values.length
      values.push(value)
      index.set(value, i)
      if ((i + 1) * FIELDS > sums.length) {
        const grown = new Float64Array(sums.length * 2)
        grown.set(sums)
        sums = grown
      }
    }
    return i * FIELDS
  }
  let total: Aggregate | null = null
  let fromTotals: BreakdownReply['fromTotals']
  if (totalsCandidate(q, by)) {
    const dim = by === 'user_id' ? 'user' : 'session'
    const all = view === undefined ? 0 : view.rollup.aggregate(-Infinity, Infinity, { totals: createTotals(), sketch: new DiscardSketch() }).totals.requests
    const list = view === undefined ? [] : stores(view)
    fromTotals = {
      all,
      rowsOk: list.every((s) => s.rowsAvailable(-Infinity, q.start) && s.rowsAvailable(q.end, Infinity)),
      // ProjectView.totals is null while any series has folded hours (topology.ts).
      totalsOk: list.every((s) => s.coarseHours === 0)
    }
    // This partition's sums from its all-time totals when its range holds most of its events
    // (the single node's shortcut, taken per partition: the sums are the same either way).
    const inRange = metrics(src, q)
    if (view !== undefined && fromTotals.rowsOk && all - inRange.totals.requests <= inRange.totals.requests) {
      const allTime = view.totals(dim)
      if (allTime !== null) {
        total = inRange
        const outside = sumsOutside(list, q, dim, allTime.top)
        const a = allTime.totals
        const dict = dim === 'user' ? view.dims.users : view.dims.sessions
        for (let id = 0; id < allTime.top; id++) {
          const d = id * DIM_FIELDS
          if (a[d] - outside[d] <= 0) continue
          const o = slot(dict.value(id))
          for (let i = 0; i < FIELDS; i++) sums[o + i] += a[d + i] - outside[d + i]
        }
      }
    }
  }
  if (total === null) {
    const acc = accumulator()
    total = acc
    const slots = new Map<number | string, number>()
    breakdownRows(src, q, by, (v, flags, keys, name) => {
      addValues(acc, v, flags)
      for (const k of keys) {
        let o = slots.get(k)
        if (o === undefined) slots.set(k, (o = slot(name(k))))
        addSums(sums, o, v, flags)
      }
    })
  }
  const reply: BreakdownReply = { values, sums: packNumbers(sums, values.length * FIELDS), total: encodeAgg(total) }
  if (fromTotals !== undefined) reply.fromTotals = fromTotals
  return reply
}

/** The ids a shown value may have in a partition's dictionary ("(other)": the capped group, and a literal value so named). */
function idsOf(dict: ValueDictionary, value: string | null): number[] {
  if (value === null) return [NULL_ID]
  const out: number[] = []
  const id = dict.find(value)
  if (id !== undefined) out.push(id)
  if (value === OTHER_VALUE) out.push(OTHER_ID)
  return out
}

/** Round 2 of a breakdown on one partition. */
function answerSketches(src: QuerySource, q: RangeQuery, by: string, shown: Array<string | null>, from: 'rows' | 'totals') {
  if (from === 'rows') {
    const sketches = shown.map(() => new LatencySketch())
    const other = new LatencySketch()
    const at = new Map<string | null, LatencySketch>()
    shown.forEach((v, i) => at.set(v, sketches[i]))
    const byKey = new Map<number | string, LatencySketch>()
    breakdownRows(src, q, by, (v, _flags, keys, name) => {
      for (const k of keys) {
        let sk = byKey.get(k)
        if (sk === undefined) byKey.set(k, (sk = at.get(name(k)) ?? other))
        sk.record(v[5])
      }
    })
    return { shown: sketches.map(encodeSketch), other: encodeSketch(other) }
  }
  if (!totalsCandidate(q, by)) throw new RangeError('partial breakdown: from totals only by user_id or session_id without filters')
  const dim = by === 'user_id' ? 'user' : 'session'
  const view = src.reader.project(q.project ?? 'default')
  const whole = shown.map(() => new LatencySketch())
  const outside = shown.map(() => new LatencySketch())
  if (view !== undefined) {
    const allTime = view.totals(dim)
    if (allTime === null) throw new PartitionMovedError('all-time totals unavailable (retention folded rows)')
    const dict = dim === 'user' ? view.dims.users : view.dims.sessions
    const slotOf = new Map<number, number>()
    shown.forEach((value, i) => {
      for (const id of idsOf(dict, value)) {
        slotOf.set(id, i)
        const sk = allTime.sketch(id)
        if (sk !== undefined) whole[i].merge(sk)
      }
    })
    const minus: RowVisitor = (v, _flags, u, s) => {
      const i = slotOf.get(dim === 'user' ? u : s)
      if (i !== undefined) outside[i].record(v[5])
    }
    for (const store of stores(view)) {
      if (!store.scanRows(-Infinity, q.start, minus) || !store.scanRows(q.end, Infinity, minus)) throw new PartitionMovedError('rows outside the range folded by retention')
    }
  }
  return { whole: whole.map(encodeSketch), outside: outside.map(encodeSketch) }
}

/** 64-bit hashes (two 32-bit ones) of a dictionary's values, as one base64 string (8 bytes a value). */
function valueHashes(dict: ValueDictionary): string {
  // Kept values only: a delete may have blanked some ids (their strings are gone).
  const out = Buffer.allocUnsafe(dict.size * 8)
  let at = 0
  dict.forEach((v) => {
    let h1 = 0x811c9dc5
    let h2 = 0x9747b28c ^ v.length
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i)
      h1 = Math.imul(h1 ^ c, 0x01000193)
      h2 = Math.imul(h2 ^ c, 0x5bd1e995)
      h2 ^= h2 >>> 15
    }
    h2 = Math.imul(h2 ^ (h2 >>> 13), 0x5bd1e995)
    h2 ^= h2 >>> 15
    out.writeUInt32LE(h1 >>> 0, at)
    out.writeUInt32LE(h2 >>> 0, at + 4)
    at += 8
  })
  return out.toString('base64')
}

function answerDimensions(src: QuerySource, project: string) {
  const view = src.reader.project(project)
  if (view === undefined) return { dims: [] }
  const dims = view.dims
  return {
    dims: dims.describe().map((d) => {
      const dict = d.name === 'user_id' ? dims.users : d.name === 'session_id' ? dims.sessions : d.name === 'tag' ? dims.tags : dims.metaValues(dims.metaKeyIndex(d.name.slice('metadata.'.length)))
      return { name: d.name, capped: d.capped, h: valueHashes(dict) }
    })
  }
}

function str(x: unknown, what: string): string {
  if (typeof x !== 'string') throw new TypeError(`partial request: ${what} must be a string`)
  return x
}

/**
 * Owner side: answers one request from its partition's state (synchronous; the caller waited
 * for its partition to be caught up). The reply is JSON-safe. Throws on a malformed request
 * (TypeError/RangeError naming the field) and where the single-node query would throw.
 */
export function answerPartial(source: QuerySource, req: PartialRequest): unknown {
  const r = req as unknown as Record<string, unknown>
  if (typeof r !== 'object' || r === null) throw new TypeError('partial request: not an object')
  switch (r.kind) {
    case 'metrics':
      return { agg: encodeAgg(metrics(source, decodeQuery(r.q))) }
    case 'costs':
      return { rows: costs(source, decodeQuery(r.q)).map((x) => ({ model: x.model, provider: x.provider, t: totalsArray(x.agg.totals) })) }
    case 'timeseries': {
      const interval = r.interval
      if (typeof interval !== 'number' || !Number.isSafeInteger(interval) || interval <= 0) throw new TypeError('partial request: interval must be a positive integer (ms)')
      return { buckets: timeseries(source, decodeQuery(r.q), interval).map((b) => ({ start: b.start, ...encodeAgg(b) })) }
    }
    case 'breakdown':
      return answerBreakdown(source, decodeQuery(r.q), str(r.by, 'by'))
    case 'breakdown-sketches': {
      const shown = r.shown
      if (!Array.isArray(shown) || !shown.every((v) => v === null || typeof v === 'string')) throw new TypeError('partial request: shown must be an array of strings or null')
      if (r.from !== 'rows' && r.from !== 'totals') throw new TypeError("partial request: from must be 'rows' or 'totals'")
      return answerSketches(source, decodeQuery(r.q), str(r.by, 'by'), shown as Array<string | null>, r.from)
    }
    case 'dimensions':
      return answerDimensions(source, str(r.project, 'project'))
    case 'windows': {
      if (!Array.isArray(r.windows)) throw new TypeError('partial request: windows must be an array')
      return { aggs: r.windows.map((w: { project?: unknown; q?: unknown }) => encodeAgg(metrics(source, { ...decodeQuery(w.q), project: str(w.project, 'windows[].project') }))) }
    }
    default:
      throw new TypeError(`partial request: unknown kind ${String(r.kind)}`)
  }
}

// ---------------------------------------------------------------------------------------------
// Coordinator side

function field<T>(reply: unknown, name: string): T {
  if (typeof reply !== 'object' || reply === null || !(name in reply)) throw new TypeError(`partial reply: no ${name}`)
  return (reply as Record<string, T>)[name]
}

function list<T>(reply: unknown, name: string): T[] {
  const x = field<unknown>(reply, name)
  if (!Array.isArray(x)) throw new TypeError(`partial reply: ${name} must be an array`)
  return x as T[]
}

/** Totals and latency sketch over the range and filters: metrics() on the union. */
export async function clusterMetrics(ask: Ask, q: RangeQuery): Promise<Aggregate> {
  const replies = await ask({ kind: 'metrics', q: encodeQuery(q) })
  const acc = accumulator()
  for (const r of replies) mergeInto(acc, decodeAgg(field(r, 'agg')))
  return acc
}

/** One row per (model, provider), most costly first: costs() on the union (same order and tie-breaks). */
export async function clusterCosts(ask: Ask, q: RangeQuery): Promise<Array<{ model: string; provider: string; agg: Aggregate }>> {
  const replies = await ask({ kind: 'costs', q: encodeQuery(q) })
  // A (project, model) lives in one partition; merged by key all the same (an overflow aggregator may be in several).
  const by = new Map<string, { model: string; provider: string; agg: Aggregate }>()
  for (const r of replies) {
    for (const row of list<{ model: unknown; provider: unknown; t: unknown }>(r, 'rows')) {
      const model = str(row.model, 'model')
      const provider = str(row.provider, 'provider')
      const id = JSON.stringify([model, provider])
      const have = by.get(id)
      const totals = readTotals(row.t)
      if (have === undefined) by.set(id, { model, provider, agg: { totals, sketch: new DiscardSketch() } })
      else mergeInto(have.agg, { totals, sketch: new DiscardSketch() })
    }
  }
  const rows = [...by.values()]
  // costs()'s order: cost, then requests, descending; then model, provider ascending.
  rows.sort((a, b) => b.agg.totals.costNanos - a.agg.totals.costNanos || b.agg.totals.requests - a.agg.totals.requests || (a.model < b.model ? -1 : a.model > b.model ? 1 : a.provider < b.provider ? -1 : 1))
  return rows
}

/** Buckets of `intervalMs` with data in range, ascending: timeseries() on the union. */
export async function clusterTimeseries(ask: Ask, q: RangeQuery, intervalMs: number): Promise<TimeBucket[]> {
  const replies = await ask({ kind: 'timeseries', q: encodeQuery(q), interval: intervalMs })
  const lists: TimeBucket[][] = []
  for (const r of replies) {
    const buckets = list<{ start: unknown }>(r, 'buckets').map((b) => {
      if (typeof b.start !== 'number') throw new TypeError('partial reply: a bucket start must be a number')
      return { start: b.start, ...decodeAgg(b) }
    })
    if (buckets.length > 0) lists.push(buckets)
  }
  return lists.length === 1 ? lists[0] : mergeTimeseries(lists)
}

/** The alert evaluator's windows, all in one request: metrics() of each on the union. */
export async function clusterWindows(ask: Ask, qs: WindowQuery[]): Promise<Aggregate[]> {
  if (qs.length === 0) return []
  const replies = await ask({ kind: 'windows', windows: qs.map((w) => ({ project: w.project, q: encodeQuery({ ...w.filters, start: w.start, end: w.end }) })) })
  const out = qs.map(() => accumulator())
  for (const r of replies) {
    const aggs = list<unknown>(r, 'aggs')
    if (aggs.length !== qs.length) throw new TypeError('partial reply: one aggregate per window expected')
    aggs.forEach((a, i) => mergeInto(out[i], decodeAgg(a)))
  }
  return out
}

/**
 * `GET /analytics/dimensions` on the union: `values` counts distinct values across partitions
 * (each owner sends a 64-bit hash of each value it keeps, 8 bytes a value: a user is in many
 * partitions, so counts do not add; the count is exact unless two of the values collide in 64
 * bits, about n²/2^65 — below 1e-8 for a million values). `capped`: any partition capped.
 * Caps are per partition in cluster mode: a value past one partition's cap may be kept by
 * another, and then counts; up to `partitions` × the metadata key cap keys may be listed.
 * Order: user_id, session_id, tag, then metadata keys by their first-seen rank in any partition
 * (lowest first), ties by name — "first seen" has no single meaning across partitions.
 */
export async function clusterDimensions(ask: Ask, project: string): Promise<Array<{ name: string; values: number; capped: boolean }>> {
  const replies = await ask({ kind: 'dimensions', project })
  const merged = new Map<string, { rank: number; capped: boolean; seen: Set<string> }>()
  for (const r of replies) {
    let rank = 0
    for (const d of list<{ name: unknown; capped: unknown; h: unknown }>(r, 'dims')) {
      const name = str(d.name, 'dims[].name')
      const h = Buffer.from(str(d.h, 'dims[].h'), 'base64')
      let m = merged.get(name)
      if (m === undefined) merged.set(name, (m = { rank: Infinity, capped: false, seen: new Set() }))
      if (name.startsWith('metadata.')) m.rank = Math.min(m.rank, rank++)
      m.capped ||= d.capped === true
      for (let i = 0; i + 8 <= h.length; i += 8) m.seen.add(h.toString('latin1', i, i + 8))
    }
  }
  const out: Array<{ name: string; values: number; capped: boolean }> = []
  for (const name of ['user_id', 'session_id', 'tag']) {
    const m = merged.get(name)
    if (m !== undefined && m.seen.size > 0) out.push({ name, values: m.seen.size, capped: m.capped })
  }
  const meta = [...merged].filter(([name]) => name.startsWith('metadata.'))
  meta.sort((a, b) => a[1].rank - b[1].rank || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
  for (const [name, m] of meta) out.push({ name, values: m.seen.size, capped: m.capped })
  return out
}

/**
 * Groups of the filtered range by `by`: breakdown() on the union (groups, their order, `other`,
 * `total` and every sketch). Two rounds (see the file comment); throws RangeError for a `by`
 * that names no dimension, {@link PartitionMovedError} when the rounds disagree.
 */
export async function clusterBreakdown(ask: Ask, q: RangeQuery, by: string, sort: BreakdownSort, limit: number): Promise<Breakdown> {
  if (!isBreakdownDimension(by)) throw new RangeError(`cannot group by ${by}`)
  const wq = encodeQuery(q)
  const qid = randomUUID()
  const replies = await ask({ kind: 'breakdown', qid, q: wq, by })
  const groups = new Map<string | null, Float64Array>()
  const total = accumulator()
  let all = 0
  let fromTotalsOk = totalsCandidate(q, by)
  for (const r of replies) {
    const values = list<string | null>(r, 'values')
    if (!values.every((v) => v === null || typeof v === 'string')) throw new TypeError('partial reply: group values must be strings or null')
    const sums = unpackNumbers(field(r, 'sums'), values.length * FIELDS)
    values.forEach((value, i) => {
      let acc = groups.get(value)
      if (acc === undefined) groups.set(value, (acc = new Float64Array(FIELDS)))
      for (let f = 0; f < FIELDS; f++) acc[f] += sums[i * FIELDS + f]
    })
    mergeInto(total, decodeAgg(field(r, 'total')))
    const ft = (r as BreakdownReply).fromTotals
    if (ft === undefined) fromTotalsOk = false
    else {
      all += ft.all
      if (!ft.rowsOk || !ft.totalsOk) fromTotalsOk = false
    }
  }
  // The single node's choice (breakdownFromTotals): the range holds at least half the project's events.
  const fromTotals = fromTotalsOk && !(all - total.totals.requests > total.totals.requests)
  const metric = sort === 'cost' ? 7 : sort === 'requests' ? 0 : 3
  const named = [...groups].map(([value, acc]) => ({ value, acc }))
  named.sort((a, b) => b.acc[metric] - a.acc[metric] || cmpValue(a.value, b.value))
  const shown = named.slice(0, limit)
  const rest = named.slice(limit)
  const sketches = await ask({ kind: 'breakdown-sketches', qid, q: wq, by, shown: shown.map((x) => x.value), from: fromTotals ? 'totals' : 'rows' })
  const gathered = (name: string) => {
    const out = shown.map(() => LatencySketch.dense())
    for (const r of sketches) {
      const part = list<string>(r, name)
      if (part.length !== shown.length) throw new TypeError(`partial reply: one ${name} sketch per shown value expected`)
      part.forEach((s, i) => out[i].merge(decodeSketch(s)))
    }
    return out
  }
  const checkCount = (sk: LatencySketch, requests: number, what: string) => {
    if (sk.count !== requests) throw new PartitionMovedError(`${what}: ${sk.count} latencies for ${requests} requests`)
  }
  if (!fromTotals) {
    const shownSketches = gathered('shown')
    shown.forEach((x, i) => checkCount(shownSketches[i], x.acc[0], `group ${JSON.stringify(x.value)}`))
    const otherSketch = LatencySketch.dense()
    for (const r of sketches) otherSketch.merge(decodeSketch(field(r, 'other')))
    let other: Aggregate | null = null
    if (rest.length > 0) {
      const acc = new Float64Array(FIELDS)
      for (const x of rest) for (let i = 0; i < FIELDS; i++) acc[i] += x.acc[i]
      other = { totals: totalsOf(acc), sketch: otherSketch }
    }
    checkCount(otherSketch, other?.totals.requests ?? 0, 'other')
    return { by, groups: shown.map((x, i) => ({ value: x.value, agg: { totals: totalsOf(x.acc), sketch: shownSketches[i] } })), other, total, count: named.length }
  }
  // From all-time totals, as breakdownFromTotals: each shown value's all-time sketch minus its
  // latencies outside the range; `other` the range's sketch minus the shown ones.
  const whole = gathered('whole')
  const outside = gathered('outside')
  const out = shown.map((x, i) => {
    const sk = whole[i].subtract(outside[i])
    checkCount(sk, x.acc[0], `group ${JSON.stringify(x.value)}`)
    return { value: x.value, agg: { totals: totalsOf(x.acc), sketch: sk } }
  })
  let other: Aggregate | null = null
  const shownRequests = out.reduce((n, x) => n + x.agg.totals.requests, 0)
  if (shownRequests < total.totals.requests) {
    const rest10 = totalsArray(total.totals)
    for (const x of out) {
      const sub = totalsArray(x.agg.totals)
      for (let i = 0; i < FIELDS; i++) rest10[i] -= sub[i]
    }
    const sketch = LatencySketch.dense().merge(total.sketch)
    for (const x of out) sketch.subtract(x.agg.sketch)
    other = { totals: totalsOf(rest10), sketch }
  }
  return { by, groups: out, other, total, count: named.length }
}

// ---------------------------------------------------------------------------------------------
// Replies larger than one message

/** A NATS message stays under 1 MB by default; parts stay under this, header included. */
export const MAX_PART_BYTES = 1000 * 1024

/**
 * A reply as one or more messages of at most `maxBytes` each: its JSON in UTF-8, cut into
 * pieces, each prefixed with 8 bytes (part index, part count; uint32 big-endian). Most replies
 * are one part. Send every part to the request's reply subject (msg.respond(part) per part);
 * the coordinator gathers them (e.g. requestMany with strategy 'count' after reading the count
 * of the first part, or 'stall'/'timer') and calls {@link unchunk}.
 */
export function chunk(reply: unknown, maxBytes = MAX_PART_BYTES): Uint8Array[] {
  if (!(maxBytes > 8)) throw new RangeError('chunk: maxBytes must exceed the 8-byte header')
  const body = Buffer.from(JSON.stringify(reply), 'utf8')
  const room = maxBytes - 8
  const count = Math.max(1, Math.ceil(body.length / room))
  const parts: Uint8Array[] = []
  for (let i = 0; i < count; i++) {
    const piece = body.subarray(i * room, Math.min(body.length, (i + 1) * room))
    const part = Buffer.allocUnsafe(8 + piece.length)
    part.writeUInt32BE(i, 0)
    part.writeUInt32BE(count, 4)
    piece.copy(part, 8)
    parts.push(part)
  }
  return parts
}

/** How many parts the reply a part belongs to has (read from any part). */
export function partCount(part: Uint8Array): number {
  if (part.length < 8) throw new TypeError('reply part: shorter than its header')
  return Buffer.from(part.buffer, part.byteOffset, part.byteLength).readUInt32BE(4)
}

/** {@link chunk} undone: the parts in any order; throws when one is missing or repeated. */
export function unchunk(parts: readonly Uint8Array[]): unknown {
  if (parts.length === 0) throw new TypeError('reply parts: none')
  const count = partCount(parts[0])
  if (parts.length !== count) throw new TypeError(`reply parts: ${parts.length} of ${count}`)
  const pieces: Buffer[] = new Array(count)
  for (const p of parts) {
    const b = Buffer.from(p.buffer, p.byteOffset, p.byteLength)
    const i = b.readUInt32BE(0)
    if (b.readUInt32BE(4) !== count || i >= count || pieces[i] !== undefined) throw new TypeError('reply parts: inconsistent headers')
    pieces[i] = b.subarray(8)
  }
  return JSON.parse(Buffer.concat(pieces).toString('utf8'))
}

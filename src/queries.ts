/**
 * Analytics queries, answered from the aggregators' in-memory series only (no disk read).
 * Each series (model × provider) answers its part of the range exactly; the parts merge.
 * Without a model or provider filter, the whole hours of the range come from the rollup
 * (every model's hours in one store) and each series answers only the two partial edge hours.
 */
import { BucketSum, createAggregate, mergeInto, type Aggregate, type RowVisitor, type SeriesStore, type TimeBucket } from './analytics/series.js'
import { addSums, addValues } from './analytics/aggregate.js'
import { createTotals, type Totals } from './analytics/totals.js'
import { DiscardSketch, LatencySketch } from './analytics/sketch.js'
import { floorDiv, HOUR_MS } from './analytics/time.js'
import { NULL_ID, OTHER_ID, metadataValue, type DimensionDictionary, type ValueDictionary } from './analytics/dimensions.js'
import { needsRows, type AnalyticsReader, type Filters, type ProjectView } from './analytics/reader.js'
import type { PricedEvent } from './events.js'
import { DIM_FIELDS, eventValues } from './analytics/dim-totals.js'

export interface RangeQuery extends Filters {
  /** Inclusive, epoch ms (-Infinity = unbounded). */
  start: number
  /** Exclusive, epoch ms (+Infinity = unbounded). */
  end: number
  /** The project (default: `default`). */
  project?: string
}

/**
 * Reads a project's stored events with `start <= ts < end`, priced as counted (the log path:
 * filters on values past a dimension's cap, or on rows retention folded). Injected by the
 * engine; absent in tests that never need it.
 */
export type LogScan = (project: string, start: number, end: number, visit: (e: PricedEvent) => void) => void

/** Where queries read: the analytics state, and the log for what memory cannot answer exactly. */
export interface QuerySource {
  reader: AnalyticsReader
  log?: LogScan
}

const sourceOf = (s: QuerySource | AnalyticsReader): QuerySource => ('reader' in s ? s : { reader: s })

interface Selected {
  model: string
  provider: string
  store: SeriesStore
}

function* selected(view: ProjectView | undefined, q: Filters): Generator<Selected> {
  if (view === undefined) return
  const aggs = q.models === undefined ? view.aggregators() : [...q.models].map((m) => view.aggregator(m)).filter((a) => a !== undefined)
  for (const agg of aggs) {
    for (const [provider, store] of agg.view()) if (q.providers === undefined || q.providers.has(provider)) yield { model: agg.model, provider, store }
  }
}

/**
 * The whole hours [hs, he) inside the range of a query without filters (hs < he), or null when
 * the query is filtered or holds no whole hour: then every series answers the whole range.
 * Rows of [start, hs) and [he, end) are in partial hours, which only the series hold.
 */
function rollupHours(q: RangeQuery): [number, number] | null {
  if (q.models !== undefined || q.providers !== undefined || needsRows(q)) return null
  const hs = Math.ceil(q.start / HOUR_MS) * HOUR_MS
  const he = Math.floor(q.end / HOUR_MS) * HOUR_MS
  return hs < he ? [hs, he] : null
}

// ---------------------------------------------------------------------------------------------
// Row filters (DESIGN §6): compiled once per query against the project's dictionaries.

/** A filter as row predicates over the dimension words, or what makes memory unable to answer. */
type Compiled =
  /** `user`/`session`: the id filtered on (-1: none), whose postings can narrow the rows read. */
  | { kind: 'rows'; test: (flags: number, user: number, session: number, attrs: number) => boolean; user: number; session: number }
  /** No row can match: a value never seen while its dictionary was not capped. */
  | { kind: 'none' }
  /**
   * No row held in memory matches: a value unknown to a dictionary a delete blanked values of
   * (it may be a blanked one, still held by hours retention folded: ranges with such hours read the log).
   */
  | { kind: 'gone' }
  /** Memory cannot tell (a value or key past a cap): the log answers. */
  | { kind: 'log' }

/** Attribute sets holding (dimension d, id), as a bitmap over set ids; OTHER_ID unknown. */
function setsWith(dims: DimensionDictionary, d: number, id: number): Uint8Array {
  const n = dims.attrSets + 2
  const out = new Uint8Array(n)
  for (let s = 2; s < n; s++) {
    const set = dims.attrSet(s) as Uint32Array
    for (let i = 0; i < set.length; i += 2) {
      if (set[i] === d && set[i + 1] === id) {
        out[s] = 1
        break
      }
    }
  }
  return out
}

/** What a filter on a value `dict` does not know compiles to. */
function unknownValue(dict: ValueDictionary): Compiled {
  return dict.capped ? { kind: 'log' } : dict.blanked > 0 ? { kind: 'gone' } : { kind: 'none' }
}

function compile(view: ProjectView | undefined, f: Filters): Compiled {
  if (!needsRows(f)) return { kind: 'rows', test: () => true, user: -1, session: -1 }
  if (view === undefined) return { kind: 'none' }
  const dims = view.dims
  let user = -1
  let session = -1
  if (f.user_id !== undefined) {
    const id = dims.users.find(f.user_id)
    if (id === undefined) return unknownValue(dims.users)
    user = id
  }
  if (f.session_id !== undefined) {
    const id = dims.sessions.find(f.session_id)
    if (id === undefined) return unknownValue(dims.sessions)
    session = id
  }
  // Each attribute filter: a bitmap of the sets that hold it; all must hold.
  const maps: Uint8Array[] = []
  if (f.tag !== undefined) {
    const id = dims.tags.find(f.tag)
    if (id === undefined) return unknownValue(dims.tags)
    maps.push(setsWith(dims, 0, id))
  }
  for (const [key, value] of Object.entries(f.metadata ?? {})) {
    const k = dims.metaKeyIndex(key)
    if (k < 0) return dims.metaKeyUnknown(key) ? { kind: 'log' } : { kind: 'none' }
    const id = dims.metaValues(k).find(value)
    if (id === undefined) return unknownValue(dims.metaValues(k))
    maps.push(setsWith(dims, k + 1, id))
  }
  // Rows whose set went past its cap are unknown: the log decides for them.
  if (maps.length > 0 && dims.attrSetsCapped) return { kind: 'log' }
  const status = f.status === undefined ? -1 : f.status === 'error' ? 1 : 0
  return {
    kind: 'rows',
    user,
    session,
    test: (flags, u, s, a) => {
      if (status >= 0 && (flags & 1) !== status) return false
      if (user >= 0 && u !== user) return false
      if (session >= 0 && s !== session) return false
      for (let i = 0; i < maps.length; i++) if (maps[i][a] !== 1) return false
      return true
    }
  }
}

/** The log path's filter: the same AND of §6, on the stored event's own strings. */
function eventFilter(f: Filters): (e: PricedEvent) => boolean {
  return (e) => {
    if (f.models !== undefined && !f.models.has(e.model)) return false
    if (f.providers !== undefined && !f.providers.has(e.provider)) return false
    if (f.status !== undefined && (f.status === 'error') !== e.error) return false
    if (f.user_id !== undefined && e.user !== f.user_id) return false
    if (f.session_id !== undefined && e.session !== f.session_id) return false
    if (f.tag !== undefined && (e.tags === null || !e.tags.includes(f.tag))) return false
    for (const [key, value] of Object.entries(f.metadata ?? {})) {
      if (e.meta === null || !Object.hasOwn(e.meta, key) || metadataValue(e.meta[key]) !== value) return false
    }
    return true
  }
}

/**
 * The log path: every stored event of the project matching the filters in [start, end), with
 * its values and flags as rows give them (`v` is reused between calls).
 */
function scanLog(src: QuerySource, project: string, q: RangeQuery, visit: (v: Float64Array, flags: number, e: PricedEvent) => void): void {
  if (src.log === undefined) throw new Error('this query needs the event log (a value past a dimension cap, or rows folded by retention), which is not available here')
  const match = eventFilter(q)
  const v = new Float64Array(7)
  src.log(project, q.start, q.end, (e) => {
    if (match(e)) visit(v, eventValues(e, v), e)
  })
}

/**
 * Visits every row of the project matching the filters in [start, end), with its series, from
 * memory — or, where memory cannot answer exactly (a cap, a folded hour), every matching event
 * of the log. `visit`'s `s` argument: model and provider of the row; `e` the event on the log
 * path (null from memory); `seq` the event's log position on both paths (the row's seq, `e.seq`).
 */
function scan(
  src: QuerySource,
  project: string,
  q: RangeQuery,
  visit: (v: Float64Array, flags: number, user: number, session: number, attrs: number, ts: number, s: { model: string; provider: string }, e: PricedEvent | null, seq: number) => void
): void {
  const view = src.reader.project(project)
  const c = compile(view, q)
  if (c.kind === 'none') return
  // Only folded hours may hold it: nothing to read where every series holds its rows.
  if (c.kind === 'gone' && [...selected(view, q)].every((s) => s.store.rowsAvailable(q.start, q.end))) return
  if (c.kind === 'rows') {
    const test = c.test
    const list = [...selected(view, q)]
    let complete = true
    // Whether every series can answer from rows, before visiting any (no half-visited answer).
    for (const s of list) {
      if (!s.store.rowsAvailable(q.start, q.end)) {
        complete = false
        break
      }
    }
    if (complete && view !== undefined && (c.user >= 0 || c.session >= 0)) {
      // One user or session: read only the (series, hour) cells that hold its events.
      const cells = c.user >= 0 ? view.postings('user').cells(c.user, q.start, q.end) : view.postings('session').cells(c.session, q.start, q.end)
      if (cells !== null) {
        const chosen = new Set(list.map((s) => s.store))
        for (const cell of cells) {
          const s = view.series(cell.series)
          if (s === undefined || !chosen.has(s.store)) continue
          const key = { model: s.model, provider: s.provider }
          s.store.scanRows(Math.max(q.start, cell.hourStart), Math.min(q.end, cell.hourStart + HOUR_MS), (v, flags, u, se, a, ts, seq) => {
            if (test(flags, u, se, a)) visit(v, flags, u, se, a, ts, key, null, seq)
          })
        }
        return
      }
    }
    if (complete) {
      for (const s of list) {
        const key = { model: s.model, provider: s.provider }
        const rowVisit: RowVisitor = (v, flags, u, se, a, ts, seq) => {
          if (test(flags, u, se, a)) visit(v, flags, u, se, a, ts, key, null, seq)
        }
        s.store.scanRows(q.start, q.end, rowVisit)
      }
      return
    }
  }
  scanLog(src, project, q, (v, flags, e) => visit(v, flags, 0, 0, 0, e.ts, { model: e.model, provider: e.provider }, e, e.seq))
}

/** Totals and latency sketch over the range and filters. */
export function metrics(source: QuerySource | AnalyticsReader, q: RangeQuery): Aggregate {
  const src = sourceOf(source)
  const project = q.project ?? 'default'
  const acc = { totals: createTotals(), sketch: LatencySketch.dense() }
  if (needsRows(q)) {
    scan(src, project, q, (v, flags) => addValues(acc, v, flags))
    return acc
  }
  const view = src.reader.project(project)
  const whole = rollupHours(q)
  if (whole === null) {
    for (const s of selected(view, q)) s.store.aggregate(q.start, q.end, acc)
    return acc
  }
  for (const s of selected(view, q)) {
    s.store.aggregate(q.start, whole[0], acc)
    s.store.aggregate(whole[1], q.end, acc)
  }
  view?.rollup.aggregate(whole[0], whole[1], acc)
  return acc
}

/** One row per (model, provider) with at least one request in range, most costly first. */
export function costs(source: QuerySource | AnalyticsReader, q: RangeQuery): Array<{ model: string; provider: string; agg: Aggregate }> {
  const src = sourceOf(source)
  const project = q.project ?? 'default'
  const rows: Array<{ model: string; provider: string; agg: Aggregate }> = []
  if (needsRows(q)) {
    const by = new Map<string, { model: string; provider: string; agg: Aggregate }>()
    scan(src, project, q, (v, flags, _u, _s, _a, _ts, key) => {
      const id = JSON.stringify([key.model, key.provider])
      let row = by.get(id)
      if (row === undefined) {
        row = { model: key.model, provider: key.provider, agg: { totals: createTotals(), sketch: new DiscardSketch() } }
        by.set(id, row)
      }
      addValues(row.agg, v, flags)
    })
    rows.push(...by.values())
  } else {
    for (const s of selected(src.reader.project(project), q)) {
      // Costs need totals only: a discarding sketch skips every sketch merge of the range.
      const agg = s.store.aggregate(q.start, q.end, { totals: createTotals(), sketch: new DiscardSketch() })
      if (agg.totals.requests > 0) rows.push({ model: s.model, provider: s.provider, agg })
    }
  }
  rows.sort((a, b) => b.agg.totals.costNanos - a.agg.totals.costNanos || b.agg.totals.requests - a.agg.totals.requests || (a.model < b.model ? -1 : a.model > b.model ? 1 : a.provider < b.provider ? -1 : 1))
  return rows
}

/** Buckets of `intervalMs` (epoch-aligned) with data in range, ascending. */
export function timeseries(source: QuerySource | AnalyticsReader, q: RangeQuery, intervalMs: number): TimeBucket[] {
  const src = sourceOf(source)
  const project = q.project ?? 'default'
  if (needsRows(q)) {
    const buckets = new Map<number, TimeBucket>()
    scan(src, project, q, (v, flags, _u, _s, _a, ts) => {
      const start = floorDiv(ts, intervalMs) * intervalMs
      let b = buckets.get(start)
      if (b === undefined) {
        b = { start, totals: createTotals(), sketch: LatencySketch.dense() }
        buckets.set(start, b)
      }
      addValues(b, v, flags)
    })
    return [...buckets.values()].sort((a, b) => a.start - b.start)
  }
  const view = src.reader.project(project)
  // The rollup holds hours only: it serves intervals made of whole hours.
  const whole = intervalMs % HOUR_MS === 0 ? rollupHours(q) : null
  // Every series (and the rollup) adds into one set of buckets as it walks: no bucket list
  // per series, no merge of 50 lists afterwards.
  const sum = new BucketSum()
  if (whole === null) {
    for (const s of selected(view, q)) s.store.timeseries(q.start, q.end, intervalMs, sum)
  } else {
    if (view !== undefined) view.rollup.timeseries(whole[0], whole[1], intervalMs, sum)
    for (const s of selected(view, q)) {
      s.store.timeseries(q.start, whole[0], intervalMs, sum)
      s.store.timeseries(whole[1], q.end, intervalMs, sum)
    }
  }
  return sum.list()
}

// ---------------------------------------------------------------------------------------------
// Breakdown (DESIGN §6)

export type BreakdownSort = 'cost' | 'requests' | 'tokens'

export interface BreakdownGroup {
  value: string | null
  agg: Aggregate
}

export interface Breakdown {
  by: string
  groups: BreakdownGroup[]
  other: Aggregate | null
  total: Aggregate
  /** Groups in the range before `limit` (grouped alert rules count those past it); absent where not computed. */
  count?: number
}

/** Per group: requests, prompt, completion, total, cached, reasoning, latency µs, cost, errors, unpriced. */
const ACC = 10

function accTotals(a: Float64Array): Totals {
  return { requests: a[0], promptTokens: a[1], completionTokens: a[2], totalTokens: a[3], cachedTokens: a[4], reasoningTokens: a[5], latencyUsSum: a[6], costNanos: a[7], errors: a[8], unpriced: a[9] }
}

/** The dimension a breakdown groups by, as keys of a row (ids from memory, strings from the log). */
interface GroupBy {
  /** Group keys of a row into `out` (cleared first). */
  keys(out: Array<number | string>, u: number, s: number, a: number, series: { model: string; provider: string }, e: PricedEvent | null): void
  /** The shown value of a key. */
  name(key: number | string): string | null
  /** Number keys are ids below this (dictionary ids: sums kept in one array); 0 when keys are strings. */
  ids: number
}

/** `by` as a GroupBy for the project, or null when `by` names no dimension (400 upstream). */
function groupBy(view: ProjectView | undefined, by: string): GroupBy | null {
  const dims = view?.dims
  const NULL_KEY = '\u0000null'
  const fromDict = (dict: { value(id: number): string | null } | undefined) => (k: number | string) => (typeof k === 'string' ? (k === NULL_KEY ? null : k) : (dict?.value(k) ?? null))
  /**
   * A value read from the log as the memory path keys it: its id when the dictionary holds
   * it, "(other)" when the dictionary is capped (as memory counted it), else itself.
   */
  const canon = (dict: ValueDictionary | undefined, value: string | null): number | string => {
    if (value === null) return NULL_KEY
    const id = dict?.find(value)
    if (id !== undefined) return id
    return dict?.capped === true ? OTHER_ID : value
  }
  /**
   * Makes `out` the one key `k`. Not `out.length = 0; out.push(k)`: setting an array's length is
   * a runtime call and may drop its backing store, which the push then allocates again, per row.
   */
  const only = (out: Array<number | string>, k: number | string) => {
    if (out.length !== 1) out.length = 1
    out[0] = k
  }
  /** Adds a key once (an event with two tags past the cap counts once in "(other)"). */
  const once = (out: Array<number | string>, k: number | string) => {
    if (!out.includes(k)) out.push(k)
  }
  switch (by) {
    case 'model':
    case 'provider':
      return { keys: (out, _u, _s, _a, series) => only(out, by === 'model' ? series.model : series.provider), name: (k) => String(k), ids: 0 }
    case 'user_id':
    case 'session_id': {
      const dict = by === 'user_id' ? dims?.users : dims?.sessions
      return {
        keys: (out, u, s, _a, _series, e) => only(out, e !== null ? canon(dict, by === 'user_id' ? e.user : e.session) : by === 'user_id' ? u : s),
        name: fromDict(dict),
        ids: idsOf(dict)
      }
    }
    case 'tag':
      return {
        keys: (out, _u, _s, a, _series, e) => {
          out.length = 0
          if (e !== null) {
            if (e.tags === null || e.tags.length === 0) out.push(NULL_KEY)
            else for (const t of e.tags) once(out, canon(dims?.tags, t))
            return
          }
          if (a === OTHER_ID) return void out.push(OTHER_ID)
          const set = dims?.attrSet(a)
          if (set !== undefined) for (let i = 0; i < set.length; i += 2) if (set[i] === 0) once(out, set[i + 1])
          if (out.length === 0) out.push(NULL_ID)
        },
        name: fromDict(dims?.tags),
        ids: idsOf(dims?.tags)
      }
    default: {
      if (!by.startsWith('metadata.') || by.length === 'metadata.'.length) return null
      const key = by.slice('metadata.'.length)
      const k = dims === undefined ? -1 : dims.metaKeyIndex(key)
      const dict = k >= 0 ? dims?.metaValues(k) : undefined
      return {
        keys: (out, _u, _s, a, _series, e) => {
          if (e !== null) {
            const v = e.meta !== null && Object.hasOwn(e.meta, key) ? metadataValue(e.meta[key]) : null
            return only(out, canon(dict, v))
          }
          if (a === OTHER_ID) return only(out, OTHER_ID)
          const set = dims?.attrSet(a)
          if (set !== undefined && k >= 0) for (let i = 0; i < set.length; i += 2) if (set[i] === k + 1) return only(out, set[i + 1])
          only(out, NULL_ID)
        },
        name: fromDict(dict),
        ids: idsOf(dict)
      }
    }
  }
}

/** The bound of a dictionary's ids (0 null, 1 "(other)", 2… values). */
const idsOf = (dict: ValueDictionary | undefined) => (dict === undefined ? 2 : dict.ids + 2)

/** Whether a breakdown by `by` must read the log (a metadata key past the key cap). */
function groupNeedsLog(view: ProjectView | undefined, by: string): boolean {
  if (view === undefined || !by.startsWith('metadata.')) return false
  return view.dims.metaKeyUnknown(by.slice('metadata.'.length))
}

/** Whether `by` is a dimension name breakdowns accept. */
export function isBreakdownDimension(by: string): boolean {
  return ['model', 'provider', 'user_id', 'session_id', 'tag'].includes(by) || (by.startsWith('metadata.') && by.length > 'metadata.'.length)
}

/**
 * Groups of the filtered range by one dimension, largest first by `sort` (ties by value,
 * JavaScript string order), the first `limit` of them, `other` summing the rest, and `total`.
 * Two passes over the rows: totals per group (no sketch: a user dimension has 100,000 groups),
 * then latency sketches for the shown groups, `other` and `total` only.
 */
export function breakdown(source: QuerySource | AnalyticsReader, q: RangeQuery, by: string, sort: BreakdownSort, limit: number): Breakdown {
  const src = sourceOf(source)
  const project = q.project ?? 'default'
  const view = src.reader.project(project)
  const g = groupBy(view, by)
  if (g === null) throw new RangeError(`cannot group by ${by}`)
  const fast = breakdownFromTotals(src, view, q, by, sort, limit, g)
  if (fast !== null) return fast
  const run = groupScan(src, project, q, view, by, g)
  // Without row filters the range's total comes from the hour and day aggregates (the same
  // buckets and exact min/max as its rows recorded one by one), not from every row of the scan.
  const rowsTotal = needsRows(q) ? { totals: createTotals(), sketch: LatencySketch.dense() } : undefined
  const named = sumGroups(run, g, rowsTotal)
  const total = rowsTotal ?? metrics(src, q)
  named.sort(bySortOrder(sort))
  const shown = named.slice(0, limit)
  const rest = named.slice(limit)
  const sketches = new SketchByKey(g.ids)
  for (const x of shown) sketches.set(x.key, LatencySketch.dense())
  let other: Aggregate | null = null
  if (rest.length > 0) {
    const acc = new Float64Array(ACC)
    for (const x of rest) for (let i = 0; i < ACC; i++) acc[i] += x.acc[i]
    other = { totals: accTotals(acc), sketch: LatencySketch.dense() }
  }
  // Second pass: sketches of the shown groups and of `other` (a row in several groups, by tag, counts in each).
  if (shown.length > 0 || other !== null) {
    const otherSketch = other?.sketch
    run((v, _flags, ks) => {
      for (let i = 0; i < ks.length; i++) (sketches.get(ks[i]) ?? otherSketch)?.record(v[5])
    })
  }
  return {
    by,
    groups: shown.map((x) => ({ value: x.value, agg: { totals: accTotals(x.acc), sketch: sketches.get(x.key) as LatencySketch } })),
    other,
    total,
    count: named.length
  }
}

/**
 * The groups of the filtered range by `by` in several orders at once, for grouped alert rules
 * (src/alerts/windows.ts): for each of `sorts`, the first `limit` groups exactly as breakdown()
 * picks them, with their totals, from ONE pass over the rows (breakdown() makes one per call);
 * latency sketches (a second pass, over the union of the shown groups) only when `sketches`,
 * else each group's sketch is empty. `count`: the groups seen.
 */
export function breakdownMany(source: QuerySource | AnalyticsReader, q: RangeQuery, by: string, sorts: readonly BreakdownSort[], limit: number, sketches: boolean): { count: number; bySort: Map<BreakdownSort, BreakdownGroup[]> } {
  const src = sourceOf(source)
  const project = q.project ?? 'default'
  const view = src.reader.project(project)
  const g = groupBy(view, by)
  if (g === null) throw new RangeError(`cannot group by ${by}`)
  const bySort = new Map<BreakdownSort, BreakdownGroup[]>()
  // The all-time-totals path answers without a scan of the range: as breakdown() does, per sort.
  const fast = sorts.length === 0 ? null : breakdownFromTotals(src, view, q, by, sorts[0], limit, g)
  if (fast !== null) {
    bySort.set(sorts[0], fast.groups)
    for (const sort of sorts.slice(1)) bySort.set(sort, breakdown(src, q, by, sort, limit).groups)
    return { count: fast.count ?? fast.groups.length, bySort }
  }
  const run = groupScan(src, project, q, view, by, g)
  const named = sumGroups(run, g)
  const shownBySort = new Map<BreakdownSort, typeof named>()
  for (const sort of sorts) shownBySort.set(sort, [...named].sort(bySortOrder(sort)).slice(0, limit))
  const sk = new SketchByKey(g.ids)
  if (sketches) {
    for (const shown of shownBySort.values()) for (const x of shown) if (!sk.has(x.key)) sk.set(x.key, LatencySketch.dense())
    if (sk.size > 0) {
      run((v, _flags, ks) => {
        for (let i = 0; i < ks.length; i++) sk.get(ks[i])?.record(v[5])
      })
    }
  }
  for (const [sort, shown] of shownBySort) bySort.set(sort, shown.map((x) => ({ value: x.value, agg: { totals: accTotals(x.acc), sketch: sk.get(x.key) ?? LatencySketch.dense() } })))
  return { count: named.length, bySort }
}

/** One pass over the filtered range's rows, each with its group keys under `g` (a row may have several: tags). */
type GroupScan = (visit: (v: Float64Array, flags: number, keys: Array<number | string>) => void) => void

/**
 * The rows of the filtered range with their group keys, as often as the caller passes over
 * them; a metadata key past the key cap groups from the log (ids cannot say, the log can).
 */
function groupScan(src: QuerySource, project: string, q: RangeQuery, view: ProjectView | undefined, by: string, g: GroupBy): GroupScan {
  const forceLog = groupNeedsLog(view, by)
  const keys: Array<number | string> = []
  return (visit) => {
    if (forceLog) {
      scanLog(src, project, q, (v, flags, e) => {
        g.keys(keys, 0, 0, 0, e, e)
        visit(v, flags, keys)
      })
      return
    }
    scan(src, project, q, (v, flags, u, s, a, _ts, series, e) => {
      g.keys(keys, u, s, a, series, e)
      visit(v, flags, keys)
    })
  }
}

/**
 * A group's sums ({@link ACC} words) from one pass of `run`; `total`, when given, gets every row
 * once. Keys that are dictionary ids (below `g.ids`) are summed in one array, indexed by id (a
 * breakdown by user has up to 100,000 groups: no map lookup per row); other keys in a map.
 */
function sumGroups(run: GroupScan, g: GroupBy, total?: Aggregate): Array<{ key: number | string; acc: Float64Array; value: string | null }> {
  const ids = g.ids
  const dense = new Float64Array(ids * ACC)
  const groups = new Map<number | string, Float64Array>()
  run((v, flags, ks) => {
    if (total !== undefined) addValues(total, v, flags)
    for (let i = 0; i < ks.length; i++) {
      const k = ks[i]
      if (typeof k === 'number' && k < ids) {
        addSums(dense, k * ACC, v, flags)
        continue
      }
      let acc = groups.get(k)
      if (acc === undefined) {
        acc = new Float64Array(ACC)
        groups.set(k, acc)
      }
      addSums(acc, 0, v, flags)
    }
  })
  const out: Array<{ key: number | string; acc: Float64Array; value: string | null }> = []
  // A group with a row has requests ≥ 1.
  for (let id = 0; id < ids; id++) if (dense[id * ACC] > 0) out.push({ key: id, acc: dense.subarray(id * ACC, id * ACC + ACC), value: g.name(id) })
  for (const [key, acc] of groups) out.push({ key, acc, value: g.name(key) })
  return out
}

/** Per group key, a sketch (or none): dictionary ids in an array indexed by id, other keys in a map. */
class SketchByKey {
  readonly #ids: number
  readonly #dense: Array<LatencySketch | undefined>
  readonly #map = new Map<number | string, LatencySketch>()
  size = 0

  constructor(ids: number) {
    this.#ids = ids
    this.#dense = new Array<LatencySketch | undefined>(ids)
  }

  get(k: number | string): LatencySketch | undefined {
    return typeof k === 'number' && k < this.#ids ? this.#dense[k] : this.#map.get(k)
  }

  set(k: number | string, sk: LatencySketch): void {
    if (this.get(k) === undefined) this.size++
    if (typeof k === 'number' && k < this.#ids) this.#dense[k] = sk
    else this.#map.set(k, sk)
  }

  has(k: number | string): boolean {
    return this.get(k) !== undefined
  }
}

/** Breakdown order: largest first by `sort`, ties by value (JavaScript string order). */
function bySortOrder(sort: BreakdownSort): (a: { acc: Float64Array; value: string | null }, b: { acc: Float64Array; value: string | null }) => number {
  const metric = sort === 'cost' ? 7 : sort === 'requests' ? 0 : 3
  return (a, b) => b.acc[metric] - a.acc[metric] || cmpValue(a.value, b.value)
}

/**
 * A breakdown by user or session without filters, over a range holding at least half the
 * project's events: the all-time totals per value (analytics/dim-totals.ts) minus the rows
 * outside the range, so it costs O(values + rows outside), not a scan of every row inside.
 * Latency sketches: each shown value's all-time sketch minus its latencies outside the range,
 * `other`'s as the range's sketch minus theirs (no row of a shown value is read). Null when it does not apply (the caller scans).
 */
function breakdownFromTotals(src: QuerySource, view: ProjectView | undefined, q: RangeQuery, by: string, sort: BreakdownSort, limit: number, g: GroupBy): Breakdown | null {
  if (view === undefined || (by !== 'user_id' && by !== 'session_id')) return null
  if (needsRows(q) || q.models !== undefined || q.providers !== undefined) return null
  const dim = by === 'user_id' ? 'user' : 'session'
  const all = view.rollup.aggregate(-Infinity, Infinity, { totals: createTotals(), sketch: new DiscardSketch() }).totals.requests
  const total = metrics(src, q)
  if (all - total.totals.requests > total.totals.requests) return null
  const allTime = view.totals(dim)
  if (allTime === null) return null
  const stores: SeriesStore[] = []
  for (const agg of view.aggregators()) {
    for (const store of agg.view().values()) {
      if (!store.rowsAvailable(-Infinity, q.start) || !store.rowsAvailable(q.end, Infinity)) return null
      stores.push(store)
    }
  }
  // First pass: each value's sums outside the range, in one array indexed by id.
  const ids = allTime.top
  const outside = sumsOutside(stores, q, dim, ids)
  const a = allTime.totals
  const metric = sort === 'cost' ? 7 : sort === 'requests' ? 0 : 3
  const valueOf = (id: number) => a[id * DIM_FIELDS + metric] - outside[id * DIM_FIELDS + metric]
  const requestsOf = (id: number) => a[id * DIM_FIELDS] - outside[id * DIM_FIELDS]
  // The first `limit` by (metric desc, value asc), kept in a bounded list (limit ≤ 1000).
  const before = (x: number, y: number) => {
    const dx = valueOf(x)
    const dy = valueOf(y)
    return dx !== dy ? dx > dy : cmpValue(g.name(x), g.name(y)) < 0
  }
  const top: number[] = []
  let count = 0
  for (let id = 0; id < ids; id++) {
    if (requestsOf(id) <= 0) continue
    count++
    if (top.length === limit && !before(id, top[top.length - 1])) continue
    let i = top.length === limit ? top.length - 1 : top.length
    if (top.length < limit) top.push(id)
    while (i > 0 && before(id, top[i - 1])) {
      top[i] = top[i - 1]
      i--
    }
    top[i] = id
  }
  const totalsOf = (id: number): Totals => {
    const acc = a.slice(id * DIM_FIELDS, id * DIM_FIELDS + DIM_FIELDS)
    for (let i = 0; i < DIM_FIELDS; i++) acc[i] -= outside[id * DIM_FIELDS + i]
    return accTotals(acc)
  }
  // Each shown value's sketch: its all-time one minus its latencies outside the range (a second
  // pass over the rows outside, recording only the shown values' latencies).
  const outsideSketches: Array<LatencySketch | undefined> = new Array(ids)
  let anyOutside = false
  for (const id of top) {
    if (outside[id * DIM_FIELDS] > 0) {
      outsideSketches[id] = new LatencySketch()
      anyOutside = true
    }
  }
  if (anyOutside) {
    rowsOutside(stores, q, (v, _flags, u, s) => {
      outsideSketches[dim === 'user' ? u : s]?.record(v[5])
    })
  }
  const sketches = new Map<number, LatencySketch>()
  for (const id of top) {
    const sk = LatencySketch.dense()
    const whole = allTime.sketch(id)
    if (whole !== undefined) sk.merge(whole)
    const out = outsideSketches[id]
    if (out !== undefined) sk.subtract(out)
    sketches.set(id, sk)
  }
  const groups = top.map((id) => ({ value: g.name(id), agg: { totals: totalsOf(id), sketch: sketches.get(id) as LatencySketch } }))
  let other: Aggregate | null = null
  const shownRequests = groups.reduce((n, x) => n + x.agg.totals.requests, 0)
  if (shownRequests < total.totals.requests) {
    const rest = new Float64Array(ACC)
    const t = total.totals
    const all10 = [t.requests, t.promptTokens, t.completionTokens, t.totalTokens, t.cachedTokens, t.reasoningTokens, t.latencyUsSum, t.costNanos, t.errors, t.unpriced]
    for (let i = 0; i < ACC; i++) rest[i] = all10[i]
    for (const x of groups) {
      const gt = x.agg.totals
      const sub = [gt.requests, gt.promptTokens, gt.completionTokens, gt.totalTokens, gt.cachedTokens, gt.reasoningTokens, gt.latencyUsSum, gt.costNanos, gt.errors, gt.unpriced]
      for (let i = 0; i < ACC; i++) rest[i] -= sub[i]
    }
    const sketch = LatencySketch.dense().merge(total.sketch)
    for (const x of groups) sketch.subtract(x.agg.sketch)
    other = { totals: accTotals(rest), sketch }
  }
  return { by, groups, other, total, count }
}

/** Every row of `stores` outside [q.start, q.end) (a range holding most events: these are the fewer). */
function rowsOutside(stores: readonly SeriesStore[], q: RangeQuery, visit: RowVisitor): void {
  for (const store of stores) {
    store.scanRows(-Infinity, q.start, visit)
    store.scanRows(q.end, Infinity, visit)
  }
}

/**
 * Each user's (or session's) sums over the rows of `stores` outside [q.start, q.end), in one
 * array of {@link DIM_FIELDS} words per id below `ids` (the layout of DimTotals): what a
 * range holding most events leaves out of the all-time totals. One array, not an entry per
 * value: a breakdown by user has up to 100,000 of them.
 */
function sumsOutside(stores: readonly SeriesStore[], q: RangeQuery, dim: 'user' | 'session', ids: number): Float64Array {
  const outside = new Float64Array(ids * DIM_FIELDS)
  rowsOutside(stores, q, (v, flags, u, s) => {
    const id = dim === 'user' ? u : s
    if (id < ids) addSums(outside, id * DIM_FIELDS, v, flags)
  })
  return outside
}

/** Ascending by value, JavaScript string order; the null group last. */
function cmpValue(a: string | null, b: string | null): number {
  if (a === b) return 0
  if (a === null) return 1
  if (b === null) return -1
  return a < b ? -1 : 1
}

/** `GET /analytics/dimensions` of a project. */
export function dimensions(source: QuerySource | AnalyticsReader, project: string): Array<{ name: string; values: number; capped: boolean }> {
  return sourceOf(source).reader.project(project)?.dims.describe() ?? []
}

/** Re-exported for routes that merge partial answers. */
export { mergeInto, createAggregate }
/** For the cluster's partial answers (analytics/partials.ts): the same row reads and grouping as here. */
export { scan, scanLog, groupBy, groupNeedsLog, cmpValue, sumsOutside }

const round = (x: number, digits = 3) => {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

/** Nano-dollars as dollars on the wire, rounded to the nano-dollar the server counts in (no float noise). */
export function dollars(nanos: number): number {
  return Math.round(nanos) / 1e9
}

/** Latency quantile in ms from the sketch, or null with no data. */
export function quantileMs(agg: Aggregate, q: number): number | null {
  if (agg.totals.requests === 0 || agg.sketch.count === 0) return null
  return round(agg.sketch.quantile(q) / 1000)
}

/** The public JSON fields shared by metrics, cost rows and buckets. */
export function totalsJson(t: Totals) {
  return {
    total_requests: t.requests,
    total_tokens: t.totalTokens,
    prompt_tokens: t.promptTokens,
    completion_tokens: t.completionTokens,
    cached_tokens: t.cachedTokens,
    reasoning_tokens: t.reasoningTokens,
    total_cost: dollars(t.costNanos),
    avg_latency_ms: t.requests === 0 ? 0 : round(t.latencyUsSum / t.requests / 1000),
    error_count: t.errors,
    error_rate: t.requests === 0 ? 0 : t.errors / t.requests,
    unpriced_requests: t.unpriced
  }
}

/** Bucket count past which a timeseries request is refused (400): a chart needs far fewer. */
export const MAX_BUCKETS = 10_000

/** Every bucket of the range, filling empty ones with zeros, for charts. */
export function fillBuckets(buckets: TimeBucket[], start: number, end: number, intervalMs: number) {
  const out = []
  const first = Math.floor(start / intervalMs) * intervalMs
  const iso = isoClock()
  let i = 0
  // The fields of totalsJson a bucket shows, read straight from the totals (no object per bucket
  // for totalsJson's own answer): a 10-day hourly chart has 240 buckets.
  for (let t = first; t < end; t += intervalMs) {
    while (i < buckets.length && buckets[i].start < t) i++
    const b = i < buckets.length && buckets[i].start === t ? buckets[i] : null
    if (b === null) {
      out.push({ timestamp: iso(t), requests: 0, total_tokens: 0, prompt_tokens: 0, completion_tokens: 0, cost: 0, avg_latency_ms: 0, p95_latency_ms: null, errors: 0, unpriced_requests: 0 })
      continue
    }
    const x = b.totals
    out.push({
      timestamp: iso(t),
      requests: x.requests,
      total_tokens: x.totalTokens,
      prompt_tokens: x.promptTokens,
      completion_tokens: x.completionTokens,
      cost: dollars(x.costNanos),
      avg_latency_ms: x.requests === 0 ? 0 : round(x.latencyUsSum / x.requests / 1000),
      p95_latency_ms: quantileMs(b, 0.95),
      errors: x.errors,
      unpriced_requests: x.unpriced
    })
  }
  return out
}

/**
 * `new Date(t).toISOString()` for ascending times: the date part is formatted once per UTC day
 * and the time of day from arithmetic (hundreds of buckets a chart); outside years 1970–9999,
 * Date formats it.
 */
function isoClock(): (t: number) => string {
  let day = NaN
  let prefix = ''
  const two = (n: number) => (n < 10 ? `0${n}` : `${n}`)
  return (t) => {
    if (!(t >= 0 && t < 253_402_300_800_000)) return new Date(t).toISOString()
    const d = Math.floor(t / 86_400_000)
    if (d !== day) {
      day = d
      prefix = new Date(d * 86_400_000).toISOString().slice(0, 11)
    }
    const ms = t - d * 86_400_000
    const h = Math.floor(ms / 3_600_000)
    const m = Math.floor(ms / 60_000) % 60
    const sec = Math.floor(ms / 1000) % 60
    const milli = ms % 1000
    return `${prefix}${two(h)}:${two(m)}:${two(sec)}.${milli < 10 ? `00${milli}` : milli < 100 ? `0${milli}` : milli}Z`
  }
}


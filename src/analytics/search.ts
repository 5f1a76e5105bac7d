/**
 * Search (DESIGN §7, `GET /events`): the matching events of a range in a total order — `time`
 * (newest event time first), `latency` or `cost` (largest first), ties by larger seq (newer
 * id) first — as hits (seq, ts, key) from the analytics rows; the route then reads the events
 * from the log by seq. Pure over a {@link QuerySource}, so a cluster partition answers its part
 * with the same function and the coordinator merges hits by (key desc, seq desc).
 *
 * How it stays fast:
 * - `sort=time` walks the range backwards from its end (clipped to the project's data bounds
 *   and to the cursor) in windows of whole hours — 1, 1, 2, 4, 8… hours — and stops after the
 *   first window that completes the page: every row of an older window has a smaller key than
 *   every hit kept. A common filter reads the newest hour or two; a rare one reads more windows
 *   but each one costs a scan (or, for a user or session, the postings' cells of that window):
 *   doubling bounds the number of scans to O(log hours) whatever the range.
 * - `sort=latency|cost` reads the whole range once.
 * - The page is a bounded top-k ({@link TopK}, a binary heap of `limit` entries, worst at the
 *   root): O(rows · log limit) at worst, O(rows) when most rows lose to the root.
 * - Where memory cannot answer (a value past a dimension cap, hours folded by retention), the
 *   log answers, exactly (queries.ts `scanLog`). A time walk that meets such a window finishes
 *   with one log pass over everything older, not one per window (each log pass reads the log).
 *
 * Cursor rule: with `after` = the last hit of a page, the next page holds the hits strictly
 * after it in the order. The order is total and a hit's key never changes (an event's time,
 * latency and cost are fixed when accepted; a re-price is issue 14's 409), so an event that
 * existed at the first page is never skipped nor repeated, whatever arrives in between.
 */
import { scan, type QuerySource, type RangeQuery } from '../queries.js'
import { HOUR_MS, floorDiv } from './time.js'

/** The orders of DESIGN §7. */
export type SearchSort = 'time' | 'latency' | 'cost'

export const SEARCH_SORTS: readonly SearchSort[] = ['time', 'latency', 'cost']

/**
 * One matching event: its log position, its time (epoch ms) and its sort key — the time for
 * `time`, latency in integer µs for `latency`, cost in integer nano-dollars for `cost`.
 */
export interface SearchHit {
  seq: number
  ts: number
  key: number
}

/** Where a page starts: strictly after this (key, seq) in the order. */
export interface SearchAfter {
  key: number
  seq: number
}

/** Whether (k1, s1) comes before (k2, s2) in the order (key desc, then seq desc). */
export function before(k1: number, s1: number, k2: number, s2: number): boolean {
  return k1 > k2 || (k1 === k2 && s1 > s2)
}

/** Orders hits as pages list them (key desc, seq desc): for merging partitions' hits. */
export function compareHits(a: SearchHit, b: SearchHit): number {
  return b.key - a.key || b.seq - a.seq
}

/**
 * The best `limit` entries by (key desc, seq desc) among those offered. Entries are appended
 * until `limit` are held, then heapified once (a min-heap on the order: the worst at the
 * root) and each later offer either loses to the root (one comparison) or replaces it.
 * Parallel Float64Arrays: 24 bytes per entry, no object per row.
 */
export class TopK {
  readonly #limit: number
  #keys: Float64Array
  #seqs: Float64Array
  #ts: Float64Array
  #n = 0

  constructor(limit: number) {
    if (!(limit >= 1)) throw new RangeError(`limit must be at least 1 (got ${limit})`)
    this.#limit = limit
    const cap = Math.min(limit, 1024)
    this.#keys = new Float64Array(cap)
    this.#seqs = new Float64Array(cap)
    this.#ts = new Float64Array(cap)
  }

  get size(): number {
    return this.#n
  }

  /** Whether `limit` entries are held (then only better ones get in). */
  get full(): boolean {
    return this.#n >= this.#limit
  }

  offer(key: number, seq: number, ts: number): void {
    const keys = this.#keys
    const seqs = this.#seqs
    if (this.#n < this.#limit) {
      if (this.#n === keys.length) this.#grow()
      const i = this.#n++
      this.#keys[i] = key
      this.#seqs[i] = seq
      this.#ts[i] = ts
      if (this.#n === this.#limit) this.#heapify()
      return
    }
    // Full: only an entry better than the worst (the root) gets in.
    if (!before(key, seq, keys[0], seqs[0])) return
    keys[0] = key
    seqs[0] = seq
    this.#ts[0] = ts
    this.#down(0)
  }

  /** The entries held, best first. */
  sorted(): SearchHit[] {
    const out: SearchHit[] = new Array(this.#n)
    for (let i = 0; i < this.#n; i++) out[i] = { seq: this.#seqs[i], ts: this.#ts[i], key: this.#keys[i] }
    return out.sort(compareHits)
  }

  #grow(): void {
    const cap = Math.min(this.#limit, this.#keys.length * 2)
    const grow = (a: Float64Array) => {
      const b = new Float64Array(cap)
      b.set(a)
      return b
    }
    this.#keys = grow(this.#keys)
    this.#seqs = grow(this.#seqs)
    this.#ts = grow(this.#ts)
  }

  #heapify(): void {
    for (let i = (this.#n >>> 1) - 1; i >= 0; i--) this.#down(i)
  }

  /** Sifts entry i down: a parent is never better than its children. */
  #down(i: number): void {
    const keys = this.#keys
    const seqs = this.#seqs
    const ts = this.#ts
    const n = this.#n
    const k = keys[i]
    const s = seqs[i]
    const t = ts[i]
    for (;;) {
      let c = 2 * i + 1
      if (c >= n) break
      // The worse child (the one that belongs nearer the root).
      if (c + 1 < n && before(keys[c], seqs[c], keys[c + 1], seqs[c + 1])) c++
      if (!before(k, s, keys[c], seqs[c])) break
      keys[i] = keys[c]
      seqs[i] = seqs[c]
      ts[i] = ts[c]
      i = c
    }
    keys[i] = k
    seqs[i] = s
    ts[i] = t
  }
}

/**
 * The first `limit` matches of `q` after `after` (null: from the start) in the `sort` order.
 * `limit` may be Infinity (every match; memory then grows with the matches).
 * Throws what scan throws (a log path needed without a log).
 */
export function search(src: QuerySource, q: RangeQuery, sort: SearchSort, after: SearchAfter | null, limit: number): SearchHit[] {
  const top = new TopK(limit)
  const project = q.project ?? 'default'
  const aKey = after === null ? Infinity : after.key
  const aSeq = after === null ? Infinity : after.seq
  const visit = (v: Float64Array, _flags: number, _u: number, _s: number, _a: number, ts: number, _series: unknown, _e: unknown, sq: number) => {
    const key = sort === 'time' ? ts : sort === 'latency' ? v[5] : v[6]
    // Strictly after the cursor: a smaller key, or the same key and a smaller seq.
    if (key > aKey || (key === aKey && sq >= aSeq)) return
    top.offer(key, sq, ts)
  }
  if (sort !== 'time') {
    scan(src, project, q, visit)
    return top.sorted()
  }
  const view = src.reader.project(project)
  const bounds = view?.rollup.bounds() ?? null
  if (bounds === null) return []
  // Row times are integers: [ceil(start), …) selects the same rows as [start, …).
  const lo = Math.max(Math.ceil(q.start), bounds.min)
  const hi = Math.min(Math.ceil(q.end), bounds.max + 1, after === null ? Infinity : after.key + 1)
  if (!(lo < hi)) return []
  // Scans windows from memory; a window memory cannot answer only flags `needLog` (scan picks
  // the log before visiting any row, so nothing of that window was visited).
  let needLog = false
  const probe: QuerySource = { reader: src.reader, log: () => void (needLog = true) }
  let we = hi
  let hours = 1
  // Windows: the (often partial) hour holding the range's end, one whole hour, then 2, 4, 8… hours.
  for (let round = 1; we > lo; round++) {
    const ws = Math.max(lo, (floorDiv(we - 1, HOUR_MS) - (hours - 1)) * HOUR_MS)
    scan(probe, project, { ...q, start: ws, end: we }, visit)
    if (needLog) {
      // Everything older in one log pass (hits kept so far are all newer than `we`).
      scan(src, project, { ...q, start: lo, end: we }, visit)
      break
    }
    // Every row of an older window has a smaller key than every hit held: the page is done.
    if (top.full) break
    we = ws
    if (round >= 2) hours *= 2
  }
  return top.sorted()
}

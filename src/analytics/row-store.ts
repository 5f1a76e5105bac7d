/**
 * RowStore: the raw rows of one series, packed into chunked Uint32Arrays (no object per row,
 * ~24 bytes a row), each row linked into one *list* (a {@link SeriesStore} keeps one list per
 * minute). It knows nothing of time beyond a row's offset in its list's minute: the day, hour
 * and minute index over the lists is `SeriesStore`'s (series.ts).
 *
 * The loops over rows (sum, visit, copy out) live here, next to the layout they decode, so
 * they read the chunk arrays directly: one call per list, none per row.
 */
import type { Aggregate } from './aggregate.js'
import type { Row } from './row.js'
import { addRowValues, type Totals } from './totals.js'
import { lowerBound } from './sorted.js'

/**
 * A row's dimensions as ids into its project's dictionaries (analytics/dimensions.ts): the
 * user, the session and the interned set of tags and metadata values; 0 = none.
 */
export interface RowDims {
  user: number
  session: number
  attrs: number
}

/**
 * Visits one raw row (see `SeriesStore.scanRows`): `v` holds its values in VALUE_FIELDS
 * order (prompt, completion, total, cached, reasoning tokens, latency µs, cost nano-dollars),
 * reused between calls; `flags` bit 0 = error, bit 1 = unpriced; `ts` its time (epoch ms);
 * `seq` the event's log position (exact, any safe integer; 0 for a row recorded without one).
 */
export type RowVisitor = (v: Float64Array, flags: number, user: number, session: number, attrs: number, ts: number, seq: number) => void

/** The numeric fields of a row, in the order the snapshot columns and the `#wide` escape use. */
export const VALUE_FIELDS = [
  'promptTokens',
  'completionTokens',
  'totalTokens',
  'cachedTokens',
  'reasoningTokens',
  'latencyUs',
  'costNanos',
] as const
export const NUM_VALUES = VALUE_FIELDS.length

/** Dimension words per row (user, session, attribute set), in chunks allocated on a chunk's first row with any. */
export const DIMS = 3

/** Row and list indexes are Int32 (the linked lists use -1 as the end). */
export const MAX_ROWS = 0x7fffffff

/*
 * Row layout: CORE Uint32 words per row in its chunk's `#core` array:
 *
 *   0 tokens: promptTokens (bits 0-23) | completionTokens bits 0-7 (bits 24-31)
 *   1 latencyUs   2 costNanos mod 2^32
 *   3 meta: offset of ts in its minute (bits 0-15: 0..59,999) | FLAG_* (bits 16-19)
 *           | completionTokens bits 8-19 (bits 20-31)
 *   4 seq mod 2^32: the event's log position (what search pages and deletes name rows by)
 *   5 next row of the same list, as Uint32 (`| 0` reads it back; -1 = end of list)
 *
 * So prompts below 2^24 tokens and completions below 2^20 (today's context windows are far
 * smaller) with latency below 2^32 µs (71 minutes) take no more. What does not fit goes to
 * one of two exact escapes, flagged in `meta`:
 * - FLAG_EXT: the row's EXT words in its chunk's `#ext` array (allocated on the chunk's first
 *   such row): cachedTokens, reasoningTokens, totalTokens, floor(costNanos / 2^32). A row
 *   without it has cached = reasoning = 0, total = prompt + completion and cost < 2^32.
 * - FLAG_WIDE: a count or the latency does not fit its bits above (any value up to 2^53 is
 *   legal): the row's values live in `#wide` (by row index, VALUE_FIELDS order) and its
 *   tokens, latency and cost words are unused.
 * - A seq at or past 2^32 (a log of more than four billion events) keeps floor(seq / 2^32) in
 *   its chunk's `#seqHigh` array, allocated on the chunk's first such row (no flag needed: a
 *   chunk without the array has every high word 0).
 * So a typical row costs 24 bytes (one with cached or reasoning tokens, 40; past seq 2^32, 4 more).
 */
const CORE = 6
const C_TOKENS = 0
const C_LATENCY = 1
const C_COST = 2
const C_META = 3
const C_SEQ = 4
const C_NEXT = 5
const PROMPT_MASK = 0xffffff
const PROMPT_LIMIT = 2 ** 24
const COMPLETION_LIMIT = 2 ** 20
const EXT = 4
const E_CACHED = 0
const E_REASONING = 1
const E_TOTAL = 2
const E_COST_HIGH = 3
const OFFSET_MASK = 0xffff
const FLAG_ERROR = 1 << 16
const FLAG_UNPRICED = 1 << 17
const FLAG_EXT = 1 << 18
const FLAG_WIDE = 1 << 19
const TWO_32 = 2 ** 32

/** Chunk copies holding new costs, not yet in the store (see RowStore.stageCosts). */
export interface StagedCosts {
  core: Map<number, Uint32Array>
  ext: Map<number, Uint32Array>
  wide: Map<number, Float64Array>
  /**
   * Per chunk copied: its rows when the copy was made. Rows appended to the chunk later are
   * copied into the copy as they are when it is swapped in (none of them is a staged row).
   */
  rows?: Map<number, number>
}

/** Rows live in chunks of up to 2^12 rows; a row index is (chunk << 12) | offset. */
const CHUNK_SHIFT = 12
const CHUNK_ROWS = 1 << CHUNK_SHIFT
const CHUNK_MASK = CHUNK_ROWS - 1
/**
 * The first chunk starts small and doubles up to CHUNK_ROWS, so small series stay small;
 * later chunks are allocated whole: one allocation size, no copies, no freed halves left to
 * fragment the allocator (the slack is at most one chunk, ~112 KiB, per series).
 */
const FIRST_CHUNK_ROWS = 16

/**
 * Where {@link RowStore.copyOut} writes rows: one entry per row in each column (`values` in
 * VALUE_FIELDS order, `dims` DIMS words per row, or undefined to skip them), at index `w`,
 * which it advances.
 */
export interface RowColumns {
  ts: Float64Array
  /** Each row's seq (exact). */
  seq: Float64Array
  values: Float64Array[]
  error: Uint8Array
  unpriced: Uint8Array
  dims: Uint32Array | undefined
  w: number
}

/** Words per row of {@link PackedRows}: a row's CORE words without its link (C_TOKENS..C_SEQ). */
export const PACKED = CORE - 1

/**
 * Rows in the store's own encoding (see CORE above), for snapshots that restore by copying words
 * instead of decoding and re-encoding every value (series-snapshot.ts, version 5 parts). Row i's
 * words are `words[i * PACKED …]`; the escapes are per row as in a chunk (`ext`: EXT words per
 * row, `seqHigh`: one word per row, `dims`: DIMS words per row; null when no row needs them);
 * `wide` holds NUM_VALUES values per FLAG_WIDE row, in row order. A row's time is not in its
 * words beyond its offset into its minute: the part says which minute each row is in.
 */
export interface PackedRows {
  words: Uint32Array
  ext: Uint32Array | null
  seqHigh: Uint32Array | null
  dims: Uint32Array | null
  wide: Float64Array | null
}

/** Where {@link RowStore.copyOutPacked} writes rows: room for `rows`, filled to `w`; escapes allocated on first need. */
export interface PackedOut {
  readonly rows: number
  words: Uint32Array
  ext: Uint32Array | null
  seqHigh: Uint32Array | null
  dims: Uint32Array | null
  /** NUM_VALUES values per FLAG_WIDE row, in row order. */
  wide: number[]
  w: number
}

/** Highest word above 2^32 a cost or seq may have and stay a safe integer. */
const HIGH_LIMIT = 2 ** 21

/**
 * Checks `src`'s `n` rows as a restore will read them: array lengths, each row's offset inside
 * its minute, no row both FLAG_EXT and FLAG_WIDE, escapes present where flagged, high words that
 * keep costs and seqs safe integers, wide values that are counts. Returns the index into `wide`
 * (in values) of each FLAG_WIDE row (-1 for others), or null when no row is wide; `fail` throws.
 */
export function checkPacked(src: PackedRows, n: number, fail: (why: string) => never): Int32Array | null {
  const { words, ext, seqHigh, dims, wide } = src
  if (!(words instanceof Uint32Array) || words.length !== n * PACKED) fail(`words must be a Uint32Array of ${PACKED} words per row`)
  if (ext !== null && (!(ext instanceof Uint32Array) || ext.length !== n * EXT)) fail(`ext must be a Uint32Array of ${EXT} words per row`)
  if (seqHigh !== null && (!(seqHigh instanceof Uint32Array) || seqHigh.length !== n)) fail('seqHigh must be a Uint32Array of one word per row')
  if (dims !== null && (!(dims instanceof Uint32Array) || dims.length !== n * DIMS)) fail(`dims must be a Uint32Array of ${DIMS} words per row`)
  if (wide !== null && (!(wide instanceof Float64Array) || wide.length % NUM_VALUES !== 0)) fail(`wide must be a Float64Array of ${NUM_VALUES} values per wide row`)
  let wideAt: Int32Array | null = null
  let nextWide = 0
  for (let i = 0; i < n; i++) {
    const meta = words[i * PACKED + C_META]
    if ((meta & OFFSET_MASK) >= 60_000) fail(`row ${i}: offset ${meta & OFFSET_MASK} is past its minute`)
    if ((meta & FLAG_EXT) !== 0) {
      if ((meta & FLAG_WIDE) !== 0) fail(`row ${i}: both escapes flagged`)
      if (ext === null) fail(`row ${i}: flagged FLAG_EXT without ext words`)
      if ((ext as Uint32Array)[i * EXT + E_COST_HIGH] >= HIGH_LIMIT) fail(`row ${i}: cost is not a safe integer`)
    } else if ((meta & FLAG_WIDE) !== 0) {
      if (wide === null || nextWide + NUM_VALUES > wide.length) fail(`row ${i}: flagged FLAG_WIDE without wide values`)
      for (let f = 0; f < NUM_VALUES; f++) {
        const v = (wide as Float64Array)[nextWide + f]
        if (!Number.isSafeInteger(v) || v < 0) fail(`row ${i}: wide value ${VALUE_FIELDS[f]} must be a non-negative integer`)
      }
      wideAt ??= new Int32Array(n).fill(-1)
      wideAt[i] = nextWide
      nextWide += NUM_VALUES
    }
    if (seqHigh !== null && seqHigh[i] >= HIGH_LIMIT) fail(`row ${i}: seq is not a safe integer`)
  }
  if (wide !== null && nextWide !== wide.length) fail(`wide holds ${wide.length / NUM_VALUES} rows, ${nextWide / NUM_VALUES} are flagged`)
  return wideAt
}

/**
 * Reads packed row `i` of `src` (checked by {@link checkPacked}; `wideAt` its answer) into `row`
 * (time `mStart` + its offset) and its dimension words into `rowDims`; returns the dims to record
 * with (undefined when it has none).
 */
export function readPacked(src: PackedRows, i: number, wideAt: Int32Array | null, mStart: number, row: Row, rowDims: RowDims): RowDims | undefined {
  const s = i * PACKED
  const meta = src.words[s + C_META]
  row.ts = mStart + (meta & OFFSET_MASK)
  row.error = (meta & FLAG_ERROR) !== 0
  row.unpriced = (meta & FLAG_UNPRICED) !== 0
  row.seq = (src.seqHigh === null ? 0 : src.seqHigh[i] * TWO_32) + src.words[s + C_SEQ]
  const v = (meta & FLAG_WIDE) !== 0 ? (src.wide as Float64Array).subarray((wideAt as Int32Array)[i], (wideAt as Int32Array)[i] + NUM_VALUES) : decodeWords(src.words, s, src.ext, i * EXT, packedValues)
  row.promptTokens = v[0]
  row.completionTokens = v[1]
  row.totalTokens = v[2]
  row.cachedTokens = v[3]
  row.reasoningTokens = v[4]
  row.latencyUs = v[5]
  row.costNanos = v[6]
  return src.dims === null ? undefined : readDims(src.dims, i, rowDims)
}

/** {@link readPacked}'s values of a row that is not wide. */
const packedValues = new Float64Array(NUM_VALUES)

/**
 * The values (VALUE_FIELDS order) of a row that is not FLAG_WIDE, into `out`: its words at `b`
 * of `words` (a chunk's core or packed rows: the word offsets are the same) and, when it is
 * FLAG_EXT, its EXT words at `e` of `ext`.
 */
function decodeWords(words: Uint32Array, b: number, ext: Uint32Array | null, e: number, out: Float64Array): Float64Array {
  const meta = words[b + C_META]
  const tokens = words[b + C_TOKENS]
  const prompt = tokens & PROMPT_MASK
  const completion = ((meta >>> 20) << 8) | (tokens >>> 24)
  out[0] = prompt
  out[1] = completion
  out[5] = words[b + C_LATENCY]
  if ((meta & FLAG_EXT) !== 0) {
    const x = ext as Uint32Array
    out[2] = x[e + E_TOTAL]
    out[3] = x[e + E_CACHED]
    out[4] = x[e + E_REASONING]
    out[6] = x[e + E_COST_HIGH] * TWO_32 + words[b + C_COST]
  } else {
    out[2] = prompt + completion
    out[3] = 0
    out[4] = 0
    out[6] = words[b + C_COST]
  }
  return out
}

/** Row `i`'s dimension words of `dims` (DIMS a row) into `out`; returns `out`. */
export function readDims(dims: ArrayLike<number>, i: number, out: RowDims): RowDims {
  out.user = dims[i * DIMS]
  out.session = dims[i * DIMS + 1]
  out.attrs = dims[i * DIMS + 2]
  return out
}

/** Packed row `i`'s offset into its minute (ms). */
export function packedOffset(src: PackedRows, i: number): number {
  return src.words[i * PACKED + C_META] & OFFSET_MASK
}

/**
 * Rows (layout: see CORE above) and the singly linked lists that hold them. Row indexes number
 * rows in the order they were appended, 0 to {@link RowStore.size} − 1; along a list, row
 * indexes decrease (each append links at the head). Every value reads back exactly as recorded.
 *
 * {@link RowStore.remove} unlinks rows (a delete): a removed row's words are zeroed and its
 * index is marked dead — it stays a hole in the numbering (so row-range snapshot parts keep
 * their meaning) until the owner copies the live rows into a new store ({@link RowStore.copyList}).
 */
export class RowStore {
  // Chunk c holds rows [c << CHUNK_SHIFT, ...).
  #core: Uint32Array[] = []
  /** Per chunk: EXT words per row, allocated on the chunk's first FLAG_EXT row. */
  #ext: (Uint32Array | null)[] = []
  /** Values of the FLAG_WIDE rows, by row index (VALUE_FIELDS order). */
  #wide = new Map<number, Float64Array>()
  /** Per chunk: DIMS words per row, allocated on the chunk's first row with a dimension. */
  #dims: (Uint32Array | null)[] = []
  /** Per chunk: floor(seq / 2^32) per row, allocated on the chunk's first row with a seq >= 2^32. */
  #seqHigh: (Uint32Array | null)[] = []
  /** Per chunk: one bit per removed row (see {@link RowStore.remove}), allocated on the chunk's first. */
  #dead: (Uint32Array | null)[] = []
  #deadRows = 0
  /** Row capacity of the last chunk (earlier chunks are full). */
  #lastChunkRows = 0
  #size = 0
  /** Scratch for one row's values (VALUE_FIELDS order). */
  #tmp = new Float64Array(NUM_VALUES)
  /** Head row of each list (-1 = empty), grown by half (see {@link RowStore.newList}). */
  #heads: Int32Array = new Int32Array(0)
  #lists = 0

  /** Row indexes used (live rows and removed ones: see {@link RowStore.remove}). */
  get size(): number {
    return this.#size
  }

  /** Rows removed (holes among the row indexes). */
  get dead(): number {
    return this.#deadRows
  }

  /** Rows held: {@link RowStore.size} − {@link RowStore.dead}. */
  get live(): number {
    return this.#size - this.#deadRows
  }

  /** Lists made so far (list ids are 0 to this − 1). */
  get lists(): number {
    return this.#lists
  }

  /** Whether any row holds a dimension word. */
  get hasDims(): boolean {
    return this.#dims.some((d) => d !== null)
  }

  /** A new, empty list; returns its id. */
  newList(): number {
    const list = this.#lists++
    if (list === this.#heads.length) {
      // x1.5 keeps copies amortised O(1) and leaves at most a third unused (doubling: half).
      const heads = new Int32Array(Math.max(16, list + (list >>> 1)))
      heads.set(this.#heads)
      this.#heads = heads
    }
    this.#heads[list] = -1
    return list
  }

  /** The newest row of `list`, -1 when it is empty (follow {@link RowStore.copyOut} from it). */
  head(list: number): number {
    return this.#heads[list]
  }

  /** Stores the row (see CORE), `offset` ms into its minute, at the head of `list`. */
  append(row: Row, offset: number, list: number, dims: RowDims | undefined): void {
    const r = this.#newRow()
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    if (dims !== undefined && (dims.user | dims.session | dims.attrs) !== 0) {
      const words = this.#dims[c] ?? this.#newDims(c)
      words[i * DIMS] = dims.user
      words[i * DIMS + 1] = dims.session
      words[i * DIMS + 2] = dims.attrs
    }
    const core = this.#core[c]
    const b = i * CORE
    const prompt = row.promptTokens
    const completion = row.completionTokens
    const total = row.totalTokens
    const cached = row.cachedTokens
    const reasoning = row.reasoningTokens
    const latency = row.latencyUs
    const cost = row.costNanos
    const seq = row.seq ?? 0
    core[b + C_SEQ] = seq
    if (seq >= TWO_32) (this.#seqHigh[c] ?? this.#newSeqHigh(c))[i] = (seq - (seq >>> 0)) / TWO_32
    let meta = offset | (row.error ? FLAG_ERROR : 0) | (row.unpriced ? FLAG_UNPRICED : 0)
    // A total other than prompt + completion goes to an extension word, so it must fit in one
    // (prompt + completion < 2^25 here, so a total >= 2^32 is never that sum).
    const needsExt = cached !== 0 || reasoning !== 0 || total !== prompt + completion || cost >= TWO_32
    if (prompt >= PROMPT_LIMIT || completion >= COMPLETION_LIMIT || latency >= TWO_32 || cached >= TWO_32 || reasoning >= TWO_32 || total >= TWO_32) {
      meta |= FLAG_WIDE
      this.#wide.set(r, Float64Array.of(prompt, completion, total, cached, reasoning, latency, cost))
    } else {
      // Bit operations give an Int32; the Uint32Array store keeps its 32 bits.
      core[b + C_TOKENS] = prompt | (completion << 24)
      meta |= (completion >>> 8) << 20
      core[b + C_LATENCY] = latency
      // A Uint32Array store takes the value mod 2^32 (ToUint32 is exact for any integer).
      core[b + C_COST] = cost
      if (needsExt) {
        meta |= FLAG_EXT
        const words = this.#ext[c] ?? this.#newExt(c)
        const e = i * EXT
        words[e + E_CACHED] = cached
        words[e + E_REASONING] = reasoning
        words[e + E_TOTAL] = total
        words[e + E_COST_HIGH] = (cost - (cost >>> 0)) / TWO_32
      }
    }
    core[b + C_META] = meta
    this.#link(r, list)
  }

  /**
   * Appends every row of `from`'s list `fromList` to this store's `list`, in the same order
   * (compaction: `from` is the store being replaced). `scratch` is reused between calls.
   */
  copyList(from: RowStore, fromList: number, list: number, scratch: number[]): void {
    scratch.length = 0
    const core = from.#core
    for (let r = from.#heads[fromList]; r >= 0; r = core[r >>> CHUNK_SHIFT][(r & CHUNK_MASK) * CORE + C_NEXT] | 0) scratch.push(r)
    // Appended back to front: each append links at the head, so the list keeps its order.
    for (let j = scratch.length - 1; j >= 0; j--) this.#appendCopy(from, scratch[j], list)
  }

  /** {@link RowStore.append} of `from`'s row `src`, its words copied as they are. */
  #appendCopy(from: RowStore, src: number, list: number): void {
    const r = this.#newRow()
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    const srcCore = from.#core[src >>> CHUNK_SHIFT]
    const si = src & CHUNK_MASK
    const to = this.#core[c]
    // Value words, meta and seq (C_TOKENS..C_SEQ) as they are; the link is this store's.
    to.set(srcCore.subarray(si * CORE, si * CORE + C_NEXT), i * CORE)
    const meta = srcCore[si * CORE + C_META]
    if ((meta & FLAG_EXT) !== 0) {
      const ext = from.#ext[src >>> CHUNK_SHIFT] as Uint32Array
      ;(this.#ext[c] ?? this.#newExt(c)).set(ext.subarray(si * EXT, si * EXT + EXT), i * EXT)
    }
    if ((meta & FLAG_WIDE) !== 0) this.#wide.set(r, from.#wide.get(src) as Float64Array)
    const high = from.#seqHigh[src >>> CHUNK_SHIFT]
    if (high !== null && high[si] !== 0) (this.#seqHigh[c] ?? this.#newSeqHigh(c))[i] = high[si]
    const dims = from.#dims[src >>> CHUNK_SHIFT]
    if (dims !== null && (dims[si * DIMS] | dims[si * DIMS + 1] | dims[si * DIMS + 2]) !== 0) {
      ;(this.#dims[c] ?? this.#newDims(c)).set(dims.subarray(si * DIMS, si * DIMS + DIMS), i * DIMS)
    }
    this.#link(r, list)
  }

  /** Links stored row `r` at the head of `list`. */
  #link(r: number, list: number): void {
    this.#core[r >>> CHUNK_SHIFT][(r & CHUNK_MASK) * CORE + C_NEXT] = this.#heads[list]
    this.#heads[list] = r
  }

  /** Index of a new row at the end, with room for it; its words are zero. */
  #newRow(): number {
    const r = this.#size
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    if (c === this.#core.length) {
      this.#lastChunkRows = c === 0 ? FIRST_CHUNK_ROWS : CHUNK_ROWS
      this.#core.push(new Uint32Array(this.#lastChunkRows * CORE))
      this.#ext.push(null)
      this.#dims.push(null)
      this.#seqHigh.push(null)
      this.#dead.push(null)
    } else if (i === this.#lastChunkRows) {
      // Only the first chunk grows (see FIRST_CHUNK_ROWS).
      const rows = i * 2
      const grow = (old: Uint32Array, words: number): Uint32Array => {
        const a = new Uint32Array(rows * words)
        a.set(old)
        return a
      }
      this.#core[c] = grow(this.#core[c], CORE)
      const ext = this.#ext[c]
      if (ext !== null) this.#ext[c] = grow(ext, EXT)
      const dims = this.#dims[c]
      if (dims !== null) this.#dims[c] = grow(dims, DIMS)
      const high = this.#seqHigh[c]
      if (high !== null) this.#seqHigh[c] = grow(high, 1)
      this.#lastChunkRows = rows
    }
    this.#size = r + 1
    return r
  }

  /** Allocates chunk `c`'s EXT words. */
  #newExt(c: number): Uint32Array {
    const ext = new Uint32Array((c === this.#core.length - 1 ? this.#lastChunkRows : CHUNK_ROWS) * EXT)
    this.#ext[c] = ext
    return ext
  }

  /** Allocates chunk `c`'s dimension words. */
  #newDims(c: number): Uint32Array {
    const dims = new Uint32Array((c === this.#core.length - 1 ? this.#lastChunkRows : CHUNK_ROWS) * DIMS)
    this.#dims[c] = dims
    return dims
  }

  /**
   * Unlinks every row of `list` whose offset is in [lo, hi) and whose seq is in `seqs` (only
   * seqs in [minSeq, maxSeq] are looked up: the set's bounds, a cheap first test). `removed`,
   * when given, sees each such row first, as {@link RowStore.visit} would (time `mStart` +
   * offset). Its words are then zeroed and its index marked dead. Returns the rows removed.
   */
  remove(list: number, lo: number, hi: number, mStart: number, seqs: { has(seq: number): boolean }, minSeq: number, maxSeq: number, removed?: RowVisitor): number {
    let n = 0
    let prev = -1
    for (let r = this.#heads[list]; r >= 0; ) {
      const c = r >>> CHUNK_SHIFT
      const core = this.#core[c]
      const b = (r & CHUNK_MASK) * CORE
      const next = core[b + C_NEXT] | 0
      const off = core[b + C_META] & OFFSET_MASK
      if (off >= lo && off < hi) {
        const seq = this.#seqHigh[c] === null ? core[b + C_SEQ] : this.#seqOf(r)
        if (seq >= minSeq && seq <= maxSeq && seqs.has(seq)) {
          if (removed !== undefined) this.#visitOne(r, mStart, removed)
          if (prev < 0) this.#heads[list] = next
          else this.#core[prev >>> CHUNK_SHIFT][(prev & CHUNK_MASK) * CORE + C_NEXT] = next
          this.#kill(r)
          n++
          r = next
          continue
        }
      }
      prev = r
      r = next
    }
    return n
  }

  /**
   * Walks `list` and calls `found(r, k)` for each row whose seq is `seqs[k]` for some k in
   * [from, to) (that slice ascending: a binary search per row). O(rows of the list · log n).
   * What a re-price uses to find the rows of the events it changes (see SeriesStore.planReprice).
   */
  locate(list: number, seqs: ArrayLike<number>, from: number, to: number, found: (r: number, k: number) => void): void {
    if (from >= to) return
    const lo0 = seqs[from]
    const hi0 = seqs[to - 1]
    for (let r = this.#heads[list]; r >= 0; ) {
      const c = r >>> CHUNK_SHIFT
      const core = this.#core[c]
      const b = (r & CHUNK_MASK) * CORE
      const next = core[b + C_NEXT] | 0
      const seq = this.#seqHigh[c] === null ? core[b + C_SEQ] : this.#seqOf(r)
      if (seq >= lo0 && seq <= hi0) {
        const k = lowerBound(seqs, seq, from, to)
        if (k < to && seqs[k] === seq) found(r, k)
      }
      r = next
    }
  }

  /** Row `r`'s cost in nano-dollars (exact). */
  costOf(r: number): number {
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    const core = this.#core[c]
    const meta = core[i * CORE + C_META]
    if ((meta & FLAG_WIDE) !== 0) return (this.#wide.get(r) as Float64Array)[6]
    if ((meta & FLAG_EXT) !== 0) return (this.#ext[c] as Uint32Array)[i * EXT + E_COST_HIGH] * TWO_32 + core[i * CORE + C_COST]
    return core[i * CORE + C_COST]
  }

  /** Whether row `r` is flagged unpriced. */
  unpricedOf(r: number): boolean {
    return (this.#core[r >>> CHUNK_SHIFT][(r & CHUNK_MASK) * CORE + C_META] & FLAG_UNPRICED) !== 0
  }

  /**
   * Sets row `r`'s cost (integer nano-dollars, any safe integer >= 0) and unpriced flag, its
   * other words untouched (a re-price). A cost at or past 2^32 on a row without the EXT escape
   * gives it one (its cached, reasoning and total words are then what the row implied: 0, 0,
   * prompt + completion); a FLAG_WIDE row keeps its cost in its wide values.
   */
  setCost(r: number, cost: number, unpriced: boolean): void {
    const c = r >>> CHUNK_SHIFT
    this.#writeCost(r, this.#core[c], () => this.#ext[c] ?? this.#newExt(c), (values) => this.#wide.set(r, values), cost, unpriced)
  }

  /**
   * {@link RowStore.setCost} of many rows (`rows[from..to)`, new `costs` and `unpriced` flags),
   * written into copies of the chunks holding them, not into the store: readers see nothing of
   * it until {@link RowStore.commitCosts} swaps the copies in (one pointer per chunk). Add to
   * `staged` across calls (slices); valid while no row is removed, renumbered or set otherwise
   * (rows may be appended meanwhile: the swap brings them along).
   */
  stageCosts(rows: Int32Array, costs: Float64Array, unpriced: Uint8Array, from: number, to: number, staged: StagedCosts = { core: new Map(), ext: new Map(), wide: new Map(), rows: new Map() }): StagedCosts {
    const held = (staged.rows ??= new Map())
    for (let i = from; i < to; i++) {
      const r = rows[i]
      const c = r >>> CHUNK_SHIFT
      let core = staged.core.get(c)
      if (core === undefined) {
        staged.core.set(c, (core = this.#core[c].slice()))
        held.set(c, this.#rowsIn(c))
      }
      const ext = (): Uint32Array => {
        let words = staged.ext.get(c)
        if (words === undefined) {
          const have = this.#ext[c]
          words = have !== null ? have.slice() : new Uint32Array((c === this.#core.length - 1 ? this.#lastChunkRows : CHUNK_ROWS) * EXT)
          staged.ext.set(c, words)
        }
        return words
      }
      const wide = staged.wide.get(r) ?? this.#wide.get(r)
      this.#writeCost(r, core, ext, (values) => staged.wide.set(r, values), costs[i], unpriced[i] === 1, wide)
    }
    return staged
  }

  /**
   * Swaps in the chunk copies of {@link RowStore.stageCosts}: the new costs, at once. Rows
   * appended to a copied chunk since its copy was made are first copied into it word for word
   * (and a copy of the first chunk, which grows, to its size now): O(chunks + rows appended).
   */
  commitCosts(staged: StagedCosts): void {
    const held = staged.rows
    if (held !== undefined) {
      for (const [c, was] of held) {
        const now = this.#rowsIn(c)
        const live = this.#core[c]
        let core = staged.core.get(c) as Uint32Array
        if (core.length < live.length) {
          const grown = new Uint32Array(live.length)
          grown.set(core)
          staged.core.set(c, (core = grown))
        }
        if (now > was) core.set(live.subarray(was * CORE, now * CORE), was * CORE)
        let ext = staged.ext.get(c)
        if (ext === undefined) continue
        const want = (live.length / CORE) * EXT
        if (ext.length < want) {
          const grown = new Uint32Array(want)
          grown.set(ext)
          staged.ext.set(c, (ext = grown))
        }
        const liveExt = this.#ext[c]
        if (now > was && liveExt !== null) ext.set(liveExt.subarray(was * EXT, now * EXT), was * EXT)
      }
    }
    for (const [c, core] of staged.core) this.#core[c] = core
    for (const [c, ext] of staged.ext) this.#ext[c] = ext
    for (const [r, values] of staged.wide) this.#wide.set(r, values)
  }

  /** Rows chunk `c` holds now (appended: removed ones count). */
  #rowsIn(c: number): number {
    return Math.max(0, Math.min(CHUNK_ROWS, this.#size - (c << CHUNK_SHIFT)))
  }

  /**
   * Writes a cost and flag into row `r`'s words in `core` (its chunk's, or a copy), its EXT words
   * through `ext` (allocating them when needed), or, for a FLAG_WIDE row, a new copy of its wide
   * values (`wide`: the values to copy, the store's by default) handed to `setWide`.
   */
  #writeCost(r: number, core: Uint32Array, ext: () => Uint32Array, setWide: (values: Float64Array) => void, cost: number, unpriced: boolean, wide = this.#wide.get(r)): void {
    const i = r & CHUNK_MASK
    const b = i * CORE
    let meta = core[b + C_META]
    meta = unpriced ? meta | FLAG_UNPRICED : meta & ~FLAG_UNPRICED
    if ((meta & FLAG_WIDE) !== 0) {
      const values = (wide as Float64Array).slice()
      values[6] = cost
      setWide(values)
    } else {
      if ((meta & FLAG_EXT) === 0 && cost >= TWO_32) {
        // The words the row implied without the escape.
        const prompt = core[b + C_TOKENS] & PROMPT_MASK
        const completion = ((meta >>> 20) << 8) | (core[b + C_TOKENS] >>> 24)
        const words = ext()
        words[i * EXT + E_CACHED] = 0
        words[i * EXT + E_REASONING] = 0
        words[i * EXT + E_TOTAL] = prompt + completion
        meta |= FLAG_EXT
      }
      core[b + C_COST] = cost
      if ((meta & FLAG_EXT) !== 0) ext()[i * EXT + E_COST_HIGH] = (cost - (cost >>> 0)) / TWO_32
    }
    // Bit operations give an Int32; the Uint32Array store keeps its 32 bits.
    core[b + C_META] = meta
  }

  /** Calls `visit` with row `r` (see {@link RowStore.visit}). */
  #visitOne(r: number, mStart: number, visit: RowVisitor): void {
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    const meta = this.#core[c][i * CORE + C_META]
    const v = this.#readValues(r, this.#tmp)
    const flags = ((meta & FLAG_ERROR) !== 0 ? 1 : 0) | ((meta & FLAG_UNPRICED) !== 0 ? 2 : 0)
    const dims = this.#dims[c]
    const d = i * DIMS
    if (dims === null) visit(v, flags, 0, 0, 0, mStart + (meta & OFFSET_MASK), this.#seqOf(r))
    else visit(v, flags, dims[d], dims[d + 1], dims[d + 2], mStart + (meta & OFFSET_MASK), this.#seqOf(r))
  }

  /** Zeroes row `r`'s words (no value of a removed row stays readable) and marks its index dead. */
  #kill(r: number): void {
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    this.#core[c].fill(0, i * CORE, i * CORE + CORE)
    this.#ext[c]?.fill(0, i * EXT, i * EXT + EXT)
    this.#dims[c]?.fill(0, i * DIMS, i * DIMS + DIMS)
    const high = this.#seqHigh[c]
    if (high !== null) high[i] = 0
    this.#wide.delete(r)
    const dead = (this.#dead[c] ??= new Uint32Array(CHUNK_ROWS >>> 5))
    dead[i >>> 5] |= 1 << (i & 31)
    this.#deadRows++
  }

  /**
   * Sets `users[u]`, `sessions[s]` and `attrs[a]` to 1 for the dimension words of every row held
   * (one pass over the words, not the lists: removed rows are zeroed, so they mark only 0).
   * Each array must be longer than every id the rows hold.
   */
  markDims(users: Uint8Array, sessions: Uint8Array, attrs: Uint8Array): void {
    for (let c = 0; c < this.#dims.length; c++) {
      const dims = this.#dims[c]
      if (dims === null) continue
      const rows = Math.min(dims.length / DIMS, this.#size - (c << CHUNK_SHIFT))
      for (let i = 0, n = rows * DIMS; i < n; i += DIMS) {
        users[dims[i]] = 1
        sessions[dims[i + 1]] = 1
        attrs[dims[i + 2]] = 1
      }
    }
  }

  /** Removed rows among the row indexes [from, to). */
  deadIn(from: number, to: number): number {
    if (this.#deadRows === 0 || from >= to) return 0
    let n = 0
    for (let c = from >>> CHUNK_SHIFT, last = (to - 1) >>> CHUNK_SHIFT; c <= last; c++) {
      const dead = this.#dead[c]
      if (dead === null) continue
      const lo = Math.max(from, c << CHUNK_SHIFT) & CHUNK_MASK
      const hi = Math.min(to, (c + 1) << CHUNK_SHIFT) - (c << CHUNK_SHIFT)
      for (let i = lo; i < hi; ) {
        const word = dead[i >>> 5]
        if (word === 0 && (i & 31) === 0 && i + 32 <= hi) {
          i += 32
          continue
        }
        if ((word >>> (i & 31)) & 1) n++
        i++
      }
    }
    return n
  }

  /** Allocates chunk `c`'s high seq words. */
  #newSeqHigh(c: number): Uint32Array {
    const high = new Uint32Array(c === this.#core.length - 1 ? this.#lastChunkRows : CHUNK_ROWS)
    this.#seqHigh[c] = high
    return high
  }

  /** Row `r`'s seq, exact. */
  #seqOf(r: number): number {
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    const low = this.#core[c][i * CORE + C_SEQ]
    const high = this.#seqHigh[c]
    return high === null ? low : high[i] * TWO_32 + low
  }

  /** Row `r`'s values, VALUE_FIELDS order, into `out` (the slow path of {@link RowStore.sum}). */
  #readValues(r: number, out: Float64Array): Float64Array {
    const c = r >>> CHUNK_SHIFT
    const i = r & CHUNK_MASK
    if ((this.#core[c][i * CORE + C_META] & FLAG_WIDE) !== 0) {
      out.set(this.#wide.get(r) as Float64Array)
      return out
    }
    return decodeWords(this.#core[c], i * CORE, this.#ext[c], i * EXT, out)
  }

  /**
   * {@link RowStore.append} of the packed rows of runs `kHi` down to `kLo` of `src` (checked by
   * {@link checkPacked}; `wideAt` its answer), each run's rows back to front, words copied as
   * they are. Every run is a minute of one hour: its rows go to the list `hourMinutes[minute −
   * base] − 1` (`base`: the hour's first minute key; the caller made the lists). Adds each row to
   * `t`, writes its latency (µs) to `latencies[at++]` and widens `bounds` to its time. Returns `at`.
   */
  appendRuns(src: PackedRows & { minutes: Float64Array; runStart: Uint32Array }, kLo: number, kHi: number, wideAt: Int32Array | null, hourMinutes: Int32Array, base: number, t: Totals, latencies: Float64Array, at: number, bounds: { min: number; max: number }): number {
    const w = src.words
    const dims = src.dims
    const high = src.seqHigh
    const heads = this.#heads
    let minTs = bounds.min
    let maxTs = bounds.max
    for (let run = kHi; run >= kLo; run--) {
      const list = hourMinutes[src.minutes[run] - base] - 1
      const mStart = src.minutes[run] * 60_000
      const from = src.runStart[run]
      for (let i = src.runStart[run + 1] - 1; i >= from; i--) {
        const r = this.#newRow()
        const c = r >>> CHUNK_SHIFT
        const k = r & CHUNK_MASK
        const core = this.#core[c]
        const b = k * CORE
        const s = i * PACKED
        const tokens = w[s + C_TOKENS]
        const latencyWord = w[s + C_LATENCY]
        const cost = w[s + C_COST]
        const meta = w[s + C_META]
        core[b + C_TOKENS] = tokens
        core[b + C_LATENCY] = latencyWord
        core[b + C_COST] = cost
        core[b + C_META] = meta
        core[b + C_SEQ] = w[s + C_SEQ]
        core[b + C_NEXT] = heads[list]
        heads[list] = r
        const ts = mStart + (meta & OFFSET_MASK)
        if (ts < minTs) minTs = ts
        if (ts > maxTs) maxTs = ts
        if (dims !== null) {
          const d = i * DIMS
          const user = dims[d]
          const session = dims[d + 1]
          const attrs = dims[d + 2]
          if ((user | session | attrs) !== 0) {
            const words = this.#dims[c] ?? this.#newDims(c)
            words[k * DIMS] = user
            words[k * DIMS + 1] = session
            words[k * DIMS + 2] = attrs
          }
        }
        if (high !== null && high[i] !== 0) (this.#seqHigh[c] ?? this.#newSeqHigh(c))[k] = high[i]
        t.requests += 1
        if ((meta & FLAG_ERROR) !== 0) t.errors += 1
        if ((meta & FLAG_UNPRICED) !== 0) t.unpriced += 1
        let latency = latencyWord
        if ((meta & (FLAG_EXT | FLAG_WIDE)) === 0) {
          const prompt = tokens & PROMPT_MASK
          const completion = ((meta >>> 20) << 8) | (tokens >>> 24)
          t.promptTokens += prompt
          t.completionTokens += completion
          t.totalTokens += prompt + completion
          t.costNanos += cost
        } else if ((meta & FLAG_EXT) !== 0) {
          const ext = src.ext as Uint32Array
          const e = i * EXT
          const into = this.#ext[c] ?? this.#newExt(c)
          into[k * EXT + E_CACHED] = ext[e + E_CACHED]
          into[k * EXT + E_REASONING] = ext[e + E_REASONING]
          into[k * EXT + E_TOTAL] = ext[e + E_TOTAL]
          into[k * EXT + E_COST_HIGH] = ext[e + E_COST_HIGH]
          t.promptTokens += tokens & PROMPT_MASK
          t.completionTokens += ((meta >>> 20) << 8) | (tokens >>> 24)
          t.totalTokens += ext[e + E_TOTAL]
          t.cachedTokens += ext[e + E_CACHED]
          t.reasoningTokens += ext[e + E_REASONING]
          t.costNanos += ext[e + E_COST_HIGH] * TWO_32 + cost
        } else {
          const v = (src.wide as Float64Array).slice((wideAt as Int32Array)[i], (wideAt as Int32Array)[i] + NUM_VALUES)
          this.#wide.set(r, v)
          addRowValues(t, v)
          latency = v[5]
        }
        if ((meta & FLAG_WIDE) === 0) t.latencyUsSum += latency
        latencies[at++] = latency
      }
    }
    bounds.min = minTs
    bounds.max = maxTs
    return at
  }

  /**
   * {@link RowStore.copyOut} into packed rows (see {@link PackedRows}): the rows' words as they
   * are, escapes allocated in `out` on the first row needing them. Returns where it stopped.
   */
  copyOutPacked(r: number, from: number, to: number, out: PackedOut): number {
    while (r >= to) r = this.#core[r >>> CHUNK_SHIFT][(r & CHUNK_MASK) * CORE + C_NEXT] | 0
    let w = out.w
    const words = out.words
    while (r >= from) {
      const c = r >>> CHUNK_SHIFT
      const k = r & CHUNK_MASK
      const core = this.#core[c]
      const b = k * CORE
      const meta = core[b + C_META]
      const s = w * PACKED
      words[s + C_TOKENS] = core[b + C_TOKENS]
      words[s + C_LATENCY] = core[b + C_LATENCY]
      words[s + C_COST] = core[b + C_COST]
      words[s + C_META] = meta
      words[s + C_SEQ] = core[b + C_SEQ]
      if ((meta & FLAG_EXT) !== 0) (out.ext ??= new Uint32Array(out.rows * EXT)).set((this.#ext[c] as Uint32Array).subarray(k * EXT, k * EXT + EXT), w * EXT)
      else if ((meta & FLAG_WIDE) !== 0) out.wide.push(...(this.#wide.get(r) as Float64Array))
      const high = this.#seqHigh[c]
      if (high !== null && high[k] !== 0) (out.seqHigh ??= new Uint32Array(out.rows))[w] = high[k]
      const dims = this.#dims[c]
      if (dims !== null && (dims[k * DIMS] | dims[k * DIMS + 1] | dims[k * DIMS + 2]) !== 0) {
        ;(out.dims ??= new Uint32Array(out.rows * DIMS)).set(dims.subarray(k * DIMS, k * DIMS + DIMS), w * DIMS)
      }
      w++
      r = core[b + C_NEXT] | 0
    }
    out.w = w
    return r
  }

  /** Adds the rows of `list` whose offset is in [lo, hi) to `acc`; returns the rows read. */
  sum(list: number, lo: number, hi: number, acc: Aggregate): number {
    const t = acc.totals
    const sketch = acc.sketch
    let scanned = 0
    for (let r = this.#heads[list]; r >= 0; ) {
      const core = this.#core[r >>> CHUNK_SHIFT]
      const b = (r & CHUNK_MASK) * CORE
      scanned++
      const meta = core[b + C_META]
      const off = meta & OFFSET_MASK
      if (off >= lo && off < hi) {
        t.requests += 1
        if ((meta & FLAG_ERROR) !== 0) t.errors += 1
        if ((meta & FLAG_UNPRICED) !== 0) t.unpriced += 1
        if ((meta & (FLAG_EXT | FLAG_WIDE)) === 0) {
          const tokens = core[b + C_TOKENS]
          const prompt = tokens & PROMPT_MASK
          const completion = ((meta >>> 20) << 8) | (tokens >>> 24)
          const latency = core[b + C_LATENCY]
          t.promptTokens += prompt
          t.completionTokens += completion
          t.totalTokens += prompt + completion
          t.latencyUsSum += latency
          t.costNanos += core[b + C_COST]
          sketch.record(latency)
        } else {
          const v = this.#readValues(r, this.#tmp)
          addRowValues(t, v)
          sketch.record(v[5])
        }
      }
      r = core[b + C_NEXT] | 0
    }
    return scanned
  }

  /**
   * Calls `visit` for each row of `list` whose offset is in [lo, hi), with its values, flags,
   * dimension words, time (`mStart` + offset) and seq; returns the rows read.
   */
  visit(list: number, lo: number, hi: number, mStart: number, visit: RowVisitor): number {
    const v = this.#tmp
    let scanned = 0
    for (let r = this.#heads[list]; r >= 0; ) {
      const c = r >>> CHUNK_SHIFT
      const core = this.#core[c]
      const b = (r & CHUNK_MASK) * CORE
      const meta = core[b + C_META]
      const off = meta & OFFSET_MASK
      scanned++
      if (off >= lo && off < hi) {
        this.#readValues(r, v)
        const dims = this.#dims[c]
        const d = (r & CHUNK_MASK) * DIMS
        const flags = ((meta & FLAG_ERROR) !== 0 ? 1 : 0) | ((meta & FLAG_UNPRICED) !== 0 ? 2 : 0)
        const seq = this.#seqHigh[c] === null ? core[b + C_SEQ] : this.#seqOf(r)
        if (dims === null) visit(v, flags, 0, 0, 0, mStart + off, seq)
        else visit(v, flags, dims[d], dims[d + 1], dims[d + 2], mStart + off, seq)
      }
      r = core[b + C_NEXT] | 0
    }
    return scanned
  }

  /**
   * Walks a list from row `r` (its head, or where a previous walk stopped): passes over rows
   * at or past `to`, then copies rows down to `from` into `out` (times `mStart` + offset).
   * Returns the row it stopped at (below `from`, or -1 at the end of the list).
   */
  copyOut(r: number, from: number, to: number, mStart: number, out: RowColumns): number {
    while (r >= to) r = this.#core[r >>> CHUNK_SHIFT][(r & CHUNK_MASK) * CORE + C_NEXT] | 0
    const cols = out.values
    const dimsOut = out.dims
    let w = out.w
    while (r >= from) {
      const core = this.#core[r >>> CHUNK_SHIFT]
      const b = (r & CHUNK_MASK) * CORE
      const meta = core[b + C_META]
      out.ts[w] = mStart + (meta & OFFSET_MASK)
      out.seq[w] = this.#seqOf(r)
      const v = this.#readValues(r, this.#tmp)
      for (let f = 0; f < NUM_VALUES; f++) cols[f][w] = v[f]
      out.error[w] = (meta & FLAG_ERROR) !== 0 ? 1 : 0
      out.unpriced[w] = (meta & FLAG_UNPRICED) !== 0 ? 1 : 0
      const rowDims = this.#dims[r >>> CHUNK_SHIFT]
      if (dimsOut !== undefined && rowDims !== null) dimsOut.set(rowDims.subarray((r & CHUNK_MASK) * DIMS, (r & CHUNK_MASK) * DIMS + DIMS), w * DIMS)
      w++
      r = core[b + C_NEXT] | 0
    }
    out.w = w
    return r
  }
}

/**
 * A mergeable latency quantile sketch: the DDSketch algorithm (Masson, Rim, Lee,
 * VLDB 2019) with a logarithmic mapping and sparse storage.
 *
 * A value v >= {@link SKETCH_MIN_VALUE} goes to bucket `k = ceil(log_gamma(v))`,
 * i.e. `gamma^(k-1) < v <= gamma^k`, with `gamma = (1 + a) / (1 - a)` and
 * `a` = {@link SKETCH_RELATIVE_ACCURACY}. The bucket is represented by
 * `2 * gamma^k / (gamma + 1)`, which is within a relative `a` of every value in it.
 * Buckets only hold counts, so merging two sketches (adding counts) gives exactly
 * the sketch of the union: merge order never changes an answer.
 *
 * Rank convention: the nearest rank. `quantile(q)` of n recorded values estimates the
 * `⌈q·n⌉`-th smallest of them (the first when q = 0), within 1% — so the p99 of a
 * handful of calls is the slowest of them, and the p50 of two is the faster one.
 * See {@link nearestRank}.
 */

/** The relative accuracy `a`: every quantile is within `a` of the true value. */
export const SKETCH_RELATIVE_ACCURACY = 0.01

/**
 * Values below this (in µs), including 0, are counted in a zero bucket and read
 * back as 0 (or the smallest recorded value, see `quantile`). Latencies are integer
 * microseconds, so in practice only 0 lands there and the answer stays exact.
 */
export const SKETCH_MIN_VALUE = 1

const GAMMA = (1 + SKETCH_RELATIVE_ACCURACY) / (1 - SKETCH_RELATIVE_ACCURACY)
const LN_GAMMA = Math.log(GAMMA)
const INV_LN_GAMMA = 1 / LN_GAMMA
const VALUE_FACTOR = 2 / (GAMMA + 1)
/** Keys live in a Uint16Array: log_gamma(Number.MAX_VALUE) is about 35,500. */
const MAX_KEY = 0xffff
const INITIAL_CAPACITY = 4
/**
 * A sparse sketch turns dense once it holds this many buckets and a dense array over its key
 * span (8 bytes a key) is no larger than its sparse arrays (10 bytes a slot of capacity):
 * memory never grows, and merging into it is then one add per source bucket instead of a
 * pass over both key lists (queries merge hundreds of sketches into one accumulator).
 */
const DENSE_MIN_BUCKETS = 32
/** Spare keys on each side when a dense array is (re)allocated, so growth stays rare. */
const DENSE_SLACK = 16
const EMPTY_KEYS = new Uint16Array(0)
const EMPTY_COUNTS = new Float64Array(0)

/** Current {@link LatencySketchJSON} format version. */
export const SKETCH_JSON_VERSION = 1

/**
 * Plain-data form of a {@link LatencySketch} (JSON- and msgpack-safe).
 * `keys` are strictly ascending bucket indexes, `counts[i]` (>= 1) the number of
 * values in bucket `keys[i]`. `min`/`max` are the exact extremes, null when empty.
 */
export interface LatencySketchJSON {
  version: 1
  relativeAccuracy: number
  zeroCount: number
  keys: number[]
  counts: number[]
  min: number | null
  max: number | null
}

/**
 * Nearest-rank index: the 0-based position, in the ascending list of `n` values, of the
 * q-quantile, i.e. `max(1, ⌈q·n⌉) - 1`. `q·n` is first lowered by a relative 1e-12 so that
 * a decimal q is read as meant despite binary rounding (`0.07 * 100` is 7.000000000000001,
 * whose ceiling would skip a rank); the rank is exact for every q with up to four decimals
 * and n below 10^8. Exported for callers that rank exact samples the same way.
 */
export function nearestRank(q: number, n: number): number {
  const x = q * n
  return Math.max(1, Math.ceil(x - x * 1e-12)) - 1
}

/**
 * The bucket of `v` (>= SKETCH_MIN_VALUE). Integers below 2^32 — every latency in µs — by table;
 * exported with the definition, {@link logKey}, for the test that checks they agree.
 */
export function keyOf(v: number): number {
  return v >>> 0 === v ? intKey(v) : logKey(v)
}

/** The definition: ceil(log_gamma(v)). */
export function logKey(v: number): number {
  return Math.ceil(Math.log(v) * INV_LN_GAMMA)
}

/**
 * Cells of 1/256 of an octave: cell `e·256 + f` holds the integers v with floor(log2 v) = e and
 * the next 8 bits of v equal to f. A cell is narrower than a bucket (0.4% against gamma's 2%), so
 * its integers fall in at most two buckets: the key of its smallest integer, or the next one.
 */
const CELL_BITS = 8
/** CELL_KEY[cell]: the key of the cell's smallest integer. */
let CELL_KEY: Uint16Array | null = null
/** FIRST[k]: the smallest integer whose key is k or more (k up to the key of 2^32 - 1, plus one). */
let FIRST: Float64Array | null = null

function cellOf(v: number): number {
  const e = 31 - Math.clz32(v)
  const f = e >= CELL_BITS ? (v >>> (e - CELL_BITS)) & 0xff : (v << (CELL_BITS - e)) & 0xff
  return (e << CELL_BITS) | f
}

/**
 * Exactly logKey(v) for integers 1 <= v < 2^32, without a logarithm: logKey is monotone over them
 * (neighbouring integers differ by at least 2.3e-10 in log, far beyond Math.log's rounding), so
 * bucket k's integers are the range FIRST[k] ≤ v < FIRST[k + 1], each found with logKey itself.
 */
function intKey(v: number): number {
  if (CELL_KEY === null) buildKeyTables()
  const k = (CELL_KEY as Uint16Array)[cellOf(v)]
  return v >= (FIRST as Float64Array)[k + 1] ? k + 1 : k
}

function buildKeyTables(): void {
  const top = logKey(0xffffffff)
  const first = new Float64Array(top + 3).fill(Infinity)
  first[0] = 1
  for (let k = 1; k <= top; k++) {
    // From the real boundary gamma^(k-1), step to the exact smallest integer logKey puts at k or above.
    let v = Math.max(1, Math.floor(Math.exp((k - 1) * LN_GAMMA)))
    while (v > 1 && logKey(v - 1) >= k) v--
    while (logKey(v) < k) v++
    first[k] = v
  }
  const cells = new Uint16Array(32 << CELL_BITS)
  for (let e = 0; e < 32; e++) {
    for (let f = 0; f < 1 << CELL_BITS; f++) {
      // The cell's smallest integer: 2^e·(1 + f/256), rounded up (cells of small octaves may hold none).
      const lo = Math.ceil(2 ** e * (1 + f / (1 << CELL_BITS)))
      if (lo > 0xffffffff || cellOf(lo) !== ((e << CELL_BITS) | f)) continue
      cells[(e << CELL_BITS) | f] = logKey(lo)
    }
  }
  FIRST = first
  CELL_KEY = cells
}

function valueOf(key: number): number {
  return Math.exp(key * LN_GAMMA) * VALUE_FACTOR
}

/**
 * DDSketch over latencies in microseconds with 1% relative error.
 *
 * Storage starts sparse: two parallel arrays (bucket keys ascending, counts) with
 * spare capacity, because most sketches (one per minute/hour bucket) hold few
 * distinct buckets. Recording is a binary search (plus a shift when a new bucket
 * appears); merging is a linear in-place merge of the two sorted arrays. A sketch
 * with many buckets over a narrow key span turns *dense* (see {@link DENSE_MIN_BUCKETS}):
 * one count per key from `#base`, so recording and merging into it cost one add per bucket.
 * The mode never shows outside: answers, JSON and merges are the same either way.
 *
 * Invariants: sparse (`#dense === null`): `#keys[0..#len)` strictly ascending,
 * `#counts[i] >= 1`; dense: bucket k's count is `#dense[k - #base]`, `#len` of them
 * are non-zero, `#keys`/`#counts` are empty. Both: `#count === #zero + sum of bucket
 * counts`; `#min <= #max` when `#count > 0`.
 */
export class LatencySketch {
  #keys: Uint16Array = EMPTY_KEYS
  #counts: Float64Array = EMPTY_COUNTS
  #len = 0
  /** Dense mode when non-null: `#dense[k - #base]` counts bucket k. */
  #dense: Float64Array | null = null
  #base = 0
  /** Made by {@link LatencySketch.dense} (a query accumulator): its dense array grows geometrically. */
  #accumulator = false
  /**
   * The last quantile asked for and its answer (NaN: none): a stored hour's sketch is asked the
   * same p95 by every timeseries bucket that shares it. Cleared by every change (record, merge,
   * subtract).
   */
  #cachedQ = NaN
  #cachedValue = NaN
  #zero = 0
  #count = 0
  #min = Infinity
  #max = -Infinity

  /** Number of values recorded (merged ones included). */
  get count(): number {
    return this.#count
  }

  /** Number of values below {@link SKETCH_MIN_VALUE} (the zero bucket). */
  get zeroCount(): number {
    return this.#zero
  }

  /** Exact smallest recorded value, NaN when empty. */
  get min(): number {
    return this.#count === 0 ? NaN : this.#min
  }

  /** Exact largest recorded value, NaN when empty. */
  get max(): number {
    return this.#count === 0 ? NaN : this.#max
  }

  /** Number of non-empty buckets (the zero bucket not included): a size measure. */
  get bucketCount(): number {
    return this.#len
  }

  /**
   * Records one latency in µs. The hot path never throws: a value that is not a
   * finite number >= 0 is ignored and `false` returned.
   */
  record(valueUs: number): boolean {
    if (!(valueUs >= 0 && valueUs < Infinity)) return false
    this.#cachedQ = NaN
    this.#count += 1
    if (valueUs < this.#min) this.#min = valueUs
    if (valueUs > this.#max) this.#max = valueUs
    if (valueUs < SKETCH_MIN_VALUE) {
      this.#zero += 1
      return true
    }
    this.#add(keyOf(valueUs), 1)
    return true
  }

  /**
   * The sketch of `values` (finite numbers >= 0, e.g. latencies in µs): every value's bucket
   * counted into a histogram over the bucket keys, then the buckets stored (with a little room to grow) — no
   * sort and no insert per value, and the same sketch as recording each (a snapshot restore
   * builds every hour's this way; test/store/snapshot-bulk.test.ts checks the equality).
   */
  static ofValues(values: ArrayLike<number>): LatencySketch {
    const n = values.length
    const s = new LatencySketch()
    if (n === 0) return s
    const hist = (histogram ??= new Float64Array(MAX_KEY + 1))
    let zero = 0
    let min = Infinity
    let max = -Infinity
    let lo = MAX_KEY
    let hi = -1
    for (let i = 0; i < n; i++) {
      const v = values[i]
      if (v < min) min = v
      if (v > max) max = v
      if (v < SKETCH_MIN_VALUE) {
        zero++
        continue
      }
      const key = keyOf(v)
      hist[key]++
      if (key < lo) lo = key
      if (key > hi) hi = key
    }
    let len = 0
    for (let k = lo; k <= hi; k++) if (hist[k] !== 0) len++
    if (len > 0) {
      // Room for a few more buckets: a restored hour's sketch that a replayed or late event adds a
      // bucket to would otherwise be reallocated at once (#grow showed in the replay after a crash).
      const cap = len + INITIAL_CAPACITY + (len >>> 3)
      const keys = new Uint16Array(cap)
      const counts = new Float64Array(cap)
      let j = 0
      for (let k = lo; k <= hi; k++) {
        if (hist[k] === 0) continue
        keys[j] = k
        counts[j++] = hist[k]
        hist[k] = 0
      }
      s.#keys = keys
      s.#counts = counts
    }
    s.#len = len
    s.#zero = zero
    s.#count = n
    s.#min = min
    s.#max = max
    s.#maybeDense()
    return s
  }

  /** Records every value of `valuesUs`; returns how many were accepted. */
  recordMany(valuesUs: ArrayLike<number>): number {
    let n = 0
    for (let i = 0; i < valuesUs.length; i++) if (this.record(valuesUs[i])) n++
    return n
  }

  /** Adds `n` to bucket `key`, inserting the bucket in order when new. */
  #add(key: number, n: number): void {
    if (this.#dense !== null) {
      const d = this.#cover(key, key)
      const i = key - this.#base
      if (d[i] === 0) this.#len++
      d[i] += n
      return
    }
    const keys = this.#keys
    const len = this.#len
    // Fast path: values often repeat the last (largest) bucket touched.
    if (len > 0 && keys[len - 1] === key) {
      this.#counts[len - 1] += n
      return
    }
    let lo = 0
    let hi = len
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (keys[mid] < key) lo = mid + 1
      else hi = mid
    }
    if (lo < len && keys[lo] === key) {
      this.#counts[lo] += n
      return
    }
    if (len === this.#keys.length) this.#grow(len + 1)
    const k = this.#keys
    const c = this.#counts
    k.copyWithin(lo + 1, lo, len)
    c.copyWithin(lo + 1, lo, len)
    k[lo] = key
    c[lo] = n
    this.#len = len + 1
    if (len + 1 >= DENSE_MIN_BUCKETS) this.#maybeDense()
  }

  /** Turns a sparse sketch dense when its buckets are many and close together. */
  #maybeDense(): void {
    const len = this.#len
    if (this.#dense === null && len >= DENSE_MIN_BUCKETS && (this.#keys[len - 1] - this.#keys[0] + 1 + 2 * DENSE_SLACK) * 8 <= this.#keys.length * 10) this.#toDense()
  }

  /** Converts to dense storage (from sparse, possibly empty), keeping the contents. */
  #toDense(): void {
    const len = this.#len
    const keys = this.#keys
    const counts = this.#counts
    const base = len === 0 ? 0 : Math.max(0, keys[0] - DENSE_SLACK)
    const top = len === 0 ? 0 : Math.min(MAX_KEY, keys[len - 1] + DENSE_SLACK)
    const d = new Float64Array(top - base + 1)
    for (let i = 0; i < len; i++) d[keys[i] - base] = counts[i]
    this.#dense = d
    this.#base = base
    this.#keys = EMPTY_KEYS
    this.#counts = EMPTY_COUNTS
  }

  /** The dense array, grown (with slack) to cover keys [lo, hi]. Dense mode only. */
  #cover(lo: number, hi: number): Float64Array {
    const d = this.#dense as Float64Array
    const base = this.#base
    if (lo >= base && hi < base + d.length) return d
    // A query accumulator (dense()) grows geometrically — half the span held again on the side
    // that needs it — so recording rows one key at a time reallocates O(log span) times, not
    // once per new key; a stored sketch keeps the fixed slack (memory held per hour and day).
    const slack = this.#accumulator && d.length > 2 * DENSE_SLACK ? d.length >> 1 : DENSE_SLACK
    const nb = Math.max(0, Math.min(lo, base) - slack)
    const top = Math.min(MAX_KEY, Math.max(hi, base + d.length - 1) + slack)
    const nd = new Float64Array(top - nb + 1)
    nd.set(d, base - nb)
    this.#dense = nd
    this.#base = nb
    return nd
  }

  /** Reallocates to hold at least `min` buckets, keeping the contents. */
  #grow(min: number): void {
    let cap = Math.max(INITIAL_CAPACITY, this.#keys.length * 2)
    while (cap < min) cap *= 2
    const keys = new Uint16Array(cap)
    const counts = new Float64Array(cap)
    keys.set(this.#keys.subarray(0, this.#len))
    counts.set(this.#counts.subarray(0, this.#len))
    this.#keys = keys
    this.#counts = counts
  }

  /**
   * Adds every value of `other` into this sketch (in place) and returns `this`.
   * The result is identical to having recorded both value sets into one sketch.
   * Cost: O(buckets of this + buckets of other), no allocation when the union fits.
   */
  merge(other: LatencySketch): this {
    if (other.#count === 0) return this
    this.#cachedQ = NaN
    this.#count += other.#count
    this.#zero += other.#zero
    if (other.#min < this.#min) this.#min = other.#min
    if (other.#max > this.#max) this.#max = other.#max
    const bl = other.#len
    if (bl === 0) return this
    if (this.#dense === null && other.#dense !== null) {
      if (this.#len === 0) {
        // Into an empty sketch (a clone): copy the dense array as it is.
        this.#dense = (other.#dense as Float64Array).slice()
        this.#base = other.#base
        this.#len = bl
        this.#keys = EMPTY_KEYS
        this.#counts = EMPTY_COUNTS
        return this
      }
      this.#toDense()
    }
    const d = this.#dense
    if (d !== null) {
      this.#mergeIntoDense(other)
      return this
    }
    const bk = other.#keys
    const bc = other.#counts
    const al = this.#len
    if (al === 0) {
      if (this.#keys.length < bl) this.#grow(bl)
      this.#keys.set(bk.subarray(0, bl))
      this.#counts.set(bc.subarray(0, bl))
      this.#len = bl
      return this
    }
    let ak = this.#keys
    let ac = this.#counts
    // Size of the key union, to merge in place from the back.
    let i = 0
    let j = 0
    let union = 0
    while (i < al && j < bl) {
      const ka = ak[i]
      const kb = bk[j]
      if (ka <= kb) i++
      if (kb <= ka) j++
      union++
    }
    union += al - i + (bl - j)
    if (union === al) {
      // Every key of `other` already exists here: add counts in one pass.
      // (Also the path taken by `x.merge(x)`, where ak === bk.)
      for (i = 0, j = 0; j < bl; i++) {
        if (ak[i] === bk[j]) ac[i] += bc[j++]
      }
      return this
    }
    if (union > ak.length) {
      this.#grow(union)
      ak = this.#keys
      ac = this.#counts
    }
    // Back-to-front merge: writes never overtake unread entries of `this`
    // because the write index w >= i at every step; once `other` is exhausted
    // the remaining prefix of `this` is already in place (w === i).
    i = al - 1
    j = bl - 1
    for (let w = union - 1; j >= 0; w--) {
      const kb = bk[j]
      if (i >= 0 && ak[i] > kb) {
        ak[w] = ak[i]
        ac[w] = ac[i]
        i--
      } else if (i >= 0 && ak[i] === kb) {
        ak[w] = kb
        ac[w] = ac[i] + bc[j]
        i--
        j--
      } else {
        ak[w] = kb
        ac[w] = bc[j]
        j--
      }
    }
    this.#len = union
    this.#maybeDense()
    return this
  }

  /** Adds `other`'s buckets into this dense sketch: one add per bucket of `other`. */
  #mergeIntoDense(other: LatencySketch): void {
    const od = other.#dense
    let len = this.#len
    if (od !== null) {
      const ob = other.#base
      const d = this.#cover(ob, ob + od.length - 1)
      const shift = ob - this.#base
      for (let i = 0; i < od.length; i++) {
        const c = od[i]
        if (c === 0) continue
        if (d[i + shift] === 0) len++
        d[i + shift] += c
      }
    } else {
      const bl = other.#len
      const bk = other.#keys
      const bc = other.#counts
      const d = this.#cover(bk[0], bk[bl - 1])
      const base = this.#base
      for (let j = 0; j < bl; j++) {
        const i = bk[j] - base
        if (d[i] === 0) len++
        d[i] += bc[j]
      }
    }
    this.#len = len
  }

  /**
   * Estimated q-quantile in µs by the nearest-rank definition: the `⌈q·count⌉`-th smallest
   * recorded value (the smallest when q = 0; index {@link nearestRank}), within 1% (relative).
   * The p99 of up to 100 values is therefore their maximum, the p50 of 3 values the middle one.
   *
   * The smallest and largest ranks answer the exact recorded min and max; any other estimate
   * is the DDSketch bucket value, clamped to the exact [min, max] so no answer lies outside
   * the recorded values. Sparse and dense storage answer identically.
   *
   * Returns NaN when the sketch is empty ("no data", serialised as `null` by
   * JSON.stringify). Throws RangeError when q is not in [0, 1].
   */
  quantile(q: number): number {
    if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile must be in [0, 1], got ${q}`)
    if (q === this.#cachedQ) return this.#cachedValue
    const n = this.#count
    if (n === 0) return NaN
    const v = this.#quantile(q, n)
    this.#cachedQ = q
    this.#cachedValue = v
    return v
  }

  /** {@link LatencySketch.quantile} of a sketch holding `n` > 0 values, computed. */
  #quantile(q: number, n: number): number {
    const rank = nearestRank(q, n)
    if (rank === 0) return this.#min
    if (rank === n - 1) return this.#max
    let estimate: number
    if (rank < this.#zero) {
      estimate = 0
    } else {
      // Counts are integers, so "first bucket whose cumulative count > rank"
      // is the bucket holding the element at index `rank`.
      let cum = this.#zero
      const d = this.#dense
      if (d !== null) {
        let key = -1
        for (let i = 0; i < d.length; i++) {
          if (d[i] === 0) continue
          key = i
          cum += d[i]
          if (cum > rank) break
        }
        estimate = valueOf(this.#base + key)
      } else {
        let i = 0
        const last = this.#len - 1
        for (; i < last; i++) {
          cum += this.#counts[i]
          if (cum > rank) break
        }
        estimate = valueOf(this.#keys[i])
      }
    }
    if (estimate < this.#min) return this.#min
    if (estimate > this.#max) return this.#max
    return estimate
  }

  /**
   * Removes the values of `part`, every one of which must have been recorded or merged into
   * this sketch (a breakdown's `other` group is its total minus the shown groups). Counts stay
   * exact; the extremes, whose exact values may be gone, become those of the remaining
   * buckets (within the relative accuracy) — or `exact`, the remaining values' true extremes
   * when the caller knows them (a delete that still holds the rows): then the sketch is the
   * one recording only the remaining values would give. Returns `this`.
   */
  subtract(part: LatencySketch, exact?: { min: number; max: number }): this {
    if (part.#count === 0) return this
    if (this.#dense === null) this.#toDense()
    this.#cachedQ = NaN
    this.#count -= part.#count
    this.#zero -= part.#zero
    const take = (key: number, n: number) => {
      const d = this.#cover(key, key)
      const i = key - this.#base
      d[i] -= n
      if (d[i] === 0) this.#len--
    }
    const pd = part.#dense
    if (pd !== null) {
      for (let i = 0; i < pd.length; i++) if (pd[i] !== 0) take(part.#base + i, pd[i])
    } else {
      for (let i = 0; i < part.#len; i++) take(part.#keys[i], part.#counts[i])
    }
    if (this.#count === 0) {
      this.#min = Infinity
      this.#max = -Infinity
      return this
    }
    const d = this.#dense as Float64Array
    let lo = -1
    let hi = -1
    for (let i = 0; i < d.length; i++) {
      if (d[i] === 0) continue
      if (lo < 0) lo = i
      hi = i
    }
    this.#min = this.#zero > 0 || lo < 0 ? 0 : valueOf(this.#base + lo)
    this.#max = hi < 0 ? 0 : valueOf(this.#base + hi)
    if (exact !== undefined) {
      this.#min = exact.min
      this.#max = exact.max
    }
    return this
  }

  /**
   * An empty sketch that is dense from the start: for query accumulators, into which many
   * sketches are merged (each merge is then one add per source bucket from the first one).
   */
  static dense(): LatencySketch {
    const s = new LatencySketch()
    s.#dense = new Float64Array(0)
    s.#accumulator = true
    return s
  }

  /** An independent copy. */
  clone(): LatencySketch {
    return new LatencySketch().merge(this)
  }

  /** Plain-data form; see {@link LatencySketchJSON}. */
  toJSON(): LatencySketchJSON {
    const empty = this.#count === 0
    let keys: number[]
    let counts: number[]
    const d = this.#dense
    if (d !== null) {
      keys = []
      counts = []
      for (let i = 0; i < d.length; i++) {
        if (d[i] === 0) continue
        keys.push(this.#base + i)
        counts.push(d[i])
      }
    } else {
      keys = Array.from(this.#keys.subarray(0, this.#len))
      counts = Array.from(this.#counts.subarray(0, this.#len))
    }
    return {
      version: SKETCH_JSON_VERSION,
      relativeAccuracy: SKETCH_RELATIVE_ACCURACY,
      zeroCount: this.#zero,
      keys,
      counts,
      min: empty ? null : this.#min,
      max: empty ? null : this.#max,
    }
  }

  /**
   * Rebuilds a sketch from {@link LatencySketch.toJSON} output. Throws an Error
   * naming the problem on an unknown version, another accuracy, or data that
   * breaks an invariant, so a sketch is read correctly or not at all.
   */
  static fromJSON(data: unknown): LatencySketch {
    const fail = (why: string): never => {
      throw new Error(`invalid LatencySketch JSON: ${why}`)
    }
    if (typeof data !== 'object' || data === null) fail('not an object')
    const d = data as Record<string, unknown>
    if (d.version !== SKETCH_JSON_VERSION) {
      fail(`unsupported version ${String(d.version)} (this build reads version ${SKETCH_JSON_VERSION})`)
    }
    if (d.relativeAccuracy !== SKETCH_RELATIVE_ACCURACY) {
      fail(`relativeAccuracy ${String(d.relativeAccuracy)} differs from ${SKETCH_RELATIVE_ACCURACY}`)
    }
    const zero = d.zeroCount
    if (typeof zero !== 'number' || !Number.isSafeInteger(zero) || zero < 0) {
      fail('zeroCount must be a non-negative integer')
    }
    const keys = d.keys
    const counts = d.counts
    if (!isNumberList(keys) || !isNumberList(counts)) fail('keys and counts must be arrays of numbers')
    const ks = keys as ArrayLike<number>
    const cs = counts as ArrayLike<number>
    if (ks.length !== cs.length) fail('keys and counts differ in length')
    const s = new LatencySketch()
    if (ks.length > 0) s.#grow(ks.length)
    let total = zero as number
    for (let i = 0; i < ks.length; i++) {
      const k = ks[i]
      const c = cs[i]
      if (!Number.isInteger(k) || k < 0 || k > MAX_KEY) fail(`key ${k} out of range`)
      if (i > 0 && !(k > ks[i - 1])) fail('keys must be strictly ascending')
      if (!Number.isSafeInteger(c) || c < 1) fail(`count ${c} must be a positive integer`)
      s.#keys[i] = k
      s.#counts[i] = c
      total += c
    }
    s.#len = ks.length
    s.#zero = zero as number
    s.#count = total
    if (total === 0) {
      if (d.min !== null || d.max !== null) fail('an empty sketch has null min and max')
    } else {
      const { min, max } = d
      if (typeof min !== 'number' || typeof max !== 'number' || !(min >= 0 && min <= max && max < Infinity)) {
        fail('min and max must be finite numbers with 0 <= min <= max')
      }
      s.#min = min as number
      s.#max = max as number
    }
    s.#maybeDense()
    return s
  }
}

/** {@link LatencySketch.ofValues}' histogram over bucket keys, all zero between calls; made on first use. */
let histogram: Float64Array | null = null

function isNumberList(v: unknown): boolean {
  if (Array.isArray(v)) return v.every((x) => typeof x === 'number')
  return ArrayBuffer.isView(v) && !(v instanceof DataView)
}

/**
 * A sketch that keeps nothing: for queries that need only totals (cost breakdowns), so a range
 * query skips every sketch merge. Quantiles of it are those of an empty sketch.
 */
export class DiscardSketch extends LatencySketch {
  override record(_valueUs: number): boolean {
    return false
  }

  override recordMany(_valuesUs: ArrayLike<number>): number {
    return 0
  }

  override merge(_other: LatencySketch): this {
    return this
  }
}

/**
 * Dimensions (DESIGN §6): who and what spends. Per project, dictionaries turn the dimension
 * values of an event — `user_id`, `session_id`, its tags and its top-level scalar metadata —
 * into small integer ids, and each stored row carries three words ({@link RowDims}): the user,
 * the session, and the *attribute set* (the interned set of its tags and metadata values).
 * Interning the set keeps a row at 12 more bytes however many tags and keys it has: real
 * traffic repeats a few combinations of tags and metadata values.
 *
 * Ids: 0 = the event has no such value (the `null` group), 1 = a value past its cap (the
 * `"(other)"` group: totals stay exact, only the split is coarser), 2… = values in first-seen
 * order. Every dictionary is capped (configurable): a value past a cap is kept as 1, and a
 * filter on it is answered exactly from the log (queries.ts), never from a guess.
 *
 * Append-only: an id never changes meaning, so a snapshot of a dictionary taken at any time
 * at or after a cut describes every row up to the cut (replayed events find their values
 * again, or get the next ids in log order).
 *
 * One exception, deletes (DESIGN §7): a value no row references any more after a delete is
 * *blanked* — its string erased (gone from the next snapshot), `find` no longer knows it, it no
 * longer counts as a kept value — and its id is never given again (the value, seen again, gets
 * a new id). Likewise an attribute set no row references is dropped (its id stays unused).
 * Queries treat a value `find` does not know in a dictionary with blanked values as one no
 * held row has (it may still be in hours retention folded: those ranges read the log).
 */
import type { RowDims } from './series.js'

/** The group of events without the dimension. */
export const NULL_ID = 0
/** The group of values past the dimension's cap. */
export const OTHER_ID = 1
/** The value shown for {@link OTHER_ID}. */
export const OTHER_VALUE = '(other)'

export interface DimensionLimits {
  /** Distinct values kept per `user_id`, `session_id` and `tag` (DESIGN: 100,000). */
  maxValues: number
  /** Metadata keys that are dimensions, first seen first (DESIGN: 32). */
  maxMetaKeys: number
  /** Distinct values kept per metadata key (DESIGN: 10,000). */
  maxMetaValues: number
  /** Distinct attribute sets (combinations of tags and metadata values) kept. */
  maxAttrSets: number
  /**
   * Metadata keys that are never dimensions: identifiers of one call (unique per event, they
   * would only fill the caps). Filters on them are still exact, from the log.
   */
  notDimensions: readonly string[]
}

/** The OTLP receiver's per-call identifiers (src/otlp/convert.ts). */
export const DEFAULT_NOT_DIMENSIONS: readonly string[] = ['trace_id', 'span_id', 'response_id']

export const DEFAULT_DIMENSION_LIMITS: DimensionLimits = { maxValues: 100_000, maxMetaKeys: 32, maxMetaValues: 10_000, maxAttrSets: 1_000_000, notDimensions: DEFAULT_NOT_DIMENSIONS }

/** A metadata value as a dimension: strings as themselves, numbers and booleans as JSON text; else none. */
export function metadataValue(v: unknown): string | null {
  if (typeof v === 'string') return v
  if (typeof v === 'number') return Number.isFinite(v) ? JSON.stringify(v) : null
  if (typeof v === 'boolean') return v ? 'true' : 'false'
  return null
}

/** Values of one dimension ↔ ids (2…), capped. */
export class ValueDictionary {
  readonly #cap: number
  readonly #ids = new Map<string, number>()
  /** By id − 2; null once blanked. */
  readonly #values: (string | null)[] = []
  #live = 0
  #blanked = 0
  #capped = false

  constructor(cap: number) {
    this.#cap = cap
  }

  /** The value's id, made on first sight; {@link OTHER_ID} once the cap (of values kept) is reached. */
  id(value: string): number {
    const have = this.#ids.get(value)
    if (have !== undefined) return have
    if (this.#live >= this.#cap) {
      this.#capped = true
      return OTHER_ID
    }
    this.#values.push(value)
    this.#live++
    const id = this.#values.length + 1
    this.#ids.set(value, id)
    return id
  }

  /**
   * Erases value `id` (a delete left no row referencing it): its string is dropped, `find`
   * no longer returns the id, `value` gives null for it, and the id is never given again.
   * False when `id` is not a kept value (already blanked, or not a value id).
   */
  blank(id: number): boolean {
    const v = id >= 2 ? this.#values[id - 2] : undefined
    if (v === undefined || v === null) return false
    this.#ids.delete(v)
    this.#values[id - 2] = null
    this.#live--
    this.#blanked++
    return true
  }

  /** Values blanked so far (see {@link ValueDictionary.blank}). */
  get blanked(): number {
    return this.#blanked
  }

  /** Ids given so far: 2 … ids + 1 (blanked ones included). */
  get ids(): number {
    return this.#values.length
  }

  /** The id of a value seen before, or undefined. */
  find(value: string): number | undefined {
    return this.#ids.get(value)
  }

  /** The value of an id (null for {@link NULL_ID} and a blanked id, "(other)" for {@link OTHER_ID}). */
  value(id: number): string | null {
    if (id === NULL_ID) return null
    if (id === OTHER_ID) return OTHER_VALUE
    return this.#values[id - 2] ?? null
  }

  /** Values kept (blanked ones no longer count). */
  get size(): number {
    return this.#live
  }

  /** Calls `fn` with every kept value and its id, ascending by id. */
  forEach(fn: (value: string, id: number) => void): void {
    this.#values.forEach((v, i) => {
      if (v !== null) fn(v, i + 2)
    })
  }

  /** Whether a value was refused by the cap. */
  get capped(): boolean {
    return this.#capped
  }

  /** Values by id − 2, null where blanked (no blanked string is kept). */
  toJSON(): { values: (string | null)[]; capped: boolean } {
    return { values: this.#values.slice(), capped: this.#capped }
  }

  static fromJSON(data: unknown, cap: number, what: string): ValueDictionary {
    const d = data as { values?: unknown; capped?: unknown } | null
    if (typeof d !== 'object' || d === null || !Array.isArray(d.values) || typeof d.capped !== 'boolean') throw new Error(`dimension dictionary ${what}: malformed`)
    const dict = new ValueDictionary(Math.max(cap, d.values.length))
    for (const v of d.values) {
      if (v === null) {
        dict.#values.push(null)
        dict.#blanked++
        continue
      }
      if (typeof v !== 'string' || dict.#ids.has(v)) throw new Error(`dimension dictionary ${what}: a value is not a string, or given twice`)
      dict.id(v)
    }
    dict.#capped = d.capped
    return dict
  }
}

/** What a row's attribute set holds: (dimension, id) pairs, dimension 0 = tag, k + 1 = metadata key k. */
export type AttrSet = Uint32Array

/** What a delete may have left unreferenced (ids >= 2), for {@link DimensionDictionary.blankUnreferenced}. */
export interface ForgetCandidates {
  users: Iterable<number>
  sessions: Iterable<number>
  attrs: Iterable<number>
  /** Tag and metadata value ids as (dimension, id) pairs: dimension 0 = tag, k + 1 = metadata key k. */
  values: Iterable<[number, number]>
}

/** Which ids the rows still reference: one byte per id (non-zero = referenced), indexed by id. */
export interface ReferencedIds {
  users: Uint8Array
  sessions: Uint8Array
  attrs: Uint8Array
}

/** The dimensions of one project: dictionaries, metadata keys and attribute sets. */
export class DimensionDictionary {
  readonly limits: DimensionLimits
  readonly users: ValueDictionary
  readonly sessions: ValueDictionary
  readonly tags: ValueDictionary
  readonly #metaKeys: string[] = []
  readonly #metaKeyIndex = new Map<string, number>()
  #metaKeysCapped = false
  readonly #notDimensions: ReadonlySet<string>
  readonly #metaValues: ValueDictionary[] = []
  /** Attribute sets by id − 2 (0 = empty set, 1 = past the cap: unknown); a dropped set is empty. */
  readonly #sets: AttrSet[] = []
  readonly #setIds = new Map<string, number>()
  #setsCapped = false
  /** Scratch for building one event's set. */
  readonly #pairs: number[] = []

  constructor(limits: DimensionLimits = DEFAULT_DIMENSION_LIMITS) {
    this.limits = limits
    this.#notDimensions = new Set(limits.notDimensions)
    this.users = new ValueDictionary(limits.maxValues)
    this.sessions = new ValueDictionary(limits.maxValues)
    this.tags = new ValueDictionary(limits.maxValues)
  }

  /** The row words of an event's dimensions (assigning ids to new values). */
  encode(user: string | null, session: string | null, tags: readonly string[] | null, meta: Record<string, unknown> | null, into: RowDims): RowDims {
    into.user = user === null ? NULL_ID : this.users.id(user)
    into.session = session === null ? NULL_ID : this.sessions.id(session)
    const pairs = this.#pairs
    pairs.length = 0
    if (tags !== null) for (const t of tags) pairs.push(0, this.tags.id(t))
    if (meta !== null) {
      for (const key in meta) {
        const value = metadataValue(meta[key])
        if (value === null) continue
        const k = this.#metaKey(key)
        if (k < 0) continue
        pairs.push(k + 1, this.#metaValues[k].id(value))
      }
    }
    into.attrs = pairs.length === 0 ? NULL_ID : this.#intern(pairs)
    return into
  }

  /** Index of a metadata key that is a dimension (made on first sight while under the cap), or -1. */
  #metaKey(key: string): number {
    const have = this.#metaKeyIndex.get(key)
    if (have !== undefined) return have
    if (this.#notDimensions.has(key)) return -1
    if (this.#metaKeys.length >= this.limits.maxMetaKeys) {
      this.#metaKeysCapped = true
      return -1
    }
    this.#metaKeys.push(key)
    this.#metaValues.push(new ValueDictionary(this.limits.maxMetaValues))
    this.#metaKeyIndex.set(key, this.#metaKeys.length - 1)
    return this.#metaKeys.length - 1
  }

  #intern(pairs: number[]): number {
    // Sorted by (dimension, id) in place (insertion sort: a few pairs), so one key per set
    // whatever order tags and keys came in; the key is the pairs as UTF-16 units (no join, no
    // array of strings: this runs once per event with dimensions).
    const n = pairs.length
    for (let i = 2; i < n; i += 2) {
      const d = pairs[i]
      const id = pairs[i + 1]
      let j = i - 2
      while (j >= 0 && (pairs[j] > d || (pairs[j] === d && pairs[j + 1] > id))) {
        pairs[j + 2] = pairs[j]
        pairs[j + 3] = pairs[j + 1]
        j -= 2
      }
      pairs[j + 2] = d
      pairs[j + 3] = id
    }
    const key = setKey(pairs)
    const have = this.#setIds.get(key)
    if (have !== undefined) return have
    if (this.#sets.length >= this.limits.maxAttrSets) {
      this.#setsCapped = true
      return OTHER_ID
    }
    this.#sets.push(Uint32Array.from(pairs))
    const id = this.#sets.length + 1
    this.#setIds.set(key, id)
    return id
  }

  /**
   * The attribute set id an event with these tags and metadata has, without making any id:
   * undefined when it has none yet (a value or the set was never seen), {@link NULL_ID} for none.
   */
  findSet(tags: readonly string[] | null, meta: Record<string, unknown> | null): number | undefined {
    const pairs: number[] = []
    const idOf = (dict: ValueDictionary, v: string): number | undefined => dict.find(v) ?? (dict.capped ? OTHER_ID : undefined)
    if (tags !== null) {
      for (const t of tags) {
        const id = idOf(this.tags, t)
        if (id === undefined) return undefined
        pairs.push(0, id)
      }
    }
    if (meta !== null) {
      for (const key in meta) {
        const value = metadataValue(meta[key])
        const k = this.metaKeyIndex(key)
        if (value === null || k < 0) continue
        const id = idOf(this.#metaValues[k], value)
        if (id === undefined) return undefined
        pairs.push(k + 1, id)
      }
    }
    if (pairs.length === 0) return NULL_ID
    // The same order #intern sorts into.
    const sorted: Array<[number, number]> = []
    for (let i = 0; i < pairs.length; i += 2) sorted.push([pairs[i], pairs[i + 1]])
    sorted.sort((a, b) => a[0] - b[0] || a[1] - b[1])
    return this.#setIds.get(setKey(sorted.flat()))
  }

  /** The (dimension, id) pairs of the kept tag and metadata values of an event (ids made by no one): delete candidates. */
  valuesOf(tags: readonly string[] | null, meta: Record<string, unknown> | null): Array<[number, number]> {
    const out: Array<[number, number]> = []
    for (const t of tags ?? []) {
      const id = this.tags.find(t)
      if (id !== undefined) out.push([0, id])
    }
    if (meta !== null) {
      for (const key in meta) {
        const value = metadataValue(meta[key])
        const k = this.metaKeyIndex(key)
        const id = value === null || k < 0 ? undefined : this.#metaValues[k].find(value)
        if (id !== undefined) out.push([k + 1, id])
      }
    }
    return out
  }

  /**
   * After a delete: blanks the candidate users and sessions no row references, drops the
   * candidate attribute sets no row references, then blanks the tag and metadata values (those
   * of the dropped sets, and the candidate ones) that no attribute set left holds. `refs` must
   * come from one pass over every row of the project (ids past its arrays count as
   * unreferenced). Returns how many of each went.
   */
  blankUnreferenced(c: ForgetCandidates, refs: ReferencedIds): { users: number; sessions: number; sets: number; values: number } {
    const out = { users: 0, sessions: 0, sets: 0, values: 0 }
    for (const id of c.users) if (refs.users[id] !== 1 && this.users.blank(id)) out.users++
    for (const id of c.sessions) if (refs.sessions[id] !== 1 && this.sessions.blank(id)) out.sessions++
    // (dimension, value id) pairs that may be left in no set, as d * 2^32 + id.
    const values = new Set<number>()
    for (const [d, id] of c.values) if (id >= 2) values.add(d * 2 ** 32 + id)
    for (const id of c.attrs) {
      if (id < 2 || refs.attrs[id] === 1) continue
      const set = this.#sets[id - 2]
      if (set === undefined || set.length === 0) continue
      this.#setIds.delete(setKey(set))
      this.#sets[id - 2] = DROPPED
      out.sets++
      for (let i = 0; i < set.length; i += 2) if (set[i + 1] >= 2) values.add(set[i] * 2 ** 32 + set[i + 1])
    }
    if (values.size === 0) return out
    for (const set of this.#sets) {
      for (let i = 0; i < set.length; i += 2) values.delete(set[i] * 2 ** 32 + set[i + 1])
      if (values.size === 0) return out
    }
    for (const pair of values) {
      const d = Math.floor(pair / 2 ** 32)
      const id = pair - d * 2 ** 32
      const dict = d === 0 ? this.tags : this.#metaValues[d - 1]
      if (dict !== undefined && dict.blank(id)) out.values++
    }
    return out
  }

  /** The pairs of attribute set `id` (empty for {@link NULL_ID}; undefined for {@link OTHER_ID}: unknown). */
  attrSet(id: number): AttrSet | undefined {
    if (id === NULL_ID) return EMPTY
    if (id === OTHER_ID) return undefined
    return this.#sets[id - 2]
  }

  /** Number of attribute sets (ids 2 … count + 1). */
  get attrSets(): number {
    return this.#sets.length
  }

  get attrSetsCapped(): boolean {
    return this.#setsCapped
  }

  /** Index of a metadata key that is a dimension, or -1. */
  metaKeyIndex(key: string): number {
    return this.#metaKeyIndex.get(key) ?? -1
  }

  metaValues(k: number): ValueDictionary {
    return this.#metaValues[k]
  }

  get metaKeysCapped(): boolean {
    return this.#metaKeysCapped
  }

  /** Whether memory cannot tell which events have metadata key `key` (past the key cap, or never a dimension). */
  metaKeyUnknown(key: string): boolean {
    return this.#metaKeyIndex.get(key) === undefined && (this.#metaKeysCapped || this.#notDimensions.has(key))
  }

  /** `GET /analytics/dimensions`: every dimension with values, as named in `by=` and filters. */
  describe(): Array<{ name: string; values: number; capped: boolean }> {
    const out = [
      { name: 'user_id', values: this.users.size, capped: this.users.capped },
      { name: 'session_id', values: this.sessions.size, capped: this.sessions.capped },
      { name: 'tag', values: this.tags.size, capped: this.tags.capped }
    ].filter((d) => d.values > 0)
    this.#metaKeys.forEach((key, k) => {
      const dict = this.#metaValues[k]
      // A key whose every value a delete blanked is listed no more.
      if (dict.size > 0 || dict.capped || dict.blanked === 0) out.push({ name: `metadata.${key}`, values: dict.size, capped: dict.capped })
    })
    return out
  }

  /**
   * The snapshot form (version 2). Attribute sets as two flat arrays — every set's pairs one after
   * another (`setWords`) and each set's word count (`setSizes`, 0 = dropped) — not an array per
   * set: this runs at a snapshot's cut, and 28,000 small arrays (the dimensions bench at 2M events)
   * took 44–112 ms of one turn where two flat ones take a few; long flat arrays are also stored as
   * pieces, each serialised in its own slice of the write (src/store/snapshots.ts).
   */
  toJSON() {
    const setWords: number[] = []
    const setSizes: number[] = []
    for (const set of this.#sets) {
      setSizes.push(set.length)
      for (let i = 0; i < set.length; i++) setWords.push(set[i])
    }
    return {
      v: 2,
      users: this.users.toJSON(),
      sessions: this.sessions.toJSON(),
      tags: this.tags.toJSON(),
      metaKeys: this.#metaKeys.slice(),
      metaKeysCapped: this.#metaKeysCapped,
      metaValues: this.#metaValues.map((d) => d.toJSON()),
      setWords,
      setSizes,
      setsCapped: this.#setsCapped
    }
  }

  /** Restores {@link DimensionDictionary.toJSON}; throws naming the problem (the snapshot is then rebuilt from the log). */
  static fromJSON(data: unknown, limits: DimensionLimits = DEFAULT_DIMENSION_LIMITS): DimensionDictionary {
    // Version 1 (snapshots before format 7) held one array per attribute set, `sets`.
    const d = data as (Omit<ReturnType<DimensionDictionary['toJSON']>, 'v'> & { v: 1 | 2; sets?: unknown }) | null
    if (typeof d !== 'object' || d === null || (d.v !== 1 && d.v !== 2)) throw new Error('dimension dictionaries: unknown version')
    const out = new DimensionDictionary(limits)
    const restore = (from: unknown, cap: number, what: string): ValueDictionary => ValueDictionary.fromJSON(from, cap, what)
    ;(out as { users: ValueDictionary }).users = restore(d.users, limits.maxValues, 'users')
    ;(out as { sessions: ValueDictionary }).sessions = restore(d.sessions, limits.maxValues, 'sessions')
    ;(out as { tags: ValueDictionary }).tags = restore(d.tags, limits.maxValues, 'tags')
    const setsOk = d.v === 1 ? Array.isArray(d.sets) : Array.isArray(d.setWords) && Array.isArray(d.setSizes)
    if (!Array.isArray(d.metaKeys) || !Array.isArray(d.metaValues) || d.metaKeys.length !== d.metaValues.length || !setsOk) {
      throw new Error('dimension dictionaries: malformed metadata or sets')
    }
    d.metaKeys.forEach((key, k) => {
      if (typeof key !== 'string') throw new Error('dimension dictionaries: a metadata key is not a string')
      out.#metaKeys.push(key)
      out.#metaKeyIndex.set(key, k)
      out.#metaValues.push(ValueDictionary.fromJSON(d.metaValues[k], limits.maxMetaValues, `metadata.${key}`))
    })
    out.#metaKeysCapped = d.metaKeysCapped === true
    const add = (set: AttrSet) => {
      // An empty set is one a delete dropped: its id stays unused.
      if (set.length === 0) {
        out.#sets.push(DROPPED)
        return
      }
      out.#sets.push(set)
      out.#setIds.set(setKey(set), out.#sets.length + 1)
    }
    const malformed = () => new Error('dimension dictionaries: malformed attribute set')
    if (d.v === 1) {
      for (const s of d.sets as unknown[]) {
        if (!Array.isArray(s) || s.length % 2 !== 0 || !s.every(isWord)) throw malformed()
        add(Uint32Array.from(s as number[]))
      }
    } else {
      if (!(d.setWords as unknown[]).every(isWord)) throw malformed()
      // Every set a view of one array (sets are never changed, only replaced by DROPPED).
      const all = Uint32Array.from(d.setWords)
      let at = 0
      for (const n of d.setSizes as unknown[]) {
        if (!isWord(n) || n % 2 !== 0 || at + n > all.length) throw malformed()
        add(all.subarray(at, at + n))
        at += n
      }
      if (at !== all.length) throw malformed()
    }
    out.#setsCapped = d.setsCapped === true
    return out
  }
}

/** A non-negative integer that fits a Uint32Array word. */
const isWord = (x: unknown): x is number => typeof x === 'number' && x >>> 0 === x

const EMPTY: AttrSet = new Uint32Array(0)
/** What a dropped attribute set's id holds (see {@link DimensionDictionary.blankUnreferenced}). */
const DROPPED: AttrSet = new Uint32Array(0)

/** One key per set: its sorted pairs as UTF-16 units (no join, no array of strings). */
function setKey(pairs: ArrayLike<number>): string {
  let key = ''
  for (let i = 0; i < pairs.length; i += 2) key += String.fromCharCode(pairs[i], pairs[i + 1] & 0xffff, pairs[i + 1] >>> 16)
  return key
}

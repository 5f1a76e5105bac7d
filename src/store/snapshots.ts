/**
 * Snapshots: the engine state at one log position, so a restart reads it and replays only the
 * log tail after it.
 *
 * Append-only: each series (model, provider) is stored as *parts* numbered [first, next) under
 * their own keys — its coarse hours, then its raw rows in ranges of row numbers. A snapshot
 * writes only the rows recorded since the previous one as new parts (a delta), so under
 * sustained load it costs what arrived, not what is held; a series is rewritten under fresh
 * part numbers only after a retention fold (which renumbers rows), a late row into a folded
 * hour, a failed write, or once deltas left too many small parts. The *manifest* (key
 * `snapshot`) names the log position, every series' part range and the small states.
 *
 * Never blocking for long: parts are copied, encoded and hashed a few milliseconds per
 * event-loop turn and put as they come; new parts are invisible until the manifest naming them
 * commits, in one LMDB transaction that also removes the parts it no longer names. A crash
 * before that commit leaves the previous snapshot whole (its parts are never overwritten: part
 * numbers only grow) plus unnamed parts that later writes overwrite or remove.
 *
 * Every stored value (binary): 4-byte magic (`LSNP` manifest, `LSEG` part), u32 format
 * version, u32 CRC-32 of the payload and u32 payload length (version 6: a 32-byte SHA-256 of
 * the payload instead of both), payload: v8 structured-clone serialisation, which keeps typed
 * arrays exact. From version 8 the typed arrays' bytes are not inside it but after it, each at
 * an 8-byte boundary ({@link encodeAligned}), so that reading makes them views of the stored
 * bytes: v8's own serialisation puts them wherever the bytes before leave off, and its reader
 * copies every array that falls unaligned for its type — at 10M events ~95% of a snapshot's
 * bytes, ~320 MB copied (and allocated) on every restart. A wrong magic, an unknown version (2 = one part per day, before
 * deltas; 4 = rows without their log position), a checksum mismatch or a missing part makes the whole snapshot unusable and the
 * caller rebuilds from the log: a snapshot is never misread.
 */
import { createHash } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { Deserializer, Serializer, serialize, deserialize } from 'node:v8'
import type { Database } from 'lmdb'

/**
 * Bump when the payload's shape changes; older snapshots are then rebuilt from the log.
 * 6: the dimension dictionaries' long arrays are stored as pieces beside the manifest.
 * 7: a CRC-32 in place of the SHA-256 (see {@link SHA256_VERSION}); the dimension dictionaries'
 *    attribute sets as two flat arrays (DimensionDictionary.toJSON form 2, which reads form 1 too).
 * 8: typed arrays stored after the serialisation, aligned (see the module comment).
 */
export const SNAPSHOT_VERSION = 8
/**
 * The last version with typed arrays inside v8's serialisation, still read: its payload is
 * version 8's, encoded the other way, so an upgrade restores from it and writes 8 next.
 */
export const PLAIN_VERSION = 7
/**
 * The last version checksummed with SHA-256, still read (its payload differs from version 7's
 * only in the dictionaries' form, which is read either way): an upgrade restores from it instead
 * of rebuilding from the log, and the next snapshot is written as 8.
 * SHA-256 of a 10M-event snapshot took about 200 ms of every restart (hashing at ~1.1 GB/s,
 * CRC-32 at ~2.1 GB/s on the bench machine); a checksum here detects damage, not forgery.
 */
export const SHA256_VERSION = 6
/** Versions this build reads. */
const READABLE = new Set([SNAPSHOT_VERSION, PLAIN_VERSION, SHA256_VERSION])
/** Version 7 and 8's header: magic, version, CRC-32 of the payload, payload length (u32 each); 8-byte aligned, so typed arrays can be views. */
const CRC_HEADER = 16
/** Version 6's header: magic, version, SHA-256 of the payload. */
const SHA256_HEADER = 40
const MAGIC = Buffer.from('LSNP')
const SEGMENT_MAGIC = Buffer.from('LSEG')
const KEY = 'snapshot'
/** LMDB key of one part of a series. */
const partKey = (project: string, model: string, provider: string, id: number) => ['part', project, model, provider, id] as unknown as string
/** LMDB key of piece `i` of the dimension dictionaries written under generation `gen`. */
const dimsKey = (gen: number, i: number) => ['dims', gen, i] as unknown as string
/** Key prefixes of parts: this version's, and version 2's per-day segments (removed on sight). */
const PART_PREFIXES = new Set(['part', 'seg'])
/**
 * Arrays of the dimension dictionaries longer than this are cut into pieces of this many
 * entries, each encoded in its own slice of the write (a project's 100,000 user ids encode in
 * one v8 serialisation of tens of milliseconds): the manifest keeps only what is left.
 */
const SPILL = 8192
/** Encoding work per event-loop turn before the writer yields (parts are PART_ROWS rows at most). */
const TURN_BUDGET_MS = 3
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

/** What a snapshot holds. `seq`: every event with a smaller seq is included, none after. */
export interface SnapshotPayload {
  /** Next seq to replay from (= one past the last event included). */
  seq: number
  createdAt: number
  /** One entry per (project, model) aggregator. */
  aggregators: Array<{ project: string; model: string; state: unknown }>
  alerts: unknown
  /** Each project's dimension dictionaries (analytics/dimensions.ts), by project id. */
  dimensions?: Record<string, unknown>
  /** Chunks of unfinished event deletes (`<delete id>/<chunk>`) whose forget this state holds (src/forget.ts). */
  forgets?: string[]
  /** Re-pricings (`rp_…`) whose changes this state holds (src/prices.ts); a restart re-applies the others. */
  reprices?: string[]
  /**
   * As stored only: `dimensions` with its long arrays replaced by {@link Spilled} markers, and
   * the generation of the pieces they name (`read` puts them back; never set by a writer).
   */
  dimsGen?: number
}

/** Where a spilled array went: pieces [from, from + count) of the manifest's generation, concatenated. */
interface Spilled {
  $spilled: [from: number, count: number]
}
const isSpilled = (v: unknown): v is Spilled => typeof v === 'object' && v !== null && !Array.isArray(v) && Array.isArray((v as Spilled).$spilled)

/** `value` with every array longer than {@link SPILL} (at any depth of plain objects) cut into `pieces`. */
function spill(value: unknown, pieces: unknown[][]): unknown {
  if (Array.isArray(value)) {
    if (value.length <= SPILL) return value
    const from = pieces.length
    for (let i = 0; i < value.length; i += SPILL) pieces.push(value.slice(i, i + SPILL))
    return { $spilled: [from, pieces.length - from] } satisfies Spilled
  }
  if (typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = spill(v, pieces)
  return out
}

/** {@link spill} undone: each marker replaced by its pieces, read by `piece`. */
function unspill(value: unknown, piece: (i: number) => unknown[]): unknown {
  if (isSpilled(value)) {
    const [from, count] = value.$spilled
    const out: unknown[] = []
    for (let i = from; i < from + count; i++) for (const x of piece(i)) out.push(x)
    return out
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = unspill(v, piece)
  return out
}

export type SnapshotRead =
  | { ok: true; payload: SnapshotPayload; bytes: number }
  | { ok: false; reason: string }

function encode(magic: Buffer, value: unknown, version: number): Buffer {
  const sha = version <= SHA256_VERSION
  const header = Buffer.alloc(sha ? 8 : CRC_HEADER)
  magic.copy(header, 0)
  header.writeUInt32LE(version, 4)
  if (sha) {
    const body = serialize(value)
    return Buffer.concat([header, createHash('sha256').update(body).digest(), body])
  }
  const out = version >= SNAPSHOT_VERSION ? encodeAligned(header, value) : Buffer.concat([header, serialize(value)])
  const body = out.subarray(CRC_HEADER)
  out.writeUInt32LE(crc32(body), 8)
  out.writeUInt32LE(body.length, 12)
  return out
}

/** A typed array's constructor, as a version-8 payload names it by index. */
type ViewType = { readonly BYTES_PER_ELEMENT: number; new (buffer: ArrayBufferLike, byteOffset: number, length: number): ArrayBufferView }
/** The typed arrays a version-8 payload may hold, by the index stored for each (DataView is not stored). */
const VIEW_TYPES: readonly ViewType[] = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array]
/** The index stored for a Buffer (read back as a Buffer). */
const BUFFER_TYPE = VIEW_TYPES.length
const align8 = (n: number) => (n + 7) & ~7
const PAD = Buffer.alloc(8)

/** A serialiser that leaves each typed array out, writing its type, length and place among the arrays stored after the serialisation. */
class AlignedSerializer extends Serializer {
  readonly views: ArrayBufferView[] = []
  /** Bytes of the arrays so far, each padded to 8. */
  size = 0

  constructor() {
    super()
    // Node's own DefaultSerializer does the same (the method is not in @types/node).
    ;(this as unknown as { _setTreatArrayBufferViewsAsHostObjects(on: boolean): void })._setTreatArrayBufferViewsAsHostObjects(true)
  }

  _writeHostObject(view: ArrayBufferView): void {
    const type = Buffer.isBuffer(view) ? BUFFER_TYPE : VIEW_TYPES.indexOf(view.constructor as ViewType)
    if (type === -1) throw new Error(`snapshot: a ${view.constructor.name} is not stored`)
    this.writeUint32(type)
    this.writeUint32(view.byteLength)
    this.writeUint32(this.size)
    this.views.push(view)
    this.size += align8(view.byteLength)
  }
}

/**
 * Version 8's value: `header`, then the payload — u32 length of the serialisation, the
 * serialisation, zeros to an 8-byte boundary (counted from the payload's start, which the
 * 16-byte header keeps aligned), then each typed array's bytes, each padded to 8.
 */
function encodeAligned(header: Buffer, value: unknown): Buffer {
  const ser = new AlignedSerializer()
  ser.writeHeader()
  ser.writeValue(value)
  const skeleton = ser.releaseBuffer()
  const len = Buffer.alloc(4)
  len.writeUInt32LE(skeleton.length)
  const parts: Uint8Array[] = [header, len, skeleton, PAD.subarray(0, align8(4 + skeleton.length) - 4 - skeleton.length)]
  for (const v of ser.views) {
    parts.push(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
    if (v.byteLength % 8 !== 0) parts.push(PAD.subarray(0, align8(v.byteLength) - v.byteLength))
  }
  return Buffer.concat(parts)
}

/** Reads a version-8 serialisation: each typed array a view of `arrays` where it is aligned for its type (a copy where not, which an 8-aligned value never needs). */
class AlignedDeserializer extends Deserializer {
  readonly #arrays: Buffer

  constructor(skeleton: Buffer, arrays: Buffer) {
    super(skeleton)
    this.#arrays = arrays
  }

  _readHostObject(): ArrayBufferView {
    const index = this.readUint32()
    const byteLength = this.readUint32()
    const at = this.readUint32()
    const type = VIEW_TYPES[index]
    if (type === undefined && index !== BUFFER_TYPE) throw new Error('unknown typed array type')
    const size = type === undefined ? 1 : type.BYTES_PER_ELEMENT
    if (byteLength % size !== 0 || at + byteLength > this.#arrays.length) throw new Error('typed array out of bounds')
    let bytes = this.#arrays.subarray(at, at + byteLength)
    if (type === undefined) return bytes
    if (bytes.byteOffset % size !== 0) bytes = Buffer.from(bytes)
    return new type(bytes.buffer, bytes.byteOffset, byteLength / size)
  }
}

/** A version-8 payload's value (see {@link encodeAligned}); throws if it is malformed. */
function decodeAligned(body: Buffer): unknown {
  if (body.length < 4) throw new Error('payload too short')
  const len = body.readUInt32LE(0)
  if (4 + len > body.length) throw new Error('serialisation past the payload')
  const des = new AlignedDeserializer(body.subarray(4, 4 + len), body.subarray(align8(4 + len)))
  des.readHeader()
  return des.readValue()
}

/** Checks magic, version and checksum; returns the decoded value or the reason it is unusable. */
function decode(buf: Buffer | undefined, magic: Buffer, what: string): { ok: true; value: unknown } | { ok: false; reason: string } {
  const r = check(buf, magic, what)
  return r.ok ? decodeBody(buf!, what) : r
}

/** The value of a stored value {@link check} passed, or why it does not deserialize. */
function decodeBody(buf: Buffer, what: string): { ok: true; value: unknown } | { ok: false; reason: string } {
  try {
    const body = bodyOf(buf)
    return { ok: true, value: buf.readUInt32LE(4) >= SNAPSHOT_VERSION ? decodeAligned(body) : deserialize(body) }
  } catch (err) {
    return { ok: false, reason: `${what} payload unreadable: ${(err as Error).message}` }
  }
}

/** Checks magic, version and checksum; ok, or the reason the value is unusable ({@link bodyOf} is its payload). */
function check(buf: Buffer | undefined, magic: Buffer, what: string): { ok: true } | { ok: false; reason: string } {
  if (buf === undefined) return { ok: false, reason: `no ${what}` }
  if (buf.length < CRC_HEADER || !buf.subarray(0, 4).equals(magic)) return { ok: false, reason: `not a ${what} (bad magic)` }
  const version = buf.readUInt32LE(4)
  if (!READABLE.has(version)) return { ok: false, reason: `${what} format version ${version} is not ${SNAPSHOT_VERSION}` }
  const damaged = { ok: false, reason: `${what} checksum mismatch (damaged)` } as const
  if (version === SHA256_VERSION && buf.length < SHA256_HEADER) return damaged
  const body = bodyOf(buf)
  const intact =
    version === SHA256_VERSION
      ? createHash('sha256').update(body).digest().equals(buf.subarray(8, SHA256_HEADER))
      : buf.readUInt32LE(12) === body.length && crc32(body) === buf.readUInt32LE(8)
  return intact ? { ok: true } : damaged
}

/** The payload of a stored value whose version {@link check} accepted. */
const bodyOf = (buf: Buffer) => buf.subarray(buf.readUInt32LE(4) === SHA256_VERSION ? SHA256_HEADER : CRC_HEADER)

/** Encodes a manifest (or, in tests, a whole payload) with magic, version and checksum. */
export function encodeSnapshot(payload: SnapshotPayload, version = SNAPSHOT_VERSION): Buffer {
  return encode(MAGIC, payload, version)
}

/** Decodes and checks a stored manifest; never throws. */
export function decodeSnapshot(buf: Buffer | undefined): SnapshotRead {
  const r = decode(buf, MAGIC, 'snapshot')
  if (!r.ok) return r
  try {
    const payload = r.value as SnapshotPayload
    if (typeof payload !== 'object' || payload === null || !Number.isSafeInteger(payload.seq) || !Array.isArray(payload.aggregators)) {
      return { ok: false, reason: 'snapshot payload malformed' }
    }
    return { ok: true, payload, bytes: buf!.length }
  } catch (err) {
    return { ok: false, reason: `snapshot payload unreadable: ${(err as Error).message}` }
  }
}

/**
 * The per-series shape inside an aggregator state (see ModelAggregator's AggregatorState and
 * AggregatorSnapshot): a part range; `write` (parts to store) in what is written, `parts`
 * (their data, in order; decoded anew on each read of the property) in what is read.
 */
interface SeriesState {
  provider: string
  first: number
  next: number
  write?: Array<{ id: number; data: () => unknown }>
  parts?: unknown[]
}
const seriesOf = (state: unknown): SeriesState[] | null => {
  const s = (state as { series?: unknown } | null)?.series
  return Array.isArray(s) ? (s as SeriesState[]) : null
}
const rangeOk = (s: SeriesState) => Number.isSafeInteger(s.first) && Number.isSafeInteger(s.next) && s.first >= 0 && s.next >= s.first
/** Map key of a series in {@link SnapshotStore}'s record of what the stored manifest names. */
const seriesId = (project: string, model: string, provider: string) => JSON.stringify([project, model, provider])
/** Part range of each series a manifest names, by {@link seriesId}. */
type Named = Map<string, { project: string; model: string; provider: string; first: number; next: number }>

export class SnapshotStore {
  readonly #db: Database<Buffer, string>
  /**
   * Part range of every series the stored manifest names, or null when unknown (no snapshot
   * read yet, or an unreadable one): the next write then scans for parts to remove.
   */
  #named: Named | null = null

  constructor(db: Database<Buffer, string>) {
    this.#db = db
  }

  /** Reads the manifest and every part it names, putting each series' part data back as `parts`. */
  read(): SnapshotRead {
    const manifest = decodeSnapshot(this.#db.get(KEY))
    if (!manifest.ok) return manifest
    let bytes = manifest.bytes
    const named: Named = new Map()
    for (const agg of manifest.payload.aggregators) {
      const series = seriesOf(agg.state)
      if (series === null) continue // a state this build does not read: the restore rejects it
      for (const s of series) {
        if (!rangeOk(s) || typeof agg.project !== 'string') return { ok: false, reason: `snapshot manifest of ${agg.model} has a malformed part range` }
        named.set(seriesId(agg.project, agg.model, s.provider), { project: agg.project, model: agg.model, provider: s.provider, first: s.first, next: s.next })
      }
    }
    // Known even if a part below is damaged: the rebuild's first snapshot removes them all.
    this.#named = named
    const payload = manifest.payload
    if (payload.dimsGen !== undefined) {
      const gen = payload.dimsGen
      let damaged: string | null = null
      const piece = (i: number): unknown[] => {
        const buf = this.#db.get(dimsKey(gen, i))
        const r = decode(buf, SEGMENT_MAGIC, `snapshot dimension piece ${gen}/${i}`)
        if (!r.ok || !Array.isArray(r.value)) throw new Error(r.ok ? `snapshot dimension piece ${gen}/${i} is not an array` : r.reason)
        bytes += buf!.length
        return r.value
      }
      try {
        payload.dimensions = unspill(payload.dimensions, piece) as Record<string, unknown> | undefined
      } catch (err) {
        damaged = (err as Error).message
      }
      if (damaged !== null) return { ok: false, reason: damaged }
      delete payload.dimsGen
    }
    // Every part is checked here (a damaged or missing one rejects the whole snapshot, as
    // before any state is built), but decoded only when its series restores: `parts` reads
    // them again then, and nothing keeps them after. Held all at once (hundreds of MB at 10M
    // events, until recovery ended) they cost a restart a full GC per 64 MB read, which V8
    // runs for that much new off-heap memory.
    for (const agg of manifest.payload.aggregators) {
      for (const s of seriesOf(agg.state) ?? []) {
        const what = (id: number) => `snapshot segment ${agg.project}/${agg.model}/${s.provider}/part ${id}`
        const key = (id: number) => partKey(agg.project, agg.model, s.provider, id)
        for (let id = s.first; id < s.next; id++) {
          // getBinaryFast: lmdb-js's reused buffer, enough for a check. Its `length` is set on the
          // object, past which the typed array goes on (old values): a view of exactly that length
          // (Node 24's subarray, and zlib, read the typed array's own length).
          const fast = this.#db.getBinaryFast(key(id))
          const buf = fast === undefined ? undefined : Buffer.from(fast.buffer, fast.byteOffset, fast.length)
          const r = check(buf, SEGMENT_MAGIC, what(id))
          if (!r.ok) return r
          bytes += buf!.length
        }
        const { first, next } = s
        Object.defineProperty(s, 'parts', {
          enumerable: true,
          configurable: true,
          get: () => {
            const parts: unknown[] = []
            for (let id = first; id < next; id++) {
              // Not getBinaryFast: the typed arrays read are views of the buffer read, and lmdb-js reuses that one.
              // Checked above; nothing writes a part the stored manifest names.
              const buf = this.#db.get(key(id))
              const part = buf === undefined ? { ok: false as const, reason: `no ${what(id)}` } : decodeBody(buf, what(id))
              if (!part.ok) throw new Error(part.reason)
              parts.push(part.value)
            }
            return parts
          }
        })
      }
    }
    return { ok: true, payload: manifest.payload, bytes }
  }

  /**
   * Stores each series' new parts (`write`; each `data()` called once, in order, a few
   * milliseconds of copying and encoding per event-loop turn), then, in one transaction, the
   * manifest (the payload without parts) and the removal of parts it no longer names.
   * Resolves after that commit with the bytes written.
   */
  async write(payload: SnapshotPayload): Promise<number> {
    // Parts the stored manifest names are never overwritten while it stands, or a crash could
    // leave it naming a mix of old and new parts. Only after a rejected snapshot (the rebuilt
    // state numbers parts from 0 again) can a new part collide: drop that manifest first.
    if (this.#collides(payload)) await this.#db.remove(KEY)
    let bytes = 0
    const puts: Array<Promise<boolean>> = []
    const named: Named = new Map()
    let turn = performance.now()
    const aggregators: SnapshotPayload['aggregators'] = []
    try {
      for (const agg of payload.aggregators) {
        const series = seriesOf(agg.state)
        if (series === null) {
          aggregators.push(agg)
          continue
        }
        const slim = []
        for (const s of series) {
          for (const part of s.write ?? []) {
            const buf = encode(SEGMENT_MAGIC, part.data(), SNAPSHOT_VERSION)
            bytes += buf.length
            puts.push(this.#db.put(partKey(agg.project, agg.model, s.provider, part.id), buf))
            if (performance.now() - turn >= TURN_BUDGET_MS) {
              await nextTurn()
              turn = performance.now()
            }
          }
          named.set(seriesId(agg.project, agg.model, s.provider), { project: agg.project, model: agg.model, provider: s.provider, first: s.first, next: s.next })
          const { write: _write, parts: _parts, ...header } = s
          slim.push(header)
        }
        aggregators.push({ project: agg.project, model: agg.model, state: { ...(agg.state as object), series: slim } })
      }
    } finally {
      // Every put settles before this write does (none left to reject unobserved).
      await Promise.allSettled(puts)
    }
    await Promise.all(puts)
    // The dictionaries' long arrays as pieces of a fresh generation (the stored manifest's
    // pieces are never overwritten while it stands), a slice of the write each.
    const pieces: unknown[][] = []
    const dimensions = payload.dimensions === undefined ? undefined : spill(payload.dimensions, pieces)
    const gen = pieces.length === 0 ? undefined : this.#freshGen()
    const piecePuts: Array<Promise<boolean>> = []
    try {
      for (let i = 0; i < pieces.length; i++) {
        const buf = encode(SEGMENT_MAGIC, pieces[i], SNAPSHOT_VERSION)
        bytes += buf.length
        piecePuts.push(this.#db.put(dimsKey(gen!, i), buf))
        if (performance.now() - turn >= TURN_BUDGET_MS) {
          await nextTurn()
          turn = performance.now()
        }
      }
    } finally {
      await Promise.allSettled(piecePuts)
    }
    await Promise.all(piecePuts)
    await nextTurn()
    const manifest = encodeSnapshot({ ...payload, aggregators, dimensions: dimensions as SnapshotPayload['dimensions'], ...(gen === undefined ? {} : { dimsGen: gen }) })
    const dead = this.#unnamed(named)
    for (const k of this.#db.getKeys({ start: ['dims'] as unknown as string, end: ['dims', Infinity] as unknown as string }) as Iterable<unknown>) {
      if (Array.isArray(k) && k[0] === 'dims' && k[1] !== gen) dead.push(k as unknown as string)
    }
    await this.#db.transaction(() => {
      for (const k of dead) this.#db.remove(k)
      this.#db.put(KEY, manifest)
    })
    this.#named = named
    return bytes + manifest.length
  }

  /** A generation number for dimension pieces that no stored key uses (the largest stored + 1). */
  #freshGen(): number {
    let max = 0
    for (const k of this.#db.getKeys({ start: ['dims'] as unknown as string, end: ['dims', Infinity] as unknown as string }) as Iterable<unknown>) {
      if (Array.isArray(k) && k[0] === 'dims' && typeof k[1] === 'number' && k[1] > max) max = k[1]
    }
    return max + 1
  }

  /** True when a part to write has a number the stored manifest names for its series. */
  #collides(payload: SnapshotPayload): boolean {
    if (this.#named === null || this.#named.size === 0) return false
    for (const agg of payload.aggregators) {
      for (const s of seriesOf(agg.state) ?? []) {
        const n = this.#named.get(seriesId(agg.project, agg.model, s.provider))
        if (n !== undefined && (s.write ?? []).some((p) => p.id >= n.first && p.id < n.next)) return true
      }
    }
    return false
  }

  /**
   * Keys of stored parts the new manifest (`named`) does not name. From the previous
   * manifest's ranges: a series' parts from its old range's start up to the later of that
   * range's end and the new range's start (numbers left by failed writes included), minus the
   * new range. When those ranges are unknown, by a scan of the keys (which also removes
   * version 2's per-day segments).
   */
  #unnamed(named: Named): string[] {
    const live = (project: string, model: string, provider: string, id: number) => {
      const n = named.get(seriesId(project, model, provider))
      return n !== undefined && id >= n.first && id < n.next
    }
    const dead: string[] = []
    if (this.#named === null) {
      for (const k of this.#db.getKeys({}) as Iterable<unknown>) {
        if (!Array.isArray(k) || !PART_PREFIXES.has(k[0] as string)) continue
        // Version 3's parts had no project ([part, model, provider, id]): never live now.
        const [prefix, project, model, provider, id] = k as [string, string, string, string, number]
        if (prefix !== 'part' || k.length !== 5 || !live(project, model, provider, id)) dead.push(k as unknown as string)
      }
      return dead
    }
    for (const [key, old] of this.#named) {
      const now = named.get(key)
      const end = Math.max(old.next, now?.first ?? 0)
      for (let id = old.first; id < end; id++) if (!live(old.project, old.model, old.provider, id)) dead.push(partKey(old.project, old.model, old.provider, id))
    }
    return dead
  }

  /** For tests and tools: store raw bytes as the snapshot. */
  async writeRaw(buf: Buffer): Promise<void> {
    await this.#db.put(KEY, buf)
  }
}

/**
 * Snapshots: the engine state at one log position, so a restart reads it and replays only the
 * log tail after it.
 *
 * Incremental: the raw rows of each (model, provider, UTC day) are a separate *segment*,
 * written only when that day changed; the *manifest* (key `snapshot`) names the log position,
 * every series' day list and the small states, and is written in the same LMDB transaction as
 * the segments, so a reader sees a whole snapshot or the previous one.
 *
 * Every stored value (binary): 4-byte magic (`LSNP` manifest, `LSEG` segment), u32 format
 * version, 32-byte SHA-256 of the payload, payload (v8 structured-clone serialisation, which
 * keeps typed arrays exact). A wrong magic, an unknown version, a checksum mismatch or a
 * missing segment makes the whole snapshot unusable and the caller rebuilds from the log: a
 * snapshot is never misread.
 */
import { createHash } from 'node:crypto'
import { serialize, deserialize } from 'node:v8'
import type { Database } from 'lmdb'

/** Bump when the payload's shape changes; older snapshots are then rebuilt from the log. */
export const SNAPSHOT_VERSION = 2
const MAGIC = Buffer.from('LSNP')
const SEGMENT_MAGIC = Buffer.from('LSEG')
const KEY = 'snapshot'
/** LMDB key of one segment. */
const segmentKey = (model: string, provider: string, day: number) => ['seg', model, provider, day] as unknown as string

/** What a snapshot holds. `seq`: every event with a smaller seq is included, none after. */
export interface SnapshotPayload {
  /** Next seq to replay from (= one past the last event included). */
  seq: number
  createdAt: number
  aggregators: Array<{ model: string; state: unknown }>
  alerts: unknown
}

export type SnapshotRead =
  | { ok: true; payload: SnapshotPayload; bytes: number }
  | { ok: false; reason: string }

function encode(magic: Buffer, value: unknown, version: number): Buffer {
  const body = serialize(value)
  const header = Buffer.alloc(8)
  magic.copy(header, 0)
  header.writeUInt32LE(version, 4)
  const sum = createHash('sha256').update(body).digest()
  return Buffer.concat([header, sum, body])
}

/** Checks magic, version and checksum; returns the decoded value or the reason it is unusable. */
function decode(buf: Buffer | undefined, magic: Buffer, what: string): { ok: true; value: unknown } | { ok: false; reason: string } {
  if (buf === undefined) return { ok: false, reason: `no ${what}` }
  if (buf.length < 40 || !buf.subarray(0, 4).equals(magic)) return { ok: false, reason: `not a ${what} (bad magic)` }
  const version = buf.readUInt32LE(4)
  if (version !== SNAPSHOT_VERSION) return { ok: false, reason: `${what} format version ${version} is not ${SNAPSHOT_VERSION}` }
  const body = buf.subarray(40)
  const sum = createHash('sha256').update(body).digest()
  if (!sum.equals(buf.subarray(8, 40))) return { ok: false, reason: `${what} checksum mismatch (damaged)` }
  try {
    return { ok: true, value: deserialize(body) }
  } catch (err) {
    return { ok: false, reason: `${what} payload unreadable: ${(err as Error).message}` }
  }
}

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

/** The per-series shape inside an aggregator state (see ModelAggregator's AggregatorState). */
interface SeriesState {
  provider: string
  days: number[]
  parts: Array<{ day: number; data: unknown }>
}
const seriesOf = (state: unknown): SeriesState[] | null => {
  const s = (state as { series?: unknown } | null)?.series
  return Array.isArray(s) ? (s as SeriesState[]) : null
}

export class SnapshotStore {
  readonly #db: Database<Buffer, string>
  constructor(db: Database<Buffer, string>) {
    this.#db = db
  }

  /** Reads the manifest and every segment it names, putting each day's rows back as `parts`. */
  read(): SnapshotRead {
    const manifest = decodeSnapshot(this.#db.get(KEY))
    if (!manifest.ok) return manifest
    let bytes = manifest.bytes
    for (const agg of manifest.payload.aggregators) {
      const series = seriesOf(agg.state)
      if (series === null) continue // a state this build does not read: the restore rejects it
      for (const s of series) {
        if (!Array.isArray(s.days)) return { ok: false, reason: `snapshot manifest of ${agg.model} lists no days` }
        s.parts = []
        for (const day of s.days) {
          const buf = this.#db.get(segmentKey(agg.model, s.provider, day))
          const seg = decode(buf, SEGMENT_MAGIC, `snapshot segment ${agg.model}/${s.provider}/day ${day}`)
          if (!seg.ok) return seg
          bytes += buf!.length
          s.parts.push({ day, data: seg.value })
        }
      }
    }
    return { ok: true, payload: manifest.payload, bytes }
  }

  /**
   * Writes the changed segments (each aggregator series' `parts`) and the manifest (the payload
   * without parts) in one transaction; resolves after the commit with the bytes written.
   */
  async write(payload: SnapshotPayload): Promise<number> {
    const segments: Array<[string, Buffer]> = []
    const aggregators = payload.aggregators.map((agg) => {
      const series = seriesOf(agg.state)
      if (series === null) return agg
      const slim = series.map((s) => {
        for (const p of s.parts) segments.push([segmentKey(agg.model, s.provider, p.day), encode(SEGMENT_MAGIC, p.data, SNAPSHOT_VERSION)])
        return { ...s, parts: [] }
      })
      return { model: agg.model, state: { ...(agg.state as object), series: slim } }
    })
    const manifest = encodeSnapshot({ ...payload, aggregators })
    let bytes = manifest.length
    for (const [, b] of segments) bytes += b.length
    await this.#db.transaction(() => {
      for (const [k, b] of segments) this.#db.put(k, b)
      this.#db.put(KEY, manifest)
    })
    return bytes
  }

  /** For tests and tools: store raw bytes as the snapshot. */
  async writeRaw(buf: Buffer): Promise<void> {
    await this.#db.put(KEY, buf)
  }
}

/**
 * Snapshots: the whole engine state at one log position, so a restart reads one value and
 * replays only the log tail after it.
 *
 * Layout of the stored value (binary): `LSNP` magic, u32 format version, 32-byte SHA-256 of
 * the payload, payload (v8 structured-clone serialisation, which keeps typed arrays exact).
 * A value with a wrong magic, an unknown version or a checksum mismatch is reported as
 * unusable and the caller rebuilds from the log: a snapshot is never misread.
 */
import { createHash } from 'node:crypto'
import { serialize, deserialize } from 'node:v8'
import type { Database } from 'lmdb'

/** Bump when the payload's shape changes; older snapshots are then rebuilt from the log. */
export const SNAPSHOT_VERSION = 1
const MAGIC = Buffer.from('LSNP')
const KEY = 'snapshot'

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

/** Encodes a payload with magic, version and checksum. */
export function encodeSnapshot(payload: SnapshotPayload, version = SNAPSHOT_VERSION): Buffer {
  const body = serialize(payload)
  const header = Buffer.alloc(8)
  MAGIC.copy(header, 0)
  header.writeUInt32LE(version, 4)
  const sum = createHash('sha256').update(body).digest()
  return Buffer.concat([header, sum, body])
}

/** Decodes and checks a stored snapshot; never throws. */
export function decodeSnapshot(buf: Buffer | undefined): SnapshotRead {
  if (buf === undefined) return { ok: false, reason: 'no snapshot' }
  if (buf.length < 40 || !buf.subarray(0, 4).equals(MAGIC)) return { ok: false, reason: 'not a snapshot (bad magic)' }
  const version = buf.readUInt32LE(4)
  if (version !== SNAPSHOT_VERSION) return { ok: false, reason: `snapshot format version ${version} is not ${SNAPSHOT_VERSION}` }
  const body = buf.subarray(40)
  const sum = createHash('sha256').update(body).digest()
  if (!sum.equals(buf.subarray(8, 40))) return { ok: false, reason: 'snapshot checksum mismatch (damaged)' }
  try {
    const payload = deserialize(body) as SnapshotPayload
    if (typeof payload !== 'object' || payload === null || !Number.isSafeInteger(payload.seq) || !Array.isArray(payload.aggregators)) {
      return { ok: false, reason: 'snapshot payload malformed' }
    }
    return { ok: true, payload, bytes: buf.length }
  } catch (err) {
    return { ok: false, reason: `snapshot payload unreadable: ${(err as Error).message}` }
  }
}

export class SnapshotStore {
  readonly #db: Database<Buffer, string>
  constructor(db: Database<Buffer, string>) {
    this.#db = db
  }

  read(): SnapshotRead {
    return decodeSnapshot(this.#db.get(KEY))
  }

  /** Writes atomically (one put); resolves after commit with the size written. */
  async write(payload: SnapshotPayload): Promise<number> {
    const buf = encodeSnapshot(payload)
    await this.#db.put(KEY, buf)
    return buf.length
  }

  /** For tests and tools: store raw bytes as the snapshot. */
  async writeRaw(buf: Buffer): Promise<void> {
    await this.#db.put(KEY, buf)
  }
}

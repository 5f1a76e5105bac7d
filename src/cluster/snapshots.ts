/**
 * Snapshots of cluster partitions (DESIGN §9): the newest state of each partition a node owned,
 * kept in two places — the node's own LMDB (`meta` db, key `cluster.p<N>`: a restart of the same
 * node needs no network read) and the JetStream object store (`${name}-snapshots`, object `p<N>`:
 * whichever node takes the partition over next starts from it). A read picks the newer of the
 * two (the higher `seq`).
 *
 * A partition snapshot is always a full one (topology.snapshot(now, true)) with every part's
 * data inline, encoded as ONE buffer by encodeSnapshot (magic, format version, CRC-32 and length, v8
 * serialisation): unlike the single node's SnapshotStore, no delta parts spread over keys, since
 * an object store object is written whole. `payload.seq` means what it means on the single node:
 * the next stream sequence to replay (every event of the partition with a smaller seq is in it).
 * The payload also names the cluster and partition it belongs to; a snapshot of another one, a
 * damaged or unreadable one, is skipped with a warning, never misread.
 *
 * `gen` counts the deletes (DELETE /events) applied to the partition's state since it began; a
 * read orders snapshots by (gen, seq), so a node's own older local copy of the same seq never
 * wins over a newer owner's snapshot written without the deleted rows. After a delete, nodes drop
 * local copies of partitions they do not own (pruneLocal): no copy of deleted rows stays there.
 */
import type { Database } from 'lmdb'
import type { Objm, ObjectStore } from '@nats-io/obj'
import { decodeSnapshot, encodeSnapshot, type SnapshotPayload } from '../store/snapshots.js'
import type { ClusterNames } from './names.js'
import type { Log } from '../log.js'

/** Where a read snapshot came from. */
export type PartitionSnapshotSource = 'object-store' | 'local'

export interface PartitionSnapshotRead {
  payload: SnapshotPayload
  source: PartitionSnapshotSource
  /** Deletes applied to this state (0 for a snapshot written before they existed). */
  gen: number
  /** Encoded size. */
  bytes: number
}

export interface PartitionSnapshotWrite {
  /** Encoded size. */
  bytes: number
  /** Stored in the node's LMDB (false when no local db, or the put failed). */
  local: boolean
  /** Stored in the object store (false when it already held a newer one: see write). */
  objectStore: boolean
}

/** What a partition snapshot adds to the payload: whose it is. */
interface Owner {
  cluster?: { name: string; partition: number; gen?: number }
}

export interface PartitionSnapshotsOptions {
  objm: Objm
  names: ClusterNames
  /** The node's LMDB `meta` db (binary values); null = object store only. */
  db: Database<Buffer, string> | null
  logger: Log
}

/** Work per event-loop turn while parts are copied out of the aggregators (see fullPayload). */
const TURN_BUDGET_MS = 3
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

/** Object store object of partition `p`. */
export const objectName = (p: number): string => `p${p}`
/** LMDB key (meta db) of partition `p`'s local copy. */
export const localKey = (p: number): string => `cluster.p${p}`

interface PartWrite {
  id: number
  data: () => unknown
}
interface SeriesWrite {
  write?: PartWrite[]
  [k: string]: unknown
}

/**
 * A topology snapshot with every series' parts inline (`parts`, in part order, as
 * SnapshotStore.read gives them back) instead of `write` callbacks: what a ModelAggregator
 * restores from. Meant for a full snapshot (topology.snapshot(now, true)), whose `write` lists
 * cover each series' whole part range. Parts are copied a few milliseconds per event-loop turn.
 */
export async function fullPayload(payload: SnapshotPayload): Promise<SnapshotPayload> {
  let turn = performance.now()
  const aggregators: SnapshotPayload['aggregators'] = []
  for (const agg of payload.aggregators) {
    const state = agg.state as { series?: SeriesWrite[] } | null
    if (state === null || typeof state !== 'object' || !Array.isArray(state.series)) {
      aggregators.push(agg)
      continue
    }
    const series = []
    for (const s of state.series) {
      const { write, ...header } = s
      const parts: unknown[] = []
      for (const part of write ?? []) {
        parts.push(part.data())
        if (performance.now() - turn >= TURN_BUDGET_MS) {
          await nextTurn()
          turn = performance.now()
        }
      }
      series.push({ ...header, parts })
    }
    aggregators.push({ project: agg.project, model: agg.model, state: { ...state, series } })
  }
  return { ...payload, aggregators }
}

export class PartitionSnapshots {
  readonly #opts: PartitionSnapshotsOptions
  #store: Promise<ObjectStore> | null = null

  constructor(opts: PartitionSnapshotsOptions) {
    this.#opts = opts
  }

  /** The snapshot object store, opened once (again after a failed open). */
  #bucket(): Promise<ObjectStore> {
    this.#store ??= this.#opts.objm.open(this.#opts.names.snapshotBucket).catch((err: unknown) => {
      this.#store = null
      throw err
    })
    return this.#store
  }

  /** Decodes a stored snapshot of partition `p`; null (with a warning) when unusable. */
  #decode(p: number, buf: Buffer | undefined, source: PartitionSnapshotSource): PartitionSnapshotRead | null {
    if (buf === undefined) return null
    const r = decodeSnapshot(buf)
    if (!r.ok) {
      this.#opts.logger.warn({ partition: p, source, reason: r.reason }, 'partition snapshot unusable: skipped')
      return null
    }
    const owner = (r.payload as SnapshotPayload & Owner).cluster
    if (owner !== undefined && (owner.name !== this.#opts.names.name || owner.partition !== p)) {
      this.#opts.logger.warn({ partition: p, source, owner }, 'partition snapshot of another cluster or partition: skipped')
      return null
    }
    const gen = Number.isSafeInteger(owner?.gen) ? owner!.gen! : 0
    return { payload: r.payload, source, bytes: r.bytes, gen }
  }

  /** The local copy of partition `p`, or null. */
  readLocal(p: number): PartitionSnapshotRead | null {
    const db = this.#opts.db
    if (db === null) return null
    return this.#decode(p, db.get(localKey(p)), 'local')
  }

  /**
   * The newest usable snapshot of partition `p`, by (gen, seq): the object store's when it is
   * newer than the local copy (its gen and seq are in the object's metadata, so a local copy as
   * new is read without downloading), else the local one; null when neither exists. A local copy
   * older than the object store's is dropped. An unreachable object store falls back to the
   * local copy with a warning.
   */
  async read(p: number): Promise<PartitionSnapshotRead | null> {
    const local = this.readLocal(p)
    const localSeq = local?.payload.seq ?? -1
    const localGen = local?.gen ?? -1
    try {
      const os = await this.#bucket()
      const info = await os.info(objectName(p))
      if (info === null || info.deleted) return local
      const metaSeq = Number(info.metadata?.seq)
      const metaGen = Number(info.metadata?.gen ?? 0)
      if (Number.isSafeInteger(metaSeq) && Number.isSafeInteger(metaGen) && newer(localGen, localSeq, metaGen, metaSeq) >= 0) return local
      const blob = await os.getBlob(objectName(p))
      if (blob === null) return local
      const remote = this.#decode(p, Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength), 'object-store')
      if (remote === null || newer(remote.gen, remote.payload.seq, localGen, localSeq) <= 0) return local
      // An older local copy may hold rows a delete removed since: not kept.
      if (local !== null) await this.#dropLocal(p)
      return remote
    } catch (err) {
      this.#opts.logger.warn({ partition: p, err: (err as Error).message }, 'partition snapshot: object store unreadable, using the local copy')
      return local
    }
  }

  /**
   * Stores a FULL snapshot of partition `p` (see fullPayload: parts inline) locally and in the
   * object store, both at once. The object store keeps the newer one: when it already holds a
   * higher seq (a newer owner wrote it), it is left alone. Rejects when either store failed
   * (after both settled; the other may have succeeded).
   */
  async write(p: number, payload: SnapshotPayload, gen = 0): Promise<PartitionSnapshotWrite> {
    const owned: SnapshotPayload & Owner = { ...payload, cluster: { name: this.#opts.names.name, partition: p, gen } }
    const buf = encodeSnapshot(owned)
    const db = this.#opts.db
    const local = db === null ? Promise.resolve(false) : db.put(localKey(p), buf)
    const remote = (async () => {
      const os = await this.#bucket()
      const info = await os.info(objectName(p))
      const storedSeq = Number(info?.deleted === false ? info.metadata?.seq : undefined)
      const storedGen = Number(info?.deleted === false ? (info.metadata?.gen ?? 0) : undefined)
      if (Number.isSafeInteger(storedSeq) && Number.isSafeInteger(storedGen) && newer(storedGen, storedSeq, gen, payload.seq) > 0) {
        this.#opts.logger.warn({ partition: p, seq: payload.seq, gen, stored: storedSeq, storedGen }, 'partition snapshot: the object store holds a newer one; not replaced')
        return false
      }
      await os.putBlob({ name: objectName(p), metadata: { seq: String(payload.seq), gen: String(gen), createdAt: String(payload.createdAt) } }, buf)
      return true
    })()
    const [l, r] = await Promise.allSettled([local, remote])
    const failed: string[] = []
    if (l.status === 'rejected') failed.push(`local: ${(l.reason as Error).message}`)
    if (r.status === 'rejected') failed.push(`object store: ${(r.reason as Error).message}`)
    if (failed.length > 0) throw new Error(`partition ${p} snapshot not stored (${failed.join('; ')})`)
    return { bytes: buf.length, local: l.status === 'fulfilled' && l.value, objectStore: r.status === 'fulfilled' && r.value }
  }

  /** Removes this node's local copy of partition `p` (a cache: the object store keeps the newest). */
  async #dropLocal(p: number): Promise<boolean> {
    const db = this.#opts.db
    if (db === null) return false
    return db.remove(localKey(p))
  }

  /**
   * Removes the local copies of the partitions in `partitions` (after a delete: copies of
   * partitions this node does not own may hold deleted rows). Returns how many went.
   */
  async pruneLocal(partitions: Iterable<number>): Promise<number> {
    let n = 0
    for (const p of partitions) if (this.readLocal(p) !== null && (await this.#dropLocal(p))) n++
    return n
  }

  /**
   * Removes every local copy of the partitions in `partitions` that is older, by (gen, seq), than
   * the object store's (a node that was down during a delete); copies the object store cannot
   * be asked about are kept. Returns how many went.
   */
  async pruneStale(partitions: Iterable<number>): Promise<number> {
    let n = 0
    const os = await this.#bucket()
    for (const p of partitions) {
      const local = this.readLocal(p)
      if (local === null) continue
      const info = await os.info(objectName(p))
      if (info === null || info.deleted) continue
      const metaSeq = Number(info.metadata?.seq)
      const metaGen = Number(info.metadata?.gen ?? 0)
      if (!Number.isSafeInteger(metaSeq) || !Number.isSafeInteger(metaGen)) continue
      if (newer(metaGen, metaSeq, local.gen, local.payload.seq) > 0 && (await this.#dropLocal(p))) n++
    }
    return n
  }
}

/** > 0 when (genA, seqA) is newer than (genB, seqB), < 0 when older, 0 when the same. */
function newer(genA: number, seqA: number, genB: number, seqB: number): number {
  return genA !== genB ? genA - genB : seqA - seqB
}

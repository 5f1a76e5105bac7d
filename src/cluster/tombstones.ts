/**
 * Delete tombstones of cluster mode (DESIGN §7, §9): what `DELETE /events` must remove, kept in
 * the KV bucket `${name}-forget` from before anything is removed until every partition's
 * snapshot is rewritten without it and the stream's messages are gone.
 *
 *   s.<id>.<p>.<k>  chunk k of partition p's seqs: `{"v":1,"d":[first, delta, delta…]}`
 *                   (ascending; at most CHUNK_SEQS seqs, a few tens of KB: far below NATS's
 *                   1 MB payload and the bucket's value limit)
 *   d.<id>          the header, written after every chunk (its presence commits the delete):
 *                   `{v, id, project, node, started_at, up_to, matched, parts: {p: chunks}, fh}`
 *
 * Only stream sequences, the project id and a hash of the filter (`fh`) are kept: never a
 * filter's or an event's values. A partition owner reads the tombstones of its partition when it
 * takes the partition over (and re-applies them: forgetting a seq twice is a no-op), so an owner
 * change in the middle of a delete never loses it. Chunks without a header are a delete that
 * died before committing (nothing was removed): the janitor removes them.
 */
import type { KV, Kvm } from '@nats-io/kv'
import { leaderGet, leaderKeys, purgeKeys } from './kv-leader.js'

/** Seqs per chunk key (JSON of ascending deltas: ≤ ~10 bytes a seq, so ≤ ~100 KB a chunk). */
export const CHUNK_SEQS = 10_000

/** A committed delete. */
export interface ForgetHeader {
  v: 1
  id: string
  project: string
  /** The node that started it (ids are `<node>-<random>`, so orphan chunks name their node too). */
  node: string
  started_at: number
  /** Every matched event has seq ≤ this (the stream's last seq when the delete started). */
  up_to: number
  matched: number
  /** Chunks per partition (partitions with no match are absent). */
  parts: Record<string, number>
  /** A hash of the filter and range (for progress and logs; never the values). */
  fh: string
}

/** One delete's seqs in one partition. */
export interface PartitionForget {
  id: string
  project: string
  seqs: number[]
}

const HEADER = 'd.'
const CHUNK = 's.'
const headerKey = (id: string) => `${HEADER}${id}`
const chunkKey = (id: string, p: number, k: number) => `${CHUNK}${id}.${p}.${k}`

/** Ascending seqs as `[first, delta…]`. */
export function encodeSeqs(sorted: readonly number[]): number[] {
  const out: number[] = new Array(sorted.length)
  let prev = 0
  for (let i = 0; i < sorted.length; i++) {
    out[i] = sorted[i]! - prev
    prev = sorted[i]!
  }
  return out
}

/** {@link encodeSeqs} undone; throws on anything but non-negative integers. */
export function decodeSeqs(d: unknown): number[] {
  if (!Array.isArray(d)) throw new TypeError('tombstone chunk: d must be an array')
  const out: number[] = new Array(d.length)
  let prev = 0
  for (let i = 0; i < d.length; i++) {
    const x = d[i]
    if (!Number.isSafeInteger(x) || (x as number) < 0) throw new TypeError('tombstone chunk: a delta is not a non-negative integer')
    prev += x as number
    out[i] = prev
  }
  return out
}

function isHeader(x: unknown): x is ForgetHeader {
  const h = x as ForgetHeader
  return typeof h === 'object' && h !== null && h.v === 1 && typeof h.id === 'string' && typeof h.project === 'string' && typeof h.parts === 'object' && h.parts !== null
}

/** The tombstone bucket. Every method may reject when NATS is away (callers retry or answer 503). */
export class ForgetTombstones {
  readonly #kvm: Kvm
  readonly #bucket: string
  #kv: Promise<KV> | null = null

  constructor(kvm: Kvm, bucket: string) {
    this.#kvm = kvm
    this.#bucket = bucket
  }

  #open(): Promise<KV> {
    this.#kv ??= this.#kvm.open(this.#bucket).catch((err: unknown) => {
      this.#kv = null
      throw err
    })
    return this.#kv
  }

  /**
   * Writes a delete's seqs (per partition, chunked), then its header: once this resolves the
   * delete is durable. `seqs` need not be sorted. Returns the header and its revision.
   */
  async write(h: Omit<ForgetHeader, 'v' | 'parts' | 'matched'>, seqs: ReadonlyMap<number, readonly number[]>): Promise<{ header: ForgetHeader; rev: number }> {
    const kv = await this.#open()
    const parts: Record<string, number> = {}
    let matched = 0
    const writes: Array<() => Promise<unknown>> = []
    for (const [p, list] of seqs) {
      if (list.length === 0) continue
      const sorted = [...new Set(list)].sort((a, b) => a - b)
      matched += sorted.length
      const chunks = Math.ceil(sorted.length / CHUNK_SEQS)
      parts[String(p)] = chunks
      for (let k = 0; k < chunks; k++) {
        const body = JSON.stringify({ v: 1, d: encodeSeqs(sorted.slice(k * CHUNK_SEQS, (k + 1) * CHUNK_SEQS)) })
        writes.push(() => kv.put(chunkKey(h.id, p, k), body))
      }
    }
    await bounded(writes, 8)
    const header: ForgetHeader = { v: 1, ...h, matched, parts }
    const rev = await kv.put(headerKey(h.id), JSON.stringify(header))
    return { header, rev }
  }

  /**
   * Rewrites the header as it is (a heartbeat: its revision moves) if it is still at `rev`;
   * returns the new revision. Compare-and-set, so a beat never brings back a header that was
   * removed (a delete completed meanwhile) and throws when the header is gone or moved.
   */
  async beat(header: ForgetHeader, rev: number): Promise<number> {
    const kv = await this.#open()
    return kv.update(headerKey(header.id), JSON.stringify(header), rev)
  }

  /**
   * Every committed delete with its header's revision. Listed and read from the bucket's leader
   * (cluster/kv-leader.ts): a partial list here would let a new owner serve deleted rows.
   */
  async headers(): Promise<Array<{ header: ForgetHeader; rev: number }>> {
    const kv = await this.#open()
    const read = await Promise.all((await leaderKeys(kv, `${HEADER}*`)).map((key) => leaderGet(kv, key)))
    const out: Array<{ header: ForgetHeader; rev: number }> = []
    for (const e of read) {
      if (e === null) continue
      let x: unknown
      try {
        x = e.json()
      } catch {
        continue
      }
      if (isHeader(x)) out.push({ header: x, rev: e.revision })
    }
    return out
  }

  /** One delete's header, or null when it is not (or no longer) there. */
  async header(id: string): Promise<ForgetHeader | null> {
    const kv = await this.#open()
    const e = await leaderGet(kv, headerKey(id))
    if (e === null) return null
    const x: unknown = e.json()
    return isHeader(x) ? x : null
  }

  /** The seqs of partition `p` in delete `h`, ascending (a missing chunk: an error, never a silent gap). */
  async seqs(h: ForgetHeader, p: number): Promise<number[]> {
    const kv = await this.#open()
    const chunks = h.parts[String(p)] ?? 0
    const lists = await Promise.all(
      Array.from({ length: chunks }, async (_, k) => {
        const e = await leaderGet(kv, chunkKey(h.id, p, k))
        if (e === null) throw new MissingChunk(`tombstone ${h.id}: chunk ${k} of partition ${p} is missing`)
        return decodeSeqs(e.json<{ d?: unknown }>().d)
      })
    )
    return lists.flat()
  }

  /** Every committed delete's seqs in partition `p` (what a new owner re-applies before serving). */
  async pendingFor(p: number): Promise<PartitionForget[]> {
    const out: PartitionForget[] = []
    for (const { header } of await this.headers()) {
      if ((header.parts[String(p)] ?? 0) === 0) continue
      let seqs: number[]
      try {
        seqs = await this.seqs(header, p)
      } catch (err) {
        // Chunks are written before their header and removed after it, so a header whose chunks
        // are gone belongs to a delete that completed (a stale write brought the header back):
        // nothing to re-apply, and a takeover must not wait on it.
        if (err instanceof MissingChunk) continue
        throw err
      }
      out.push({ id: header.id, project: header.project, seqs })
    }
    return out
  }

  /**
   * Removes a delete: the header first (from then on nobody re-applies it), then its chunks
   * (orphans, should this stop midway). Purged, not deleted: no marker is left to list forever.
   */
  async remove(h: ForgetHeader): Promise<void> {
    const kv = await this.#open()
    await purgeKeys(kv, headerKey(h.id))
    await purgeKeys(kv, `${CHUNK}${h.id}.>`)
  }

  /** Ids of chunk sets with no committed header (a delete that died before committing). */
  async orphans(): Promise<string[]> {
    const kv = await this.#open()
    const ids = new Set<string>()
    for (const key of await leaderKeys(kv, `${CHUNK}>`)) ids.add(key.slice(CHUNK.length, key.indexOf('.', CHUNK.length)))
    const committed = new Set((await this.headers()).map((x) => x.header.id))
    return [...ids].filter((id) => !committed.has(id))
  }

  /** Removes every chunk of delete `id` (an orphan: see orphans()); returns how many messages went. */
  async removeOrphan(id: string): Promise<number> {
    return purgeKeys(await this.#open(), `${CHUNK}${id}.>`)
  }
}

/** A delete record's chunk is gone: the delete was completed and its record removed. */
class MissingChunk extends Error {}

/** Runs `tasks` with at most `limit` in flight; rejects with the first failure (after the others settle). */
export async function bounded<T>(tasks: ReadonlyArray<() => Promise<T>>, limit: number): Promise<T[]> {
  const out: T[] = new Array(tasks.length)
  let next = 0
  let failed: { err: unknown } | null = null
  await Promise.all(
    Array.from({ length: Math.min(limit, tasks.length) }, async () => {
      while (failed === null && next < tasks.length) {
        const i = next++
        try {
          out[i] = await tasks[i]!()
        } catch (err) {
          failed ??= { err }
        }
      }
    })
  )
  if (failed !== null) throw (failed as { err: unknown }).err
  return out
}

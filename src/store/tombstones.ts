/**
 * Tombstones of event deletes (DELETE /events): the durable half of the delete protocol
 * (src/forget.ts). One record per chunk of a delete — `{id, project, chunk, seqs}`, log
 * positions only, never an event's values nor the delete's filters — committed before the
 * chunk's events are removed from memory, and removed only once no copy of those events is
 * left: memory, the stored snapshot and the log records (then the database's free pages).
 *
 * So at any moment a crash leaves either no tombstone (the delete's chunks were all finished,
 * or none had started) or the tombstones of chunks whose events must not come back: the next
 * start excludes their seqs from the log tail it replays, removes them from the restored
 * snapshot's rows, and finishes the delete (engine.ts, recover).
 *
 * Stored in the data dir's LMDB environment, database `forget`, key `[delete id, chunk]`.
 */
import type { Database, RootDatabase } from 'lmdb'

/** One chunk of a delete as stored. */
export interface ForgetTombstone {
  /** The delete (`del_…`), shared by its chunks. */
  id: string
  project: string
  /** 0, 1, … in the order the delete found them. */
  chunk: number
  /** Log positions of the chunk's events, ascending. */
  seqs: number[]
  /** Epoch ms the delete started (for the status route after a restart). */
  startedAt: number
}

interface StoredTombstone {
  v: 1
  project: string
  seqs: number[]
  startedAt: number
}

type Key = [string, number]

/** Database name inside the environment (its own, so nothing else's keys mix with these). */
const DB_NAME = 'forget'

export class ForgetTombstones {
  readonly #db: Database<StoredTombstone, Key>

  constructor(db: Database<StoredTombstone, Key>) {
    this.#db = db
  }

  /** Opens (creating if needed) the tombstone database of the environment. */
  static open(root: RootDatabase): ForgetTombstones {
    return new ForgetTombstones(root.openDB<StoredTombstone, Key>(DB_NAME, {}))
  }

  /** Commits one chunk's tombstone; resolves after the commit (the chunk may then be removed from memory). */
  async put(t: ForgetTombstone): Promise<void> {
    const value: StoredTombstone = { v: 1, project: t.project, seqs: t.seqs, startedAt: t.startedAt }
    const ok = await this.#db.put([t.id, t.chunk], value)
    if (!ok) throw new Error(`tombstone ${t.id}/${t.chunk} was not written`)
  }

  /**
   * Every stored tombstone, by delete id then chunk. A record of an unknown version stops the
   * start: skipping it could bring deleted events back.
   */
  list(): ForgetTombstone[] {
    const out: ForgetTombstone[] = []
    for (const { key, value } of this.#db.getRange({})) {
      const [id, chunk] = key
      if (value === null || typeof value !== 'object' || value.v !== 1 || !Array.isArray(value.seqs)) {
        throw new Error(`delete tombstone ${String(id)}/${String(chunk)} has a format this release cannot read`)
      }
      out.push({ id, chunk, project: value.project, seqs: value.seqs, startedAt: value.startedAt })
    }
    return out
  }

  /** Whether any tombstone is stored. */
  get empty(): boolean {
    for (const _ of this.#db.getKeys({ limit: 1 })) return false
    return true
  }

  /** Removes every chunk of delete `id` in one transaction; resolves after the commit. Idempotent. */
  async remove(id: string): Promise<void> {
    const keys: Key[] = []
    for (const key of this.#db.getKeys({ start: [id, -Infinity], end: [id, Infinity] })) keys.push(key)
    if (keys.length === 0) return
    await this.#db.transaction(() => {
      for (const key of keys) this.#db.removeSync(key)
    })
  }
}

/** The name of one chunk of a delete (snapshot manifests list the chunks whose forget they hold). */
export const chunkKey = (t: Pick<ForgetTombstone, 'id' | 'chunk'>): string => `${t.id}/${t.chunk}`

/** A delete's tombstones grouped: what recovery resumes. */
export interface PendingForget {
  id: string
  project: string
  startedAt: number
  /** Every chunk's seqs, in chunk order. */
  seqs: number[]
  /** The chunks themselves. */
  chunks: ForgetTombstone[]
}

/** Groups tombstones (as {@link ForgetTombstones.list} returns them) by delete. */
export function pendingForgets(tombstones: readonly ForgetTombstone[]): PendingForget[] {
  const by = new Map<string, PendingForget>()
  for (const t of tombstones) {
    let p = by.get(t.id)
    if (p === undefined) {
      p = { id: t.id, project: t.project, startedAt: t.startedAt, seqs: [], chunks: [] }
      by.set(t.id, p)
    }
    for (const s of t.seqs) p.seqs.push(s)
    p.chunks.push(t)
  }
  return [...by.values()]
}

/**
 * Overwrites the free pages of the LMDB file, so that what a delete removed (DELETE /events,
 * src/forget.ts) is gone from the disk, not only from every answer.
 *
 * Why it is needed: LMDB never writes over a page in place. A rewritten record (a log record
 * with holes, a snapshot part) goes to other pages, and the old ones join the free list with
 * their bytes unchanged until LMDB hands them out again — so a deleted user's id stays readable
 * in `data.mdb` for as long as those pages stay free.
 *
 * How: LMDB gives free pages out before it grows the file, and writes every page it hands out
 * whole (lmdb-js leaves `noMemInit` off: the unused part of a page is zeroed). So filler values
 * written into a scratch database take every free page old enough to reuse (freed before the
 * second-to-last commit, and by no transaction a reader still holds) until the file has to
 * grow; then the filler is removed, and the pages it frees hold zeros. A few MB per commit,
 * each commit awaited, so ingestion keeps going between them.
 *
 * A read transaction held open across the scrub (a long export reading the log) keeps the pages
 * freed after it began from being reused; the scrub then ends when the file grows, and those
 * pages are overwritten by a later scrub.
 */
import type { RootDatabase } from 'lmdb'

/** Scratch database of the environment, empty outside a scrub. */
const DB_NAME = 'scrub'

export interface ScrubResult {
  /** Filler values written (each about a quarter page). */
  values: number
  /** Bytes of filler written. */
  bytes: number
  /** Commits it took. */
  rounds: number
  ms: number
}

interface EnvInfo {
  lastPageNumber: number
  lastTxnId: number
}

/** LMDB's `mdb_env_info`, which lmdb-js exposes on its environment without typing it (see db.ts). */
function envInfo(root: RootDatabase): EnvInfo | null {
  const env = (root as unknown as { env?: { info?: () => Partial<EnvInfo> } }).env
  const info = typeof env?.info === 'function' ? env.info() : undefined
  if (typeof info?.lastPageNumber !== 'number' || typeof info.lastTxnId !== 'number') return null
  return { lastPageNumber: info.lastPageNumber, lastTxnId: info.lastTxnId }
}

/**
 * Fills every reusable free page of `root`'s file with filler, then removes the filler.
 * `valuesPerRound` filler values (1,000 bytes each) go in one commit. Resolves with what it
 * wrote. Safe to run beside other writers (their pages come from the same free list).
 */
export async function scrubFreePages(root: RootDatabase, opts: { valuesPerRound?: number } = {}): Promise<ScrubResult> {
  const t0 = performance.now()
  const start = envInfo(root)
  if (start === null) throw new Error('this lmdb release does not expose env.info(): free pages cannot be scrubbed')
  const scratch = root.openDB<Buffer, number>(DB_NAME, { encoding: 'binary' })
  const perRound = opts.valuesPerRound ?? 1024
  const filler = Buffer.alloc(1000)
  // Never more filler than the file holds: a bound for a free list that keeps refilling.
  const maxValues = Math.ceil(((start.lastPageNumber + 1) * 4096) / 1000) * 2 + perRound * 4
  let key = 0
  let rounds = 0
  // Filler left by a scrub a crash interrupted: removed at the end like this one's.
  for (const k of scratch.getKeys({ reverse: true, limit: 1 })) key = k + 1
  while (key < maxValues) {
    const before = envInfo(root)!.lastPageNumber
    let last: Promise<boolean> | undefined
    for (let i = 0; i < perRound; i++) last = scratch.put(key++, filler)
    await last
    rounds++
    const now = envInfo(root)!
    // The file grew while filler went in: no reusable free page was left. Pages freed up to
    // the start are reusable two commits later (LMDB keeps the last commit's pages).
    if (now.lastPageNumber > before && now.lastTxnId > start.lastTxnId + 2) break
  }
  await scratch.clearAsync()
  return { values: key, bytes: key * filler.length, rounds, ms: Math.round(performance.now() - t0) }
}

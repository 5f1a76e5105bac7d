/**
 * `POST /prices/reprice` on a cluster (DESIGN §8, §9; ISSUE14 "Cluster"), run by the node that
 * received it (the coordinator):
 *
 *   dry run   every partition owner, caught up to the stream's last seq, prices its events in
 *             range as they are counted now and as a record at the book's revision R would
 *             (cluster/partition.ts repriceDiff); the coordinator sums the rows. Nothing changes.
 *   apply     1. R = this node's book revision; the record {rev: R} is put in the price log
 *                (cluster/prices.ts): from then on it is durable, and every node learns of it.
 *             2. every partition owner applies it at a cut (partition.ts): its own change list,
 *                topology.reprice, its book takes the record; a partition that changes owner
 *                meanwhile is applied by the next owner when it takes over (the record is in the
 *                log, its snapshot does not list it).
 *             3. the coordinator asks every partition for its applied rows (waiting for the
 *                apply), retrying a partition without a live owner until the deadline, and
 *                answers the sum. A coordinator that dies after step 1 leaves a complete reprice
 *                behind: the owners apply it without being asked.
 *
 * Readers never see a mix: every partial answer names the partition's reprice epoch and the
 * asking node merges only answers of one epoch (cluster/engine.ts).
 *
 * A scan that changes nothing records nothing (as the single node): the coordinator runs the
 * dry run first and answers its diff when no partition would change an event.
 */
import { llmsError } from '../errors.js'
import { diffOf, type RepriceOut } from '../prices.js'
import type { RepriceRowNanos } from './partition.js'

/** Owner-side requests of a reprice (answered by ClusterEngine). */
export type RepriceRequest =
  /** The partition's diff of a reprice at `rev` over `scope`, changing nothing. */
  | { kind: 'reprice-dry'; scope: { project: string; start: number; end: number; model: string | null }; rev: number }
  /** The partition's rows of reprice `id` once it applied it. */
  | { kind: 'reprice-wait'; id: string }

/** One partition's part of a reprice. */
export interface RepricePart {
  rows: RepriceRowNanos[]
  changed: number
}

/** Checks a part from the wire. */
export function partOf(x: unknown, p: number): RepricePart {
  const r = x as RepricePart
  if (typeof r !== 'object' || r === null || !Array.isArray(r.rows) || typeof r.changed !== 'number') throw llmsError('LLMS_ERR_INTERNAL', `partition ${p}: a reprice answer without rows`)
  return r
}

/** The answer of a reprice from every partition's part (the single node's diff shape and order). */
export function sumParts(parts: readonly RepricePart[], dryRun: boolean, id: string | null): RepriceOut {
  const rows = new Map<string, RepriceRowNanos>()
  let changed = 0
  for (const part of parts) {
    changed += part.changed
    for (const r of part.rows) {
      const key = `${r.provider}\u0000${r.model}`
      const have = rows.get(key)
      if (have === undefined) rows.set(key, { ...r })
      else {
        have.requests += r.requests
        have.before += r.before
        have.after += r.after
      }
    }
  }
  return diffOf({ rows, changed }, dryRun, id)
}

/**
 * Reads of a KV bucket answered by its stream's leader, for the keys whose answer must not be
 * stale or partial (the delete tombstones, cluster/tombstones.ts).
 *
 * Why not `kv.keys()` and `kv.get()`: `keys()` lists through an ordered push consumer and stops
 * when the consumer reports nothing pending — a count that NATS servers have got wrong (it is
 * computed on whichever replica hosts the consumer; nats-server issues 2611, 3148 and 4824, and
 * nats.py 995 for a three-node cluster). A doubled test suite saw it list no key while a delete's
 * header and chunks were there. `get()` on a bucket with direct gets (the default) may be answered
 * by any replica, including one that has not applied the last write yet.
 *
 * Here a listing is the stream's own subject list (`STREAM.INFO` with `subjects_filter`, answered
 * by the leader, paged by the client), and a read is `STREAM.MSG.GET` by last subject (the
 * leader too). A listed key may hold a delete marker: `leaderGet` tells a value from a marker
 * (`liveKeys` lists only values). `purgeKeys` removes the keys' messages outright (no marker left behind to list forever).
 */
import type { KV, Bucket } from '@nats-io/kv'

/** A key's last message as the leader holds it. */
export interface LeaderEntry {
  /** Its stream sequence: the revision a compare-and-set expects. */
  revision: number
  json<T = unknown>(): T
}

const OPERATION = 'KV-Operation'

/** Which internals of the KV this module reads (the Bucket's public fields). */
function bucketOf(kv: KV): Bucket {
  return kv as Bucket
}

/** The keys that match `filter` (a key with `*` / `>` wildcards), as the leader's subject list holds them (values and delete markers). */
export async function leaderKeys(kv: KV, filter: string): Promise<string[]> {
  const b = bucketOf(kv)
  const info = await b.jsm.streams.info(b.bucketName(), { subjects_filter: b.fullKeyName(filter) })
  const from = b.fullKeyName('').length
  return Object.keys(info.state.subjects ?? {}).map((s) => s.slice(from))
}

/** `key`'s value as the leader holds it; null when it has none or its last message is a delete marker. */
export async function leaderGet(kv: KV, key: string): Promise<LeaderEntry | null> {
  const b = bucketOf(kv)
  const sm = await b.jsm.streams.getMessage(b.bucketName(), { last_by_subj: b.fullKeyName(key) })
  if (sm === null) return null
  const op = sm.header.get(OPERATION)
  if (op === 'DEL' || op === 'PURGE') return null
  return { revision: sm.seq, json: <T>() => sm.json<T>() }
}

/** The keys matching `filter` that hold a value now (each read from the leader). */
export async function liveKeys(kv: KV, filter = '>'): Promise<string[]> {
  const keys = await leaderKeys(kv, filter)
  const held = await Promise.all(keys.map(async (k) => ((await leaderGet(kv, k)) === null ? null : k)))
  return held.filter((k): k is string => k !== null).sort()
}

/** Removes every message of the keys matching `filter` (values and markers alike). */
export async function purgeKeys(kv: KV, filter: string): Promise<number> {
  const b = bucketOf(kv)
  const r = await b.jsm.streams.purge(b.bucketName(), { filter: b.fullKeyName(filter) })
  return r.purged
}

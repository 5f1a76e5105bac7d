/**
 * Search and export in cluster mode (DESIGN §7, §9): every partition owner answers its own top
 * `limit` hits after the cursor (analytics/search.ts `search` on its topology, after catching up
 * to the stream position the coordinator read), and the coordinator merges them by (key desc,
 * seq desc) and keeps `limit`. Exact: the global first `limit` hits after the cursor are among
 * the union of each partition's first `limit`, since a partition's (project, model) series live
 * in that partition only. The page's events are then read from the stream by seq.
 *
 * Wire form of a reply: three parallel number arrays (keys, seqs, times), in page order.
 */
import { compareHits, type SearchAfter, type SearchHit, type SearchSort } from '../analytics/search.js'
import { decodeQuery, encodeQuery, type WireQuery } from '../analytics/partials.js'
import type { RangeQuery } from '../queries.js'
import { bounded } from './tombstones.js'

/** What a coordinator sends each partition for a page (`limit` null: every match). */
export interface SearchRequest {
  kind: 'search'
  q: WireQuery
  sort: SearchSort
  after: SearchAfter | null
  limit: number | null
}

/** A partition's hits, in page order. */
export interface SearchReply {
  k: number[]
  s: number[]
  t: number[]
}

export function searchRequest(q: RangeQuery, sort: SearchSort, after: SearchAfter | null, limit: number): SearchRequest {
  return { kind: 'search', q: encodeQuery(q), sort, after: after === null ? null : { key: after.key, seq: after.seq }, limit: Number.isFinite(limit) ? limit : null }
}

/** The arguments of `search` from a request; throws a TypeError naming the field on malformed input. */
export function decodeSearch(req: unknown): { q: RangeQuery; sort: SearchSort; after: SearchAfter | null; limit: number } {
  const r = req as Partial<SearchRequest>
  if (typeof r !== 'object' || r === null) throw new TypeError('search request: not an object')
  if (r.sort !== 'time' && r.sort !== 'latency' && r.sort !== 'cost') throw new TypeError('search request: sort must be time, latency or cost')
  let after: SearchAfter | null = null
  if (r.after !== null && r.after !== undefined) {
    if (typeof r.after.key !== 'number' || !Number.isFinite(r.after.key) || !Number.isSafeInteger(r.after.seq)) throw new TypeError('search request: after must be {key, seq} numbers')
    after = { key: r.after.key, seq: r.after.seq }
  }
  const limit = r.limit === null ? Infinity : r.limit
  if (typeof limit !== 'number' || !(limit >= 1)) throw new TypeError('search request: limit must be a number ≥ 1 or null')
  return { q: decodeQuery(r.q), sort: r.sort, after, limit }
}

export function encodeHits(hits: readonly SearchHit[]): SearchReply {
  return { k: hits.map((h) => h.key), s: hits.map((h) => h.seq), t: hits.map((h) => h.ts) }
}

function decodeHits(reply: unknown): SearchHit[] {
  const r = reply as Partial<SearchReply>
  if (typeof r !== 'object' || r === null || !Array.isArray(r.k) || !Array.isArray(r.s) || !Array.isArray(r.t) || r.k.length !== r.s.length || r.k.length !== r.t.length) {
    throw new TypeError('search reply: k, s and t must be arrays of one length')
  }
  return r.k.map((key, i) => ({ key, seq: r.s![i]!, ts: r.t![i]! }))
}

/** The first `limit` hits of the partitions' replies by (key desc, seq desc). */
export function mergeHits(replies: readonly unknown[], limit: number): SearchHit[] {
  const all: SearchHit[] = []
  for (const r of replies) for (const h of decodeHits(r)) all.push(h)
  all.sort(compareHits)
  // A seq lives in one partition; dropped all the same should two owners both have answered it.
  const out: SearchHit[] = []
  for (const h of all) {
    if (out.length >= limit) break
    if (out.length > 0 && out[out.length - 1]!.seq === h.seq) continue
    out.push(h)
  }
  return out
}

/** Gets in flight at once while a page's (or an export batch's) events are read from the stream. */
export const GET_CONCURRENCY = 64

/**
 * `get(seq)` for every seq, at most `concurrency` at once, in the order asked (the same seq twice
 * is read once). A failed get rejects the whole read (after the others in flight settle).
 */
export async function readBySeq<E>(seqs: readonly number[], get: (seq: number) => Promise<E | undefined>, concurrency = GET_CONCURRENCY): Promise<Array<E | undefined>> {
  const unique = [...new Set(seqs)]
  const events = await bounded(unique.map((seq) => () => get(seq)), concurrency)
  const got = new Map<number, E | undefined>()
  unique.forEach((seq, i) => got.set(seq, events[i]))
  return seqs.map((s) => got.get(s))
}

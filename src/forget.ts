/**
 * DELETE /events: forgetting the events that match a filter, exactly, without stalling
 * ingestion, and so that no crash brings one back (DESIGN §7).
 *
 * The protocol, one delete at a time, under one delete id (`del_…`):
 *
 *     sync ─► cut = the log's next seq (events accepted later are never matched)
 *       │
 *       ├─► find the matching seqs (< cut) in chunks of ≤ 2,500 ──┐   memory rows by windows of
 *       │     per chunk:                                           │   whole hours; the log where
 *       │     1. tombstone {id, project, chunk, seqs} committed    │   memory cannot answer
 *       │     2. seqs join the engine's forgotten set (reads skip them)
 *       │     3. topology.forget: rows out of memory, aggregates recomputed
 *       │     (the event loop turns between chunks: ingestion and queries flow)
 *       ▼
 *     finish: a snapshot started after the last chunk ─► log records purged (holes; their
 *             client ids leave the dedupe index in the same transactions) ─► a second snapshot
 *             ─► free pages of the database overwritten ─► tombstones removed ─► seqs leave
 *             the forgotten set ─► {"deleted": N}
 *     (LMDB leaves a rewritten value's old bytes in free pages and, for small values, between
 *     the nodes of their live page: the second writes and the scrub leave no copy on disk.)
 *
 * A crash before a chunk's tombstone commits removed nothing of that chunk. With tombstones
 * left, the next start (engine.ts, recover) excludes their seqs from the replayed log tail,
 * removes them from the restored snapshot's rows (topology.forget is idempotent), and runs the
 * finish. So a delete interrupted before its answer removed part of the matching events and
 * never any other; running it again removes the rest.
 *
 * The pieces are separate so that cluster mode (src/cluster/*) reuses them per partition:
 * {@link findMatches} over any {@link QuerySource}, {@link runForget} over any
 * {@link ForgetTarget}, {@link DeleteRegistry} for the status route.
 */
import { nanoid } from 'nanoid'
import { scan, scanLog, type QuerySource, type RangeQuery } from './queries.js'
import { llmsError } from './errors.js'
import { HOUR_MS } from './analytics/time.js'
import type { Filters } from './analytics/reader.js'
import type { PricedEvent } from './events.js'
import type { PendingForget, ForgetTombstone } from './store/tombstones.js'

/**
 * Most seqs in one chunk (one tombstone, one topology.forget). Each chunk's forget is one
 * event-loop stall that grows with it: deleting 100k of 200k events (load avg ~8 on 2 cores),
 * ingest p99 was ~390 ms with chunks of 10,000 and ~150–200 ms with 2,500, in about the
 * same total time.
 */
export const FORGET_CHUNK = 2_500

/** The filters a delete needs at least one of (a time range alone is refused). */
export const FORGET_FILTERS = ['model', 'provider', 'status', 'user_id', 'session_id', 'tag', 'metadata.KEY'] as const

/** Names of the non-time filters `q` sets (empty: the delete is refused). */
export function filterNames(q: Filters): string[] {
  const out: string[] = []
  if (q.models !== undefined && q.models.size > 0) out.push('model')
  if (q.providers !== undefined && q.providers.size > 0) out.push('provider')
  if (q.status !== undefined) out.push('status')
  if (q.user_id !== undefined) out.push('user_id')
  if (q.session_id !== undefined) out.push('session_id')
  if (q.tag !== undefined) out.push('tag')
  for (const key of Object.keys(q.metadata ?? {})) out.push(`metadata.${key}`)
  return out
}

/** The 400 for a delete without a filter other than time. */
export function noFilterError() {
  const names = FORGET_FILTERS.join(', ')
  return llmsError('LLMS_ERR_BAD_QUERY', `DELETE /events needs at least one filter other than time (${names}): a time range alone would delete every event in it`, {
    details: [{ path: '(query)', message: `at least one of ${names} is required` }]
  })
}

// ---------------------------------------------------------------------------------------------
// Finding the matches.

/** One chunk of matches: seqs ascending, and the event-time range that holds them. */
export interface ForgetChunk {
  seqs: number[]
  /** Each seq's event time (`ts[i]` is `seqs[i]`'s): where its row is. */
  ts: number[]
  /** `[start, end)` on event time covering every seq of the chunk. */
  range: { start: number; end: number }
  /** Matches found on the log path (rows memory no longer holds, e.g. retention-folded hours). */
  events: PricedEvent[]
}

export interface MatchOptions {
  /** Most seqs per chunk (default {@link FORGET_CHUNK}). */
  chunk?: number
  /** Rows a memory window holds at most, by the rollup's hour counts (one hour may hold more). */
  windowRows?: number
  /** Work per event-loop turn before yielding, ms (default 4). */
  turnMs?: number
  /** Events per event-loop turn on the log path (default 20,000). */
  logEventsPerTurn?: number
  /**
   * The log, for matches memory cannot tell (a value past a dimension cap, a folded hour): the
   * priced events with seq ≥ `from`, in log order. Without it such a delete fails.
   */
  readLog?: (from: number) => Iterable<PricedEvent[]>
  /** Seqs to pass over (already forgotten by an unfinished delete). */
  skip?: (seq: number) => boolean
}

const NEEDS_LOG = Symbol('needs the log')
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

/**
 * Splits `[start, end)` into consecutive windows holding about `rows` events each, by the
 * rollup's hour counts: window edges fall on whole hours, the first starts at `start`, the last
 * ends at `end`, so every event of the range is in exactly one window.
 */
function windows(src: QuerySource, project: string, start: number, end: number, rows: number): Array<[number, number]> {
  const view = src.reader.project(project)
  if (view === undefined) return [[start, end]]
  const edges: number[] = []
  let held = 0
  view.rollup.forEachHour((hourKey, agg) => {
    const hs = hourKey * HOUR_MS
    if (hs + HOUR_MS <= start || hs >= end) return
    held += agg.totals.requests
    if (held >= rows) {
      edges.push(hs + HOUR_MS)
      held = 0
    }
  })
  const out: Array<[number, number]> = []
  let from = start
  for (const edge of edges) {
    if (edge <= from || edge >= end) continue
    out.push([from, edge])
    from = edge
  }
  out.push([from, end])
  return out
}

/**
 * The matching events of the project with seq < `cut`, in chunks of at most `opts.chunk`
 * seqs, found from memory window by window (time ascending), yielding to the event loop every
 * few ms. Where memory cannot answer a window exactly, the rest of the range is read from the
 * log in one pass (`opts.readLog`). Chunks from earlier windows may be removed from memory
 * while later ones are searched: windows never overlap.
 */
export async function* findMatches(src: QuerySource, project: string, q: RangeQuery, cut: number, opts: MatchOptions = {}): AsyncGenerator<ForgetChunk> {
  const chunkSize = opts.chunk ?? FORGET_CHUNK
  const turnMs = opts.turnMs ?? 4
  const skip = opts.skip ?? (() => false)
  let seqs: number[] = []
  let tss: number[] = []
  let events: PricedEvent[] = []
  // Chunks ready to hand out (a window may fill several).
  const ready: ForgetChunk[] = []
  const cutChunk = () => {
    // Ascending seqs; the time range of exactly these.
    const order = seqs.map((_, i) => i).sort((a, b) => seqs[a] - seqs[b])
    let lo = Infinity
    let hi = -Infinity
    for (const t of tss) {
      if (t < lo) lo = t
      if (t > hi) hi = t
    }
    ready.push({ seqs: order.map((i) => seqs[i]), ts: order.map((i) => tss[i]), range: { start: lo, end: hi + 1 }, events })
    seqs = []
    tss = []
    events = []
  }
  const add = (seq: number, ts: number, e: PricedEvent | null) => {
    if (seq >= cut || skip(seq)) return
    seqs.push(seq)
    tss.push(ts)
    if (e !== null) events.push(e)
    if (seqs.length >= chunkSize) cutChunk()
  }
  // Memory only: the log path is signalled, never taken, so a window is answered whole or not at all.
  const memory: QuerySource = {
    reader: src.reader,
    log: () => {
      throw NEEDS_LOG
    }
  }
  let logFrom: number | null = null
  let turn = performance.now()
  for (const [ws, we] of windows(src, project, q.start, q.end, opts.windowRows ?? 50_000)) {
    try {
      scan(memory, project, { ...q, start: ws, end: we }, (_v, _f, _u, _s, _a, ts, _k, _e, seq) => add(seq, ts, null))
    } catch (err) {
      if (err !== NEEDS_LOG) throw err
      logFrom = ws
      break
    }
    while (ready.length > 0) yield ready.shift()!
    if (performance.now() - turn >= turnMs) {
      await nextTurn()
      turn = performance.now()
    }
  }
  if (logFrom !== null) {
    if (opts.readLog === undefined) throw new Error('this delete needs the event log (a value past a dimension cap, or rows folded by retention), which is not available here')
    const lq: RangeQuery = { ...q, start: logFrom }
    const perTurn = opts.logEventsPerTurn ?? 20_000
    let next = 0
    let done = false
    while (!done && next < cut) {
      // A bounded slice of the log per turn; the read is restarted each turn (no read
      // transaction stays open while the event loop runs).
      const slice: PricedEvent[] = []
      done = true
      for (const batch of opts.readLog(next)) {
        for (const e of batch) {
          if (e.seq >= cut) break
          slice.push(e)
        }
        const last = batch[batch.length - 1].seq
        next = last + 1
        if (last >= cut - 1) break
        if (slice.length >= perTurn) {
          done = false
          break
        }
      }
      const sliceSource: QuerySource = {
        reader: src.reader,
        log: (p, s, e, visit) => {
          for (const ev of slice) if (ev.project === p && ev.ts >= s && ev.ts < e) visit(ev)
        }
      }
      scanLog(sliceSource, project, lq, (_v, _f, e) => add(e.seq, e.ts, e))
      while (ready.length > 0) yield ready.shift()!
      await nextTurn()
    }
  }
  if (seqs.length > 0) cutChunk()
  while (ready.length > 0) yield ready.shift()!
}

// ---------------------------------------------------------------------------------------------
// Progress (GET /events/deletes).

export type DeleteState = 'running' | 'finishing' | 'done' | 'failed'

/** What GET /events/deletes shows of one delete: counts and times, never its filters. */
export interface DeleteStatus {
  id: string
  project: string
  state: DeleteState
  /** Matching events found so far. */
  matched: number
  /** Of them, removed from every answer so far. */
  deleted: number
  started_at: string
  finished_at: string | null
}

/** Running deletes and the most recent finished ones (bounded), for the status route. */
export class DeleteRegistry {
  readonly #all = new Map<string, DeleteStatus>()
  readonly #keep: number
  readonly #now: () => number

  constructor(now: () => number, keep = 100) {
    this.#now = now
    this.#keep = keep
  }

  /** A new delete, running. */
  start(project: string, id = `del_${nanoid(16)}`, startedAt = this.#now()): DeleteStatus {
    const s: DeleteStatus = { id, project, state: 'running', matched: 0, deleted: 0, started_at: new Date(startedAt).toISOString(), finished_at: null }
    this.#all.set(id, s)
    return s
  }

  /** Marks `s` finished (done or failed) and forgets the oldest finished past the bound. */
  end(s: DeleteStatus, state: 'done' | 'failed'): void {
    s.state = state
    s.finished_at = new Date(this.#now()).toISOString()
    let finished = 0
    for (const d of this.#all.values()) if (d.finished_at !== null) finished++
    for (const [id, d] of this.#all) {
      if (finished <= this.#keep) break
      if (d.finished_at === null) continue
      this.#all.delete(id)
      finished--
    }
  }

  /** The project's deletes, newest first (copies). */
  list(project: string): DeleteStatus[] {
    return [...this.#all.values()].filter((d) => d.project === project).reverse().map((d) => ({ ...d }))
  }

  get(id: string): DeleteStatus | undefined {
    return this.#all.get(id)
  }
}

// ---------------------------------------------------------------------------------------------
// The protocol over whatever holds the events.

/**
 * What a delete acts on: the single node's engine (src/engine.ts); in cluster mode, a
 * partition runner.
 */
export interface ForgetTarget {
  /** Read-your-writes, then the cut: the seq the log gives next (no event at or past it is matched). */
  begin(): Promise<{ cut: number; source: QuerySource; readLog?: (from: number) => Iterable<PricedEvent[]>; skip?: (seq: number) => boolean }>
  /** Step 1: commits the chunk's tombstone. */
  tombstone(t: ForgetTombstone): Promise<void>
  /** Steps 2 and 3 for the chunk `t` (committed): its seqs excluded from every read, then its rows out of memory. */
  apply(t: ForgetTombstone, chunk: ForgetChunk): Promise<void>
  /** After the last chunk: snapshot, dedupe index, log purge, free pages, tombstones, forgotten set. */
  finish(pending: PendingForget): Promise<void>
}

/**
 * Runs one delete to its end over `target`, reporting progress in `status`; resolves with the
 * number of events deleted (= matched: every match is removed from memory and from the log).
 */
export async function runForget(target: ForgetTarget, status: DeleteStatus, q: RangeQuery, opts: MatchOptions = {}): Promise<{ deleted: number }> {
  const project = status.project
  const startedAt = Date.parse(status.started_at)
  const { cut, source, readLog, skip } = await target.begin()
  const all: number[] = []
  const chunks: ForgetTombstone[] = []
  let chunk = 0
  for await (const c of findMatches(source, project, q, cut, { ...opts, readLog: opts.readLog ?? readLog, skip: opts.skip ?? skip })) {
    status.matched += c.seqs.length
    const t: ForgetTombstone = { id: status.id, project, chunk: chunk++, seqs: c.seqs, startedAt }
    await target.tombstone(t)
    await target.apply(t, c)
    chunks.push(t)
    status.deleted += c.seqs.length
    for (const s of c.seqs) all.push(s)
  }
  status.state = 'finishing'
  if (all.length > 0) await target.finish({ id: status.id, project, startedAt, seqs: all, chunks })
  return { deleted: all.length }
}

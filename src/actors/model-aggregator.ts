/**
 * ModelAggregator: one actor per model (the topology spawns it on the model's first event).
 * It owns that model's series — one exact time-bucketed store per provider — and nothing
 * else touches them. Queries read through `view()`, a read-only window taken between messages.
 */
import { performance } from 'node:perf_hooks'
import { Actor, assertNever, type ActorOptions } from './actor.js'
import { isPacked, SeriesStore, type RetentionPolicy, type RowDims, type SeriesPart } from '../analytics/series.js'
import type { Row } from '../analytics/row.js'
import type { PricedEvent } from '../events.js'
import { eventValues } from '../analytics/dim-totals.js'
import { floorDiv, HOUR_MS } from '../analytics/time.js'
import { addDelta, groupByMinute, type ChangeNames, type CostColumns, type Deltas, type RepricePlan } from '../analytics/reprice.js'

/** The model name events are counted under once `maxModels` aggregators exist. */
export const OVERFLOW_MODEL = '(other models)'
/** 3: a series is a run of parts [first, next) (coarse hours, then rows by row range); 2 had one part per day. */
const STATE_VERSION = 3
/**
 * Most rows in one snapshot part. The writer copies, encodes and hashes one part per event-loop
 * turn at most (about 1 µs a row on a slow core), so this bounds how long a snapshot holds the loop.
 */
export const PART_ROWS = 4096
/** Parts a series may hold beyond twice the fewest its rows need, before a snapshot rewrites it. */
const PART_SLACK = 64
/**
 * Re-price entries planned (or rows staged) per slice (see 'reprice-plan'): finding their rows
 * is the long part of a re-price, so it is cut in slices, readers meanwhile seeing the old
 * costs. One 'reprice-step' message runs slices for at most {@link REPRICE_STEP_MS}.
 */
export const REPRICE_SLICE = 2048
/**
 * How long one 'reprice-step' runs slices before it queues the next step behind whatever came
 * meanwhile (a slice takes well under a millisecond on a quiet core; measured by the monotonic
 * clock, it decides only when to yield, never what is computed — as the actor's drain budget).
 */
export const REPRICE_STEP_MS = 4

export type AggregatorMessage =
  /**
   * `dims`: each event's dimension words (user, session, attribute set), 3 per event, or
   * undefined when none has any; `applied`, called once the events are in the state (Topology.sync).
   */
  | { type: 'events'; events: PricedEvent[]; dims?: Uint32Array; applied?: () => void }
  | { type: 'barrier'; reply: () => void }
  | { type: 'snapshot'; full?: boolean; reply: (state: AggregatorSnapshot) => void }
  /** Folds raw rows past retention into hour aggregates (off the ingest path: a timer asks). */
  | { type: 'retain'; policy: RetentionPolicy }
  /**
   * Deletes events (see {@link ForgetReply}): the rows whose seq is in `seqs` (a Map: seq → the
   * event's ts, looked for in those minutes only; with `range`, only rows with start <= ts < end), and `coarse` — events of this aggregator read
   * from the log, each taken out of its series' coarse hour when retention folded its hour
   * (SeriesStore.subtractCoarse; others are left to `seqs`). Replies with an Error if it failed.
   */
  | { type: 'forget'; seqs: ReadonlySet<number> | ReadonlyMap<number, number>; range?: { start: number; end: number }; coarse?: readonly PricedEvent[]; reply: (r: ForgetReply | Error) => void }
  /**
   * Re-price, step 1 (see Topology.reprice): finds what re-pricing the entries `idx` of
   * `changes` (this aggregator's, seqs ascending) changes in each series (by `provider`),
   * and writes the new costs into chunk copies (stageReprice), changing nothing readers see;
   * keeps the plans for 'reprice-apply'. Runs while events keep coming: slices of
   * {@link REPRICE_SLICE} for up to {@link REPRICE_STEP_MS} per 'reprice-step' message this actor
   * sends itself, each after a turn, so events queued meanwhile are recorded between slices (appends leave a plan valid:
   * SeriesStore.planReprice). `through`: every entry with a seq up to it was recorded here
   * before this message; later ones are looked for again at the apply. A series whose plan a
   * fold made stale is planned again from its start. Replies true, or an Error.
   */
  | { type: 'reprice-plan'; id: string; changes: ChangeNames; idx: Uint32Array; through: number; reply: (r: true | Error) => void }
  /** The next slice of the re-price being planned (sent by this actor to itself). */
  | { type: 'reprice-step'; id: string }
  /**
   * Re-price, step 2: applies the plans of `id` in this one message (a series changed since
   * its plan is planned again first, in full), then the entries recorded after the plan
   * began, or with `discard` drops them. Replies what changed.
   */
  | { type: 'reprice-apply'; id: string; discard?: boolean; reply: (r: RepriceReply | Error) => void }

/** What a re-price apply did. */
export interface RepriceReply {
  /** Rows whose cost or flag changed plus entries applied to coarse hours. */
  changed: number
  /** By hour key, how the hour's totals changed (summed over the series): the rollup adds it. */
  shifts: Deltas
}

/** What a forget did: events removed, hours whose aggregates changed, the dimension ids the removed rows held. */
export interface ForgetReply {
  /** Rows removed plus events taken out of coarse hours. */
  removed: number
  /** Hour keys (floor(ts / HOUR_MS)) of every hour changed: the rollup rebuilds them. */
  hours: number[]
  /** Dimension ids (>= 2: kept values) of the removed rows: the values a delete may leave unreferenced. */
  users: number[]
  sessions: number[]
  attrs: number[]
  /** True when no series is left (every row deleted): the topology may retire the aggregator. */
  empty: boolean
}

/**
 * What a snapshot keeps of one series (one provider of the model): parts numbered
 * [first, next), which together hold its coarse hours and raw rows, disjointly.
 */
export interface SeriesHeader {
  provider: string
  rejected: number
  first: number
  next: number
}

/** An aggregator as restored: every series with the data of its parts, in part order. */
export interface AggregatorState {
  v: number
  project?: string
  model: string
  series: Array<SeriesHeader & { parts: SeriesPart[] }>
}

/**
 * One part to store, copied from the series only when `data()` is called — later, between
 * this actor's messages, so a snapshot never copies everything in one turn. Rows of a row
 * range never change while no retention fold renumbers them; a fold in between makes
 * `data()` throw (the snapshot then fails and the next one rewrites everything). Call each
 * part's `data()` once, in the order given.
 */
export interface SnapshotPart {
  id: number
  data: () => SeriesPart
}

/**
 * An aggregator's snapshot reply: every series' part range at the barrier and the parts to
 * write for it — those made since the previous snapshot: rows recorded since (a delta), or
 * everything under fresh part ids (a rewrite: when `full`, after a retention fold, a late row
 * into a folded hour, or once deltas left too many small parts).
 */
export interface AggregatorSnapshot {
  v: number
  project: string
  model: string
  series: Array<SeriesHeader & { write: SnapshotPart[] }>
}

/** What the previous snapshot holds of one series, in this process's row numbering. */
interface Persisted {
  first: number
  next: number
  /** Rows [0, rows) of the store are in the parts. */
  rows: number
  coarseRows: number
  coarseHours: number
  /** Bumped by every retention fold (which renumbers rows) and delete: parts handed out before are stale. */
  epoch: number
  /** True when the parts no longer match the rows' numbering: the next snapshot rewrites. */
  stale: boolean
}

/** Converts a priced event to the analytics row (with its log position): integer µs and nano-dollars keep sums exact. */
export function toRow(e: PricedEvent): Row {
  return {
    ts: e.ts,
    promptTokens: e.prompt,
    completionTokens: e.completion,
    totalTokens: e.total,
    cachedTokens: e.cached,
    reasoningTokens: e.reasoning,
    latencyUs: Math.round(e.latency * 1000),
    costNanos: e.costNanos,
    error: e.error,
    unpriced: e.unpriced,
    seq: e.seq
  }
}

export class ModelAggregator extends Actor<AggregatorMessage> {
  readonly project: string
  readonly model: string
  readonly #series = new Map<string, SeriesStore>()
  readonly #persisted = new Map<string, Persisted>()
  #folded = 0
  /**
   * The plans of the re-price being applied (between 'reprice-plan' and 'reprice-apply'):
   * `steps` runs the planning a slice per 'reprice-step' (null once done), `through` is the
   * plan message's (see 'reprice-plan').
   */
  #reprice: {
    id: string
    changes: CostColumns
    through: number
    series: Map<string, { idx: Uint32Array; plan: RepricePlan }>
    /** Entries of providers without a series when planned (recorded since, or never). */
    unplanned: Map<string, Uint32Array>
    steps: Generator<void, void> | null
    reply: ((r: true | Error) => void) | null
  } | null = null

  /** Per series: row parts the last snapshot handed out and has not copied yet (SeriesStore.settle waits for 0). */
  readonly #copying = new Map<string, { left: number }>()

  constructor(model: string, options: ActorOptions = {}, restored?: AggregatorState, project = 'default') {
    super(project === 'default' ? `aggregator:${model}` : `aggregator:${project}/${model}`, options)
    this.project = project
    this.model = model
    if (restored !== undefined) {
      if (restored.v !== STATE_VERSION) throw new Error(`aggregator state version ${restored.v} is not ${STATE_VERSION}`)
      for (const s of restored.series) {
        // Read once: a stored snapshot's parts are decoded on this read (src/store/snapshots.ts) and not kept.
        const parts = s.parts
        if (!Number.isSafeInteger(s.first) || !Number.isSafeInteger(s.next) || s.first < 0 || s.next < s.first || !Array.isArray(parts)) {
          throw new Error(`aggregator state of ${model}/${s.provider}: malformed part range`)
        }
        const store = SeriesStore.fromSnapshots(parts, s.rejected)
        this.#series.set(s.provider, store)
        // The restored rows are numbered [0, size): exactly the rows the parts hold. Rows stored
        // in the older column form make the next snapshot rewrite the series in the row store's
        // words (one rewrite after an upgrade, which then restores faster).
        const columns = parts.some((p) => !isPacked(p) && (p as { rows?: unknown }).rows !== 0)
        this.#persisted.set(s.provider, { first: s.first, next: s.next, rows: store.rowEnd, coarseRows: store.coarseRows, coarseHours: store.coarseHours, epoch: 0, stale: columns })
      }
    }
  }

  protected receive(message: AggregatorMessage): void | Promise<void> {
    switch (message.type) {
      case 'events': {
        const { events, dims } = message
        const rowDims: RowDims = { user: 0, session: 0, attrs: 0 }
        for (let i = 0; i < events.length; i++) {
          const e = events[i]
          let store = this.#series.get(e.provider)
          if (store === undefined) {
            store = new SeriesStore()
            this.#series.set(e.provider, store)
          }
          if (dims === undefined) {
            store.record(toRow(e))
          } else {
            rowDims.user = dims[3 * i]
            rowDims.session = dims[3 * i + 1]
            rowDims.attrs = dims[3 * i + 2]
            store.record(toRow(e), rowDims)
          }
        }
        // In the state now: the topology's read watermark (Topology.sync) counts it applied.
        message.applied?.()
        // Idle (nothing queued behind) and no re-price being planned: rows that arrived out of
        // time order are laid out again in time order (SeriesStore.settle), so queries read
        // edge minutes from contiguous memory; renumbered rows make the next snapshot rewrite.
        if (this.depth === 0 && this.#reprice === null) {
          for (const [provider, store] of this.#series) {
            // Not while the last snapshot's parts of it are being copied (it would fail them).
            if ((this.#copying.get(provider)?.left ?? 0) === 0 && store.settle()) this.#rewrite(provider)
          }
        }
        return
      }
      case 'barrier':
        message.reply()
        return
      case 'snapshot':
        message.reply(this.#snapshot(message.full === true))
        return
      case 'forget':
        try {
          message.reply(this.#forget(message.seqs, message.range, message.coarse))
        } catch (err) {
          message.reply(err as Error)
        }
        return
      case 'retain':
        for (const [provider, store] of this.#series) {
          const folded = store.retain(message.policy)
          if (folded === 0) continue
          this.#folded += folded
          this.#rewrite(provider)
        }
        return
      case 'reprice-plan': {
        const series = new Map<string, { idx: Uint32Array; plan: RepricePlan }>()
        const unplanned = new Map<string, Uint32Array>()
        this.#reprice = { id: message.id, changes: message.changes, through: message.through, series, unplanned, steps: null, reply: message.reply }
        this.#reprice.steps = this.#planSteps(message.id, message.changes, message.idx, series, unplanned)
        return this.#step(message.id)
      }
      case 'reprice-step':
        return this.#step(message.id)
      case 'reprice-apply':
        try {
          message.reply(this.#applyReprice(message.id, message.discard === true))
        } catch (err) {
          message.reply(err as Error)
        } finally {
          this.#reprice = null
        }
        return
      default:
        assertNever(message)
    }
  }

  /**
   * Deletes rows by seq and coarse events from every series; a series changed is rewritten in
   * full by the next snapshot (its stored parts hold the deleted rows), and a snapshot being
   * copied fails rather than mix rows from before and after (its parts' epoch check). A series
   * left with nothing is dropped (no name of it stays in the next snapshot).
   */
  #forget(seqs: ReadonlySet<number> | ReadonlyMap<number, number>, range: { start: number; end: number } | undefined, coarse: readonly PricedEvent[] | undefined): ForgetReply {
    const hours = new Set<number>()
    const users = new Set<number>()
    const sessions = new Set<number>()
    const attrs = new Set<number>()
    let removed = 0
    const changed = new Set<string>()
    const seen = (_v: Float64Array, _f: number, u: number, s: number, a: number, ts: number) => {
      hours.add(floorDiv(ts, HOUR_MS))
      if (u >= 2) users.add(u)
      if (s >= 2) sessions.add(s)
      if (a >= 2) attrs.add(a)
    }
    if (seqs.size > 0) {
      for (const [provider, store] of this.#series) {
        const n = store.forget(seqs, range, seen)
        if (n === 0) continue
        removed += n
        changed.add(provider)
      }
    }
    if (coarse !== undefined && coarse.length > 0) {
      const v = new Float64Array(7)
      for (const e of coarse) {
        const store = this.#series.get(e.provider)
        if (store === undefined || !store.subtractCoarse(e.ts, v, eventValues(e, v), e.seq)) continue
        removed++
        hours.add(floorDiv(e.ts, HOUR_MS))
        changed.add(e.provider)
      }
    }
    for (const provider of changed) {
      const store = this.#series.get(provider) as SeriesStore
      this.#rewrite(provider)
      if (store.size === 0 && store.coarseHours === 0) {
        this.#series.delete(provider)
        this.#persisted.delete(provider)
      }
    }
    return { removed, hours: [...hours], users: [...users], sessions: [...sessions], attrs: [...attrs], empty: this.#series.size === 0 }
  }

  /**
   * A series changed in place (a retention fold, a delete, a re-price): the stored parts no
   * longer match it, so the next snapshot rewrites it in full, and parts handed out before
   * fail their copy rather than mix rows from before and after (their epoch check).
   */
  #rewrite(provider: string): void {
    const p = this.#persisted.get(provider)
    if (p === undefined) return
    p.epoch++
    p.stale = true
  }

  /**
   * One slice of the planning of re-price `id`, after a turn (so slices never run back to back
   * in one turn); then the next slice is queued behind whatever came meanwhile, or the plan
   * message is answered.
   */
  async #step(id: string): Promise<void> {
    const r = this.#reprice
    if (r === null || r.id !== id || r.steps === null) return
    await new Promise<void>((resolve) => setImmediate(resolve))
    const reply = r.reply as (r: true | Error) => void
    let done: boolean
    try {
      const until = performance.now() + REPRICE_STEP_MS
      do done = r.steps.next().done === true
      while (!done && performance.now() < until)
    } catch (err) {
      this.#reprice = null
      reply(err as Error)
      return
    }
    if (done) {
      r.steps = null
      r.reply = null
      reply(true)
    } else if (!this.send({ type: 'reprice-step', id })) {
      this.#reprice = null
      reply(new Error(`${this.name} could not go on planning re-price ${id} (mailbox full or closed)`))
    }
  }

  /**
   * 'reprice-plan': the entries by series, then each series' plan and its staged rows, one
   * slice per step (see {@link ModelAggregator.#step}); other messages (events, a fold) run
   * between steps. A series whose plan a fold or a delete made stale is planned again.
   */
  *#planSteps(id: string, changes: ChangeNames, idx: Uint32Array, series: Map<string, { idx: Uint32Array; plan: RepricePlan }>, unplanned: Map<string, Uint32Array>): Generator<void, void> {
    // Entries by provider: counted first, so each gets one array (no array per entry); runs of
    // one provider look it up once.
    const counts = new Map<string, number>()
    let last: string | undefined
    let run = 0
    for (let j = 0; j < idx.length; j++) {
      if (j % (4 * REPRICE_SLICE) === 4 * REPRICE_SLICE - 1) yield
      const p = changes.names[changes.provider[idx[j]]]
      if (p === last) {
        run++
        continue
      }
      if (last !== undefined) counts.set(last, (counts.get(last) ?? 0) + run)
      last = p
      run = 1
    }
    if (last !== undefined) counts.set(last, (counts.get(last) ?? 0) + run)
    const byProvider = new Map<string, { idx: Uint32Array; n: number }>()
    for (const [p, n] of counts) byProvider.set(p, { idx: new Uint32Array(n), n: 0 })
    last = undefined
    let slot: { idx: Uint32Array; n: number } | undefined
    for (let j = 0; j < idx.length; j++) {
      if (j % (4 * REPRICE_SLICE) === 4 * REPRICE_SLICE - 1) yield
      const p = changes.names[changes.provider[idx[j]]]
      if (p !== last) {
        last = p
        slot = byProvider.get(p)
      }
      if (slot !== undefined) slot.idx[slot.n++] = idx[j]
    }
    for (const [provider, { idx: mine }] of byProvider) {
      for (let attempt = 0; ; attempt++) {
        const store = this.#series.get(provider)
        if (store === undefined) {
          // No such series yet: its entries may all be on the way (the apply looks for them).
          unplanned.set(provider, mine)
          break
        }
        // Sliced by whole minutes (each minute's rows are walked once, whatever the slices); the
        // grouping itself yields now and then.
        const { order, starts } = yield* groupByMinute(changes, mine, 4 * REPRICE_SLICE)
        let plan: RepricePlan | undefined
        let stale = false
        const groups = starts.length - 1
        for (let g = 0; g < groups; ) {
          // Groups [g, h): at least one, and as many more as fit in a slice.
          const lo = starts[g]
          let h = g + 1
          while (h < groups && starts[h + 1] - lo <= REPRICE_SLICE) h++
          const hi = starts[h]
          yield
          if (plan !== undefined && !store.isCurrent(plan)) {
            stale = true
            break
          }
          plan = store.planReprice(changes, order.subarray(lo, hi), id, plan)
          g = h
        }
        // The new costs into chunk copies, a slice per step: the apply only swaps them in.
        while (!stale && plan !== undefined) {
          yield
          if (!store.isCurrent(plan)) stale = true
          else if (store.stageReprice(plan, REPRICE_SLICE) === 0) break
        }
        if (stale && attempt < 3) continue
        // Still stale after 3 attempts: the apply plans this series again, whole.
        if (plan !== undefined) series.set(provider, { idx: mine, plan })
        break
      }
    }
  }

  /** Whether every series' plan of re-price `id` is complete and still current (the topology checks before its cut). */
  repriceReady(id: string): boolean {
    const r = this.#reprice
    if (r === null || r.id !== id || r.steps !== null) return false
    for (const [provider, { plan }] of r.series) {
      const store = this.#series.get(provider)
      if (store !== undefined && !store.isCurrent(plan)) return false
    }
    return true
  }

  /** 'reprice-apply': every series' plan at once (planned again, in full, if its series changed since). */
  #applyReprice(id: string, discard: boolean): RepriceReply {
    const r = this.#reprice
    const shifts: Deltas = new Map()
    if (discard) return { changed: 0, shifts }
    if (r === null || r.id !== id) throw new Error(`${this.name}: no plan for re-price ${id}`)
    if (r.steps !== null) throw new Error(`${this.name}: re-price ${id} is still being planned`)
    let changed = 0
    for (const [provider, { idx, plan }] of r.series) {
      const store = this.#series.get(provider)
      if (store === undefined) continue
      let res = store.applyReprice(plan) ?? store.reprice(r.changes, idx, id)
      // Entries recorded after the plan began (seq past `through`) may have been missed by it:
      // looked for again now (rows already set read back at their new cost: no change twice).
      let late = idx.length
      while (late > 0 && r.changes.seqs[idx[late - 1]] > r.through) late--
      if (late < idx.length) {
        const more = store.reprice(r.changes, idx.subarray(late), id)
        if (more.changed > 0) {
          for (const [h, d] of res.shifts) addDelta(more.shifts, h, d.cost, d.unpriced, d.n)
          res = { changed: res.changed + more.changed, shifts: more.shifts }
        }
      }
      if (res.changed === 0) continue
      changed += res.changed
      for (const [h, d] of res.shifts) addDelta(shifts, h, d.cost, d.unpriced, d.n)
      this.#rewrite(provider)
    }
    for (const [provider, idx] of r.unplanned) {
      const store = this.#series.get(provider)
      if (store === undefined) continue
      const res = store.reprice(r.changes, idx, id)
      if (res.changed === 0) continue
      changed += res.changed
      for (const [h, d] of res.shifts) addDelta(shifts, h, d.cost, d.unpriced, d.n)
      this.#rewrite(provider)
    }
    return { changed, shifts }
  }

  /**
   * The cut at the barrier: O(series + coarse hours of a rewrite), never O(rows) — rows are
   * copied later, part by part, by the writer calling `data()`. Assumes the caller stores the
   * parts (or asks for `full` next time: a failed write leaves holes in the part ranges).
   */
  #snapshot(full: boolean): AggregatorSnapshot {
    const series: AggregatorSnapshot['series'] = []
    for (const [provider, store] of this.#series) {
      let p = this.#persisted.get(provider)
      if (p === undefined) {
        p = { first: 0, next: 0, rows: 0, coarseRows: 0, coarseHours: 0, epoch: 0, stale: true }
        this.#persisted.set(provider, p)
      }
      // Row numbers (rows removed by a delete leave holes in them until a compaction).
      const size = store.rowEnd
      const rewrite =
        full ||
        p.stale ||
        size < p.rows ||
        store.coarseRows !== p.coarseRows ||
        store.coarseHours !== p.coarseHours ||
        p.next - p.first > PART_SLACK + 2 * Math.ceil(size / PART_ROWS)
      const write: SnapshotPart[] = []
      let next = p.next
      const first = rewrite ? next : p.first
      if (rewrite && store.coarseHours > 0) {
        // Coarse hours change in place (late rows): copied now, at the cut.
        const coarse = store.toSnapshotRows(0, 0, { coarse: true })
        write.push({ id: next++, data: () => coarse })
      }
      // Rows [from, size) newest first, PART_ROWS at a time; one cursor resumes every minute's walk.
      const from = rewrite ? 0 : p.rows
      const cursor = { at: null as Int32Array | null }
      const epoch = p.epoch
      const persisted = p
      // Row parts of this snapshot not copied yet (a later snapshot replaces the count).
      const copying = { left: 0 }
      this.#copying.set(provider, copying)
      for (let hi = size; hi > from; hi -= PART_ROWS) {
        const lo = Math.max(from, hi - PART_ROWS)
        const top = hi
        copying.left++
        write.push({
          id: next++,
          data: () => {
            copying.left--
            if (persisted.epoch !== epoch) throw new Error(`series ${this.model}/${provider} was folded by retention or changed by a delete during the snapshot`)
            return store.toPackedRows(lo, top, { cursor })
          }
        })
      }
      Object.assign(p, { first, next, rows: size, coarseRows: store.coarseRows, coarseHours: store.coarseHours, stale: false })
      series.push({ provider, rejected: store.rejected, first, next, write })
    }
    return { v: STATE_VERSION, project: this.project, model: this.model, series }
  }

  /** Read-only access to the per-provider series, for queries (never mutate through it). */
  view(): ReadonlyMap<string, SeriesStore> {
    return this.#series
  }

  /** Raw rows held, rows kept only in coarse hours, and rows folded by retention so far. */
  get retentionStats(): { rawRows: number; coarseRows: number; folded: number } {
    let rawRows = 0
    let coarseRows = 0
    for (const s of this.#series.values()) {
      rawRows += s.size
      coarseRows += s.coarseRows
    }
    return { rawRows, coarseRows, folded: this.#folded }
  }
}

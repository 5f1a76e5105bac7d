/**
 * The price book's service (DESIGN §8): the `GET /prices` answer, `PUT /prices` and
 * `POST /prices/reprice` (dry run, apply, and the re-apply a restart does), over a
 * {@link PricesHost} — the single node's engine (src/engine.ts); cluster mode brings its own.
 *
 * Re-pricing (ISSUE14.md, "Reprice apply"): an event's cost is a pure function of durable
 * facts — its tokens and time, the book, its acceptance revision `priceRev`, and the re-pricing
 * records of its project (src/pricing/book.ts). A re-pricing of [start, end) (of one model, or
 * all) at the book's revision R:
 *
 *     1. R = book.rev; every event acknowledged so far reaches memory (sync). Events accepted
 *        later carry priceRev ≥ R, which a record at R does not change.
 *     2. One pass over the log (a slice per event-loop turn): for each event of the project in
 *        range whose model matches, `before` = its price now, `after` = its price at
 *        max(its effective revision, R). Those that differ are the change list (typed columns).
 *     3. (apply) The record {rev: R} is committed; memory takes the changes at a cut
 *        (Topology.reprice: nothing is emitted meanwhile); the book takes the record
 *        (GET /events/:id, search, export and replays switch here); a snapshot lists it.
 *     Restart: a record the restored snapshot does not list is re-applied by steps 2–3 without
 *     the commit (PricesHost.recover). A crash before the commit changed nothing; after it,
 *     the next start finishes it: old or new, never a mix.
 *
 * Re-pricings (dry runs included) run one at a time per server, after any running event
 * delete: a second request waits its turn (it does not answer 409).
 */
import { z } from 'zod'
import { llmsError } from './errors.js'
import { intern } from './intern.js'
import type { CostChanges } from './actors/topology.js'
import { zodDetails, type StoredEvent } from './events.js'
import { dollars } from './queries.js'
import {
  GENAI_PRICES_VERSION,
  fillRates,
  genaiRates,
  providerKey,
  repriceCovers,
  priceEvent,
  type PriceBook,
  type PriceVersion,
  type Rates,
  type RepriceRecord
} from './pricing/book.js'
import type { PriceStore } from './store/prices.js'
import type { Analytics } from './analytics/service.js'

// ---------------------------------------------------------------------------------------------
// Wire shapes.

const money = z.number().finite().min(0).max(1e9)
const isoWithZone = z.iso.datetime({ offset: true })
/** ISO 8601 with a zone, or epoch milliseconds → epoch ms. */
const instant = z.union([isoWithZone.transform((s) => Date.parse(s)), z.number().int().min(-8.64e15).max(8.64e15)]).refine((ms) => Number.isFinite(ms) && Math.abs(ms) <= 8.64e15, 'is out of range')

/** PUT /prices body (dollars per 1M tokens). */
export const priceVersionBody = z.strictObject({
  provider: z.string().trim().min(1).max(256).meta({ description: 'Provider as events name it (case-insensitive; `*` = any provider)' }),
  model: z.string().trim().min(1).max(256).meta({ description: 'Model; also prices its dated snapshots and names of the same family' }),
  input: money,
  output: money,
  cached_input: money.optional().meta({ description: 'Cache reads; default: input' }),
  cache_write: money.optional().meta({ description: 'Cache writes; default: input' }),
  reasoning: money.optional().meta({ description: 'Reasoning tokens; default: output' }),
  effective_from: instant.optional().meta({ description: 'ISO 8601 with a zone, or epoch ms; default: now' })
})
export type PriceVersionBody = z.output<typeof priceVersionBody>

/** POST /prices/reprice body. */
export const repriceBody = z
  .strictObject({
    start_time: instant,
    end_time: instant,
    model: z.string().trim().min(1).max(256).optional(),
    dry_run: z.boolean().default(true)
  })
  .refine((b) => b.end_time >= b.start_time, { path: ['end_time'], message: 'must not be before start_time' })
export type RepriceBody = z.output<typeof repriceBody>

/** The 400 for a bad body: every problem with its field. */
export function parsePricesBody<S extends z.ZodType>(schema: S, body: unknown, what: string): z.output<S> {
  const r = schema.safeParse(body ?? undefined)
  if (r.success) return r.data
  const details = zodDetails(r.error.issues)
  throw llmsError('LLMS_ERR_VALIDATION', `invalid ${what}: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, { details })
}

/** One version as GET /prices shows it. */
export interface VersionOut extends Rates {
  id: string | null
  effective_from: string | null
  created_at: string | null
}

/** One entry of GET /prices. */
export interface PriceEntryOut extends Rates {
  provider: string
  model: string
  source: string
  effective_from: string | null
  versions: VersionOut[]
  models: string[]
}

export interface PricesOut {
  prices: PriceEntryOut[]
  unpriced: Array<{ provider: string; model: string; requests: number }>
}

export interface RepriceRow {
  provider: string
  model: string
  requests: number
  before: number
  after: number
  difference: number
}

export interface RepriceOut {
  models: RepriceRow[]
  total: Omit<RepriceRow, 'provider' | 'model'>
  dry_run: boolean
  /** The record applied (`rp_…`); null for a dry run or when nothing changed. */
  reprice_id: string | null
  /** Events whose cost changed. */
  changed: number
}

// ---------------------------------------------------------------------------------------------
// The change list.

/** One entry per event whose cost changes, seq ascending: Topology.reprice's `changes`, defined there. */
export type { CostChanges }

/** Entries per chunk of a {@link ChangeBuilder}. */
const CHANGE_CHUNK = 1 << 16

/** One chunk of a {@link ChangeBuilder}'s columns. */
interface ChangeChunk {
  seqs: Float64Array
  ts: Float64Array
  before: Float64Array
  after: Float64Array
  bu: Uint8Array
  au: Uint8Array
  model: Uint32Array
  provider: Uint32Array
}

/**
 * Typed columns in chunks of {@link CHANGE_CHUNK} entries: adding never copies what is held
 * (doubling flat arrays copied up to 80 MB per column in one event-loop turn at 10M entries);
 * {@link ChangeBuilder.done} joins them into flat columns a few chunks per turn.
 */
class ChangeBuilder {
  #n = 0
  readonly #chunks: ChangeChunk[] = []
  #cur: ChangeChunk | null = null
  /** Model and provider names, each once; `#index` finds one's position. */
  readonly #names: string[] = []
  readonly #index = new Map<string, number>()
  #lastModel: string | null = null
  #lastModelAt = 0
  #lastProvider: string | null = null
  #lastProviderAt = 0

  get length(): number {
    return this.#n
  }

  add(e: StoredEvent, before: number, beforeUnpriced: boolean, after: number, afterUnpriced: boolean): void {
    const i = this.#n++ % CHANGE_CHUNK
    let c = this.#cur
    if (c === null || i === 0) {
      c = { seqs: new Float64Array(CHANGE_CHUNK), ts: new Float64Array(CHANGE_CHUNK), before: new Float64Array(CHANGE_CHUNK), after: new Float64Array(CHANGE_CHUNK), bu: new Uint8Array(CHANGE_CHUNK), au: new Uint8Array(CHANGE_CHUNK), model: new Uint32Array(CHANGE_CHUNK), provider: new Uint32Array(CHANGE_CHUNK) }
      this.#chunks.push(c)
      this.#cur = c
    }
    c.seqs[i] = e.seq
    c.ts[i] = e.ts
    c.before[i] = before
    c.after[i] = after
    c.bu[i] = beforeUnpriced ? 1 : 0
    c.au[i] = afterUnpriced ? 1 : 0
    // Runs of one model (a log record holds many) look it up once.
    if (e.model !== this.#lastModel) {
      this.#lastModel = e.model
      this.#lastModelAt = this.#nameAt(e.model)
    }
    if (e.provider !== this.#lastProvider) {
      this.#lastProvider = e.provider
      this.#lastProviderAt = this.#nameAt(e.provider)
    }
    c.model[i] = this.#lastModelAt
    c.provider[i] = this.#lastProviderAt
  }

  #nameAt(name: string): number {
    return intern(this.#index, this.#names, name)
  }

  /** The flat columns, joined a few chunks per event-loop turn (the chunks are let go as it goes). */
  async done(): Promise<CostChanges> {
    const n = this.#n
    const out: CostChanges = {
      seqs: new Float64Array(n),
      ts: new Float64Array(n),
      // Typed, not string arrays: new Array(10M) alone held the loop 62 ms.
      model: new Uint32Array(n),
      provider: new Uint32Array(n),
      names: this.#names,
      before: new Float64Array(n),
      beforeUnpriced: new Uint8Array(n),
      after: new Float64Array(n),
      afterUnpriced: new Uint8Array(n)
    }
    for (let k = 0; k < this.#chunks.length; k++) {
      // A chunk per turn: at 1M entries, 8 chunks at once held the loop 80 ms under load.
      if (k > 0) await nextTurn()
      const c = this.#chunks[k]
      const at = k * CHANGE_CHUNK
      const m = Math.min(CHANGE_CHUNK, n - at)
      out.seqs.set(c.seqs.subarray(0, m), at)
      out.ts.set(c.ts.subarray(0, m), at)
      out.before.set(c.before.subarray(0, m), at)
      out.after.set(c.after.subarray(0, m), at)
      out.beforeUnpriced.set(c.bu.subarray(0, m), at)
      out.afterUnpriced.set(c.au.subarray(0, m), at)
      out.model.set(c.model.subarray(0, m), at)
      out.provider.set(c.provider.subarray(0, m), at)
      ;(this.#chunks as Array<ChangeChunk | null>)[k] = null
    }
    this.#chunks.length = 0
    this.#cur = null
    return out
  }
}

/** What a re-pricing covers: a project, a range and a model (null: every model). */
export interface RepriceScope {
  project: string
  start: number
  end: number
  model: string | null
}

export interface RepriceScan {
  /** Per (provider, model) in scope: requests, nanos before and after. */
  rows: Map<string, { provider: string; model: string; requests: number; before: number; after: number }>
  /** The events whose cost (or unpriced flag) changes, when asked for. */
  changes: CostChanges | null
  /** How many events' cost (or unpriced flag) changes. */
  changed: number
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

/**
 * Step 2 of a re-pricing at revision `rev`: one pass over the log (`read(from)`: the stored
 * events from seq `from`, one array per record, restarted every `perTurn` events so no read
 * stays open across turns; a turn ends past `turnMs` ms or `perTurn` events), pricing each event in `scope` as it is now and as it will be once a
 * record at `rev` covers it. `skip`: seqs to pass over (a running delete's). Pure with respect
 * to the book: it is only read.
 */
export async function scanReprice(
  read: (from: number) => Iterable<StoredEvent[]>,
  book: PriceBook,
  scope: RepriceScope,
  rev: number,
  opts: { changes: boolean; skip?: (seq: number) => boolean; perTurn?: number; turnMs?: number }
): Promise<RepriceScan> {
  const perTurn = opts.perTurn ?? 50_000
  const turnMs = opts.turnMs ?? 8
  const probe: RepriceRecord = { id: '', project: scope.project, start: scope.start, end: scope.end, model: scope.model, rev, created_at: 0 }
  const rows: RepriceScan['rows'] = new Map()
  const changes = opts.changes ? new ChangeBuilder() : null
  let changed = 0
  let next = 0
  for (;;) {
    let seen = 0
    let more = false
    const turn = performance.now()
    // A slice per event-loop turn, by events and by time (checked every 512 events, inside a
    // record too: one holds up to 10,000); the read restarts at the first event not done.
    outer: for (const batch of read(next)) {
      for (let i = 0; i < batch.length; i++) {
        const e = batch[i]
        if ((++seen & 511) === 0 && (seen >= perTurn || performance.now() - turn >= turnMs)) {
          next = e.seq
          more = true
          break outer
        }
        if (e.project !== scope.project || !repriceCovers(probe, e.model, e.ts)) continue
        if (opts.skip?.(e.seq) === true) continue
        const b = priceEvent(e, book)
        const pr = e.priceRev ?? 0
        let a = b
        if (pr < rev) {
          // Once a record at `rev` covers it, its effective revision is the later of today's and `rev`.
          const target = Math.max(book.effectiveRev(e.project, e.model, e.ts, pr), rev)
          e.priceRev = target
          a = priceEvent(e, book)
          e.priceRev = pr
        }
        const key = `${e.provider}\u0000${e.model}`
        let row = rows.get(key)
        if (row === undefined) rows.set(key, (row = { provider: e.provider, model: e.model, requests: 0, before: 0, after: 0 }))
        row.requests++
        row.before += b.costNanos
        row.after += a.costNanos
        if (a.costNanos !== b.costNanos || a.unpriced !== b.unpriced) {
          changed++
          changes?.add(e, b.costNanos, b.unpriced, a.costNanos, a.unpriced)
        }
      }
      next = batch[batch.length - 1].seq + 1
    }
    if (!more) break
    await nextTurn()
  }
  return { rows, changes: changes === null ? null : await changes.done(), changed }
}

/** The models a project's events name, all time, from its analytics (PricesHost.seen: the node's own, or a cluster's merged answer). */
export async function seenModels(analytics: Pick<Analytics, 'costs'>, project: string): Promise<Array<{ provider: string; model: string; requests: number; unpriced: number }>> {
  const rows = await analytics.costs({ project, start: -Infinity, end: Infinity })
  return rows.map((r) => ({ provider: r.provider, model: r.model, requests: r.agg.totals.requests, unpriced: r.agg.totals.unpriced }))
}

/** The answer of a scan (also of a cluster's parts summed: src/cluster/reprice.ts). */
export function diffOf(scan: Pick<RepriceScan, 'rows' | 'changed'>, dryRun: boolean, id: string | null): RepriceOut {
  const models: RepriceRow[] = []
  let requests = 0
  let before = 0
  let after = 0
  for (const r of scan.rows.values()) {
    models.push({ provider: r.provider, model: r.model, requests: r.requests, before: dollars(r.before), after: dollars(r.after), difference: dollars(r.after - r.before) })
    requests += r.requests
    before += r.before
    after += r.after
  }
  // Largest change first, then by name.
  models.sort((a, b) => Math.abs(b.difference) - Math.abs(a.difference) || (a.model < b.model ? -1 : a.model > b.model ? 1 : a.provider < b.provider ? -1 : a.provider > b.provider ? 1 : 0))
  return {
    models,
    total: { requests, before: dollars(before), after: dollars(after), difference: dollars(after - before) },
    dry_run: dryRun,
    reprice_id: id,
    changed: scan.changed
  }
}

// ---------------------------------------------------------------------------------------------
// The service.

/** What the service needs of the node holding the events (the single node's engine). */
export interface PricesHost {
  readonly store: PriceStore
  readonly book: PriceBook
  now(): number
  /** Every (provider, model) the project holds events of, with requests and unpriced ones (all time). */
  seen(project: string): Promise<Array<{ provider: string; model: string; requests: number; unpriced: number }>>
  /** Runs `fn` alone (after every re-pricing and event delete queued before it). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>
  /** Step 1: every event acknowledged so far is in memory. */
  sync(): Promise<void>
  /** Stored events from seq `from` on, one array per record, in log order. */
  readLog(from: number): Iterable<StoredEvent[]>
  /** Seqs reads pass over (a running delete's). */
  skip(seq: number): boolean
  /**
   * Step 3 after the commit: memory takes `changes` at a cut, then the book takes `record`
   * (the store's applyReprice), then a snapshot lists it. Resolves when all is done.
   */
  applyReprice(record: RepriceRecord, changes: CostChanges): Promise<void>
}

export class PriceService {
  readonly #host: PricesHost

  constructor(host: PricesHost) {
    this.#host = host
  }

  /** GET /prices: the project's entries (versions, configuration overrides, genai-prices for models seen) and unpriced models. */
  async list(project: string, q: { model?: string; provider?: string } = {}): Promise<PricesOut> {
    const book = this.#host.book
    const now = this.#host.now()
    const seen = await this.#host.seen(project)
    const entries = new Map<string, PriceEntryOut>()
    const entryKey = (provider: string, model: string) => `${provider}\u0000${model}`
    // The project's own entries.
    for (const { provider, model } of book.entries(project)) entries.set(entryKey(provider, model), this.#versionEntry(project, provider, model, now))
    // The configuration's overrides (the newest layer), from the start of time.
    const layer = book.overrideLayer()
    const layerEntries = new Map<string, PriceEntryOut>()
    for (const [key, o] of Object.entries(layer?.overrides ?? {})) {
      const slash = key.indexOf('/')
      const provider = slash > 0 && slash < key.length - 1 ? key.slice(0, slash) : '*'
      const model = provider === '*' ? key : key.slice(slash + 1)
      const rates = fillRates({ input: o.input_mtok, output: o.output_mtok, cached_input: o.cache_read_mtok, cache_write: o.cache_write_mtok })
      const e: PriceEntryOut = { provider, model, source: 'override', ...rates, effective_from: null, versions: [{ id: null, ...rates, effective_from: null, created_at: new Date(layer!.created_at).toISOString() }], models: [] }
      layerEntries.set(key, e)
      if (!entries.has(entryKey(provider, model))) entries.set(entryKey(provider, model), e)
    }
    // Which entry prices each model seen (as of now), genai-prices for the rest.
    const unpriced: PricesOut['unpriced'] = []
    for (const s of seen) {
      if (s.unpriced > 0) unpriced.push({ provider: s.provider, model: s.model, requests: s.unpriced })
      const src = book.priceSource(project, s.provider, s.model, now)
      let target: PriceEntryOut | undefined
      if (src.kind === 'version') target = entries.get(entryKey(src.version.provider, src.version.model))
      else if (src.kind === 'override') target = layerEntries.get(src.key)
      else if (src.kind === 'genai-prices') {
        const k = `genai\u0000${s.provider}\u0000${s.model}`
        target = entries.get(k)
        if (target === undefined) {
          const rates = src.rates ?? genaiRates(s.provider, s.model, now) ?? fillRates({ input: 0, output: 0 })
          target = { provider: s.provider, model: s.model, source: `genai-prices@${GENAI_PRICES_VERSION}`, ...rates, effective_from: null, versions: [], models: [] }
          entries.set(k, target)
        }
      }
      if (target !== undefined && !target.models.includes(s.model)) target.models.push(s.model)
    }
    let prices = [...entries.values()]
    for (const e of prices) e.models.sort()
    if (q.provider !== undefined) {
      const p = providerKey(q.provider)
      prices = prices.filter((e) => e.provider === '*' || providerKey(e.provider) === p)
    }
    if (q.model !== undefined) prices = prices.filter((e) => e.model === q.model || e.models.includes(q.model!))
    prices.sort((a, b) => cmp(a.provider, b.provider) || cmp(a.model, b.model) || cmp(a.source, b.source))
    let out = unpriced
    if (q.provider !== undefined) out = out.filter((u) => providerKey(u.provider) === providerKey(q.provider!))
    if (q.model !== undefined) out = out.filter((u) => u.model === q.model)
    out.sort((a, b) => b.requests - a.requests || cmp(a.provider, b.provider) || cmp(a.model, b.model))
    return { prices, unpriced: out }
  }

  /** PUT /prices: a new version (defaults filled); answers its entry as GET /prices shows it. */
  async put(project: string, body: PriceVersionBody): Promise<PriceEntryOut> {
    const now = this.#host.now()
    const rates = fillRates(body)
    const v = await this.#host.store.putVersion({ project, provider: body.provider, model: body.model, rates, effective_from: body.effective_from ?? now }, now)
    const entry = this.#versionEntry(project, v.provider, v.model, now)
    // The version is stored: an answer failing now would invite a retry that adds a second one.
    // When the names seen cannot be read (a cluster partition without an owner for a moment),
    // the entry is answered without them; GET /prices lists them.
    const seen = await this.#host.seen(project).catch(() => [])
    for (const s of seen) {
      const src = this.#host.book.priceSource(project, s.provider, s.model, now)
      if (src.kind === 'version' && src.version.provider === v.provider && src.version.model === v.model && !entry.models.includes(s.model)) entry.models.push(s.model)
    }
    entry.models.sort()
    return entry
  }

  /** POST /prices/reprice: the diff of [start, end) at the book's prices; applied unless a dry run. */
  reprice(project: string, body: RepriceBody): Promise<RepriceOut> {
    const host = this.#host
    const scope: RepriceScope = { project, start: body.start_time, end: body.end_time, model: body.model ?? null }
    return host.exclusive(async () => {
      const rev = host.book.rev
      await host.sync()
      const scan = await scanReprice((from) => host.readLog(from), host.book, scope, rev, { changes: !body.dry_run, skip: (s) => host.skip(s) })
      if (body.dry_run || scan.changes === null || scan.changes.seqs.length === 0) return diffOf(scan, body.dry_run, null)
      const record = await host.store.putReprice({ ...scope, rev }, host.now())
      await host.applyReprice(record, scan.changes)
      return diffOf(scan, false, record.id)
    })
  }

  /**
   * At the start (before the node is ready): re-applies, oldest first, the re-pricings stored
   * but not in the book (their commit happened, the restored snapshot does not hold them), by
   * steps 2–3 without the commit. Answers how many.
   */
  async recover(): Promise<number> {
    const host = this.#host
    const pending = host.store.pendingReprices()
    for (const r of pending) {
      const scan = await scanReprice((from) => host.readLog(from), host.book, r, r.rev, { changes: true, skip: (s) => host.skip(s) })
      await host.applyReprice(r, scan.changes!)
    }
    return pending.length
  }

  /** The entry of a project's (provider, model) as GET /prices shows it (`models` empty). */
  #versionEntry(project: string, provider: string, model: string, now: number): PriceEntryOut {
    const book = this.#host.book
    const all = book.versions(project).filter((v) => v.provider === provider && v.model === model)
    // A second version at the same instant replaces the first: the newest rev per effective_from.
    const byFrom = new Map<number, PriceVersion>()
    for (const v of all) {
      const old = byFrom.get(v.effective_from)
      if (old === undefined || v.rev >= old.rev) byFrom.set(v.effective_from, v)
    }
    const live = [...byFrom.values()].sort((a, b) => a.effective_from - b.effective_from)
    // The version in force now, else the first one to come.
    let cur = live[0]
    for (const v of live) if (v.effective_from <= now) cur = v
    const versions = live.map((v) => ({ id: v.id, ...v.rates, effective_from: new Date(v.effective_from).toISOString(), created_at: new Date(v.created_at).toISOString() }))
    return { provider, model, source: 'override', ...cur.rates, effective_from: new Date(cur.effective_from).toISOString(), versions, models: [] }
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

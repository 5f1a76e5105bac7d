/**
 * Budgets (DESIGN §8): their zod schema and their store, built like the rule store
 * (src/store/rules.ts): LMDB (`budgets`) plus a Map mirror, so reads never touch the disk; a
 * write resolves after its commit, then the mirror changes.
 *
 * The same database holds the budgets' FIRED records: one per (budget, period, threshold,
 * group), under an id derived from those alone (`bf_<hash>`), written before the alert it
 * stands for is announced. A key already present never fires again, so a restart or kill -9
 * does not repeat an alert (src/budgets/evaluator.ts). Records of past periods are pruned.
 *
 * Cluster mode ({@link BudgetStore.attachBacking}): budgets and fired records live in JetStream
 * KV (one prefix for both: ids `bud_…` and `bf_…` never collide); writes go there and the
 * mirror follows the bucket through `applyRemote`. A fired record is written with
 * `backing.create`, a compare-and-set: of two nodes that both think they evaluate, one wins.
 */
import { createHash } from 'node:crypto'
import { z } from 'zod'
import { nanoid } from 'nanoid'
import type { Database } from 'lmdb'
import type { Log } from '../log.js'
import type { MetaBacking } from './backing.js'
import { filterObjectSchema, type FilterObject } from '../filters.js'
import { isBreakdownDimension } from '../queries.js'
import { canonicalTimeZone, PERIODS, type PeriodKind } from '../budgets/periods.js'

/** The thresholds when none are given: half, four fifths, all of the amount. */
export const DEFAULT_THRESHOLDS: readonly number[] = [0.5, 0.8, 1]
/** Bound on stored budgets per project: each is evaluated every tick. */
export const MAX_BUDGETS = 1000
/** Bound on groups a grouped budget tracks (the most costly first). */
export const MAX_BUDGET_GROUPS = 1000

const fields = {
  name: z.string().trim().min(1).max(200),
  amount: z.number().finite().positive().max(1e12),
  period: z.enum(PERIODS),
  timezone: z
    .string()
    .max(64)
    .transform((tz, ctx) => {
      const canonical = canonicalTimeZone(tz)
      if (canonical === null) {
        ctx.addIssue({ code: 'custom', message: `is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York): ${JSON.stringify(tz.slice(0, 64))}` })
        return z.NEVER
      }
      return canonical
    }),
  filters: filterObjectSchema,
  group_by: z
    .string()
    .min(1)
    .max(265)
    .refine(isBreakdownDimension, { message: 'must be user_id, session_id, tag, model, provider or metadata.KEY' })
    .nullable(),
  thresholds: z
    .array(z.number().finite().positive().max(100))
    .min(1)
    .max(20)
    .transform((xs) => [...new Set(xs)].sort((a, b) => a - b)),
  webhook_url: z
    .url({ protocol: /^https?$/ })
    .max(2048)
    .nullable()
}

/** POST body: name, amount, period required; the rest defaulted. */
export const budgetCreateSchema = z.strictObject({
  name: fields.name,
  amount: fields.amount,
  period: fields.period,
  timezone: fields.timezone.default('UTC'),
  filters: fields.filters.optional(),
  group_by: fields.group_by.optional(),
  thresholds: fields.thresholds.optional(),
  webhook_url: fields.webhook_url.optional()
})

/** PATCH body: any subset; at least one field. */
export const budgetPatchSchema = z
  .strictObject({
    name: fields.name.optional(),
    amount: fields.amount.optional(),
    period: fields.period.optional(),
    timezone: fields.timezone.optional(),
    filters: fields.filters.optional(),
    group_by: fields.group_by.optional(),
    thresholds: fields.thresholds.optional(),
    webhook_url: fields.webhook_url.optional()
  })
  .refine((p) => Object.keys(p).length > 0, { message: 'must change at least one field' })

export type BudgetCreate = z.output<typeof budgetCreateSchema>
export type BudgetPatch = z.output<typeof budgetPatchSchema>

/** A budget as stored (and as the start of its JSON answer). */
export interface Budget {
  id: string
  project: string
  name: string
  /** Dollars per period. */
  amount: number
  period: PeriodKind
  /** IANA name, canonical spelling. */
  timezone: string
  filters: FilterObject
  /** A breakdown dimension, or null: one budget over every matching event. */
  group_by: string | null
  /** Fractions of `amount`, ascending, distinct. */
  thresholds: number[]
  webhook_url: string | null
  created_at: string
  updated_at: string
}

/** What a fired record remembers (no event data: ids, a period start, a threshold, a group value). */
export interface FiredRecord {
  budget_id: string
  project: string
  /** Epoch ms. */
  period_start: number
  threshold: number
  group_by: string | null
  group: string | null
  /** When it fired, epoch ms. */
  at: number
}

/**
 * The deterministic id of a firing: the same budget, period, threshold and group (and
 * grouping) always give the same id, on any node, after any restart.
 */
export function firedId(budgetId: string, periodStart: number, threshold: number, groupBy: string | null, group: string | null): string {
  const h = createHash('sha256').update(JSON.stringify([budgetId, periodStart, threshold, groupBy, group])).digest('base64url')
  return `bf_${h.slice(0, 32)}`
}

const isBudget = (id: string, v: unknown): v is Budget => v !== null && typeof v === 'object' && (v as Budget).id === id && id.startsWith('bud_')
const isFired = (id: string, v: unknown): v is FiredRecord => id.startsWith('bf_') && v !== null && typeof v === 'object' && typeof (v as FiredRecord).budget_id === 'string'

export class BudgetStore {
  readonly #db: Database<unknown, string>
  readonly #budgets = new Map<string, Budget>()
  /** Fired records by budget, then by id. */
  readonly #fired = new Map<string, Map<string, FiredRecord>>()
  /** Cluster mode: where writes go (null: the LMDB database, as on a single node). */
  #backing: MetaBacking | null = null
  #log: Log | null = null

  constructor(db: Database<unknown, string>) {
    this.#db = db
    for (const { key, value } of db.getRange({})) this.#applyMemory(key, value)
  }

  /** Every budget, oldest first (ties by id). */
  list(): Budget[] {
    return [...this.#budgets.values()].sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1))
  }

  /** Budgets of one project, oldest first. */
  listIn(project: string): Budget[] {
    return this.list().filter((b) => b.project === project)
  }

  get(id: string): Budget | undefined {
    return this.#budgets.get(id)
  }

  get size(): number {
    return this.#budgets.size
  }

  countIn(project: string): number {
    let n = 0
    for (const b of this.#budgets.values()) if (b.project === project) n++
    return n
  }

  /** Whether writes go to the cluster's bucket (then a fired record is a compare-and-set). */
  get clustered(): boolean {
    return this.#backing !== null
  }

  async create(input: BudgetCreate, now: number, project = 'default'): Promise<Budget> {
    const at = new Date(now).toISOString()
    const budget: Budget = {
      id: `bud_${nanoid(12)}`,
      project,
      name: input.name,
      amount: input.amount,
      period: input.period,
      timezone: input.timezone,
      filters: input.filters ?? {},
      group_by: input.group_by ?? null,
      thresholds: input.thresholds ?? [...DEFAULT_THRESHOLDS],
      webhook_url: input.webhook_url ?? null,
      created_at: at,
      updated_at: at
    }
    if (this.#backing !== null) {
      if (!(await this.#backing.create(budget.id, budget))) throw new Error(`budget id ${budget.id} exists`)
      return this.#budgets.get(budget.id) ?? budget
    }
    await this.#db.put(budget.id, budget)
    this.#budgets.set(budget.id, budget)
    return budget
  }

  async update(id: string, patch: BudgetPatch, now: number): Promise<Budget | undefined> {
    const old = this.#budgets.get(id)
    if (old === undefined) return undefined
    const budget: Budget = { ...old, updated_at: new Date(now).toISOString() }
    for (const [k, v] of Object.entries(patch)) {
      if (v !== undefined) (budget as unknown as Record<string, unknown>)[k] = v
    }
    if (this.#backing !== null) {
      await this.#backing.put(id, budget)
      return this.#budgets.get(id) ?? budget
    }
    await this.#db.put(id, budget)
    this.#budgets.set(id, budget)
    return budget
  }

  /** Removes a budget and its fired records (its alert events stay in the history). */
  async remove(id: string): Promise<boolean> {
    if (!this.#budgets.has(id)) return false
    await this.#removeAll([id])
    return true
  }

  /** Removes every budget of a project and their fired records (DELETE /projects/:id); answers their ids. */
  async removeProject(project: string): Promise<string[]> {
    const ids = [...this.#budgets.values()].filter((b) => b.project === project).map((b) => b.id)
    // Fired records of budgets already removed (a crash between the two writes) go too.
    for (const [budgetId, fired] of this.#fired) {
      if (!ids.includes(budgetId) && [...fired.values()].some((f) => f.project === project)) ids.push(budgetId)
    }
    if (ids.length > 0) await this.#removeAll(ids)
    return ids
  }

  async #removeAll(ids: readonly string[]): Promise<void> {
    const keys: string[] = []
    for (const id of ids) {
      if (this.#budgets.has(id)) keys.push(id)
      for (const f of this.#fired.get(id)?.keys() ?? []) keys.push(f)
    }
    if (this.#backing !== null) {
      // One remove per record (KV has no transaction): a crash midway leaves fired records of
      // a removed budget, which nothing reads (a new budget has a new id); a project's purge
      // removes them when it runs again.
      const backing = this.#backing
      await Promise.all(keys.map((k) => backing.remove(k)))
      return
    }
    await this.#db.transaction(() => {
      for (const k of keys) this.#db.remove(k)
    })
    for (const id of ids) {
      this.#budgets.delete(id)
      this.#fired.delete(id)
    }
  }

  /** Whether the firing `id` ({@link firedId}) was recorded. */
  hasFired(budgetId: string, id: string): boolean {
    return this.#fired.get(budgetId)?.has(id) === true
  }

  /**
   * Records the firing `id`. Memory knows it at once (a second call for the same id, on this
   * node, answers false without writing); the promise resolves after the write is durable —
   * on a single node, in the LMDB transaction of every put issued in the same event turn (so an
   * alert event recorded in the same turn commits with it). Cluster mode: a compare-and-set in
   * the bucket; false when another node recorded it first.
   */
  markFired(id: string, record: FiredRecord): { fresh: boolean; durable: Promise<boolean> } {
    let fired = this.#fired.get(record.budget_id)
    if (fired?.has(id) === true) return { fresh: false, durable: Promise.resolve(false) }
    if (fired === undefined) this.#fired.set(record.budget_id, (fired = new Map()))
    fired.set(id, record)
    if (this.#backing !== null) return { fresh: true, durable: this.#backing.create(id, record) }
    return { fresh: true, durable: this.#db.put(id, record).then(() => true) }
  }

  /** Removes the budget's fired records of periods that started before `periodStart` (they can never match again). */
  pruneFired(budgetId: string, periodStart: number): void {
    const fired = this.#fired.get(budgetId)
    if (fired === undefined) return
    for (const [id, f] of fired) {
      if (f.period_start >= periodStart) continue
      fired.delete(id)
      const p = this.#backing !== null ? this.#backing.remove(id) : this.#db.remove(id)
      void Promise.resolve(p).catch((err: unknown) => this.#log?.warn({ err, budget: budgetId }, 'pruning a fired budget record failed'))
    }
    if (fired.size === 0) this.#fired.delete(budgetId)
  }

  /** Fired records held (all budgets): what /metrics or tests may look at. */
  get firedCount(): number {
    let n = 0
    for (const f of this.#fired.values()) n += f.size
    return n
  }

  /**
   * Cluster mode: from now on writes go to `backing` (JetStream KV) and the mirror follows
   * {@link applyRemote}; `log` reports failed writes to the LMDB cache.
   */
  attachBacking(backing: MetaBacking, log: Log): void {
    this.#backing = backing
    this.#log = log
  }

  /** Cluster mode: the bucket's record `id` (a budget or a fired record) changed (`undefined`: removed), by any node. */
  applyRemote(id: string, value: unknown): void {
    this.#applyOne(id, value)
  }

  /** Cluster mode, at start: the store becomes the bucket's `records` (by id; `undefined`: removed). */
  loadRemote(records: ReadonlyMap<string, unknown>): void {
    for (const id of [...this.#budgets.keys()]) if (!records.has(id)) this.#applyOne(id, undefined)
    for (const fired of [...this.#fired.values()]) for (const id of [...fired.keys()]) if (!records.has(id)) this.#applyOne(id, undefined)
    for (const [id, value] of records) this.#applyOne(id, value)
  }

  #applyOne(id: string, value: unknown): void {
    if (!this.#applyMemory(id, value)) return
    void (value === undefined ? this.#db.remove(id) : this.#db.put(id, value)).catch((err: unknown) => this.#log?.warn({ err, budget: id }, 'budget cache write failed'))
  }

  /** Applies one record to memory; false when it was ignored (not a record this version reads). */
  #applyMemory(id: string, value: unknown): boolean {
    if (value === undefined) {
      if (this.#budgets.delete(id)) return true
      for (const [budgetId, fired] of this.#fired) {
        if (fired.delete(id)) {
          if (fired.size === 0) this.#fired.delete(budgetId)
          return true
        }
      }
      return false
    }
    if (isBudget(id, value)) {
      this.#budgets.set(id, value)
      return true
    }
    if (isFired(id, value)) {
      let fired = this.#fired.get(value.budget_id)
      if (fired === undefined) this.#fired.set(value.budget_id, (fired = new Map()))
      fired.set(id, value)
      return true
    }
    return false
  }
}

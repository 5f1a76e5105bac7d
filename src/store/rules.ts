/**
 * Alert rules: their zod schema and their store. Rules live in LMDB and in a Map mirror
 * (reads never touch the disk); a write resolves after its commit, then the mirror changes.
 *
 * Cluster mode ({@link RuleStore.attachBacking}): the rules live in JetStream KV
 * (src/cluster/meta.ts); writes go there and the mirror follows the bucket through
 * `applyRemote` (a write resolves once this node applied it), so every node's listeners hear
 * every change, whichever node made it.
 */
import { z } from 'zod'
import { nanoid } from 'nanoid'
import type { Database } from 'lmdb'
import type { Log } from '../log.js'
import type { MetaBacking } from './backing.js'
import { filterObjectSchema, type FilterObject } from '../filters.js'

export const CONDITIONS = ['cost_per_hour', 'avg_latency', 'p95_latency', 'error_rate', 'requests_per_minute', 'tokens_per_minute'] as const
export const COMPARATORS = ['gt', 'gte', 'lt', 'lte'] as const
/** Webhook bodies: our JSON (`json`, the default) or Slack's `{"text": …}`. */
export const WEBHOOK_FORMATS = ['json', 'slack'] as const
/** `group_by` values besides `metadata.KEY`. */
const GROUP_DIMENSIONS: readonly string[] = ['model', 'provider', 'user_id', 'session_id', 'tag']
/** Longest baseline, days (windows of up to 30 days back are kept in memory). */
export const MAX_BASELINE_DAYS = 30

const fields = {
  name: z.string().trim().min(1).max(200),
  condition: z.enum(CONDITIONS),
  threshold: z.number().finite(),
  enabled: z.boolean(),
  model: z.string().min(1).max(256).nullable(),
  window_seconds: z.number().int().min(10).max(7 * 86_400),
  comparator: z.enum(COMPARATORS),
  cooldown_seconds: z.number().int().min(0).max(7 * 86_400),
  min_samples: z.number().int().min(1).max(1_000_000),
  webhook_url: z
    .url({ protocol: /^https?$/ })
    .max(2048)
    .nullable(),
  filters: filterObjectSchema,
  group_by: z
    .string()
    .max(256 + 'metadata.'.length)
    .refine((v) => GROUP_DIMENSIONS.includes(v) || /^metadata\..+$/s.test(v), { message: `must be one of ${GROUP_DIMENSIONS.join(', ')} or metadata.KEY` })
    .nullable(),
  baseline: z.strictObject({ days: z.number().int().min(1).max(MAX_BASELINE_DAYS) }).nullable(),
  webhook_format: z.enum(WEBHOOK_FORMATS)
}

/** POST body: name, condition, threshold required; the rest defaulted. */
export const ruleCreateSchema = z.strictObject({
  name: fields.name,
  condition: fields.condition,
  threshold: fields.threshold,
  enabled: fields.enabled.default(true),
  model: fields.model.optional(),
  window_seconds: fields.window_seconds.default(300),
  comparator: fields.comparator.default('gt'),
  cooldown_seconds: fields.cooldown_seconds.default(300),
  min_samples: fields.min_samples.default(1),
  webhook_url: fields.webhook_url.optional(),
  filters: fields.filters.optional(),
  group_by: fields.group_by.optional(),
  baseline: fields.baseline.optional(),
  webhook_format: fields.webhook_format.optional()
})

/** PATCH body: any subset; at least one field. */
export const rulePatchSchema = z
  .strictObject({
    name: fields.name.optional(),
    condition: fields.condition.optional(),
    threshold: fields.threshold.optional(),
    enabled: fields.enabled.optional(),
    model: fields.model.optional(),
    window_seconds: fields.window_seconds.optional(),
    comparator: fields.comparator.optional(),
    cooldown_seconds: fields.cooldown_seconds.optional(),
    min_samples: fields.min_samples.optional(),
    webhook_url: fields.webhook_url.optional(),
    filters: fields.filters.optional(),
    group_by: fields.group_by.optional(),
    baseline: fields.baseline.optional(),
    webhook_format: fields.webhook_format.optional()
  })
  .refine((p) => Object.keys(p).length > 0, { message: 'must change at least one field' })

export type RuleCreate = z.output<typeof ruleCreateSchema>
export type RulePatch = z.output<typeof rulePatchSchema>

export interface Rule {
  id: string
  name: string
  condition: (typeof CONDITIONS)[number]
  threshold: number
  enabled: boolean
  model: string | null
  window_seconds: number
  comparator: (typeof COMPARATORS)[number]
  cooldown_seconds: number
  min_samples: number
  webhook_url: string | null
  /** The project the rule belongs to (absent in rules stored before projects: `default`). */
  project?: string
  /** Dimension filters (README: Dimensions; absent in rules stored before dimensions: none). */
  filters?: FilterObject
  /**
   * Evaluated and firing per value of this dimension (README: Alert rules); absent or null:
   * one state for the whole window. Absent in rules stored before it, and in rules created
   * without it (their stored shape is as before).
   */
  group_by?: string | null
  /** The value is a factor of the same window's mean over the previous `days` whole days; absent or null: none. */
  baseline?: { days: number } | null
  /** Webhook body: absent means `json`. */
  webhook_format?: (typeof WEBHOOK_FORMATS)[number]
  created_at: string
  updated_at: string
}

/** Bound on stored rules: each is evaluated every tick. */
export const MAX_RULES = 1000

export class RuleStore {
  readonly #db: Database<unknown, string>
  readonly #rules = new Map<string, Rule>()
  readonly #listeners = new Set<(rules: readonly Rule[]) => void>()
  /** Cluster mode: where writes go (null: the LMDB database, as on a single node). */
  #backing: MetaBacking | null = null
  #log: Log | null = null

  constructor(db: Database<unknown, string>) {
    this.#db = db
    for (const { value } of db.getRange({})) {
      const r = value as Rule
      this.#rules.set(r.id, r)
    }
  }

  list(): Rule[] {
    return [...this.#rules.values()].sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1))
  }

  get(id: string): Rule | undefined {
    return this.#rules.get(id)
  }

  get size(): number {
    return this.#rules.size
  }

  /** Called after every change with the full list (the alert evaluator subscribes). */
  onChange(fn: (rules: readonly Rule[]) => void): void {
    this.#listeners.add(fn)
  }

  async create(input: RuleCreate, now: number, project = 'default'): Promise<Rule> {
    const at = new Date(now).toISOString()
    const rule: Rule = {
      id: `rule_${nanoid(12)}`,
      name: input.name,
      condition: input.condition,
      threshold: input.threshold,
      enabled: input.enabled,
      model: input.model ?? null,
      window_seconds: input.window_seconds,
      comparator: input.comparator,
      cooldown_seconds: input.cooldown_seconds,
      min_samples: input.min_samples,
      webhook_url: input.webhook_url ?? null,
      project,
      filters: input.filters ?? {},
      // Only when given, so a rule created as before is stored and answered exactly as before.
      ...(input.group_by != null ? { group_by: input.group_by } : {}),
      ...(input.baseline != null ? { baseline: input.baseline } : {}),
      ...(input.webhook_format !== undefined ? { webhook_format: input.webhook_format } : {}),
      created_at: at,
      updated_at: at
    }
    if (this.#backing !== null) {
      // Applied (and announced) by the watcher before this resolves. A 12-character random id never collides in practice.
      if (!(await this.#backing.create(rule.id, rule))) throw new Error(`rule id ${rule.id} exists`)
      return this.#rules.get(rule.id) ?? rule
    }
    await this.#db.put(rule.id, rule)
    this.#rules.set(rule.id, rule)
    this.#emit()
    return rule
  }

  async update(id: string, patch: RulePatch, now: number): Promise<Rule | undefined> {
    const old = this.#rules.get(id)
    if (old === undefined) return undefined
    const rule: Rule = { ...old, updated_at: new Date(now).toISOString() }
    for (const [k, v] of Object.entries(patch)) {
      if (v !== undefined) (rule as unknown as Record<string, unknown>)[k] = v
    }
    if (this.#backing !== null) {
      await this.#backing.put(id, rule)
      return rule
    }
    await this.#db.put(id, rule)
    this.#rules.set(id, rule)
    this.#emit()
    return rule
  }

  /** Rules of one project (a rule stored before projects belongs to `default`). */
  listIn(project: string): Rule[] {
    return this.list().filter((r) => (r.project ?? 'default') === project)
  }

  /** Rules of the project in this store, counted for the per-project cap. */
  countIn(project: string): number {
    let n = 0
    for (const r of this.#rules.values()) if ((r.project ?? 'default') === project) n++
    return n
  }

  /** Removes every rule of a project (DELETE /projects/:id); resolves after the commit. */
  async removeProject(project: string): Promise<number> {
    const ids = [...this.#rules.values()].filter((r) => (r.project ?? 'default') === project).map((r) => r.id)
    if (ids.length === 0) return 0
    if (this.#backing !== null) {
      // One remove per rule (KV has no transaction): a crash midway leaves the project purging, and its purge runs again.
      const backing = this.#backing
      await Promise.all(ids.map((id) => backing.remove(id)))
      return ids.length
    }
    await this.#db.transaction(() => {
      for (const id of ids) this.#db.remove(id)
    })
    for (const id of ids) this.#rules.delete(id)
    this.#emit()
    return ids.length
  }

  async remove(id: string): Promise<boolean> {
    if (!this.#rules.has(id)) return false
    if (this.#backing !== null) {
      await this.#backing.remove(id)
      return true
    }
    await this.#db.remove(id)
    this.#rules.delete(id)
    this.#emit()
    return true
  }

  /**
   * Cluster mode: from now on writes go to `backing` (JetStream KV) and the mirror follows
   * {@link applyRemote}; `log` reports failed writes to the LMDB cache.
   */
  attachBacking(backing: MetaBacking, log: Log): void {
    this.#backing = backing
    this.#log = log
  }

  /** Cluster mode: the bucket's record of rule `id` changed (`undefined`: removed), by any node; listeners hear it. */
  applyRemote(id: string, value: unknown): void {
    if (this.#applyOne(id, value)) this.#emit()
  }

  /** Cluster mode, at start: the rules become the bucket's `records` (by id; `undefined`: removed); listeners hear it once. */
  loadRemote(records: ReadonlyMap<string, unknown>): void {
    for (const id of [...this.#rules.keys()]) if (!records.has(id)) this.#applyOne(id, undefined)
    for (const [id, value] of records) this.#applyOne(id, value)
    this.#emit()
  }

  /** Applies one record to the mirror and the LMDB cache; false when it was ignored. */
  #applyOne(id: string, value: unknown): boolean {
    const r = value as Rule | undefined
    if (r !== undefined && (r === null || typeof r !== 'object' || r.id !== id)) return false
    if (r === undefined) {
      if (!this.#rules.delete(id)) return false
    } else this.#rules.set(id, r)
    void (r === undefined ? this.#db.remove(id) : this.#db.put(id, r)).catch((err: unknown) => this.#log?.warn({ err, rule: id }, 'rule cache write failed'))
    return true
  }

  #emit(): void {
    const list = this.list()
    for (const fn of this.#listeners) fn(list)
  }
}

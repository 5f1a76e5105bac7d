/**
 * Alert events: every transition and reminder the evaluator decided, with its webhook delivery
 * outcome. Kept in LMDB (`alert-events`, key = a sequence number, so key order is record order)
 * and mirrored in memory, so `GET /alerts/events` sees a record the moment it is made (before
 * its commit, like the WebSocket push) and never reads the disk.
 *
 * Bounded: only the newest {@link MAX_ALERT_EVENTS} are kept; older ones are deleted as new ones
 * arrive. Writes are fire-and-forget puts (group-committed by lmdb-js, applied in issue order);
 * a failed write is logged and counted, never thrown at the evaluator.
 *
 * Cluster mode ({@link AlertEventStore.attachBacking}): the records live in JetStream KV
 * (src/cluster/meta.ts, key = the sequence number), written by the one node that evaluates
 * alerts (a lease) and mirrored by every node through `applyRemote`, so `GET /alerts/events` is
 * cluster-wide. Sequence numbers continue after the highest this node has seen, so they keep
 * increasing when another node takes the lease (once it has caught up with the bucket). The
 * recording node prunes the bucket; the others prune their memory only. LMDB is then a cache.
 */
import type { Database } from 'lmdb'
import { silentLog, type Log } from '../log.js'
import type { MetaBacking } from './backing.js'
import type { Rule } from './rules.js'
import { stateKey, type AlertReason, type AlertTransition, type DeliveryOutcome, type RecordedAlert } from '../alerts/types.js'

/** Records kept (newest first wins). */
export const MAX_ALERT_EVENTS = 10_000

/** Webhook delivery of one alert event. */
export interface DeliveryRecord {
  /** `none`: the rule has no webhook_url; `pending`: being delivered (or retried). */
  status: 'none' | 'pending' | 'delivered' | 'failed'
  attempts: number
  status_code: number | null
  error: string | null
  /** When the delivery ended (ISO), null while pending or without a webhook. */
  completed_at: string | null
}

/** One alert event as stored and as listed by `GET /alerts/events`. */
export interface AlertEventRecord {
  /** `aev_<seq base 36>`: increases with every record. */
  id: string
  rule_id: string
  rule_name: string
  /** The rule's project (absent in records made before projects: `default`). */
  project?: string
  condition: Rule['condition']
  comparator: Rule['comparator']
  threshold: number
  model: string | null
  window_seconds: number
  state: 'firing' | 'resolved'
  reminder: boolean
  reason: AlertReason
  value: number | null
  samples: number
  /**
   * A grouped rule's group (null: the events without the dimension); null for a rule without
   * `group_by` (absent in records made before grouped rules).
   */
  group?: string | null
  /** The rule's `group_by`, on records of grouped rules only. */
  group_by?: string
  /** When the current state began (for a reminder: when the firing began). */
  since: string
  at: string
  delivery: DeliveryRecord
}

/**
 * A budget threshold reached (src/budgets/evaluator.ts; DESIGN §8): one per budget, period,
 * threshold and group. Listed by `GET /alerts/events` beside the rules' records; told apart by
 * `type` (a rule's record has none).
 */
export interface BudgetEventRecord {
  /** `aev_<seq base 36>`, in the same sequence as the rules' records. */
  id: string
  type: 'budget'
  project: string
  budget_id: string
  name: string
  /** The fraction of `amount` reached. */
  threshold: number
  /** Dollars spent in the period when it was reached. */
  spent: number
  amount: number
  period_start: string
  period_end: string
  group_by: string | null
  /** The group's value (null: events without the field, or a budget without group_by). */
  group: string | null
  at: string
  delivery: DeliveryRecord
}

/** What a budget firing records (the store adds id and delivery). */
export type BudgetFiring = Omit<BudgetEventRecord, 'id' | 'type' | 'delivery'>

/** Any record of the store. */
export type AnyAlertEventRecord = AlertEventRecord | BudgetEventRecord

/** Whether a record is a budget's (else a rule's). */
export const isBudgetRecord = (r: AnyAlertEventRecord): r is BudgetEventRecord => (r as BudgetEventRecord).type === 'budget'

interface Entry {
  seq: number
  atMs: number
  record: AnyAlertEventRecord
}

export interface AlertEventQuery {
  ruleId?: string
  /** Inclusive, epoch ms, on `at`. */
  since?: number
  /** Only this project's records (a record made before projects belongs to `default`). */
  project?: string
  limit: number
}

const iso = (ms: number) => new Date(ms).toISOString()

/** A record id of the bucket (a decimal sequence number), or null. */
function readSeq(id: string): number | null {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(id)) return null
  const seq = Number(id)
  return Number.isSafeInteger(seq) ? seq : null
}

/** A record as stored under `seq`, or null when it is not one this version reads. */
function readRecord(seq: number, value: unknown): AnyAlertEventRecord | null {
  const r = value as AlertEventRecord
  if (r === null || typeof r !== 'object' || r.id !== `aev_${seq.toString(36)}` || typeof r.at !== 'string') return null
  if (typeof r.rule_id !== 'string' && !((value as BudgetEventRecord).type === 'budget' && typeof (value as BudgetEventRecord).budget_id === 'string')) return null
  if (r.delivery === null || typeof r.delivery !== 'object') return null
  return r
}

export class AlertEventStore {
  readonly #db: Database<unknown, number>
  readonly #log: Log
  readonly #max: number
  /** Ascending by seq. */
  #entries: Entry[] = []
  #nextSeq = 0
  readonly #pending = new Set<Promise<unknown>>()
  #writeErrors = 0
  #recorded = 0
  /** Cluster mode: where records are written (null: the LMDB database, as on a single node). */
  #backing: MetaBacking | null = null
  /** Cluster mode: writes of this node in flight, by seq: their echoes are older than what memory holds. */
  readonly #inFlight = new Map<number, number>()

  /**
   * Loads the newest `max` records (deleting any beyond, e.g. after `max` was lowered).
   * @throws RangeError `max must be a positive integer, got <value>`
   */
  constructor(db: Database<unknown, number>, opts: { log?: Log; max?: number } = {}) {
    const max = opts.max ?? MAX_ALERT_EVENTS
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`max must be a positive integer, got ${String(max)}`)
    this.#db = db
    this.#log = opts.log ?? silentLog
    this.#max = max
    for (const { key, value } of db.getRange({})) {
      const record = value as AnyAlertEventRecord
      this.#entries.push({ seq: key, atMs: Date.parse(record.at), record })
      this.#nextSeq = key + 1
    }
    this.#prune(true)
  }

  /** Records a notification; `delivery` says whether a webhook delivery follows. */
  record(t: AlertTransition, delivery: 'pending' | 'none'): AlertEventRecord {
    const seq = this.#nextSeq++
    const r = t.rule
    const record: AlertEventRecord = {
      id: `aev_${seq.toString(36)}`,
      rule_id: r.id,
      rule_name: r.name,
      project: r.project ?? 'default',
      condition: r.condition,
      comparator: r.comparator,
      threshold: r.threshold,
      model: r.model,
      window_seconds: r.window_seconds,
      state: t.state,
      reminder: t.reminder,
      reason: t.reason,
      value: t.value,
      samples: t.samples,
      group: t.group ?? null,
      ...(t.group !== undefined && r.group_by != null ? { group_by: r.group_by } : {}),
      since: iso(t.since),
      at: iso(t.at),
      delivery: { status: delivery, attempts: 0, status_code: null, error: null, completed_at: null }
    }
    this.#entries.push({ seq, atMs: t.at, record })
    this.#recorded++
    this.#store(seq, record)
    this.#prune(true)
    return record
  }

  /**
   * Records a budget firing (src/budgets/evaluator.ts); `delivery` says whether a webhook
   * delivery follows. On a single node its put joins the LMDB transaction of every put issued
   * in the same event turn (the evaluator's fired record).
   */
  recordBudget(f: BudgetFiring, delivery: 'pending' | 'none'): BudgetEventRecord {
    const seq = this.#nextSeq++
    const record: BudgetEventRecord = {
      id: `aev_${seq.toString(36)}`,
      type: 'budget',
      project: f.project,
      budget_id: f.budget_id,
      name: f.name,
      threshold: f.threshold,
      spent: f.spent,
      amount: f.amount,
      period_start: f.period_start,
      period_end: f.period_end,
      group_by: f.group_by,
      group: f.group,
      at: f.at,
      delivery: { status: delivery, attempts: 0, status_code: null, error: null, completed_at: null }
    }
    this.#entries.push({ seq, atMs: Date.parse(f.at), record })
    this.#recorded++
    this.#store(seq, record)
    this.#prune(true)
    return record
  }

  /** Removes every record of the given budgets (a deleted project's); resolves after the commit. */
  async removeBudgets(budgetIds: ReadonlySet<string>): Promise<number> {
    const gone = this.#entries.filter((e) => isBudgetRecord(e.record) && budgetIds.has(e.record.budget_id))
    if (gone.length === 0) return 0
    const drop = new Set(gone)
    this.#entries = this.#entries.filter((e) => !drop.has(e))
    for (const e of gone) this.#store(e.seq, undefined)
    await this.flushed()
    return gone.length
  }

  /** Stores a delivery's outcome on its record (ignored when the record was pruned meanwhile). */
  setDelivery(id: string, outcome: DeliveryOutcome, completedAt: number): void {
    const i = this.#indexOf(id)
    if (i < 0) return
    const e = this.#entries[i]
    e.record = { ...e.record, delivery: { ...outcome, completed_at: iso(completedAt) } }
    this.#store(e.seq, e.record)
  }

  /** The record with this id, if kept. */
  get(id: string): AnyAlertEventRecord | undefined {
    const i = this.#indexOf(id)
    return i < 0 ? undefined : this.#entries[i].record
  }

  /** Records matching the filters, newest first, at most `limit`. */
  list(q: AlertEventQuery): AnyAlertEventRecord[] {
    const out: AnyAlertEventRecord[] = []
    for (let i = this.#entries.length - 1; i >= 0 && out.length < q.limit; i--) {
      const e = this.#entries[i]
      if (q.ruleId !== undefined && (isBudgetRecord(e.record) || e.record.rule_id !== q.ruleId)) continue
      if (q.project !== undefined && (e.record.project ?? 'default') !== q.project) continue
      if (q.since !== undefined && e.atMs < q.since) continue
      out.push(e.record)
    }
    return out
  }

  /**
   * The newest record of each rule, and of each group of a grouped rule, for the evaluator's
   * restore; keyed by `stateKey` (the rule id for an ungrouped rule's records).
   */
  latestByRule(): Map<string, RecordedAlert> {
    const out = new Map<string, RecordedAlert>()
    for (let i = this.#entries.length - 1; i >= 0; i--) {
      const { record, atMs } = this.#entries[i]
      if (isBudgetRecord(record)) continue
      // A grouped rule's records: one per group (stateKey), so each group's state is restored.
      const grouped = record.group_by !== undefined
      const key = grouped ? stateKey(record.rule_id, record.group ?? null) : record.rule_id
      if (out.has(key)) continue
      const rec: RecordedAlert = { state: record.state, since: Date.parse(record.since), at: atMs, value: record.value }
      if (grouped) rec.group = record.group ?? null
      out.set(key, rec)
    }
    return out
  }

  /** Removes every record of the given rules (a deleted project's); resolves after the commit. */
  async removeRules(ruleIds: ReadonlySet<string>): Promise<number> {
    const ofRules = (e: Entry) => !isBudgetRecord(e.record) && ruleIds.has(e.record.rule_id)
    const gone = this.#entries.filter(ofRules)
    if (gone.length === 0) return 0
    this.#entries = this.#entries.filter((e) => !ofRules(e))
    for (const e of gone) this.#store(e.seq, undefined)
    await this.flushed()
    return gone.length
  }

  /** Resolves once every write issued so far is committed (or failed and was logged). */
  async flushed(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending])
  }

  get size(): number {
    return this.#entries.length
  }

  get stats() {
    return { size: this.#entries.length, recorded: this.#recorded, writeErrors: this.#writeErrors }
  }

  #indexOf(id: string): number {
    if (!/^aev_[0-9a-z]{1,11}$/.test(id)) return -1
    const seq = parseInt(id.slice(4), 36)
    let lo = 0
    let hi = this.#entries.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.#entries[mid].seq < seq) lo = mid + 1
      else hi = mid
    }
    return lo < this.#entries.length && this.#entries[lo].seq === seq ? lo : -1
  }

  /**
   * Cluster mode: from now on records are written to `backing` (JetStream KV) and every node's
   * memory follows {@link applyRemote}.
   */
  attachBacking(backing: MetaBacking): void {
    this.#backing = backing
  }

  /**
   * Cluster mode: the bucket's record `id` (the sequence number, decimal) changed (`undefined`:
   * removed), by any node. Memory and the LMDB cache follow; an echo of this node's own write
   * still in flight changes nothing (memory already holds that write or a newer one).
   */
  applyRemote(id: string, value: unknown): void {
    const seq = readSeq(id)
    if (seq === null) return
    const record = value === undefined ? undefined : readRecord(seq, value)
    if (record === null) return
    this.#write(seq, record)
    if (this.#inFlight.has(seq)) return
    const i = this.#search(seq)
    const found = i < this.#entries.length && this.#entries[i].seq === seq
    if (record === undefined) {
      if (found) this.#entries.splice(i, 1)
      return
    }
    this.#nextSeq = Math.max(this.#nextSeq, seq + 1)
    const entry = { seq, atMs: Date.parse(record.at), record }
    if (found) this.#entries[i] = entry
    else this.#entries.splice(i, 0, entry)
    this.#prune(false)
  }

  /**
   * Cluster mode, at start: memory becomes the bucket's `records` (by sequence number, decimal;
   * `undefined`: removed), newest {@link MAX_ALERT_EVENTS} kept; the next sequence number follows
   * the highest seen, here or in the bucket.
   */
  loadRemote(records: ReadonlyMap<string, unknown>): void {
    const entries: Entry[] = []
    for (const [id, value] of records) {
      const seq = readSeq(id)
      const record = seq === null || value === undefined ? null : readRecord(seq, value)
      if (seq === null || record === null) continue
      entries.push({ seq, atMs: Date.parse(record.at), record })
    }
    entries.sort((a, b) => a.seq - b.seq)
    const keep = new Set(entries.map((e) => e.seq))
    for (const e of this.#entries) if (!keep.has(e.seq)) this.#write(e.seq, undefined)
    for (const e of entries) this.#write(e.seq, e.record)
    this.#entries = entries
    if (entries.length > 0) this.#nextSeq = Math.max(this.#nextSeq, entries[entries.length - 1].seq + 1)
    this.#prune(false)
  }

  /** A record's write where the records live: the bucket in cluster mode, else LMDB. */
  #store(seq: number, record: AnyAlertEventRecord | undefined): void {
    const backing = this.#backing
    if (backing === null) {
      this.#write(seq, record)
      return
    }
    this.#inFlight.set(seq, (this.#inFlight.get(seq) ?? 0) + 1)
    const p: Promise<unknown> = (record === undefined ? backing.remove(String(seq)) : backing.put(String(seq), record))
      .catch((err: unknown) => {
        this.#writeErrors++
        this.#log.error({ err, seq }, 'alert event could not be written to the cluster')
      })
      .finally(() => {
        const n = this.#inFlight.get(seq)! - 1
        if (n === 0) this.#inFlight.delete(seq)
        else this.#inFlight.set(seq, n)
      })
    this.#pending.add(p)
    void p.finally(() => this.#pending.delete(p))
  }

  /** Index of the first entry whose seq is at least `seq`. */
  #search(seq: number): number {
    let lo = 0
    let hi = this.#entries.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.#entries[mid].seq < seq) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  #write(seq: number, record: AnyAlertEventRecord | undefined): void {
    const p: Promise<unknown> = (record === undefined ? this.#db.remove(seq) : this.#db.put(seq, record)).catch((err: unknown) => {
      this.#writeErrors++
      this.#log.error({ err, seq }, 'alert event could not be written')
    })
    this.#pending.add(p)
    void p.finally(() => this.#pending.delete(p))
  }

  /** Keeps the newest `max`; `own`: this node records, so it removes the pruned ones where records live (else from its cache only). */
  #prune(own: boolean): void {
    const excess = this.#entries.length - this.#max
    if (excess <= 0) return
    for (const e of this.#entries.splice(0, excess)) {
      if (own) this.#store(e.seq, undefined)
      else this.#write(e.seq, undefined)
    }
  }
}

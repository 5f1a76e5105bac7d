/**
 * Budget evaluation (DESIGN §8): what a budget has spent in its current period, what remains,
 * the forecast to the period's end, per group when it has `group_by`; and, on every alert tick,
 * one alert event for each threshold reached — once per (budget, period, threshold, group).
 *
 *   tick ──► for each budget: period in its zone ──► spend (analytics: metrics or breakdown
 *            by group_by, filtered, [period_start, now)) ──► thresholds reached and not fired:
 *            fired record + alert event (one commit) ──► /ws frame, webhook
 *
 * Spend comes from outside ({@link BudgetSpend}: on a single node the engine's analytics, in
 * cluster mode the merged answers of every partition), so budgets follow re-pricing with no
 * state of their own: nothing here counts money. Whether this node fires is asked from outside
 * too ({@link BudgetEvaluatorOptions.isEvaluator}: in cluster mode, the alerts-lease holder).
 *
 * Once only: the fired record's id is derived from (budget, period start, threshold, group_by,
 * group) and is durable before the frame and the webhook go out. On a single node the record
 * and the alert event are written in the same event turn, so one LMDB transaction holds both:
 * a kill -9 leaves both or neither. A key present never fires again, after any restart.
 */
import { silentLog, type Log } from '../log.js'
import type { Clock } from '../clock.js'
import type { Aggregate } from '../analytics/aggregate.js'
import type { Breakdown, BreakdownSort, RangeQuery } from '../queries.js'
import { filtersOf } from '../filters.js'
import type { AlertEventStore, BudgetEventRecord } from '../store/alert-events.js'
import type { WebhookNotifier } from '../alerts/notifier.js'
import type { BudgetNotice } from '../actors/broadcaster.js'
import { firedId, MAX_BUDGET_GROUPS, type Budget, type BudgetStore } from '../store/budgets.js'
import { forecast, periodAt, type Period } from './periods.js'

/** Where spend comes from: the analytics answers (exact, from memory, re-priced with the book). */
export interface BudgetSpend {
  metrics(q: RangeQuery): Promise<Aggregate>
  breakdown(q: RangeQuery, by: string, sort: BreakdownSort, limit: number): Promise<Breakdown>
}

export interface BudgetEvaluatorOptions {
  store: BudgetStore
  spend: BudgetSpend
  alertEvents: AlertEventStore
  /** Delivers webhooks (the alerts' notifier: one queue, one set of counters). */
  notifier: WebhookNotifier
  /** Pushes a frame to the budget's project's WebSocket clients (cluster mode: to every node's). */
  publish: (notice: BudgetNotice) => void
  clock: Clock
  log?: Log
  /** Whether this node fires alerts (default: always; cluster mode: holds the alerts lease). */
  isEvaluator?: () => boolean
}

/** One group of a grouped budget, as answered. */
export interface BudgetGroupStatus {
  group: string | null
  spent: number
  remaining: number
  forecast: number
}

/** A budget with its current period's figures: the JSON of every `/budgets` answer. */
export interface BudgetStatus extends Budget {
  spent: number
  remaining: number
  forecast: number
  period_start: string
  period_end: string
  /** Grouped budgets only: the most costly groups first (ties by value), at most {@link MAX_BUDGET_GROUPS}. */
  groups?: BudgetGroupStatus[]
  /**
   * Grouped budgets only: how many groups spent in the period past the {@link MAX_BUDGET_GROUPS}
   * listed (those are not tracked for thresholds; 0 when none). An analytics answer without a
   * group count (a cluster not yet counting) gives 1 when any was left out.
   */
  groups_capped?: number
  /** Grouped budgets only: dollars spent by the groups past the cap (0 when not capped). */
  other_spent?: number
}

/** The webhook body of a budget alert: its record's fields but the store's own, with the record's id as `event_id`. */
export type BudgetWebhookPayload = Omit<BudgetEventRecord, 'id' | 'project' | 'delivery'> & {
  /** Its record in `GET /alerts/events`. */
  event_id: string
}

export function budgetWebhookPayload(r: BudgetEventRecord): BudgetWebhookPayload {
  const { id, project: _project, delivery: _delivery, ...fields } = r
  return { ...fields, event_id: id }
}

/** The /ws frame of a budget alert ({@link BudgetNotice}): the record's fields a frame shows. */
export function budgetNotice(r: BudgetEventRecord): BudgetNotice {
  const { id, delivery: _delivery, period_end: _end, group_by: _by, ...fields } = r
  return { ...fields, event_id: id }
}

/** A budget is evaluated by the timer at most once per this many times its last evaluation's duration. */
export const THROTTLE_FACTOR = 20

const iso = (ms: number) => new Date(ms).toISOString()
/** Nano-dollars as dollars, to the nano-dollar (no float noise). */
const dollars = (nanos: number) => Math.round(nanos) / 1e9

export class BudgetEvaluator {
  readonly #o: Required<Omit<BudgetEvaluatorOptions, 'log' | 'isEvaluator' | 'publish'>>
  readonly #log: Log
  #isEvaluator: () => boolean
  #publish: (notice: BudgetNotice) => void
  /** Each budget's current period, recomputed when the clock leaves it or the budget's period changes. */
  readonly #periods = new Map<string, { kind: string; tz: string; period: Period }>()
  #ticking: Promise<void> | null = null
  /** Each budget's last evaluation in a tick: when it began and how long it took (real time, performance.now). */
  readonly #cost = new Map<string, { at: number; ms: number }>()
  readonly #pending = new Set<Promise<unknown>>()
  #closed = false
  readonly #stats = { ticks: 0, evaluations: 0, throttled: 0, fired: 0, lost: 0, errors: 0 }

  constructor(opts: BudgetEvaluatorOptions) {
    this.#o = { store: opts.store, spend: opts.spend, alertEvents: opts.alertEvents, notifier: opts.notifier, clock: opts.clock }
    this.#log = opts.log ?? silentLog
    this.#isEvaluator = opts.isEvaluator ?? (() => true)
    this.#publish = opts.publish
  }

  /**
   * Cluster mode (src/cluster/engine.ts): fire only while `isEvaluator` answers true (the
   * alerts-lease holder), and push frames through `publish` (to every node's clients) when given.
   */
  attachCluster(opts: { isEvaluator: () => boolean; publish?: (notice: BudgetNotice) => void }): void {
    this.#isEvaluator = opts.isEvaluator
    if (opts.publish !== undefined) this.#publish = opts.publish
  }

  /** The budget's period holding `now` (cached). */
  period(b: Budget, now: number): Period {
    const c = this.#periods.get(b.id)
    if (c !== undefined && c.kind === b.period && c.tz === b.timezone && now >= c.period.start && now < c.period.end) return c.period
    const period = periodAt(b.period, b.timezone, now)
    this.#periods.set(b.id, { kind: b.period, tz: b.timezone, period })
    return period
  }

  /**
   * The budget's figures now; with `fire` (and when this node evaluates), thresholds reached
   * and not yet fired fire. Routes answer this (create and PATCH fire at once).
   */
  async evaluate(b: Budget, opts: { fire: boolean }): Promise<BudgetStatus> {
    const now = this.#o.clock.now()
    const period = this.period(b, now)
    const q: RangeQuery = { ...filtersOf(b.filters), project: b.project, start: period.start, end: now }
    // To the nano-dollar the server counts in: spending exactly a threshold reaches it (0.1 · 3 ≠ 0.3 in floats).
    const amountNanos = Math.round(b.amount * 1e9)
    const fc = (nanos: number) => dollars(forecast(nanos, period, now))
    const status: BudgetStatus = { ...b, spent: 0, remaining: b.amount, forecast: 0, period_start: iso(period.start), period_end: iso(period.end) }
    const targets: Array<{ group: string | null; nanos: number }> = []
    if (b.group_by === null) {
      const agg = await this.#o.spend.metrics(q)
      const nanos = agg.totals.costNanos
      Object.assign(status, { spent: dollars(nanos), remaining: dollars(amountNanos - nanos), forecast: fc(nanos) })
      targets.push({ group: null, nanos })
    } else {
      const bd = await this.#o.spend.breakdown(q, b.group_by, 'cost', MAX_BUDGET_GROUPS)
      const nanos = bd.total.totals.costNanos
      Object.assign(status, { spent: dollars(nanos), remaining: dollars(amountNanos - nanos), forecast: fc(nanos) })
      status.groups = bd.groups.map((g) => {
        const n = g.agg.totals.costNanos
        targets.push({ group: g.value, nanos: n })
        return { group: g.value, spent: dollars(n), remaining: dollars(amountNanos - n), forecast: fc(n) }
      })
      status.groups_capped = bd.count !== undefined ? Math.max(0, bd.count - bd.groups.length) : bd.other !== null ? 1 : 0
      status.other_spent = bd.other === null ? 0 : dollars(bd.other.totals.costNanos)
    }
    this.#stats.evaluations++
    // A budget deleted while its spend was asked fires nothing.
    if (opts.fire && !this.#closed && this.#isEvaluator() && this.#o.store.get(b.id) !== undefined) {
      // Periods before this one can never match again: their fired records go.
      this.#o.store.pruneFired(b.id, period.start)
      for (const threshold of b.thresholds) {
        const bar = Math.round(threshold * amountNanos)
        for (const t of targets) if (t.nanos >= bar) this.#fire(b, period, threshold, t.group, t.nanos, now)
      }
    }
    return status
  }

  /**
   * One pass over every budget (the engine's alert tick; cluster mode: the lease holder's).
   * A tick while one runs joins it. Never rejects: a budget that cannot be evaluated is logged
   * and counted, the others go on.
   *
   * `throttle` (the timers' ticks): a budget whose last evaluation took d ms is evaluated again
   * only once {@link THROTTLE_FACTOR}·d ms have passed, so evaluation stays a small share of a
   * core — a grouped budget over a month of many events (a breakdown of every row of the
   * period) then fires within a few seconds rather than one. Ticks sent by hand evaluate all.
   */
  tick(opts: { throttle?: boolean } = {}): Promise<void> {
    if (this.#ticking !== null) return this.#ticking
    if (this.#closed || !this.#isEvaluator()) return Promise.resolve()
    this.#ticking = (async () => {
      this.#stats.ticks++
      const live = new Set<string>()
      for (const b of this.#o.store.list()) {
        live.add(b.id)
        // The newest version; deleted while the pass ran: skipped.
        const current = this.#o.store.get(b.id)
        if (current === undefined) continue
        const last = this.#cost.get(b.id)
        const t0 = performance.now()
        if (opts.throttle === true && last !== undefined && t0 - last.at < THROTTLE_FACTOR * last.ms) {
          this.#stats.throttled++
          continue
        }
        try {
          await this.evaluate(current, { fire: true })
          this.#cost.set(b.id, { at: t0, ms: performance.now() - t0 })
        } catch (err) {
          this.#stats.errors++
          this.#log.warn({ err, budget: b.id }, 'budget evaluation failed')
        }
      }
      for (const id of this.#periods.keys()) if (!live.has(id)) this.#periods.delete(id)
      for (const id of this.#cost.keys()) if (!live.has(id)) this.#cost.delete(id)
    })().finally(() => {
      this.#ticking = null
    })
    return this.#ticking
  }

  /** Records, then announces one firing (once: a fired key present does nothing). */
  #fire(b: Budget, period: Period, threshold: number, group: string | null, nanos: number, now: number): void {
    const { store, alertEvents } = this.#o
    const id = firedId(b.id, period.start, threshold, b.group_by, group)
    if (store.hasFired(b.id, id)) return
    const { fresh, durable } = store.markFired(id, { budget_id: b.id, project: b.project, period_start: period.start, threshold, group_by: b.group_by, group, at: now })
    if (!fresh) return
    const delivery = b.webhook_url === null ? 'none' : 'pending'
    const firing = { project: b.project, budget_id: b.id, name: b.name, threshold, spent: dollars(nanos), amount: b.amount, period_start: iso(period.start), period_end: iso(period.end), group_by: b.group_by, group, at: iso(now) }
    // Single node: the alert event's put joins the fired record's transaction (same turn).
    // Cluster: the fired record is a compare-and-set; the event is recorded only once it won.
    const early = store.clustered ? null : alertEvents.recordBudget(firing, delivery)
    const p = durable
      .then((won) => {
        if (!won) return
        const record = early ?? alertEvents.recordBudget(firing, delivery)
        this.#stats.fired++
        this.#announce(b, record)
      })
      .catch((err: unknown) => {
        // Not durable: nothing is announced (at most once). Single node: the record's put
        // failed too (same transaction), so neither survives a restart, and it fires again then.
        this.#stats.lost++
        this.#log.error({ err, budget: b.id }, 'budget alert could not be recorded')
      })
    this.#track(p)
  }

  #announce(b: Budget, record: BudgetEventRecord): void {
    this.#publish(budgetNotice(record))
    if (b.webhook_url === null) return
    const p = this.#o.notifier.deliver(b.webhook_url, budgetWebhookPayload(record)).then((outcome) => {
      this.#o.alertEvents.setDelivery(record.id, outcome, this.#o.clock.now())
    })
    this.#track(p)
  }

  #track(p: Promise<unknown>): void {
    this.#pending.add(p)
    void p.finally(() => this.#pending.delete(p))
  }

  /** Resolves once the running tick, every firing's commit and every webhook delivery started so far ended. */
  async idle(): Promise<void> {
    await this.#ticking
    while (this.#pending.size > 0) await Promise.all([...this.#pending])
    await this.#o.alertEvents.flushed()
  }

  get stats() {
    return { ...this.#stats, budgets: this.#o.store.size, firedRecords: this.#o.store.firedCount }
  }

  /**
   * Stops firing and waits for the running tick. Deliveries in flight end when the notifier
   * closes (as failed); {@link idle} then waits for their outcomes. Safe twice.
   */
  async close(): Promise<void> {
    this.#closed = true
    await this.#ticking
  }
}

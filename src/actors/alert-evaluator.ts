/**
 * AlertEvaluator: one actor that owns every rule's alert state and decides transitions.
 *
 *        ok ──holds──► firing ──stops holding──► resolved (≡ ok) ──holds──► firing …
 *                        │  ▲
 *                        └──┘ still holds and cooldown_seconds since the last notification:
 *                             a reminder ('firing', reminder: true)
 *
 * It evaluates every enabled rule on each 'tick' (the engine sends one per second, so rules
 * also resolve when traffic stops) and on priced batches (only rules whose `model` filter is
 * in the batch, and at most once per `batchPassIntervalMs` of clock time: under load the
 * batches come far faster than anyone reads alerts). A window is the last `window_seconds` up
 * to and including now, `(now − window_seconds, now]` of event time in ms (so an event stamped
 * at the very millisecond of the evaluation counts), `now` from the injected clock; its
 * statistics come from the model
 * aggregators through the read-only {@link WindowFn} the topology passes in, so no event is
 * stored twice.
 *
 * Freshness: a batch's message may be handled before an aggregator has recorded that batch
 * (each actor drains its own mailbox), so a batch pass can see state one batch old; the next
 * tick sees it. A crossing is therefore noticed within one tick interval (1 s) of the event
 * reaching the aggregators.
 *
 * The evaluator is dormant until its first tick: the engine sends it once recovery is done,
 * so replaying the log never produces notifications.
 *
 * Every notification goes to `emit` (the topology pushes it to WebSocket clients and hands it
 * to the engine, which records it and calls the webhook); the actor itself does no I/O.
 */
import { Actor, assertNever, type ActorOptions } from './actor.js'
import { judge } from '../alerts/conditions.js'
import { silentLog, type Log } from '../log.js'
import type { Aggregate } from '../analytics/series.js'
import type { Filters, WindowQuery } from '../analytics/reader.js'
import { filtersOf } from '../filters.js'
import type { PricedEvent } from '../events.js'
import type { Rule } from '../store/rules.js'
import type { Clock } from '../clock.js'
import type { AlertReason, AlertStateName, AlertTransition, RecordedAlert } from '../alerts/types.js'

export type AlertMessage =
  | { type: 'events'; events: PricedEvent[] }
  | { type: 'rules'; rules: readonly Rule[] }
  /** `now`: the evaluation time (cluster mode pins it to the time its windows were fetched for); default the clock. */
  | { type: 'tick'; now?: number }
  | { type: 'snapshot'; reply: (state: AlertState) => void }
  /** Cluster mode: newer alerts another node recorded (this node just took the alert lease over). */
  | { type: 'reconcile'; recorded: ReadonlyMap<string, RecordedAlert> }

/**
 * Window statistics: totals and latency sketch of the project's events matching the filters
 * with `start <= ts < end`. Read-only; called between messages of the aggregators.
 */
export type WindowFn = (q: WindowQuery) => Aggregate

/** A rule's filters (its `model` and its `filters` object) as queries take them. */
export function ruleFilters(rule: Rule): Filters {
  const f = filtersOf(rule.filters ?? {})
  return rule.model === null ? f : { ...f, models: new Set([rule.model]) }
}

/** One rule's alert state. */
export interface RuleAlertState {
  state: AlertStateName
  /** When the current state began (epoch ms); null for the initial `ok`. */
  since: number | null
  /** When the current firing was last notified (transition or reminder), epoch ms. */
  lastNotifiedAt: number | null
  /** The condition's value at the last evaluation (null: no data). */
  lastValue: number | null
  lastEvalAt: number | null
}

/** Current snapshot format. */
export const ALERT_STATE_VERSION = 2

/** What a snapshot keeps of the evaluator (format 2). */
export interface AlertState {
  v: 2
  /** Events seen since the start of the log (a diagnostic). */
  seen: number
  rules: Array<{ id: string } & RuleAlertState>
}

/** Format 1 (before evaluation existed): only a counter; still read. */
export interface AlertStateV1 {
  v: 1
  seen: number
}

/** Counters for /metrics. */
export interface AlertStats {
  /** Evaluation passes (ticks and batch passes). */
  passes: number
  /** Rule evaluations (one rule over its window). */
  evaluations: number
  /** Rule evaluations that threw (logged; the other rules were still evaluated). */
  evaluationErrors: number
  /** Rules firing now. */
  firing: number
  /** Notifications decided, by kind. */
  notifications: { firing: number; resolved: number; reminder: number }
}

export interface AlertEvaluatorOptions extends ActorOptions {
  clock: Clock
  window: WindowFn
  /** Receives every transition and reminder, in order. Must not throw (a throw is logged). */
  emit: (t: AlertTransition) => void
  /** Newest recorded notification per rule id (from the alert-event store), reconciled with the snapshot. */
  recorded?: ReadonlyMap<string, RecordedAlert>
  /** Least clock time between two batch-triggered passes. Default {@link BATCH_PASS_INTERVAL_MS}. */
  batchPassIntervalMs?: number
}

/** Default least time between batch-triggered passes; ticks always evaluate. */
export const BATCH_PASS_INTERVAL_MS = 100

export class AlertEvaluator extends Actor<AlertMessage> {
  readonly #clock: Clock
  readonly #window: WindowFn
  readonly #emit: (t: AlertTransition) => void
  readonly #log: Log
  readonly #batchInterval: number
  #rules: readonly Rule[] = []
  #ruleById = new Map<string, Rule>()
  #enabled = 0
  /** Invariant: only ids of rules that exist and are enabled (after the first 'rules' message). */
  readonly #states = new Map<string, RuleAlertState>()
  #seen = 0
  #active = false
  #lastPassAt = -Infinity
  readonly #stats = { passes: 0, evaluations: 0, evaluationErrors: 0, notifications: { firing: 0, resolved: 0, reminder: 0 } }

  /**
   * @param restored - the snapshot's state (format 1 or 2; null/undefined: none).
   * @throws Error `alert evaluator state version <v> is not 2` for an unknown format, so the
   *   engine rebuilds rather than misreads.
   */
  constructor(options: AlertEvaluatorOptions, restored?: AlertState | AlertStateV1 | null) {
    super('alert-evaluator', options)
    this.#clock = options.clock
    this.#window = options.window
    this.#emit = options.emit
    this.#log = options.log ?? silentLog
    this.#batchInterval = options.batchPassIntervalMs ?? BATCH_PASS_INTERVAL_MS
    if (restored !== undefined && restored !== null) {
      const v = (restored as { v?: unknown }).v
      if (v === 1) {
        this.#seen = (restored as AlertStateV1).seen
      } else if (v === ALERT_STATE_VERSION) {
        const s = restored as AlertState
        this.#seen = s.seen
        for (const r of s.rules) {
          this.#states.set(r.id, { state: r.state, since: r.since, lastNotifiedAt: r.lastNotifiedAt, lastValue: r.lastValue, lastEvalAt: r.lastEvalAt })
        }
      } else {
        throw new Error(`alert evaluator state version ${String(v)} is not ${ALERT_STATE_VERSION}`)
      }
    }
    if (options.recorded !== undefined) reconcile(this.#states, options.recorded)
  }

  protected receive(message: AlertMessage): void {
    switch (message.type) {
      case 'events':
        this.#seen += message.events.length
        this.#onBatch(message.events)
        return
      case 'rules':
        this.#setRules(message.rules)
        return
      case 'tick':
        this.#active = true
        this.#pass(message.now ?? this.#clock.now(), null)
        return
      case 'snapshot':
        message.reply(this.#snapshot())
        return
      case 'reconcile':
        reconcile(this.#states, message.recorded)
        return
      default:
        assertNever(message)
    }
  }

  #onBatch(events: readonly PricedEvent[]): void {
    if (!this.#active || this.#enabled === 0) return
    const now = this.#clock.now()
    if (now - this.#lastPassAt < this.#batchInterval) return
    const models = new Set<string>()
    for (const e of events) models.add(e.model)
    this.#pass(now, models)
  }

  /** Evaluates the enabled rules (only those watching one of `models`, or every model, when given). */
  #pass(now: number, models: ReadonlySet<string> | null): void {
    this.#lastPassAt = now
    this.#stats.passes++
    // Rules sharing (model, window) share one window query.
    const windows = new Map<string, Aggregate>()
    for (const rule of this.#rules) {
      if (!rule.enabled) continue
      if (models !== null && rule.model !== null && !models.has(rule.model)) continue
      try {
        this.#evaluate(rule, now, windows)
      } catch (err) {
        this.#stats.evaluationErrors++
        this.#log.error({ actor: this.name, rule: rule.id, err }, 'alert rule evaluation failed')
      }
    }
  }

  #evaluate(rule: Rule, now: number, windows: Map<string, Aggregate>): void {
    // `model` is never '' (1–256 chars), so '' stands for "every model".
    const key = JSON.stringify([rule.window_seconds, rule.project ?? 'default', rule.model ?? '', rule.filters ?? {}])
    let agg = windows.get(key)
    if (agg === undefined) {
      // (now − W, now] as the half-open [now − W + 1 ms, now + 1 ms) the aggregators answer.
      agg = this.#window({ project: rule.project ?? 'default', filters: ruleFilters(rule), start: now - rule.window_seconds * 1000 + 1, end: now + 1 })
      windows.set(key, agg)
    }
    const verdict = judge(rule, agg)
    this.#stats.evaluations++
    let s = this.#states.get(rule.id)
    if (s === undefined) {
      s = { state: 'ok', since: null, lastNotifiedAt: null, lastValue: null, lastEvalAt: null }
      this.#states.set(rule.id, s)
    }
    s.lastValue = verdict.value
    s.lastEvalAt = now
    const notify = (state: 'firing' | 'resolved', reminder: boolean) =>
      this.#notify({ rule, state, reminder, reason: 'condition', value: verdict.value, samples: verdict.samples, since: s.since ?? now, at: now })

    if (s.state !== 'firing') {
      if (!verdict.holds) return
      s.state = 'firing'
      s.since = now
      s.lastNotifiedAt = now
      notify('firing', false)
      return
    }
    if (!verdict.holds) {
      s.state = 'resolved'
      s.since = now
      notify('resolved', false)
      return
    }
    // Still firing: a reminder every cooldown_seconds (0 = notify once per firing).
    const last = s.lastNotifiedAt ?? s.since ?? now
    if (rule.cooldown_seconds > 0 && now - last >= rule.cooldown_seconds * 1000) {
      s.lastNotifiedAt = now
      notify('firing', true)
    }
  }

  /**
   * Takes the new rule set. A rule that was firing and is now disabled or deleted is resolved
   * (reason `rule_disabled` / `rule_deleted`) so receivers can close their incident — once the
   * evaluator is active; before (recovery) its state is dropped silently. Disabled and deleted
   * rules keep no state: re-enabled, a rule starts at `ok`.
   */
  #setRules(rules: readonly Rule[]): void {
    const next = new Map<string, Rule>()
    for (const r of rules) next.set(r.id, r)
    const now = this.#clock.now()
    for (const [id, s] of this.#states) {
      const rule = next.get(id)
      if (rule !== undefined && rule.enabled) continue
      this.#states.delete(id)
      if (s.state !== 'firing' || !this.#active) continue
      const reason: AlertReason = rule === undefined ? 'rule_deleted' : 'rule_disabled'
      const last = rule ?? this.#ruleById.get(id)
      if (last === undefined) continue
      this.#notify({ rule: last, state: 'resolved', reminder: false, reason, value: s.lastValue, samples: 0, since: now, at: now })
    }
    this.#rules = rules
    this.#ruleById = next
    this.#enabled = rules.filter((r) => r.enabled).length
  }

  #notify(t: AlertTransition): void {
    const n = this.#stats.notifications
    if (t.reminder) n.reminder++
    else if (t.state === 'firing') n.firing++
    else n.resolved++
    try {
      this.#emit(t)
    } catch (err) {
      this.#log.error({ actor: this.name, rule: t.rule.id, err }, 'alert notification could not be handed on')
    }
  }

  #snapshot(): AlertState {
    return {
      v: ALERT_STATE_VERSION,
      seen: this.#seen,
      rules: [...this.#states].map(([id, s]) => ({ id, ...s }))
    }
  }

  /** A copy of every rule's alert state, by rule id (rules never evaluated yet are absent). */
  ruleStates(): Map<string, RuleAlertState> {
    const out = new Map<string, RuleAlertState>()
    for (const [id, s] of this.#states) out.set(id, { ...s })
    return out
  }

  get alertStats(): AlertStats {
    let firing = 0
    for (const s of this.#states.values()) if (s.state === 'firing') firing++
    return { ...this.#stats, notifications: { ...this.#stats.notifications }, firing }
  }

  /** True once the first tick arrived (recovery done). */
  get active(): boolean {
    return this.#active
  }

  get eventsSeen(): number {
    return this.#seen
  }
}

/**
 * Merges the alert-event store's newest record per rule into the snapshot's states: the store
 * is written at every notification, the snapshot only every N seconds, so after a crash a
 * record newer than the snapshot's knowledge of the rule wins. Exported for tests.
 */
export function reconcile(states: Map<string, RuleAlertState>, recorded: ReadonlyMap<string, RecordedAlert>): void {
  for (const [id, rec] of recorded) {
    const s = states.get(id)
    const known = s === undefined ? -Infinity : Math.max(s.since ?? -Infinity, s.lastNotifiedAt ?? -Infinity)
    if (rec.at <= known) continue
    states.set(id, {
      state: rec.state,
      since: rec.since,
      lastNotifiedAt: rec.state === 'firing' ? rec.at : (s?.lastNotifiedAt ?? null),
      lastValue: rec.value,
      lastEvalAt: rec.at
    })
  }
}

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
 * Grouped rules (`group_by`) keep one state per group of their window's breakdown by that
 * dimension (the first {@link MAX_RULE_GROUPS} by what the condition measures, see
 * `groupSort`; the rest counted as `capped`); only firing groups hold state, a group that
 * leaves the window (or the top) resolves. Baseline rules divide the value by the mean of the
 * same window 1…N days back, and hold no verdict (`insufficient_history`) until the project has
 * N days of events or while that mean is 0. Both are evaluated on ticks only (their reads are
 * breakdowns and N windows; a batch pass would repeat them many times a second). All reads of
 * one pass are shared between rules asking the same query.
 *
 * Every notification goes to `emit` (the topology pushes it to WebSocket clients and hands it
 * to the engine, which records it and calls the webhook); the actor itself does no I/O.
 */
import { Actor, assertNever, type ActorOptions } from './actor.js'
import { compare, conditionValue, gatedBySamples, judge, type Verdict } from '../alerts/conditions.js'
import { silentLog, type Log } from '../log.js'
import { createAggregate, type Aggregate } from '../analytics/series.js'
import type { WindowQuery } from '../analytics/reader.js'
import type { PricedEvent } from '../events.js'
import type { Rule } from '../store/rules.js'
import type { Clock } from '../clock.js'
import { parseStateKey, type AlertReason, type AlertStateName, type AlertTransition, type RecordedAlert } from '../alerts/types.js'
import {
  groupWindowKey,
  historyWindow,
  MAX_RULE_GROUPS,
  ruleFilters,
  ruleGroupWindow,
  ruleQueries,
  ruleWindow,
  windowKey,
  type GroupWindowQuery,
  type WindowFn,
  type WindowGroups,
  type WindowGroupsFn,
  type WindowGroupsManyFn
} from '../alerts/windows.js'

export { ruleFilters, type WindowFn, type WindowGroupsFn, type WindowGroupsManyFn }

export type AlertMessage =
  | { type: 'events'; events: PricedEvent[] }
  | { type: 'rules'; rules: readonly Rule[] }
  /** `now`: the evaluation time (cluster mode pins it to the time its windows were fetched for); default the clock. */
  | { type: 'tick'; now?: number }
  | { type: 'snapshot'; reply: (state: AlertState) => void }
  /** Cluster mode: newer alerts another node recorded (this node just took the alert lease over). */
  | { type: 'reconcile'; recorded: ReadonlyMap<string, RecordedAlert> }

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

/** One group's state in a grouped rule (only firing groups hold one). */
export interface GroupAlertState extends RuleAlertState {
  /** The group (null: the events without the dimension). */
  group: string | null
}

/** A grouped rule's state. */
export interface GroupedRuleState {
  /** Its firing groups, in no particular order. */
  groups: GroupAlertState[]
  /** Groups in the window past the cap at the last evaluation (not evaluated). */
  capped: number
  lastEvalAt: number | null
  /** The baseline could not be judged at the last evaluation (not N days of history). */
  insufficientHistory: boolean
  /** Groups whose baseline mean was 0 (or undefined) at the last evaluation: not judged. */
  groupsWithoutBaseline: number
}

/** Current snapshot format. */
export const ALERT_STATE_VERSION = 2

/**
 * What a snapshot keeps of the evaluator (format 2). `groups` (grouped rules' firing groups)
 * was added without a new format number: a reader that predates it ignores it and only loses
 * the grouped rules' states, which the alert-event store's records then restore.
 */
export interface AlertState {
  v: 2
  /** Events seen since the start of the log (a diagnostic). */
  seen: number
  rules: Array<{ id: string } & RuleAlertState>
  groups?: Array<{ id: string; capped: number; groups: GroupAlertState[] }>
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
  /** Group evaluations of grouped rules (one group over the window). */
  groupEvaluations: number
  /** Rule evaluations that threw (logged; the other rules were still evaluated). */
  evaluationErrors: number
  /** Rules firing now (a grouped rule: groups firing now). */
  firing: number
  /** Notifications decided, by kind. */
  notifications: { firing: number; resolved: number; reminder: number }
}

export interface AlertEvaluatorOptions extends ActorOptions {
  clock: Clock
  window: WindowFn
  /** Groups of a window, for rules with `group_by` (absent: such rules fail their evaluation, counted). */
  windowGroups?: WindowGroupsFn
  /**
   * Many groups queries at once (one pass over the rows for the sorts of one window, filters and
   * dimension); optional: each tick asks it for every grouped rule's queries first.
   */
  windowGroupsMany?: WindowGroupsManyFn
  /** Receives every transition and reminder, in order. Must not throw (a throw is logged). */
  emit: (t: AlertTransition) => void
  /** Newest recorded notification per rule id (from the alert-event store), reconciled with the snapshot. */
  recorded?: ReadonlyMap<string, RecordedAlert>
  /** Least clock time between two batch-triggered passes. Default {@link BATCH_PASS_INTERVAL_MS}. */
  batchPassIntervalMs?: number
}

/** Default least time between batch-triggered passes; ticks always evaluate. */
export const BATCH_PASS_INTERVAL_MS = 100

/** A group's key in a grouped rule's map (null apart from every string). */
const groupKey = (g: string | null) => (g === null ? '' : `=${g}`)

const EMPTY = createAggregate()

/** Group values ascending, JavaScript string order, the null group last (as breakdowns order ties). */
function cmpGroup(a: string | null, b: string | null): number {
  if (a === b) return 0
  if (a === null) return 1
  if (b === null) return -1
  return a < b ? -1 : 1
}

/** The reads of one pass, shared between rules asking the same query. */
class PassReads {
  readonly #window: WindowFn
  readonly #groups: WindowGroupsFn | undefined
  readonly #windows = new Map<string, Aggregate>()
  readonly #grouped = new Map<string, { answer: WindowGroups; byKey: Map<string, Aggregate> }>()
  /** Answers with nothing capped, by their key with the sort left out (set to `cost`). */
  readonly #whole = new Map<string, { answer: WindowGroups; byKey: Map<string, Aggregate> }>()

  constructor(window: WindowFn, groups: WindowGroupsFn | undefined) {
    this.#window = window
    this.#groups = groups
  }

  window(q: WindowQuery): Aggregate {
    const key = windowKey(q)
    let agg = this.#windows.get(key)
    if (agg === undefined) this.#windows.set(key, (agg = this.#window(q)))
    return agg
  }

  /** Takes answers asked for ahead (a batch of the pass's groups queries). */
  seed(qs: readonly GroupWindowQuery[], answers: readonly WindowGroups[]): void {
    qs.forEach((q, i) => {
      const answer = answers[i]
      const byKey = new Map<string, Aggregate>()
      for (const x of answer.groups) byKey.set(groupKey(x.value), x.agg)
      this.#grouped.set(groupWindowKey(q), { answer, byKey })
    })
  }

  groups(q: GroupWindowQuery): { answer: WindowGroups; byKey: Map<string, Aggregate> } {
    const key = groupWindowKey(q)
    let g = this.#grouped.get(key)
    if (g !== undefined) return g
    // An answer with nothing capped holds every group whatever its order: rules that differ only
    // in what they sort by (their condition) share it.
    const whole = this.#whole.get(groupWindowKey({ ...q, sort: 'cost' }))
    if (whole !== undefined) {
      const metric = q.sort === 'cost' ? 'costNanos' : q.sort === 'requests' ? 'requests' : 'totalTokens'
      const groups = [...whole.answer.groups].sort((a, b) => b.agg.totals[metric] - a.agg.totals[metric] || cmpGroup(a.value, b.value))
      g = { answer: { groups, capped: 0 }, byKey: whole.byKey }
      this.#grouped.set(key, g)
      return g
    }
    if (this.#groups === undefined) throw new Error('no windowGroups function: grouped rules cannot be evaluated')
    const answer = this.#groups(q)
    const byKey = new Map<string, Aggregate>()
    for (const x of answer.groups) byKey.set(groupKey(x.value), x.agg)
    this.#grouped.set(key, (g = { answer, byKey }))
    if (answer.capped === 0) this.#whole.set(groupWindowKey({ ...q, sort: 'cost' }), g)
    return g
  }
}

/** A verdict, and whether the baseline could not judge (no verdict then: `holds` false, `value` null). */
interface BaselineVerdict extends Verdict {
  insufficient: boolean
}

/**
 * The baseline verdict: the window's value divided by the mean of the same window over the
 * previous days (`past`, one aggregate per day; a day without the group counts as empty). For
 * per-request statistics (latency, error rate) the mean is over the days that had requests.
 * No verdict without history or while the mean is 0 or undefined.
 */
export function judgeBaseline(rule: Pick<Rule, 'condition' | 'comparator' | 'threshold' | 'window_seconds' | 'min_samples'>, current: Aggregate, past: ReadonlyArray<Aggregate | undefined>, history: boolean): BaselineVerdict {
  const samples = current.totals.requests
  if (!history) return { value: null, samples, holds: false, insufficient: true }
  let sum = 0
  let n = 0
  for (const a of past) {
    const v = conditionValue(rule.condition, a ?? EMPTY, rule.window_seconds)
    if (v === null || Number.isNaN(v)) continue
    sum += v
    n++
  }
  const mean = n === 0 ? 0 : sum / n
  if (!(mean > 0)) return { value: null, samples, holds: false, insufficient: true }
  const raw = conditionValue(rule.condition, current, rule.window_seconds)
  const value = raw === null ? null : raw / mean
  const enough = !gatedBySamples(rule.condition, rule.comparator) || samples >= rule.min_samples
  return { value, samples, holds: enough && compare(value, rule.comparator, rule.threshold), insufficient: false }
}

interface GroupedState {
  groups: Map<string, GroupAlertState>
  capped: number
  lastEvalAt: number | null
  insufficientHistory: boolean
  withoutBaseline: number
}

const newGrouped = (): GroupedState => ({ groups: new Map(), capped: 0, lastEvalAt: null, insufficientHistory: false, withoutBaseline: 0 })

export class AlertEvaluator extends Actor<AlertMessage> {
  readonly #clock: Clock
  readonly #window: WindowFn
  readonly #windowGroups: WindowGroupsFn | undefined
  readonly #windowGroupsMany: WindowGroupsManyFn | undefined
  readonly #emit: (t: AlertTransition) => void
  readonly #log: Log
  readonly #batchInterval: number
  #rules: readonly Rule[] = []
  #ruleById = new Map<string, Rule>()
  #enabled = 0
  /** A 'rules' message arrived (before it, restored states are kept as they are). */
  #rulesKnown = false
  /** Invariant: only ids of rules that exist and are enabled (after the first 'rules' message). */
  readonly #states = new Map<string, RuleAlertState>()
  /** Grouped rules' states, by rule id; same invariant. */
  readonly #grouped = new Map<string, GroupedState>()
  /** Ungrouped baseline rules whose last evaluation had no baseline to judge by. */
  readonly #insufficient = new Set<string>()
  /** Per project, the most days of history seen (a project that held N days holds them from then on). */
  readonly #history = new Map<string, number>()
  #seen = 0
  #active = false
  #lastPassAt = -Infinity
  readonly #stats = { passes: 0, evaluations: 0, groupEvaluations: 0, evaluationErrors: 0, notifications: { firing: 0, resolved: 0, reminder: 0 } }

  /**
   * @param restored - the snapshot's state (format 1 or 2; null/undefined: none).
   * @throws Error `alert evaluator state version <v> is not 2` for an unknown format, so the
   *   engine rebuilds rather than misreads.
   */
  constructor(options: AlertEvaluatorOptions, restored?: AlertState | AlertStateV1 | null) {
    super('alert-evaluator', options)
    this.#clock = options.clock
    this.#window = options.window
    this.#windowGroups = options.windowGroups
    this.#windowGroupsMany = options.windowGroupsMany
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
        for (const g of s.groups ?? []) {
          const gs = newGrouped()
          gs.capped = g.capped
          for (const x of g.groups) gs.groups.set(groupKey(x.group), { ...x })
          this.#grouped.set(g.id, gs)
        }
      } else {
        throw new Error(`alert evaluator state version ${String(v)} is not ${ALERT_STATE_VERSION}`)
      }
    }
    if (options.recorded !== undefined) reconcile(this.#states, options.recorded, this.#grouped)
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
        reconcile(this.#states, message.recorded, this.#grouped)
        this.#dropStrays()
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

  /**
   * Evaluates the enabled rules (only those watching one of `models`, or every model, when
   * given: a batch pass, which leaves grouped and baseline rules to the ticks).
   */
  #pass(now: number, models: ReadonlySet<string> | null): void {
    this.#lastPassAt = now
    this.#stats.passes++
    const reads = new PassReads(this.#window, this.#windowGroups)
    if (models === null && this.#windowGroupsMany !== undefined) this.#prefetchGroups(now, reads, this.#windowGroupsMany)
    for (const rule of this.#rules) {
      if (!rule.enabled) continue
      const heavy = rule.group_by != null || rule.baseline != null
      if (models !== null && (heavy || (rule.model !== null && !models.has(rule.model)))) continue
      try {
        if (rule.group_by != null) this.#evaluateGroups(rule, now, reads)
        else this.#evaluate(rule, now, reads)
      } catch (err) {
        this.#stats.evaluationErrors++
        this.#log.error({ actor: this.name, rule: rule.id, err }, 'alert rule evaluation failed')
      }
    }
  }

  /** Every grouped rule's groups queries of this tick, asked at once (a failure leaves them to be asked one by one). */
  #prefetchGroups(now: number, reads: PassReads, many: WindowGroupsManyFn): void {
    const qs = new Map<string, GroupWindowQuery>()
    for (const rule of this.#rules) {
      if (!rule.enabled || rule.group_by == null) continue
      for (const q of ruleQueries(rule, now, (p, d) => this.historyKnown(p, d)).groups) qs.set(groupWindowKey(q), q)
    }
    if (qs.size === 0) return
    const list = [...qs.values()]
    try {
      reads.seed(list, many(list))
    } catch (err) {
      this.#log.error({ actor: this.name, err }, 'grouped alert windows could not be read at once; asking one by one')
    }
  }

  /** Whether `project` held `days` days of history at `now` (remembered once true). */
  #historyHolds(project: string, days: number, now: number, reads: PassReads): boolean {
    if (this.historyKnown(project, days)) return true
    const holds = reads.window(historyWindow(project, now, days)).totals.requests > 0
    if (holds) this.#history.set(project, days)
    return holds
  }

  /**
   * True when `project` is known to hold `days` days of history (cluster mode leaves its check
   * out of the windows it fetches then: see `ruleQueries`). Read-only.
   */
  historyKnown(project: string, days: number): boolean {
    return (this.#history.get(project) ?? 0) >= days
  }

  #evaluate(rule: Rule, now: number, reads: PassReads): void {
    const agg = reads.window(ruleWindow(rule, now))
    let verdict: Verdict
    const days = rule.baseline?.days ?? 0
    if (days > 0) {
      const history = this.#historyHolds(rule.project ?? 'default', days, now, reads)
      const past: Aggregate[] = []
      if (history) for (let d = 1; d <= days; d++) past.push(reads.window(ruleWindow(rule, now, d)))
      const b = judgeBaseline(rule, agg, past, history)
      if (b.insufficient) this.#insufficient.add(rule.id)
      else this.#insufficient.delete(rule.id)
      verdict = b
    } else {
      verdict = judge(rule, agg)
    }
    this.#stats.evaluations++
    let s = this.#states.get(rule.id)
    if (s === undefined) {
      s = { state: 'ok', since: null, lastNotifiedAt: null, lastValue: null, lastEvalAt: null }
      this.#states.set(rule.id, s)
    }
    this.#step(rule, s, verdict, now, undefined)
  }

  /**
   * One state's step: ok/resolved → firing when the verdict holds; firing → resolved when it no
   * longer does; a reminder every `cooldown_seconds` while it still does.
   */
  #step(rule: Rule, s: RuleAlertState, verdict: Verdict, now: number, group: string | null | undefined): void {
    s.lastValue = verdict.value
    s.lastEvalAt = now
    const notify = (state: 'firing' | 'resolved', reminder: boolean) =>
      this.#notify({ rule, state, reminder, reason: 'condition', value: verdict.value, samples: verdict.samples, since: s.since ?? now, at: now, ...(group === undefined ? {} : { group }) })

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
   * A grouped rule: each of the window's first {@link MAX_RULE_GROUPS} groups is judged on its
   * own (with a baseline, against its own mean); firing groups keep a state, and a firing
   * group no longer among them resolves.
   */
  #evaluateGroups(rule: Rule, now: number, reads: PassReads): void {
    const { answer, byKey } = reads.groups(ruleGroupWindow(rule, now))
    const days = rule.baseline?.days ?? 0
    const history = days > 0 ? this.#historyHolds(rule.project ?? 'default', days, now, reads) : true
    const past: Array<Map<string, Aggregate>> = []
    if (days > 0 && history) for (let d = 1; d <= days; d++) past.push(reads.groups(ruleGroupWindow(rule, now, d)).byKey)
    let gs = this.#grouped.get(rule.id)
    if (gs === undefined) this.#grouped.set(rule.id, (gs = newGrouped()))
    gs.capped = answer.capped
    gs.lastEvalAt = now
    gs.insufficientHistory = !history
    gs.withoutBaseline = 0
    this.#stats.evaluations++
    // 100 rules × 1,000 groups a tick: a group that does not hold and has no state costs a
    // verdict only (no key string, no set): its key is made when it fires or has a state.
    const list = answer.groups.length > MAX_RULE_GROUPS ? answer.groups.slice(0, MAX_RULE_GROUPS) : answer.groups
    const evaluated: { has(key: string): boolean } = list === answer.groups ? byKey : new Set(list.map((g) => groupKey(g.value)))
    for (const g of list) {
      this.#stats.groupEvaluations++
      const key = days > 0 || gs.groups.size > 0 ? groupKey(g.value) : null
      let verdict: Verdict
      if (days > 0) {
        const b = judgeBaseline(
          rule,
          g.agg,
          past.map((m) => m.get(key as string)),
          history
        )
        if (b.insufficient && history) gs.withoutBaseline++
        verdict = b
      } else {
        verdict = judge(rule, g.agg)
      }
      let s = key === null ? undefined : gs.groups.get(key)
      const k = key ?? groupKey(g.value)
      if (s === undefined) {
        if (!verdict.holds) continue
        s = { group: g.value, state: 'ok', since: null, lastNotifiedAt: null, lastValue: null, lastEvalAt: null }
        gs.groups.set(k, s)
      }
      this.#step(rule, s, verdict, now, g.value)
      if (s.state !== 'firing') gs.groups.delete(k)
    }
    // Firing groups gone from the window (or past the cap): resolved, with the value of an empty window.
    for (const [key, s] of gs.groups) {
      if (evaluated.has(key)) continue
      const value = days > 0 ? null : conditionValue(rule.condition, EMPTY, rule.window_seconds)
      this.#step(rule, s, { value, samples: 0, holds: false }, now, s.group)
      gs.groups.delete(key)
    }
  }

  /**
   * Takes the new rule set. A rule that was firing and is now disabled or deleted is resolved
   * (reason `rule_disabled` / `rule_deleted`) so receivers can close their incident — once the
   * evaluator is active; before (recovery) its state is dropped silently. Disabled and deleted
   * rules keep no state: re-enabled, a rule starts at `ok`. A rule whose `group_by` changed
   * resolves what was firing under the old grouping (reason `rule_changed`) and starts afresh.
   */
  #setRules(rules: readonly Rule[]): void {
    const next = new Map<string, Rule>()
    for (const r of rules) next.set(r.id, r)
    const now = this.#clock.now()
    const gone = (id: string): { reason: AlertReason; last: Rule | undefined } | null => {
      const rule = next.get(id)
      const old = this.#ruleById.get(id)
      if (rule !== undefined && rule.enabled) {
        if (old === undefined || (old.group_by ?? null) === (rule.group_by ?? null)) return null
        return { reason: 'rule_changed', last: old }
      }
      return { reason: rule === undefined ? 'rule_deleted' : 'rule_disabled', last: rule ?? old }
    }
    for (const [id, s] of this.#states) {
      const g = gone(id)
      if (g === null) {
        // A rule that became grouped while the server was down: its ungrouped state is gone.
        if (next.get(id)?.group_by != null) this.#states.delete(id)
        continue
      }
      this.#states.delete(id)
      this.#insufficient.delete(id)
      if (s.state !== 'firing' || !this.#active || g.last === undefined) continue
      this.#notify({ rule: g.last, state: 'resolved', reminder: false, reason: g.reason, value: s.lastValue, samples: 0, since: now, at: now })
    }
    for (const [id, gs] of this.#grouped) {
      const g = gone(id)
      if (g === null) {
        if (next.get(id)?.group_by == null) this.#grouped.delete(id)
        continue
      }
      this.#grouped.delete(id)
      if (!this.#active || g.last === undefined) continue
      for (const s of gs.groups.values()) {
        if (s.state !== 'firing') continue
        this.#notify({ rule: g.last, state: 'resolved', reminder: false, reason: g.reason, value: s.lastValue, samples: 0, since: now, at: now, group: s.group })
      }
    }
    for (const id of this.#insufficient) if (next.get(id)?.baseline == null) this.#insufficient.delete(id)
    // A project without rules forgets its history (deleted, it may come back without it).
    const projects = new Set(rules.map((r) => r.project ?? 'default'))
    for (const p of this.#history.keys()) if (!projects.has(p)) this.#history.delete(p)
    this.#rules = rules
    this.#ruleById = next
    this.#rulesKnown = true
    this.#enabled = rules.filter((r) => r.enabled).length
  }

  /**
   * Keeps the invariant after a reconcile: states only of enabled rules, ungrouped ones only for
   * rules without `group_by` and grouped ones only for rules with it (records of another node
   * may predate a rule's change). Silent: what they said was already notified.
   */
  #dropStrays(): void {
    if (!this.#rulesKnown) return
    for (const id of this.#states.keys()) {
      const r = this.#ruleById.get(id)
      if (r === undefined || !r.enabled || r.group_by != null) this.#states.delete(id)
    }
    for (const id of this.#grouped.keys()) {
      const r = this.#ruleById.get(id)
      if (r === undefined || !r.enabled || r.group_by == null) this.#grouped.delete(id)
    }
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
    const out: AlertState = {
      v: ALERT_STATE_VERSION,
      seen: this.#seen,
      rules: [...this.#states].map(([id, s]) => ({ id, ...s }))
    }
    if (this.#grouped.size > 0) out.groups = [...this.#grouped].map(([id, gs]) => ({ id, capped: gs.capped, groups: [...gs.groups.values()].map((s) => ({ ...s })) }))
    return out
  }

  /** A copy of every rule's alert state, by rule id (rules never evaluated yet are absent; grouped rules: see {@link groupedState}). */
  ruleStates(): Map<string, RuleAlertState> {
    const out = new Map<string, RuleAlertState>()
    for (const [id, s] of this.#states) out.set(id, { ...s })
    return out
  }

  /** Whether an ungrouped baseline rule's last evaluation lacked a baseline (not N days of history, or a mean of 0). */
  insufficientHistory(ruleId: string): boolean {
    return this.#insufficient.has(ruleId)
  }

  /** A copy of a grouped rule's state (undefined: not grouped, or never evaluated nor restored). */
  groupedState(ruleId: string): GroupedRuleState | undefined {
    const gs = this.#grouped.get(ruleId)
    if (gs === undefined) return undefined
    return { groups: [...gs.groups.values()].map((s) => ({ ...s })), capped: gs.capped, lastEvalAt: gs.lastEvalAt, insufficientHistory: gs.insufficientHistory, groupsWithoutBaseline: gs.withoutBaseline }
  }

  get alertStats(): AlertStats {
    let firing = 0
    for (const s of this.#states.values()) if (s.state === 'firing') firing++
    for (const gs of this.#grouped.values()) for (const s of gs.groups.values()) if (s.state === 'firing') firing++
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
 * Merges the alert-event store's newest record per rule (and per group of a grouped rule: see
 * `stateKey`) into the snapshot's states: the store is written at every notification, the
 * snapshot only every N seconds, so after a crash a record newer than the snapshot's knowledge
 * of the rule wins. Exported for tests.
 */
export function reconcile(states: Map<string, RuleAlertState>, recorded: ReadonlyMap<string, RecordedAlert>, grouped?: Map<string, GroupedState>): void {
  for (const [key, rec] of recorded) {
    const { ruleId, group } = parseStateKey(key)
    if (group !== undefined) {
      if (grouped === undefined) continue
      let gs = grouped.get(ruleId)
      const s = gs?.groups.get(groupKey(group))
      const known = s === undefined ? -Infinity : Math.max(s.since ?? -Infinity, s.lastNotifiedAt ?? -Infinity)
      if (rec.at <= known) continue
      if (rec.state !== 'firing') {
        gs?.groups.delete(groupKey(group))
        continue
      }
      if (gs === undefined) grouped.set(ruleId, (gs = newGrouped()))
      gs.groups.set(groupKey(group), { group, state: 'firing', since: rec.since, lastNotifiedAt: rec.at, lastValue: rec.value, lastEvalAt: rec.at })
      continue
    }
    const s = states.get(ruleId)
    const known = s === undefined ? -Infinity : Math.max(s.since ?? -Infinity, s.lastNotifiedAt ?? -Infinity)
    if (rec.at <= known) continue
    states.set(ruleId, {
      state: rec.state,
      since: rec.since,
      lastNotifiedAt: rec.state === 'firing' ? rec.at : (s?.lastNotifiedAt ?? null),
      lastValue: rec.value,
      lastEvalAt: rec.at
    })
  }
}

/**
 * AlertDispatcher: what happens to a notification the evaluator decided, outside the actor —
 * record it (alert-event store), then, when the rule has a `webhook_url`, deliver it through the
 * notifier and record the outcome on the same record. Delivery is asynchronous: `dispatch()`
 * returns at once, so neither the evaluator nor ingestion ever waits for a webhook.
 */
import { silentLog, type Log } from '../log.js'
import type { AlertEventRecord, AlertEventStore } from '../store/alert-events.js'
import type { WebhookNotifier } from './notifier.js'
import type { AlertTransition, DeliveryOutcome } from './types.js'
import type { Rule } from '../store/rules.js'
import type { Clock } from '../clock.js'

/** The JSON body POSTed to a webhook: the WebSocket message's fields plus context. */
export interface WebhookPayload {
  type: 'alert'
  rule_id: string
  rule_name: string
  state: 'firing' | 'resolved' | 'test'
  value: number | null
  threshold: number
  at: string
  /** The alert event's id (`GET /alerts/events`); null for a test. */
  event_id: string | null
  condition: Rule['condition']
  comparator: Rule['comparator']
  model: string | null
  window_seconds: number
  samples: number | null
  since: string | null
  reminder: boolean
  reason: string
  /** A grouped rule's group (null: the events without the dimension, or a rule without `group_by`). */
  group: string | null
}

/** A Slack-compatible body (`webhook_format: "slack"`): one readable line. */
export interface SlackPayload {
  text: string
}

const COMPARATOR_TEXT: Record<Rule['comparator'], string> = { gt: '>', gte: '≥', lt: '<', lte: '≤' }

/** A value as people read it: up to 4 significant decimals, no exponent for everyday sizes. */
function readable(x: number | null): string {
  if (x === null) return 'no data'
  if (Number.isInteger(x)) return String(x)
  return String(Number(x.toPrecision(4)))
}

/**
 * The Slack `{"text": …}` body of a notification, e.g.
 * `[FIRING] High cost (rule_x) user_id=u1: cost_per_hour is 12.5, threshold > 10 — window 300 s, project default, at …`.
 * With a baseline the value and threshold are factors of the mean of the previous N days.
 */
export function slackPayload(p: WebhookPayload, rule: Pick<Rule, 'group_by' | 'baseline' | 'project'>): SlackPayload {
  const state = p.state === 'test' ? 'TEST' : p.reminder ? 'STILL FIRING' : p.state.toUpperCase()
  const group = rule.group_by == null ? '' : ` ${rule.group_by}=${p.group === null ? '(none)' : p.group}`
  const days = rule.baseline?.days
  const scale = days === undefined ? '' : '×'
  const base = days === undefined ? '' : ` its ${days}-day baseline`
  const why = p.reason === 'condition' || p.reason === 'test' ? '' : ` (${p.reason.replace('_', ' ')})`
  const text = `[${state}] ${p.rule_name} (${p.rule_id})${group}: ${p.condition} is ${readable(p.value)}${p.value === null ? '' : `${scale}${base}`}, threshold ${COMPARATOR_TEXT[p.comparator]} ${readable(p.threshold)}${scale}${why} — window ${p.window_seconds} s, project ${rule.project ?? 'default'}, at ${p.at}`
  return { text }
}

/** The body to POST for a rule: its `webhook_format` (default JSON). */
export function bodyFor(p: WebhookPayload, rule: Rule): WebhookPayload | SlackPayload {
  return rule.webhook_format === 'slack' ? slackPayload(p, rule) : p
}

/** The webhook body for a recorded alert event. */
export function webhookPayload(r: AlertEventRecord): WebhookPayload {
  return {
    type: 'alert',
    rule_id: r.rule_id,
    rule_name: r.rule_name,
    state: r.state,
    value: r.value,
    threshold: r.threshold,
    at: r.at,
    event_id: r.id,
    condition: r.condition,
    comparator: r.comparator,
    model: r.model,
    window_seconds: r.window_seconds,
    samples: r.samples,
    since: r.since,
    reminder: r.reminder,
    reason: r.reason,
    group: r.group ?? null
  }
}

/** The webhook body of `POST /alerts/rules/:id/test`. */
export function testPayload(rule: Rule, value: number | null, at: number): WebhookPayload {
  return {
    type: 'alert',
    rule_id: rule.id,
    rule_name: rule.name,
    state: 'test',
    value,
    threshold: rule.threshold,
    at: new Date(at).toISOString(),
    event_id: null,
    condition: rule.condition,
    comparator: rule.comparator,
    model: rule.model,
    window_seconds: rule.window_seconds,
    samples: null,
    since: null,
    reminder: false,
    reason: 'test',
    group: null
  }
}

export interface AlertDispatcherOptions {
  store: AlertEventStore
  notifier: WebhookNotifier
  clock: Clock
  log?: Log
}

export class AlertDispatcher {
  readonly #store: AlertEventStore
  readonly #notifier: WebhookNotifier
  readonly #clock: Clock
  readonly #log: Log
  /** Deliveries whose outcome is not yet recorded. */
  readonly #pending = new Set<Promise<void>>()
  #closed: Promise<void> | undefined

  constructor(opts: AlertDispatcherOptions) {
    this.#store = opts.store
    this.#notifier = opts.notifier
    this.#clock = opts.clock
    this.#log = opts.log ?? silentLog
  }

  /** Records the notification and starts its webhook delivery, if any. Never throws. */
  dispatch(t: AlertTransition): AlertEventRecord | undefined {
    try {
      const url = t.rule.webhook_url
      const record = this.#store.record(t, url === null ? 'none' : 'pending')
      if (url !== null) {
        const p = this.#notifier.deliver(url, bodyFor(webhookPayload(record), t.rule)).then((outcome) => {
          this.#store.setDelivery(record.id, outcome, this.#clock.now())
        })
        this.#pending.add(p)
        void p.finally(() => this.#pending.delete(p))
      }
      return record
    } catch (err) {
      this.#log.error({ err, rule: t.rule.id }, 'alert notification could not be recorded')
      return undefined
    }
  }

  /** Sends a test notification (one attempt, not recorded) to the rule's webhook. */
  async test(rule: Rule & { webhook_url: string }, value: number | null): Promise<{ payload: WebhookPayload | SlackPayload; delivery: DeliveryOutcome }> {
    const payload = bodyFor(testPayload(rule, value, this.#clock.now()), rule)
    const delivery = await this.#notifier.deliver(rule.webhook_url, payload, { attempts: 1 })
    return { payload, delivery }
  }

  /** The notifier's counters (deliveries, attempts, failures). */
  get stats() {
    return this.#notifier.stats
  }

  /** Resolves when every delivery started so far has ended and its outcome is committed. */
  async idle(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending])
    await this.#store.flushed()
  }

  /** Ends deliveries (aborting what is in flight: recorded as failed) and flushes the store. Safe twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      await this.#notifier.close()
      await this.idle()
    })()
    return this.#closed
  }
}

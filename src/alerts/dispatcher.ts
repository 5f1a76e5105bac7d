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
    reason: r.reason
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
    reason: 'test'
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
        const p = this.#notifier.deliver(url, webhookPayload(record)).then((outcome) => {
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
  async test(rule: Rule & { webhook_url: string }, value: number | null): Promise<{ payload: WebhookPayload; delivery: DeliveryOutcome }> {
    const payload = testPayload(rule, value, this.#clock.now())
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

/**
 * Shapes shared by the alerting parts: the evaluator (an actor) decides transitions, the
 * alert-event store records them, the notifier delivers them. None of these import each other's
 * classes; the topology and the engine wire them.
 */
import type { Rule } from '../store/rules.js'

/**
 * A rule's alert state. `resolved` behaves exactly as `ok` (it only tells that the rule fired
 * before); `firing` holds while the condition holds.
 */
export type AlertStateName = 'ok' | 'firing' | 'resolved'

/** Why a notification was made. */
export type AlertReason =
  /** The condition started or stopped holding (or still holds: a cooldown reminder). */
  | 'condition'
  /** A firing rule was disabled: it is resolved, so receivers can close their incident. */
  | 'rule_disabled'
  /** A firing rule was deleted: same. */
  | 'rule_deleted'
  /** A firing rule's `group_by` changed: the states it fired in no longer exist as such; same. */
  | 'rule_changed'

/** One notification decided by the evaluator: a transition, or a reminder while firing. */
export interface AlertTransition {
  /** The rule as it was when evaluated (a deleted rule's last version). */
  rule: Rule
  state: 'firing' | 'resolved'
  /** True for a cooldown reminder: the rule was firing already and still is. */
  reminder: boolean
  reason: AlertReason
  /** The condition's value over the window (see `conditionValue`); null with no data. */
  value: number | null
  /** Requests in the window. */
  samples: number
  /** When the current state began, epoch ms (for a reminder: when the firing began). */
  since: number
  /** When it was decided, epoch ms (the evaluator's clock). */
  at: number
  /**
   * A grouped rule's group (`group_by`'s value; null: the events without it). Absent for a rule
   * without `group_by` (frames, records and webhooks then show `"group": null`).
   */
  group?: string | null
}

/**
 * What the alert-event store remembers of a rule's newest recorded notification; on start it
 * is reconciled with the snapshot (the store is written at every transition, the snapshot only
 * every N seconds, so after a crash the store can be newer).
 */
export interface RecordedAlert {
  state: 'firing' | 'resolved'
  since: number
  at: number
  value: number | null
  /** Present for a grouped rule's record: its group (null: the null group). */
  group?: string | null
}

/** Outcome of one webhook delivery (all its attempts). */
export interface DeliveryOutcome {
  status: 'delivered' | 'failed'
  /** HTTP requests made (1 … attempts); 0 when it never started (queue full, shutting down). */
  attempts: number
  /** Status of the last response, or null when none came (network error, timeout). */
  status_code: number | null
  /** Why the last attempt failed, or null once delivered. Never contains the URL. */
  error: string | null
}

/**
 * The key of a rule's state (and of its newest record, `AlertEventStore.latestByRule`): the rule
 * id for a rule without `group_by`; for a grouped rule, the id and the group (null: the events
 * without the dimension).
 */
export function stateKey(ruleId: string, group?: string | null): string {
  return group === undefined ? ruleId : `${ruleId}\u0000${group === null ? '' : `=${group}`}`
}

/** The rule id and group of a {@link stateKey} (`group` undefined: an ungrouped rule's key). */
export function parseStateKey(key: string): { ruleId: string; group?: string | null } {
  const i = key.indexOf('\u0000')
  if (i < 0) return { ruleId: key }
  const rest = key.slice(i + 1)
  return { ruleId: key.slice(0, i), group: rest === '' ? null : rest.slice(1) }
}

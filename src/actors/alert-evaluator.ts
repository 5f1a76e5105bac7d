/**
 * AlertEvaluator: one actor that sees every priced batch and the rule set. This first cut
 * keeps the rule set current and counts what it saw; evaluation (windows, states,
 * notifications) arrives with the real-time issue and builds on these messages.
 */
import { Actor, assertNever, type ActorOptions } from './actor.js'
import type { PricedEvent } from '../events.js'
import type { Rule } from '../store/rules.js'

export type AlertMessage =
  | { type: 'events'; events: PricedEvent[] }
  | { type: 'rules'; rules: readonly Rule[] }
  | { type: 'snapshot'; reply: (state: AlertState) => void }

export interface AlertState {
  v: 1
  seen: number
}

export class AlertEvaluator extends Actor<AlertMessage> {
  #rules: readonly Rule[] = []
  #seen = 0

  constructor(options: ActorOptions = {}, restored?: AlertState) {
    super('alert-evaluator', options)
    if (restored !== undefined && restored.v === 1) this.#seen = restored.seen
  }

  protected receive(message: AlertMessage): void {
    switch (message.type) {
      case 'events':
        this.#seen += message.events.length
        return
      case 'rules':
        this.#rules = message.rules
        return
      case 'snapshot':
        message.reply({ v: 1, seen: this.#seen })
        return
      default:
        assertNever(message)
    }
  }

  get ruleCount(): number {
    return this.#rules.length
  }

  get eventsSeen(): number {
    return this.#seen
  }
}

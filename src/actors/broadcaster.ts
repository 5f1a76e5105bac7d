/**
 * Broadcaster: one actor that receives every priced batch in log order, for fan-out to
 * WebSocket subscribers. This first cut counts what it saw; sockets, filters, coalesced
 * writes and backpressure arrive with the real-time issue and build on this message.
 */
import { Actor, assertNever, type ActorOptions } from './actor.js'
import type { PricedEvent } from '../events.js'

export type BroadcastMessage = { type: 'events'; events: PricedEvent[] }

export class Broadcaster extends Actor<BroadcastMessage> {
  #seen = 0
  #lastSeq = -1

  constructor(options: ActorOptions = {}) {
    super('broadcaster', options)
  }

  protected receive(message: BroadcastMessage): void {
    switch (message.type) {
      case 'events':
        this.#seen += message.events.length
        this.#lastSeq = message.events[message.events.length - 1].seq
        return
      default:
        assertNever(message.type)
    }
  }

  get eventsSeen(): number {
    return this.#seen
  }

  get lastSeq(): number {
    return this.#lastSeq
  }
}

/** Test helper: priced events as the cost stage emits them, for actor and query tests. */
import type { PricedEvent } from '../../src/events.js'

let seq = 0

/** The seq the next {@link pricedEvent} gets (builders that vary fields by it read it first). */
export const nextSeq = (): number => seq

/**
 * A priced event of project `default` without dimensions, with consecutive seq and id, the
 * given fields over these defaults.
 */
export function pricedEvent(over: Partial<PricedEvent> = {}): PricedEvent {
  const s = seq++
  return {
    seq: s,
    id: `evt_${s}`,
    ts: 0,
    recv: 0,
    model: 'gpt-4',
    provider: 'openai',
    prompt: 10,
    completion: 5,
    total: 15,
    cached: 0,
    reasoning: 0,
    latency: 500,
    ttft: null,
    error: false,
    cost: null,
    meta: null,
    project: 'default',
    user: null,
    session: null,
    tags: null,
    costNanos: 1_000_000,
    unpriced: false,
    ...over
  }
}

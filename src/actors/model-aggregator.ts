/**
 * ModelAggregator: one actor per model (the topology spawns it on the model's first event).
 * It owns that model's series — one exact time-bucketed store per provider — and nothing
 * else touches them. Queries read through `view()`, a read-only window taken between messages.
 */
import { Actor, assertNever, type ActorOptions } from './actor.js'
import { SeriesStore, type RetentionPolicy, type SeriesSnapshot } from '../analytics/series.js'
import type { Row } from '../analytics/row.js'
import type { PricedEvent } from '../events.js'

/** The model name events are counted under once `maxModels` aggregators exist. */
export const OVERFLOW_MODEL = '(other models)'
const STATE_VERSION = 2

export type AggregatorMessage =
  | { type: 'events'; events: PricedEvent[] }
  | { type: 'barrier'; reply: () => void }
  | { type: 'snapshot'; full?: boolean; reply: (state: AggregatorState) => void }
  /** Folds raw rows past retention into hour aggregates (off the ingest path: a timer asks). */
  | { type: 'retain'; policy: RetentionPolicy }

/**
 * What a snapshot keeps of one aggregator: per provider series, the day keys it holds and
 * the rows of some of those days (`parts`). In a snapshot reply, `parts` are the days that
 * changed since the previous snapshot (every day when `full`); when restoring, every day.
 */
export interface AggregatorState {
  v: number
  model: string
  series: Array<{ provider: string; rejected: number; days: number[]; parts: Array<{ day: number; data: SeriesSnapshot }> }>
}

/** Converts a priced event to the analytics row: integer µs and nano-dollars keep sums exact. */
export function toRow(e: PricedEvent): Row {
  return {
    ts: e.ts,
    promptTokens: e.prompt,
    completionTokens: e.completion,
    totalTokens: e.total,
    cachedTokens: e.cached,
    reasoningTokens: e.reasoning,
    latencyUs: Math.round(e.latency * 1000),
    costNanos: e.costNanos,
    error: e.error,
    unpriced: e.unpriced
  }
}

export class ModelAggregator extends Actor<AggregatorMessage> {
  readonly model: string
  readonly #series = new Map<string, SeriesStore>()
  #events = 0
  #folded = 0

  constructor(model: string, options: ActorOptions = {}, restored?: AggregatorState) {
    super(`aggregator:${model}`, options)
    this.model = model
    if (restored !== undefined) {
      if (restored.v !== STATE_VERSION) throw new Error(`aggregator state version ${restored.v} is not ${STATE_VERSION}`)
      for (const s of restored.series) this.#series.set(s.provider, SeriesStore.fromSnapshots(s.parts.map((p) => p.data), s.rejected))
      for (const s of this.#series.values()) this.#events += s.size
    }
  }

  protected receive(message: AggregatorMessage): void {
    switch (message.type) {
      case 'events':
        for (const e of message.events) {
          let store = this.#series.get(e.provider)
          if (store === undefined) {
            store = new SeriesStore()
            this.#series.set(e.provider, store)
          }
          store.record(toRow(e))
        }
        this.#events += message.events.length
        return
      case 'barrier':
        message.reply()
        return
      case 'snapshot':
        message.reply(this.#state(message.full === true))
        return
      case 'retain':
        for (const store of this.#series.values()) this.#folded += store.retain(message.policy)
        return
      default:
        assertNever(message)
    }
  }

  /** Takes the dirty days as parts: the caller must store them (or ask for `full` next time). */
  #state(full: boolean): AggregatorState {
    return {
      v: STATE_VERSION,
      model: this.model,
      series: [...this.#series].map(([provider, store]) => {
        const dirty = store.takeDirtyDays()
        const days = [...store.dayKeys()]
        const partDays = full ? days : dirty
        return { provider, rejected: store.rejected, days, parts: partDays.map((day) => ({ day, data: store.toSnapshot([day]) })) }
      })
    }
  }

  /** Read-only access to the per-provider series, for queries (never mutate through it). */
  view(): ReadonlyMap<string, SeriesStore> {
    return this.#series
  }

  get eventCount(): number {
    return this.#events
  }

  /** Raw rows held, rows kept only in coarse hours, and rows folded by retention so far. */
  get retentionStats(): { rawRows: number; coarseRows: number; folded: number } {
    let rawRows = 0
    let coarseRows = 0
    for (const s of this.#series.values()) {
      rawRows += s.size
      coarseRows += s.coarseRows
    }
    return { rawRows, coarseRows, folded: this.#folded }
  }
}

/**
 * RollupAggregator: one actor per project that counts every priced event of the project, of every model and provider,
 * into hour and day aggregates only (no rows: a {@link SeriesStore.coarseOnly} store).
 *
 * Why: a query over all models would otherwise merge the answer of every series (50 models
 * → 50 × the days and hours of the range). With the rollup, the whole hours of the range come
 * from one store, and each series answers only the partial hours at the two edges.
 *
 * It is not snapshotted: its state is a pure function of the aggregators' hours, so it is
 * rebuilt from them at start (one merge per stored hour), and the log tail replays through it
 * like through them.
 */
import { Actor, assertNever, type ActorOptions } from './actor.js'
import { SeriesStore } from '../analytics/series.js'
import { toRow } from './model-aggregator.js'
import type { PricedEvent } from '../events.js'

export type RollupMessage = { type: 'events'; events: PricedEvent[] } | { type: 'barrier'; reply: () => void }

export class RollupAggregator extends Actor<RollupMessage> {
  readonly #store = SeriesStore.coarseOnly()

  /** `seed`: the series restored at start, whose hours the rollup begins with. */
  constructor(options: ActorOptions = {}, seed: Iterable<SeriesStore> = [], project = 'default') {
    super(project === 'default' ? 'rollup' : `rollup:${project}`, options)
    for (const series of seed) series.forEachHour((hourKey, agg) => this.#store.addHour(hourKey, agg))
  }

  protected receive(message: RollupMessage): void {
    switch (message.type) {
      case 'events':
        for (const e of message.events) this.#store.record(toRow(e))
        return
      case 'barrier':
        message.reply()
        return
      default:
        assertNever(message)
    }
  }

  /** Read-only: every event's hour and day aggregates (never mutate through it). */
  view(): SeriesStore {
    return this.#store
  }
}

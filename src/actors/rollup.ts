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
 * like through them. A delete rebuilds the hours it changed the same way ('rehour'); a re-price
 * shifts the hours' costs by what the series' hours moved ('shift').
 */
import { Actor, assertNever, type ActorOptions } from './actor.js'
import { createAggregate, mergeInto, SeriesStore } from '../analytics/series.js'
import { toRow } from './model-aggregator.js'
import type { PricedEvent } from '../events.js'
import type { Deltas } from '../analytics/reprice.js'

export type RollupMessage =
  /** `applied`: called once the events are counted (Topology.sync's read watermark). */
  | { type: 'events'; events: PricedEvent[]; applied?: () => void }
  | { type: 'barrier'; reply: () => void }
  /**
   * Rebuilds hours (keys: floor(ts / HOUR_MS)) a delete changed, each as the merge of that hour
   * of every series `sources` gives (read when the message runs: the sender makes sure no series
   * holds an event the rollup has not counted yet, or the reverse), and their days.
   */
  | { type: 'rehour'; hours: readonly number[]; sources: () => Iterable<SeriesStore>; reply: (err?: Error) => void }
  /**
   * A re-price: adds each hour's shift of cost and unpriced count (summed over the series) to
   * the hour and its day — O(hours), where a rebuild would merge every series' sketches again
   * (a re-price changes no latency).
   */
  | { type: 'shift'; shifts: Deltas; reply: (err?: Error) => void }

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
        message.applied?.()
        return
      case 'barrier':
        message.reply()
        return
      case 'rehour': {
        try {
          const sources = [...message.sources()]
          for (const hourKey of message.hours) {
            const agg = createAggregate()
            for (const s of sources) {
              const hour = s.hourAggregate(hourKey)
              if (hour !== undefined) mergeInto(agg, hour)
            }
            this.#store.setHour(hourKey, agg)
          }
        } catch (err) {
          return message.reply(err as Error)
        }
        message.reply()
        return
      }
      case 'shift':
        try {
          this.#store.shiftHours(message.shifts)
        } catch (err) {
          return message.reply(err as Error)
        }
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

/**
 * Everything a query sees of a SeriesStore, as one string to compare two stores by: answers over
 * all time and at odd edges, per-day / hour / minute timeseries, every hour's aggregate and
 * sketch, bounds, sizes, coarse hours, and the rows in column form (minute order, then list
 * order). `rejected` is left out (a restore's counter is checked on its own).
 */
import type { SeriesStore } from '../../src/analytics/series.js'

const MIN = 60_000
const HOUR = 3_600_000

export function seriesImage(store: SeriesStore): string {
  const hours: unknown[] = []
  store.forEachHour((hourKey, agg) => hours.push([hourKey, agg.totals, agg.sketch.toJSON()]))
  return JSON.stringify({
    agg: store.aggregate(-Infinity, Infinity),
    days: store.timeseries(-Infinity, Infinity, 24 * HOUR),
    h: store.timeseries(-Infinity, Infinity, HOUR),
    m: store.timeseries(-Infinity, Infinity, MIN),
    edge: store.aggregate(7 * MIN + 13, 3 * HOUR + 41 * MIN + 7),
    hours,
    bounds: store.bounds(),
    size: store.size,
    rowEnd: store.rowEnd,
    coarse: [store.coarseHours, store.coarseRows, store.coarseBefore],
    snap: { ...store.toSnapshot(), rejected: 0 },
  }, (_k, v) => (ArrayBuffer.isView(v) ? Array.from(v as Float64Array) : v))
}

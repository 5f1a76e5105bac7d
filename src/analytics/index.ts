/**
 * Pure in-memory analytics math: no timers, no clock, no I/O.
 * See series.ts for the time-bucketed store that answers range queries.
 */
export type { Row } from './row.js'
export { isValidRow, MAX_TIMESTAMP_MS } from './row.js'
export type { Totals } from './totals.js'
export { cloneTotals, createTotals, mergeTotals, recordTotals } from './totals.js'
export type { LatencySketchJSON } from './sketch.js'
export { LatencySketch, SKETCH_JSON_VERSION, SKETCH_MIN_VALUE, SKETCH_RELATIVE_ACCURACY } from './sketch.js'
export type { Aggregate, SeriesSnapshot, TimeBucket } from './series.js'
export {
  createAggregate,
  MINUTE_AGGREGATE_THRESHOLD,
  mergeInto,
  mergeTimeseries,
  SERIES_SNAPSHOT_VERSION,
  SeriesStore,
} from './series.js'
export { DAY_MS, floorDiv, floorMod, HOUR_MS, MINUTE_MS } from './time.js'

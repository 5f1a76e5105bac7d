/**
 * UTC bucket arithmetic shared by the analytics modules. Buckets are aligned to
 * multiples of their width since the epoch (UTC has no leap seconds in epoch ms, so
 * a day is always 86,400,000 ms).
 */

/** One minute in milliseconds. */
export const MINUTE_MS = 60_000
/** One hour in milliseconds. */
export const HOUR_MS = 3_600_000
/** One UTC day in milliseconds. */
export const DAY_MS = 86_400_000

/**
 * `a mod b` in [0, b) for integers, also for negative `a`. `%` on doubles is exact
 * (IEEE fmod), unlike `Math.floor(a / b)` which can round up for |a| near 2^53.
 */
export function floorMod(a: number, b: number): number {
  const r = a % b
  return r < 0 ? r + b : r + 0 // `+ 0` turns -0 into 0
}

/** Floor division for integers, exact for any safe integer `a` (see {@link floorMod}). */
export function floorDiv(a: number, b: number): number {
  return (a - floorMod(a, b)) / b + 0
}

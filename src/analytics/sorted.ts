/** Binary search over ascending numbers, shared by the series index, the row lists and re-pricing. */

/** First index in [lo, hi) of `keys` (ascending there) whose value is >= `key`; `hi` when none is. */
export function lowerBound(keys: ArrayLike<number>, key: number, lo = 0, hi = keys.length): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (keys[mid] < key) lo = mid + 1
    else hi = mid
  }
  return lo
}

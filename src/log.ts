/** The slice of pino's interface the engine needs; fastify's logger satisfies it. */
export interface Log {
  error(obj: unknown, msg?: string): void
  warn(obj: unknown, msg?: string): void
  info(obj: unknown, msg?: string): void
  debug(obj: unknown, msg?: string): void
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLog: Log = {
  error() {},
  warn() {},
  info() {},
  debug() {}
}

/**
 * Progress of a long log replay: returns an `onProgress(done, total)` callback that calls
 * `report` each time another ~10% of `total` is done, and once at the end; replays shorter than
 * `min` events report nothing. Chunks of any size may arrive: a mark is never skipped silently,
 * the next report simply says how far it got.
 */
export function replayProgress(report: (done: number, total: number, percent: number) => void, min = 10_000): (done: number, total: number) => void {
  let next: number | null = null
  let finished = false
  return (done, total) => {
    if (total < min || finished) return
    const step = total / 10
    next ??= step
    if (done >= total) {
      finished = true
      report(done, total, 100)
    } else if (done >= next) {
      report(done, total, Math.floor((done * 100) / total))
      next = (Math.floor(done / step) + 1) * step
    }
  }
}

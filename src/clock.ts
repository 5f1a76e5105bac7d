/**
 * Time source injected into actors and analytics so tests move time by hand
 * (the xstate `SimulatedClock` idea). Nothing under `src/actors` or `src/analytics`
 * reads `Date.now()` directly.
 */
export interface Clock {
  /** Wall-clock milliseconds since the epoch. */
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

/** A clock that only moves when told to. */
export class ManualClock implements Clock {
  #now: number
  constructor(start = 0) {
    this.#now = start
  }

  now(): number {
    return this.#now
  }

  advance(ms: number): void {
    this.#now += ms
  }

  set(ms: number): void {
    this.#now = ms
  }
}

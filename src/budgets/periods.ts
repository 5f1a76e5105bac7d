/**
 * Budget periods (DESIGN §8): a day, a week (starting Monday) or a month on the calendar of an
 * IANA time zone, as a half-open interval of epoch milliseconds `[start, end)`.
 *
 * Pure, and without a time-zone library: the zone's calendar comes from `Intl.DateTimeFormat`
 * (the ICU data Node ships). A period starts at the first instant whose local calendar date is
 * the period's first date — local midnight, or the end of a DST gap when a zone skips midnight —
 * so the day of a DST change is 23 or 25 hours long, and a month in `America/New_York` starts at
 * 05:00 or 04:00 UTC.
 *
 * Assumption (documented, true of every zone in use today): in the few hours around a local
 * midnight, local calendar dates never go backwards as time goes forwards.
 */

export const PERIODS = ['day', 'week', 'month'] as const
export type PeriodKind = (typeof PERIODS)[number]

export interface Period {
  /** Inclusive, epoch ms. */
  start: number
  /** Exclusive, epoch ms. */
  end: number
}

/** A local calendar date. `m` is 1–12. */
interface LocalDate {
  y: number
  m: number
  d: number
}

const formatters = new Map<string, Intl.DateTimeFormat>()

/** Zones this process uses are few (each budget names one): the map stays small. */
function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone)
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, year: 'numeric', month: 'numeric', day: 'numeric', hourCycle: 'h23', era: 'short' })
    formatters.set(timeZone, f)
  }
  return f
}

/**
 * The zone's canonical spelling (`utc` → `UTC`), or null when `name` is not an IANA time zone
 * this runtime knows. Fixed offsets (`+01:00`) are refused: they are not IANA names and have
 * no DST, so a user writing one almost always means a region.
 */
export function canonicalTimeZone(name: string): string | null {
  if (name.length === 0 || name.length > 64 || !/^[A-Za-z]/.test(name)) return null
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: name }).resolvedOptions().timeZone
  } catch {
    return null
  }
}

/** The local calendar date of instant `t` in `timeZone`. */
function localDate(t: number, timeZone: string): LocalDate {
  let y = 0
  let m = 0
  let d = 0
  let bc = false
  for (const p of formatter(timeZone).formatToParts(t)) {
    if (p.type === 'year') y = Number(p.value)
    else if (p.type === 'month') m = Number(p.value)
    else if (p.type === 'day') d = Number(p.value)
    else if (p.type === 'era') bc = p.value === 'BC' || p.value === 'B'
  }
  return { y: bc ? 1 - y : y, m, d }
}

/** Days since the epoch of a calendar date (proleptic Gregorian), for ordering and weekdays. */
function dayNumber(x: LocalDate): number {
  return Math.floor(Date.UTC(x.y, x.m - 1, x.d) / 86_400_000)
}

/** The calendar date `n` days after `x` (n may be negative). */
function addDays(x: LocalDate, n: number): LocalDate {
  const t = new Date(Date.UTC(x.y, x.m - 1, x.d) + n * 86_400_000)
  return { y: t.getUTCFullYear(), m: t.getUTCMonth() + 1, d: t.getUTCDate() }
}

/**
 * The first instant whose local date in `timeZone` is `date` or later: the date's local
 * midnight, or the end of the DST gap that skipped it. Binary search on milliseconds over the
 * ±18 hours every UTC offset lies in (about 27 formatter calls; callers cache periods).
 */
export function startOfLocalDate(date: LocalDate, timeZone: string): number {
  const target = dayNumber(date)
  const utcMidnight = target * 86_400_000
  let lo = utcMidnight - 18 * 3_600_000
  let hi = utcMidnight + 18 * 3_600_000
  // Invariant: localDate(lo) < target ≤ localDate(hi).
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2)
    if (dayNumber(localDate(mid, timeZone)) >= target) hi = mid
    else lo = mid
  }
  return hi
}

/** The first local date of the period of `kind` holding local date `x`. */
function firstDate(kind: PeriodKind, x: LocalDate): LocalDate {
  switch (kind) {
    case 'day':
      return x
    case 'week': {
      // getUTCDay: 0 = Sunday … 6 = Saturday; weeks start on Monday.
      const weekday = new Date(Date.UTC(x.y, x.m - 1, x.d)).getUTCDay()
      return addDays(x, -((weekday + 6) % 7))
    }
    case 'month':
      return { y: x.y, m: x.m, d: 1 }
    default: {
      const never: never = kind
      throw new Error(`unknown period ${String(never)}`)
    }
  }
}

/** The first local date of the period after the one starting at `first`. */
function nextFirstDate(kind: PeriodKind, first: LocalDate): LocalDate {
  if (kind === 'day') return addDays(first, 1)
  if (kind === 'week') return addDays(first, 7)
  return first.m === 12 ? { y: first.y + 1, m: 1, d: 1 } : { y: first.y, m: first.m + 1, d: 1 }
}

/**
 * The period of `kind` in `timeZone` that holds instant `now`: `[start, end)`, `start ≤ now < end`.
 * @param timeZone an IANA name {@link canonicalTimeZone} accepted.
 */
export function periodAt(kind: PeriodKind, timeZone: string, now: number): Period {
  const first = firstDate(kind, localDate(now, timeZone))
  return { start: startOfLocalDate(first, timeZone), end: startOfLocalDate(nextFirstDate(kind, first), timeZone) }
}

/**
 * The fraction of the period elapsed at `now`, clamped to [0, 1]; and the forecast that
 * follows from it (DESIGN §8): spent ÷ elapsed part × whole period. At the very start of a
 * period (nothing elapsed) the forecast is what was spent so far, which is nothing unless
 * events carry that exact instant.
 */
export function forecast(spent: number, period: Period, now: number): number {
  const whole = period.end - period.start
  const elapsed = Math.min(Math.max(now - period.start, 0), whole)
  if (elapsed <= 0) return spent
  return (spent * whole) / elapsed
}

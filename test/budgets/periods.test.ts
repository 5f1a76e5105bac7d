/**
 * Budget periods in a time zone (src/budgets/periods.ts): day, week (from Monday) and month
 * boundaries in UTC, America/New_York and Europe/Berlin, the DST change days (23 and 25 hours),
 * a month boundary in a zone other than UTC, and the forecast's definition.
 */
import t from 'tap'
import fc from 'fast-check'
import { canonicalTimeZone, forecast, periodAt, type PeriodKind } from '../../src/budgets/periods.js'

const H = 3_600_000
const at = (iso: string) => Date.parse(iso)
const span = (kind: PeriodKind, tz: string, iso: string) => {
  const p = periodAt(kind, tz, at(iso))
  return { start: new Date(p.start).toISOString(), end: new Date(p.end).toISOString(), hours: (p.end - p.start) / H }
}

t.test('UTC: a boundary instant belongs to the new period, the millisecond before to the old', async (t) => {
  t.same(span('day', 'UTC', '2026-04-01T00:00:00.000Z'), { start: '2026-04-01T00:00:00.000Z', end: '2026-04-02T00:00:00.000Z', hours: 24 })
  t.same(span('day', 'UTC', '2026-03-31T23:59:59.999Z'), { start: '2026-03-31T00:00:00.000Z', end: '2026-04-01T00:00:00.000Z', hours: 24 })
  // 2026-04-06 is a Monday; the Sunday before belongs to the week of March 30.
  t.same(span('week', 'UTC', '2026-04-06T00:00:00.000Z'), { start: '2026-04-06T00:00:00.000Z', end: '2026-04-13T00:00:00.000Z', hours: 168 })
  t.same(span('week', 'UTC', '2026-04-05T23:59:59.999Z'), { start: '2026-03-30T00:00:00.000Z', end: '2026-04-06T00:00:00.000Z', hours: 168 })
  t.same(span('month', 'UTC', '2026-02-28T23:59:59.999Z'), { start: '2026-02-01T00:00:00.000Z', end: '2026-03-01T00:00:00.000Z', hours: 28 * 24 })
  t.same(span('month', 'UTC', '2026-12-31T23:59:59.999Z'), { start: '2026-12-01T00:00:00.000Z', end: '2027-01-01T00:00:00.000Z', hours: 31 * 24 })
  t.same(span('month', 'UTC', '2027-01-01T00:00:00.000Z'), { start: '2027-01-01T00:00:00.000Z', end: '2027-02-01T00:00:00.000Z', hours: 31 * 24 })
  // A week across a year boundary: 2026-12-28 is a Monday.
  t.same(span('week', 'UTC', '2027-01-01T12:00:00.000Z'), { start: '2026-12-28T00:00:00.000Z', end: '2027-01-04T00:00:00.000Z', hours: 168 })
})

t.test('America/New_York: days are local, and the DST change days last 23 and 25 hours', async (t) => {
  t.same(span('day', 'America/New_York', '2026-01-15T04:59:59.999Z'), { start: '2026-01-14T05:00:00.000Z', end: '2026-01-15T05:00:00.000Z', hours: 24 }, 'EST: the local day ends at 05:00 UTC')
  t.same(span('day', 'America/New_York', '2026-01-15T05:00:00.000Z'), { start: '2026-01-15T05:00:00.000Z', end: '2026-01-16T05:00:00.000Z', hours: 24 })
  // Spring forward: Sunday 2026-03-08, 02:00 EST → 03:00 EDT.
  t.same(span('day', 'America/New_York', '2026-03-08T12:00:00.000Z'), { start: '2026-03-08T05:00:00.000Z', end: '2026-03-09T04:00:00.000Z', hours: 23 })
  t.same(span('day', 'America/New_York', '2026-03-09T03:59:59.999Z'), { start: '2026-03-08T05:00:00.000Z', end: '2026-03-09T04:00:00.000Z', hours: 23 }, 'the last instant of the short day')
  // Fall back: Sunday 2026-11-01, 02:00 EDT → 01:00 EST.
  t.same(span('day', 'America/New_York', '2026-11-01T05:30:00.000Z'), { start: '2026-11-01T04:00:00.000Z', end: '2026-11-02T05:00:00.000Z', hours: 25 }, 'the repeated hour is in the long day')
  t.same(span('day', 'America/New_York', '2026-11-02T04:59:59.999Z'), { start: '2026-11-01T04:00:00.000Z', end: '2026-11-02T05:00:00.000Z', hours: 25 })
  // The week of the spring change (Monday 2026-03-02 … Monday 2026-03-09): one hour short.
  t.same(span('week', 'America/New_York', '2026-03-08T12:00:00.000Z'), { start: '2026-03-02T05:00:00.000Z', end: '2026-03-09T04:00:00.000Z', hours: 167 })
  // The week of the fall change (Monday 2026-10-26 … Monday 2026-11-02): one hour long.
  t.same(span('week', 'America/New_York', '2026-11-01T12:00:00.000Z'), { start: '2026-10-26T04:00:00.000Z', end: '2026-11-02T05:00:00.000Z', hours: 169 })
})

t.test('a month boundary in a zone other than UTC: local midnight of the 1st, and DST inside the month', async (t) => {
  // Local Feb 28, 23:59:59.999 EST is still February; March starts at 05:00 UTC (EST) and ends at 04:00 UTC (EDT).
  t.same(span('month', 'America/New_York', '2026-03-01T04:59:59.999Z'), { start: '2026-02-01T05:00:00.000Z', end: '2026-03-01T05:00:00.000Z', hours: 28 * 24 })
  t.same(span('month', 'America/New_York', '2026-03-01T05:00:00.000Z'), { start: '2026-03-01T05:00:00.000Z', end: '2026-04-01T04:00:00.000Z', hours: 31 * 24 - 1 })
  // In UTC the same instant is already in March: the zone decides.
  t.equal(periodAt('month', 'UTC', at('2026-03-01T04:59:59.999Z')).start, at('2026-03-01T00:00:00.000Z'))
  // Berlin: the year starts at 23:00 UTC the evening before; October holds the fall change (+1 h).
  t.same(span('month', 'Europe/Berlin', '2025-12-31T23:00:00.000Z'), { start: '2025-12-31T23:00:00.000Z', end: '2026-01-31T23:00:00.000Z', hours: 31 * 24 })
  t.same(span('month', 'Europe/Berlin', '2025-12-31T22:59:59.999Z'), { start: '2025-11-30T23:00:00.000Z', end: '2025-12-31T23:00:00.000Z', hours: 31 * 24 })
  t.same(span('month', 'Europe/Berlin', '2026-10-15T12:00:00.000Z'), { start: '2026-09-30T22:00:00.000Z', end: '2026-10-31T23:00:00.000Z', hours: 31 * 24 + 1 })
})

t.test('Europe/Berlin: the DST change days, and weeks from Monday', async (t) => {
  // Spring forward: Sunday 2026-03-29, 02:00 CET → 03:00 CEST.
  t.same(span('day', 'Europe/Berlin', '2026-03-29T12:00:00.000Z'), { start: '2026-03-28T23:00:00.000Z', end: '2026-03-29T22:00:00.000Z', hours: 23 })
  t.same(span('day', 'Europe/Berlin', '2026-03-29T22:00:00.000Z'), { start: '2026-03-29T22:00:00.000Z', end: '2026-03-30T22:00:00.000Z', hours: 24 })
  // Fall back: Sunday 2026-10-25, 03:00 CEST → 02:00 CET.
  t.same(span('day', 'Europe/Berlin', '2026-10-25T01:30:00.000Z'), { start: '2026-10-24T22:00:00.000Z', end: '2026-10-25T23:00:00.000Z', hours: 25 })
  // The week holding the spring change starts Monday 2026-03-23 (local) and is 167 hours.
  t.same(span('week', 'Europe/Berlin', '2026-03-29T12:00:00.000Z'), { start: '2026-03-22T23:00:00.000Z', end: '2026-03-29T22:00:00.000Z', hours: 167 })
  // Sunday 23:30 local is still that week; Monday 00:00 local starts the next.
  t.equal(periodAt('week', 'Europe/Berlin', at('2026-03-29T21:59:59.999Z')).start, at('2026-03-22T23:00:00.000Z'))
  t.equal(periodAt('week', 'Europe/Berlin', at('2026-03-29T22:00:00.000Z')).start, at('2026-03-29T22:00:00.000Z'))
})

t.test('a zone whose DST change skips midnight: the day starts when the gap ends', async (t) => {
  // America/Santiago springs forward at 00:00 → 01:00 (2026-09-06): that day starts at 01:00 local.
  t.same(span('day', 'America/Santiago', '2026-09-06T12:00:00.000Z'), { start: '2026-09-06T04:00:00.000Z', end: '2026-09-07T03:00:00.000Z', hours: 23 })
})

t.test('property: every instant lies in its period, periods tile the time line, and each starts on its first local date', async (t) => {
  const zones = ['UTC', 'America/New_York', 'Europe/Berlin', 'Australia/Lord_Howe', 'Asia/Kolkata', 'Pacific/Chatham', 'America/Santiago']
  const kinds: PeriodKind[] = ['day', 'week', 'month']
  const dateIn = (tz: string, ms: number) => new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit', weekday: 'short' }).formatToParts(ms)
  fc.assert(
    fc.property(fc.integer({ min: at('2000-01-01T00:00:00Z'), max: at('2040-01-01T00:00:00Z') }), fc.constantFrom(...zones), fc.constantFrom(...kinds), (now, tz, kind) => {
      const p = periodAt(kind, tz, now)
      if (!(p.start <= now && now < p.end)) return false
      // Tiling: the next period starts where this one ends; the instant before the start is in the previous one.
      if (periodAt(kind, tz, p.end).start !== p.end) return false
      if (periodAt(kind, tz, p.start - 1).end !== p.start) return false
      // The start is on the period's first local date (1st of the month, Monday), and the instant before is not.
      const parts = dateIn(tz, p.start)
      const get = (type: string) => parts.find((x) => x.type === type)!.value
      if (kind === 'month' && get('day') !== '01') return false
      if (kind === 'week' && get('weekday') !== 'Mon') return false
      const before = dateIn(tz, p.start - 1)
      const dayBefore = before.find((x) => x.type === 'day')!.value
      return dayBefore !== get('day')
    }),
    { numRuns: 400 }
  )
  t.pass('400 random (instant, zone, period) triples')
})

t.test('canonicalTimeZone: IANA names (canonical spelling), nothing else', async (t) => {
  t.equal(canonicalTimeZone('UTC'), 'UTC')
  t.equal(canonicalTimeZone('utc'), 'UTC')
  t.equal(canonicalTimeZone('europe/berlin'), 'Europe/Berlin')
  t.equal(canonicalTimeZone('America/New_York'), 'America/New_York')
  t.equal(canonicalTimeZone('Mars/Olympus_Mons'), null)
  t.equal(canonicalTimeZone('+01:00'), null, 'a fixed offset is not an IANA name')
  t.equal(canonicalTimeZone(''), null)
})

t.test('forecast: spent ÷ elapsed part × whole period; at elapsed 0 it is what was spent', async (t) => {
  const p = { start: 0, end: 24 * H }
  t.equal(forecast(0, p, 0), 0)
  t.equal(forecast(5, p, 0), 5, 'nothing elapsed: the spend so far')
  t.equal(forecast(5, p, 6 * H), 20, 'a quarter elapsed: four times')
  t.equal(forecast(5, p, 24 * H), 5)
  t.equal(forecast(5, p, 48 * H), 5, 'clamped past the end')
  // A 23-hour DST day: half of it elapsed doubles.
  t.equal(forecast(3, { start: 0, end: 23 * H }, 11.5 * H), 6)
})

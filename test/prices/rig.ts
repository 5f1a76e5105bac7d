/**
 * Test rig for the price book tests: events priced by a hand-written reference of the book's
 * rules (versions with revisions, same-instant replacement, re-pricings and effective revisions,
 * caller costs), and every figure the API shows about costs, read from an app and computed from
 * the reference, so a test compares the two whole.
 *
 * Names are exact (`zz-…` models genai-prices does not know: before any version an event is
 * unpriced, cost 0), provider `selfhost` (OpenAI-shaped usage), rates and tokens such that
 * every cost is an exact number of nano-dollars.
 */
import type { TestApp } from '../helpers/app.js'
import { adminHeaders } from '../helpers/app.js'
import { rng } from '../forget-helpers.js'

export const HOUR = 3_600_000
export const T0 = Date.parse('2026-03-02T00:00:00.000Z')
export const MODELS = ['zz-alpha', 'zz-beta', 'zz-gamma'] as const
export const USERS = ['u0', 'u1', 'u2', 'u3'] as const

export interface Rates {
  input: number
  output: number
  cached_input: number
}

export interface RefEvent {
  ts: number
  model: string
  user: string
  prompt: number
  completion: number
  cached: number
  /** Caller-supplied dollars, or null. */
  cost: number | null
  /** Filled when ingested: its id, seq and the book revision it was accepted at. */
  id?: string
  seq?: number
  priceRev?: number
}

export interface RefVersion {
  model: string
  rates: Rates
  from: number
  rev: number
}
export interface RefReprice {
  start: number
  end: number
  model: string | null
  rev: number
}

/** The reference book: what the server must compute, written plainly. */
export class RefBook {
  rev = 0
  versions: RefVersion[] = []
  reprices: RefReprice[] = []

  addVersion(model: string, rates: Rates, from: number): void {
    this.rev++
    this.versions.push({ model, rates, from, rev: this.rev })
  }

  addReprice(start: number, end: number, model: string | null): void {
    this.reprices.push({ start, end, model, rev: this.rev })
  }

  effRev(e: RefEvent): number {
    let r = e.priceRev!
    for (const x of this.reprices) {
      if (x.rev > e.priceRev! && e.ts >= x.start && e.ts < x.end && (x.model === null || x.model === e.model)) r = Math.max(r, x.rev)
    }
    return r
  }

  /** Rates for the model at ts as of revision `rev`, or null (unpriced). */
  ratesAt(model: string, ts: number, rev: number): Rates | null {
    const byFrom = new Map<number, RefVersion>()
    for (const v of this.versions) {
      if (v.model !== model || v.rev > rev) continue
      const old = byFrom.get(v.from)
      if (old === undefined || v.rev > old.rev) byFrom.set(v.from, v)
    }
    let best: RefVersion | undefined
    for (const v of byFrom.values()) if (v.from <= ts && (best === undefined || v.from > best.from)) best = v
    return best?.rates ?? null
  }

  /** Nano-dollars and unpriced flag of an event now (or at `rev` instead of its effective revision). */
  price(e: RefEvent, rev = this.effRev(e)): { nanos: number; unpriced: boolean } {
    if (e.cost !== null) return { nanos: Math.round(e.cost * 1e9), unpriced: false }
    const r = this.ratesAt(e.model, e.ts, rev)
    if (r === null) return { nanos: 0, unpriced: true }
    const micro = (e.prompt - e.cached) * r.input + e.cached * r.cached_input + e.completion * r.output
    return { nanos: Math.round((micro / 1e6) * 1e9), unpriced: false }
  }
}

/** The forget tests' seeded PRNG (mulberry32), for the events here. */
export { rng }

/** `n` events over [T0, T0 + hours h), from `seed`; every `callerEvery`-th has a caller cost. */
export function makeEvents(seed: number, n: number, hours = 8, callerEvery = 17): RefEvent[] {
  const r = rng(seed)
  return Array.from({ length: n }, (_, i) => {
    const prompt = 100 * (1 + Math.floor(r() * 30))
    return {
      ts: T0 + Math.floor(r() * hours * HOUR),
      model: MODELS[Math.floor(r() * MODELS.length)],
      user: USERS[Math.floor(r() * USERS.length)],
      prompt,
      completion: 10 * Math.floor(r() * 50),
      cached: r() < 0.3 ? 100 * Math.floor(r() * (prompt / 100)) : 0,
      cost: i % callerEvery === 5 ? Math.round(r() * 1e6) / 1e9 : null
    }
  })
}

/** Ingests `events` (one batch per call), filling id, seq and priceRev (= the reference book's rev now). */
export async function ingest(a: TestApp, events: RefEvent[], book: RefBook, headers: Record<string, string> = adminHeaders): Promise<void> {
  for (let i = 0; i < events.length; i += 1000) {
    const part = events.slice(i, i + 1000)
    const body = part.map((e) => ({
      timestamp: new Date(e.ts).toISOString(),
      model: e.model,
      provider: 'selfhost',
      prompt_tokens: e.prompt,
      completion_tokens: e.completion,
      cached_tokens: e.cached,
      latency_ms: 1,
      user_id: e.user,
      ...(e.cost === null ? {} : { cost: e.cost })
    }))
    const r = await a.app.inject({ method: 'POST', url: '/events/batch', headers, payload: body })
    if (r.statusCode !== 202) throw new Error(`batch: ${r.statusCode} ${r.body}`)
    const ids: string[] = r.json().event_ids
    part.forEach((e, k) => {
      e.id = ids[k]
      e.seq = Number.parseInt(ids[k].split('_')[1], 36)
      e.priceRev = book.rev
    })
  }
}

/** PUT a version in the app and the reference book. */
export async function putVersion(a: TestApp, book: RefBook, model: string, rates: Rates, from: number, headers: Record<string, string> = adminHeaders): Promise<void> {
  const r = await a.app.inject({ method: 'PUT', url: '/prices', headers, payload: { provider: 'selfhost', model, ...rates, effective_from: new Date(from).toISOString() } })
  if (r.statusCode !== 201) throw new Error(`PUT /prices: ${r.statusCode} ${r.body}`)
  book.addVersion(model, rates, from)
}

export interface Figures {
  total: number
  unpricedRequests: number
  byModel: Record<string, number>
  byUser: Record<string, number>
  hourly: Record<string, number>
  events: Record<string, { cost: number; unpriced: boolean }>
  byCost: string[]
}

const dollars = (nanos: number) => Math.round(nanos) / 1e9
const range = (hours: number) => `start_time=${new Date(T0).toISOString()}&end_time=${new Date(T0 + hours * HOUR).toISOString()}`

/** Every cost figure of the app over [T0, T0 + hours h). */
export async function figures(a: TestApp, hours = 8, headers: Record<string, string> = adminHeaders): Promise<Figures> {
  const get = async (url: string) => {
    const r = await a.app.inject({ url, headers })
    if (r.statusCode !== 200) throw new Error(`${url}: ${r.statusCode} ${r.body}`)
    return r.json()
  }
  const q = range(hours)
  const m = await get(`/analytics/metrics?${q}`)
  const c = await get(`/analytics/costs?${q}`)
  const b = await get(`/analytics/breakdown?by=user_id&${q}&limit=100`)
  const ts = await get(`/analytics/timeseries?interval=1h&${q}`)
  const events: Figures['events'] = {}
  const byCost: string[] = []
  let cursor: string | null = null
  do {
    const page = await get(`/events?${q}&sort=cost&limit=1000${cursor === null ? '' : `&cursor=${cursor}`}`)
    for (const e of page.events) {
      events[e.id] = { cost: e.cost, unpriced: e.unpriced }
      byCost.push(e.id)
    }
    cursor = page.next_cursor
  } while (cursor !== null)
  const byModel: Record<string, number> = {}
  for (const row of c.breakdown) byModel[row.model] = row.total_cost
  const byUser: Record<string, number> = {}
  for (const g of b.groups) byUser[g.value] = g.total_cost
  const hourly: Record<string, number> = {}
  for (const k of ts.buckets) if (k.requests > 0) hourly[k.timestamp] = k.cost
  return { total: m.total_cost, unpricedRequests: m.unpriced_requests ?? c.breakdown.reduce((s: number, r: { unpriced_requests?: number }) => s + (r.unpriced_requests ?? 0), 0), byModel, byUser, hourly, events, byCost }
}

/** The same figures from the reference. */
export function reference(events: RefEvent[], book: RefBook, hours = 8): Figures {
  const inRange = events.filter((e) => e.ts >= T0 && e.ts < T0 + hours * HOUR)
  let total = 0
  let unpriced = 0
  const byModel: Record<string, number> = {}
  const byUser: Record<string, number> = {}
  const hourly: Record<string, number> = {}
  const out: Figures['events'] = {}
  const priced = inRange.map((e) => ({ e, p: book.price(e) }))
  for (const { e, p } of priced) {
    total += p.nanos
    if (p.unpriced) unpriced++
    byModel[e.model] = (byModel[e.model] ?? 0) + p.nanos
    byUser[e.user] = (byUser[e.user] ?? 0) + p.nanos
    const h = new Date(Math.floor(e.ts / HOUR) * HOUR).toISOString()
    hourly[h] = (hourly[h] ?? 0) + p.nanos
    out[e.id!] = { cost: p.nanos / 1e9, unpriced: p.unpriced }
  }
  const fix = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, dollars(v)]))
  const byCost = priced.sort((x, y) => y.p.nanos - x.p.nanos || y.e.seq! - x.e.seq!).map(({ e }) => e.id!)
  return { total: dollars(total), unpricedRequests: unpriced, byModel: fix(byModel), byUser: fix(byUser), hourly: fix(hourly), events: out, byCost }
}

/** The dry-run / apply answer the reference expects for a re-pricing of [start, end) (of `model`) now. */
export function referenceDiff(events: RefEvent[], book: RefBook, start: number, end: number, model: string | null) {
  const rows = new Map<string, { provider: string; model: string; requests: number; before: number; after: number }>()
  let changed = 0
  for (const e of events) {
    if (e.ts < start || e.ts >= end || (model !== null && e.model !== model)) continue
    const b = book.price(e)
    const a = e.priceRev! < book.rev ? book.price(e, Math.max(book.effRev(e), book.rev)) : b
    if (a.nanos !== b.nanos || a.unpriced !== b.unpriced) changed++
    const row = rows.get(e.model) ?? { provider: 'selfhost', model: e.model, requests: 0, before: 0, after: 0 }
    row.requests++
    row.before += b.nanos
    row.after += a.nanos
    rows.set(e.model, row)
  }
  let requests = 0
  let before = 0
  let after = 0
  const models = [...rows.values()].map((r) => {
    requests += r.requests
    before += r.before
    after += r.after
    return { provider: r.provider, model: r.model, requests: r.requests, before: dollars(r.before), after: dollars(r.after), difference: dollars(r.after - r.before) }
  })
  models.sort((x, y) => Math.abs(y.difference) - Math.abs(x.difference) || (x.model < y.model ? -1 : 1))
  return { models, total: { requests, before: dollars(before), after: dollars(after), difference: dollars(after - before) }, changed }
}

/**
 * Shared by the DELETE /events tests (test/forget*.test.ts): deterministic events over every
 * dimension, the delete's filter as a plain predicate (to build the reference: an app that
 * only ever ingested the kept events), every analytics answer of a project in one object,
 * and the data dir read as bytes.
 */
import type { Test } from 'tap'
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig } from '../src/config.js'
import { buildApp, type Built } from '../src/app.js'
import { ManualClock } from '../src/clock.js'
import { ADMIN_KEY, INGEST_KEY, READ_KEY } from './helpers/app.js'

export const T0 = Date.parse('2026-03-02T10:00:00.000Z')
export const HOUR = 3_600_000

export interface TestEvent {
  timestamp: string
  model: string
  provider: string
  prompt_tokens: number
  completion_tokens: number
  latency_ms: number
  status?: 'success' | 'error'
  user_id?: string
  session_id?: string
  tags?: string[]
  metadata?: Record<string, string | number | boolean>
  cost?: number
}

/** A small seeded generator (mulberry32): the same seed gives the same events. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

export const USERS = ['user-forget-me-91x', 'u-alpha', 'u-beta', 'u-gamma', 'u-delta']
const MODELS: Array<[string, string]> = [['gpt-4o', 'openai'], ['gpt-4o-mini', 'openai'], ['claude-3-5-sonnet-20241022', 'anthropic'], ['house-model', 'self']]

/** `n` events over `hours` hours from `start`, every dimension and status mixed. */
export function makeEvents(seed: number, n: number, opts: { start?: number; hours?: number } = {}): TestEvent[] {
  const r = rng(seed)
  const start = opts.start ?? T0
  const span = (opts.hours ?? 3) * HOUR
  const pick = <T>(a: readonly T[]) => a[Math.floor(r() * a.length)]
  return Array.from({ length: n }, () => {
    const [model, provider] = pick(MODELS)
    const e: TestEvent = {
      timestamp: new Date(start + Math.floor(r() * span)).toISOString(),
      model,
      provider,
      prompt_tokens: Math.floor(r() * 2000),
      completion_tokens: Math.floor(r() * 800),
      latency_ms: Math.round(r() * 500_000) / 100
    }
    if (r() < 0.15) e.status = 'error'
    if (r() < 0.9) e.user_id = pick(USERS)
    if (r() < 0.7) e.session_id = `s${Math.floor(r() * 12)}`
    if (r() < 0.5) e.tags = r() < 0.5 ? ['batch'] : ['batch', 'eval']
    if (r() < 0.6) e.metadata = { feature: pick(['search', 'chat', 'summary']), tier: pick([1, 2, 3]), beta: r() < 0.5 }
    if (r() < 0.05) e.cost = Math.round(r() * 1000) / 1000
    return e
  })
}

/** A delete's filter as the route takes it (query-string keys) and as a predicate on an event. */
export type ForgetFilter = Record<string, string>

export function matches(e: TestEvent, f: ForgetFilter): boolean {
  const ts = Date.parse(e.timestamp)
  for (const [k, v] of Object.entries(f)) {
    if (k === 'start_time' && !(ts >= Date.parse(v))) return false
    if (k === 'end_time' && !(ts < Date.parse(v))) return false
    if (k === 'model' && !v.split(',').includes(e.model)) return false
    if (k === 'provider' && !v.split(',').includes(e.provider)) return false
    if (k === 'status' && (e.status ?? 'success') !== v) return false
    if (k === 'user_id' && e.user_id !== v) return false
    if (k === 'session_id' && e.session_id !== v) return false
    if (k === 'tag' && !(e.tags ?? []).includes(v)) return false
    if (k.startsWith('metadata.')) {
      const m = e.metadata?.[k.slice('metadata.'.length)]
      if (m === undefined || String(m) !== v) return false
    }
  }
  return true
}

export const qs = (f: Record<string, string | number>) => new URLSearchParams(Object.entries(f).map(([k, v]): [string, string] => [k, String(v)])).toString()

export interface App extends Built {
  dir: string
  clock: ManualClock
  close(): Promise<void>
}

/** Each test's fixture dir: `t.testdir()` makes the same dir afresh on every call, so it is called once per test. */
const roots = new WeakMap<Test, string>()

/** A new, empty data dir inside the test's fixture dir (apps of one test never share one by accident). */
export function dataDir(t: Test): string {
  let root = roots.get(t)
  if (root === undefined) {
    root = t.testdir()
    roots.set(t, root)
  }
  return mkdtempSync(join(root, 'data-'))
}

/** A recovered app on `dir` (default: a new one) with a manual clock at `now`, inline pricing and no alert timer. */
export async function openApp(t: Test, opts: { dir?: string; now?: number; env?: Record<string, string> } = {}): Promise<App> {
  const dir = opts.dir ?? dataDir(t)
  const clock = new ManualClock(opts.now ?? T0 + 3 * HOUR)
  const config = loadConfig({
    LLMSCOPE_DATA_DIR: dir,
    LLMSCOPE_API_KEYS: `${ADMIN_KEY},${INGEST_KEY}:ingest,${READ_KEY}:read,other-admin-key-01:admin:other`,
    LLMSCOPE_LOG_LEVEL: 'silent',
    ...opts.env
  })
  const built = await buildApp(config, { logger: false, clock, inlinePricing: true, alertTickMs: 0 })
  await built.engine.recover()
  let closed: Promise<void> | undefined
  const close = () => (closed ??= built.app.close().then(() => undefined))
  t.teardown(close)
  return { ...built, dir, clock, close }
}

export const admin = (project?: string): Record<string, string> => (project === undefined ? { 'x-api-key': ADMIN_KEY } : { 'x-api-key': ADMIN_KEY, 'x-llmscope-project': project })

/** Ingests in batches of at most 500; answers the event ids in order. */
export async function ingest(app: Built, events: readonly TestEvent[], project?: string): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < events.length; i += 500) {
    const r = await app.app.inject({ method: 'POST', url: '/events/batch', headers: admin(project), payload: events.slice(i, i + 500) })
    if (r.statusCode !== 202) throw new Error(`ingest: ${r.statusCode} ${r.body}`)
    ids.push(...(r.json().event_ids as string[]))
  }
  return ids
}

/** DELETE /events with `f`; throws unless 200. */
export async function forget(app: Built, f: ForgetFilter, project?: string): Promise<number> {
  const r = await app.app.inject({ method: 'DELETE', url: `/events?${qs(f)}`, headers: admin(project) })
  if (r.statusCode !== 200) throw new Error(`DELETE /events?${qs(f)}: ${r.statusCode} ${r.body}`)
  return r.json().deleted
}

const DIMS = ['model', 'provider', 'user_id', 'session_id', 'tag', 'metadata.feature', 'metadata.tier', 'metadata.beta']

/**
 * Every analytics answer of the project that must not depend on which events were deleted
 * (beyond their absence): metrics, costs, timeseries at every interval, breakdowns by every
 * dimension (with `other` and `total`, percentiles included), filtered variants, dimensions.
 */
export async function figures(app: Built, project?: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  const get = async (url: string) => {
    const r = await app.app.inject({ method: 'GET', url, headers: admin(project) })
    if (r.statusCode !== 200) throw new Error(`GET ${url}: ${r.statusCode} ${r.body}`)
    out[url] = r.json()
  }
  const ranges: Array<Record<string, string>> = [
    {},
    { start_time: new Date(T0).toISOString(), end_time: new Date(T0 + 3 * HOUR).toISOString() },
    // Edges inside hours: series answer the partial hours, the rollup the whole ones.
    { start_time: new Date(T0 + 37 * 60_000 + 1234).toISOString(), end_time: new Date(T0 + 2 * HOUR + 11 * 60_000).toISOString() }
  ]
  for (const range of ranges) {
    const r = qs(range)
    await get(`/analytics/metrics?${r}`)
    await get(`/analytics/metrics?${r}&model=gpt-4o,house-model`)
    await get(`/analytics/metrics?${r}&provider=openai&status=error`)
    await get(`/analytics/metrics?${r}&user_id=${USERS[1]}`)
    await get(`/analytics/metrics?${r}&tag=eval&metadata.feature=search`)
    await get(`/analytics/costs?${r}`)
    await get(`/analytics/costs?${r}&session_id=s3`)
    for (const interval of ['1m', '5m', '1h']) {
      if (range.start_time === undefined && interval !== '1h') continue
      await get(`/analytics/timeseries?${r}&interval=${interval}`)
      await get(`/analytics/timeseries?${r}&interval=${interval}&model=gpt-4o-mini&metadata.tier=2`)
    }
    for (const by of DIMS) {
      await get(`/analytics/breakdown?${r}&by=${by}&limit=2`)
      await get(`/analytics/breakdown?${r}&by=${by}&limit=1000&sort=requests`)
      await get(`/analytics/breakdown?${r}&by=${by}&limit=3&sort=tokens&status=success`)
    }
  }
  await get('/analytics/dimensions')
  return out
}

/** Occurrences of `needle` in every file of `dir`, read as bytes. */
export function bytesIn(dir: string, needle: string): number {
  let n = 0
  for (const f of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!f.isFile()) continue
    const bytes = readFileSync(join(f.parentPath, f.name))
    for (let at = bytes.indexOf(needle); at >= 0; at = bytes.indexOf(needle, at + 1)) n++
  }
  return n
}

/** Where `needle` occurs in the files of `dir`: file, page, and the bytes around it (for failure reports). */
export function whereIn(dir: string, needle: string): string[] {
  const out: string[] = []
  for (const f of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!f.isFile()) continue
    const bytes = readFileSync(join(f.parentPath, f.name))
    for (let at = bytes.indexOf(needle); at >= 0; at = bytes.indexOf(needle, at + 1)) {
      out.push(`${f.name} page ${Math.floor(at / 4096)} @${at}: ${JSON.stringify(bytes.subarray(Math.max(0, at - 80), at + 40).toString('latin1'))}`)
    }
  }
  return out
}

/**
 * What the topology tests share: a topology on a fresh data dir (closed at teardown), pricing
 * as the cost stage does, a snapshot written and read back through a SnapshotStore, and the
 * comparison of two answer sets.
 */
import type { Test } from 'tap'
import { Topology, type TopologyOptions } from '../../src/actors/topology.js'
import { openStores, type Stores } from '../../src/store/db.js'
import { EventLog } from '../../src/store/event-log.js'
import { SnapshotStore, type SnapshotPayload } from '../../src/store/snapshots.js'
import { createAggregate, type Aggregate } from '../../src/analytics/series.js'
import { encodeBatch, priceBatch } from '../../src/pricing/batch.js'
import { priceInputOf } from '../../src/pricing/compute-cost.js'
import { ManualClock } from '../../src/clock.js'
import { silentLog } from '../../src/log.js'
import type { PendingEvent, PricedEvent, StoredEvent } from '../../src/events.js'
import { rng } from '../forget-helpers.js'
import { intern } from '../../src/intern.js'

export { rng }

export const MIN = 60_000
export const HOUR = 3_600_000
export const DAY = 24 * HOUR
export const T0 = Date.parse('2026-03-01T00:00:00.000Z')

/** Prices events as the cost stage does (inline, no book: caller costs and genai-prices). */
export function price(events: StoredEvent[]): PricedEvent[] {
  const r = priceBatch(encodeBatch(events.map((e) => priceInputOf(e))), {})
  return events.map((e, i) => ({ ...e, costNanos: r.costNanos[i], unpriced: r.unpriced[i] === 1 }))
}

/** A topology on its own data dir, closed (and its stores) at teardown. */
export async function topology(t: Test, opts: Partial<TopologyOptions> = {}): Promise<{ topo: Topology; stores: Stores }> {
  const stores = openStores(t.testdir(), { maxBytes: 1024 ** 3 })
  const topo = new Topology({
    log: new EventLog(stores.events),
    pricer: null,
    overrides: {},
    logger: silentLog,
    clock: new ManualClock(T0),
    highWaterEvents: 1_000_000,
    maxModels: 50,
    costChunk: 256,
    costMaxInFlight: 2,
    price: (e) => price([e])[0],
    window: () => createAggregate(),
    ...opts
  })
  t.teardown(async () => {
    await topo.close()
    await stores.close()
  })
  return { topo, stores }
}

export const aggJson = (a: Aggregate) => [a.totals, a.sketch.toJSON()]

/** Fails (showing the first three) for every answer of `want` that `got` gives otherwise. */
export function compare(t: Test, got: Record<string, string>, want: Record<string, string>, label: string): void {
  let diffs = 0
  for (const k of Object.keys(want)) {
    if (got[k] !== want[k] && diffs++ < 3) t.fail(`${label}: ${k}\n got  ${got[k]?.slice(0, 400)}\n want ${want[k].slice(0, 400)}`)
  }
  t.equal(diffs, 0, `${label}: ${Object.keys(want).length} answers equal`)
}

/** Writes a snapshot through a SnapshotStore and reads it back (parts copied, encoded, decoded), with the stored bytes. */
export async function roundTrip(t: Test, payload: SnapshotPayload): Promise<{ restored: SnapshotPayload; bytes: Buffer[] }> {
  const stores = openStores(t.testdir(), { maxBytes: 1024 ** 3 })
  t.teardown(() => stores.close())
  const snaps = new SnapshotStore(stores.meta)
  await snaps.write(payload)
  const read = snaps.read()
  if (!read.ok) throw new Error(read.reason)
  const bytes: Buffer[] = []
  for (const { value } of stores.meta.getRange({})) bytes.push(value as Buffer)
  return { restored: read.payload, bytes }
}

export const MODELS = ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022', 'my-model']

/** Events over `span` (three days) from `from`; user `victim-user` has its own session, tag and metadata value, seen by no one else. */
export function events(n: number, seed: number, project = 'default', from = T0, span = 3 * DAY): PendingEvent[] {
  const r = rng(seed)
  const pick = <X>(xs: readonly X[]) => xs[Math.floor(r() * xs.length)]
  return Array.from({ length: n }, (_, i) => {
    const victim = i % 17 === 3
    const m = Math.floor(r() * MODELS.length)
    // Bursts in a few minutes (minutes with their own aggregates), the rest spread out.
    const ts = r() < 0.3 ? from + 26 * HOUR + Math.floor(r() * 2 * MIN) : from + Math.floor(r() * span)
    const prompt = Math.floor(r() * 3000)
    const completion = Math.floor(r() * 900)
    const tags = victim ? ['victim-tag', 'shared'] : r() < 0.5 ? [pick(['shared', 'a', 'b'])] : r() < 0.5 ? ['a', 'b'] : null
    const meta = victim ? { feature: 'victim-feature', plan: 'pro' } : r() < 0.7 ? { feature: pick(['search', 'chat', 'summarize']), plan: pick(['free', 'pro']), n: Math.floor(r() * 3) } : null
    return {
      ts,
      recv: ts,
      model: MODELS[m],
      provider: m === 2 ? 'anthropic' : r() < 0.2 ? 'azure' : 'openai',
      prompt,
      completion,
      total: prompt + completion,
      cached: r() < 0.2 ? Math.floor(prompt / 2) : 0,
      reasoning: 0,
      latency: Math.floor(r() * 2_000_000) / 1000,
      ttft: null,
      error: r() < 0.1,
      cost: r() < 0.9 ? Math.floor(r() * 1e6) / 1e9 : null,
      meta,
      project,
      user: victim ? 'victim-user' : r() < 0.8 ? `u${Math.floor(r() * 12)}` : null,
      session: victim ? 'victim-session' : r() < 0.6 ? `s${Math.floor(r() * 30)}` : null,
      tags,
      clientId: null,
      costSource: null
    } as PendingEvent
  })
}

/** The `model`, `provider` and `names` columns of a re-price's changes (CostChanges) for these entries' names. */
export function named(models: readonly string[], providers: readonly string[]): { model: Uint32Array; provider: Uint32Array; names: string[] } {
  const names: string[] = []
  const ids = new Map<string, number>()
  const at = (s: string): number => intern(ids, names, s)
  return { model: Uint32Array.from(models, at), provider: Uint32Array.from(providers, at), names }
}

/**
 * The wire format between the cost stage and a pricing worker: a batch of N calls as columns.
 *
 *   one ArrayBuffer (transferable)                                                        plain arrays (cloned)
 *   ┌──────┬────────┬────────────┬────────┬────────────┬───────────┬────────────┬─────────────┬──────────┬─────────────┐
 *   │ ts   │ prompt │ completion │ cached │ cacheWrite │ reasoning │ callerCost │ providerIdx │ modelIdx │ scheduleIdx │  providers: string[]
 *   │ f64×N│ f64×N  │ f64×N      │ f64×N  │ f64×N      │ f64×N     │ f64×N (NaN │ u32×N       │ u32×N    │ u32×N       │  models:    string[]
 *   │      │        │            │        │            │           │  = none)   │             │          │ (NO_SCHEDULE│  schedules: RateSchedule[]
 *   │      │        │            │        │            │           │            │             │          │  = null)    │  (distinct values)
 *   └──────┴────────┴────────────┴────────┴────────────┴───────────┴────────────┴─────────────┴──────────┴─────────────┘
 *
 * Numbers are columns of one buffer so a batch is one allocation and one transfer; strings and
 * the price book's schedules are dictionary-encoded because a batch usually holds a handful of
 * distinct models (schedules are memoised by the book, so identity finds the repeats), and
 * cloning a few of them is cheaper than cloning one per event. The result is likewise one buffer:
 * `costNanos` (f64×N) then `unpriced` (u8×N, 1 = no price found).
 */
import { computeCost } from './compute-cost.js'
import type { PriceInput, PriceOverrides } from './compute-cost.js'
import type { RateSchedule } from './book.js'
import { intern } from '../intern.js'

/** N calls to price, as columns. Build with {@link encodeBatch}. */
export interface PriceBatch {
  /** Distinct provider strings; `providerIndex[i]` points into it. */
  providers: string[]
  providerIndex: Uint32Array
  /** Distinct model strings; `modelIndex[i]` points into it. */
  models: string[]
  modelIndex: Uint32Array
  /** Distinct price-book schedules; `scheduleIndex[i]` points into it, {@link NO_SCHEDULE} = null. */
  schedules: RateSchedule[]
  scheduleIndex: Uint32Array
  /** Event time, epoch ms. */
  ts: Float64Array
  prompt: Float64Array
  completion: Float64Array
  cached: Float64Array
  cacheWrite: Float64Array
  reasoning: Float64Array
  /** Caller-supplied dollars; NaN = none. */
  callerCost: Float64Array
}

/** Prices of a batch, index for index. */
export interface PriceResult {
  /** Integer nano-dollars. */
  costNanos: Float64Array
  /** 1 when no price was found. */
  unpriced: Uint8Array
}

const F64_COLUMNS = 7
const U32_COLUMNS = 3

/** `scheduleIndex` of a call without a schedule (genai-prices prices it). */
export const NO_SCHEDULE = 0xffff_ffff

/** Number of calls in a batch. */
export function batchSize(batch: PriceBatch): number {
  return batch.ts.length
}

/** Columns for `inputs`, all numbers in one fresh ArrayBuffer. */
export function encodeBatch(inputs: readonly PriceInput[]): PriceBatch {
  const n = inputs.length
  const buffer = new ArrayBuffer(n * (F64_COLUMNS * 8 + U32_COLUMNS * 4))
  // Float64 columns first: their offsets stay multiples of 8 whatever n is.
  const f64 = (i: number) => new Float64Array(buffer, i * n * 8, n)
  const u32 = (i: number) => new Uint32Array(buffer, F64_COLUMNS * n * 8 + i * n * 4, n)
  const batch: PriceBatch = {
    providers: [],
    providerIndex: u32(0),
    models: [],
    modelIndex: u32(1),
    schedules: [],
    scheduleIndex: u32(2),
    ts: f64(0),
    prompt: f64(1),
    completion: f64(2),
    cached: f64(3),
    cacheWrite: f64(4),
    reasoning: f64(5),
    callerCost: f64(6)
  }
  const providerIds = new Map<string, number>()
  const modelIds = new Map<string, number>()
  const scheduleIds = new Map<RateSchedule, number>()
  for (let i = 0; i < n; i++) {
    const e = inputs[i]
    batch.providerIndex[i] = intern(providerIds, batch.providers, e.provider)
    batch.modelIndex[i] = intern(modelIds, batch.models, e.model)
    const s = e.schedule
    if (s == null) batch.scheduleIndex[i] = NO_SCHEDULE
    else {
      let id = scheduleIds.get(s)
      if (id === undefined) {
        id = batch.schedules.length
        batch.schedules.push(s)
        scheduleIds.set(s, id)
      }
      batch.scheduleIndex[i] = id
    }
    batch.ts[i] = e.ts
    batch.prompt[i] = e.promptTokens
    batch.completion[i] = e.completionTokens
    batch.cached[i] = e.cachedTokens
    batch.cacheWrite[i] = e.cacheWriteTokens ?? 0
    batch.reasoning[i] = e.reasoningTokens
    batch.callerCost[i] = e.callerCost ?? NaN
  }
  return batch
}

/** The calls back out of a batch (tests, debugging). `callerCost` NaN decodes to null, NO_SCHEDULE to a null schedule. */
export function decodeBatch(batch: PriceBatch): PriceInput[] {
  const out: PriceInput[] = []
  for (let i = 0; i < batchSize(batch); i++) out.push(inputAt(batch, i, {} as PriceInput))
  return out
}

/**
 * Prices every call of a batch with {@link computeCost}, each with its own schedule (the book's
 * rates) or genai-prices. Pure; the worker and the inline fallback both run it, so a batch
 * prices the same wherever it runs. Throws only on a malformed batch (columns of different
 * lengths), which is a programming error, not bad input. `overrides`: transitional (callers
 * without a book), applied only to calls without a schedule.
 */
export function priceBatch(batch: PriceBatch, overrides?: PriceOverrides): PriceResult {
  const n = assertColumns(batch)
  const buffer = new ArrayBuffer(n * 9)
  const result: PriceResult = { costNanos: new Float64Array(buffer, 0, n), unpriced: new Uint8Array(buffer, n * 8, n) }
  // One scratch input for the whole batch: no allocation per call beyond computeCost's result.
  const scratch = {} as PriceInput
  for (let i = 0; i < n; i++) {
    const out = computeCost(inputAt(batch, i, scratch), overrides)
    result.costNanos[i] = out.costNanos
    result.unpriced[i] = out.unpriced ? 1 : 0
  }
  return result
}

/** The buffers to transfer (not clone) when posting a batch: one, shared by every column. */
export function batchTransferList(batch: PriceBatch): ArrayBuffer[] {
  return distinctBuffers([batch.ts, batch.prompt, batch.completion, batch.cached, batch.cacheWrite, batch.reasoning, batch.callerCost, batch.providerIndex, batch.modelIndex, batch.scheduleIndex])
}

/** The buffers to transfer when posting a result: one, shared by both columns. */
export function resultTransferList(result: PriceResult): ArrayBuffer[] {
  return distinctBuffers([result.costNanos, result.unpriced])
}

function inputAt(batch: PriceBatch, i: number, into: PriceInput): PriceInput {
  // `?? ''`: an out-of-range index prices as an unknown model rather than throwing.
  into.provider = batch.providers[batch.providerIndex[i]] ?? ''
  into.model = batch.models[batch.modelIndex[i]] ?? ''
  into.ts = batch.ts[i]
  into.promptTokens = batch.prompt[i]
  into.completionTokens = batch.completion[i]
  into.cachedTokens = batch.cached[i]
  into.cacheWriteTokens = batch.cacheWrite[i]
  into.reasoningTokens = batch.reasoning[i]
  const cost = batch.callerCost[i]
  into.callerCost = Number.isNaN(cost) ? null : cost
  const s = batch.scheduleIndex[i]
  // An out-of-range index prices with genai-prices rather than throwing.
  into.schedule = s === NO_SCHEDULE ? null : (batch.schedules[s] ?? null)
  return into
}

function assertColumns(batch: PriceBatch): number {
  const n = batch.ts.length
  const columns = [batch.prompt, batch.completion, batch.cached, batch.cacheWrite, batch.reasoning, batch.callerCost, batch.providerIndex, batch.modelIndex, batch.scheduleIndex]
  if (columns.some((c) => c.length !== n)) {
    throw new RangeError(`priceBatch: every column must hold ${n} values (a detached or hand-built batch?)`)
  }
  return n
}

function distinctBuffers(views: ArrayBufferView[]): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>()
  // A SharedArrayBuffer is shared, not transferred: leave it out.
  for (const v of views) if (v.buffer instanceof ArrayBuffer) out.add(v.buffer)
  return [...out]
}

/**
 * The wire format between the cost stage and a pricing worker: a batch of N calls as columns.
 *
 *   one ArrayBuffer (transferable)                                  plain arrays (cloned)
 *   ┌──────┬────────┬────────────┬────────┬───────────┬────────────┬─────────────┬──────────┐
 *   │ ts   │ prompt │ completion │ cached │ reasoning │ callerCost │ providerIdx │ modelIdx │  providers: string[]
 *   │ f64×N│ f64×N  │ f64×N      │ f64×N  │ f64×N     │ f64×N (NaN │ u32×N       │ u32×N    │  models:    string[]
 *   │      │        │            │        │           │  = none)   │             │          │  (distinct values)
 *   └──────┴────────┴────────────┴────────┴───────────┴────────────┴─────────────┴──────────┘
 *
 * Numbers are columns of one buffer so a batch is one allocation and one transfer; strings are
 * dictionary-encoded because a batch usually holds a handful of distinct models, and cloning a
 * few strings is cheaper than cloning one per event. The result is likewise one buffer:
 * `costNanos` (f64×N) then `unpriced` (u8×N, 1 = no price found).
 */
import { computeCost } from './compute-cost.js'
import type { PriceInput, PriceOverrides } from './compute-cost.js'
import { intern } from '../intern.js'

/** N calls to price, as columns. Build with {@link encodeBatch}. */
export interface PriceBatch {
  /** Distinct provider strings; `providerIndex[i]` points into it. */
  providers: string[]
  providerIndex: Uint32Array
  /** Distinct model strings; `modelIndex[i]` points into it. */
  models: string[]
  modelIndex: Uint32Array
  /** Event time, epoch ms. */
  ts: Float64Array
  prompt: Float64Array
  completion: Float64Array
  cached: Float64Array
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

const F64_COLUMNS = 6

/** Number of calls in a batch. */
export function batchSize(batch: PriceBatch): number {
  return batch.ts.length
}

/** Columns for `inputs`, all numbers in one fresh ArrayBuffer. */
export function encodeBatch(inputs: readonly PriceInput[]): PriceBatch {
  const n = inputs.length
  const buffer = new ArrayBuffer(n * (F64_COLUMNS * 8 + 2 * 4))
  // Float64 columns first: their offsets stay multiples of 8 whatever n is.
  const f64 = (i: number) => new Float64Array(buffer, i * n * 8, n)
  const u32 = (i: number) => new Uint32Array(buffer, F64_COLUMNS * n * 8 + i * n * 4, n)
  const batch: PriceBatch = {
    providers: [],
    providerIndex: u32(0),
    models: [],
    modelIndex: u32(1),
    ts: f64(0),
    prompt: f64(1),
    completion: f64(2),
    cached: f64(3),
    reasoning: f64(4),
    callerCost: f64(5)
  }
  const providerIds = new Map<string, number>()
  const modelIds = new Map<string, number>()
  for (let i = 0; i < n; i++) {
    const e = inputs[i]
    batch.providerIndex[i] = intern(providerIds, batch.providers, e.provider)
    batch.modelIndex[i] = intern(modelIds, batch.models, e.model)
    batch.ts[i] = e.ts
    batch.prompt[i] = e.promptTokens
    batch.completion[i] = e.completionTokens
    batch.cached[i] = e.cachedTokens
    batch.reasoning[i] = e.reasoningTokens
    batch.callerCost[i] = e.callerCost ?? NaN
  }
  return batch
}

/** The calls back out of a batch (tests, debugging). `callerCost` NaN decodes to null. */
export function decodeBatch(batch: PriceBatch): PriceInput[] {
  const out: PriceInput[] = []
  for (let i = 0; i < batchSize(batch); i++) out.push(inputAt(batch, i, {} as PriceInput))
  return out
}

/**
 * Prices every call of a batch with {@link computeCost}. Pure; the worker and the inline
 * fallback both run it, so a batch prices the same wherever it runs. Throws only on a malformed
 * batch (columns of different lengths), which is a programming error, not bad input.
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
  return distinctBuffers([batch.ts, batch.prompt, batch.completion, batch.cached, batch.reasoning, batch.callerCost, batch.providerIndex, batch.modelIndex])
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
  into.reasoningTokens = batch.reasoning[i]
  const cost = batch.callerCost[i]
  into.callerCost = Number.isNaN(cost) ? null : cost
  return into
}

function assertColumns(batch: PriceBatch): number {
  const n = batch.ts.length
  const columns = [batch.prompt, batch.completion, batch.cached, batch.reasoning, batch.callerCost, batch.providerIndex, batch.modelIndex]
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

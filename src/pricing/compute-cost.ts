/**
 * Pricing of one LLM call: pure, synchronous, never throws.
 *
 * Prices come from the price book's rates when the event's {@link PriceInput.schedule} has a
 * step in force at its time (src/pricing/book.ts: project versions, then the configuration's
 * override layer), else from `@pydantic/genai-prices` (bundled data; we never enable its
 * auto-update, so a replay prices exactly as the first run did).
 *
 * ## Usage conventions (what the numbers in an event mean)
 *
 * genai-prices wants `input_tokens` = ALL input tokens, cache reads and cache writes included,
 * with `cache_read_tokens` and `cache_write_tokens` as parts of it. Providers report differently;
 * cache writes follow the same convention as cache reads:
 *
 * | provider (genai-prices id)                        | `promptTokens` includes cache reads and writes? | input_tokens sent |
 * | ------------------------------------------------- | ------------------------------------ | ---------------------- |
 * | `anthropic`, `aws` (Bedrock), `cursor`            | no (Anthropic Messages shape)        | prompt + cached + cacheWrite |
 * | `google` (Vertex), `azure` (Foundry) — Claude only | no (they serve Claude through Anthropic's API) | prompt + cached + cacheWrite |
 * | everything else (openai, google Gemini, azure OpenAI, deepseek, openrouter, x-ai, mistral, groq, …) | yes (OpenAI shape) | prompt |
 *
 * The table follows genai-prices' own usage extractors (their Anthropic, Bedrock and Cursor
 * mappings add cache reads and writes to `input_tokens`; the OpenAI-style ones do not). A
 * provider name is first normalised through genai-prices (`bedrock` → `aws`, `vertex_ai` →
 * `google`). OpenRouter is OpenAI-shaped even for Claude models. Anthropic's OpenAI-compatible
 * endpoint is not distinguishable from its native one here: callers using it should send
 * `prompt_tokens - cached_tokens - cache_write_tokens`.
 *
 * With book rates (dollars per 1M tokens) the cost is
 *
 *     uncached = prompt                              (Anthropic shape)
 *              = prompt − cached − cacheWrite        (OpenAI shape; cached, then cacheWrite, capped so it is ≥ 0)
 *     cost$    = (uncached·input + cached·cached_input + cacheWrite·cache_write
 *                 + (completion − reasoning)·output + reasoning·reasoning) / 1e6
 *
 * and genai-prices is given the same token parts, so both paths split usage identically.
 *
 * Reasoning tokens: `completionTokens` is the WHOLE billed output, reasoning included (OpenAI's
 * `completion_tokens` and Anthropic's `output_tokens` already count them). `reasoningTokens`
 * is never added on top; it is passed to genai-prices as a part of the output so the few
 * models with a separate reasoning price (e.g. Perplexity sonar-deep-research) are right.
 * Gemini-native callers must add `thoughtsTokenCount` into `completion_tokens` themselves.
 *
 * Inconsistent numbers are clamped, never rejected: negative or non-finite counts become 0,
 * `cachedTokens` is capped at `promptTokens` and `cacheWriteTokens` at what is left of it
 * (OpenAI shape), `reasoningTokens` at `completionTokens`. Costs are capped at `Number.MAX_SAFE_INTEGER` nanos (~$9M per call).
 */
import { calcPrice, findProvider } from '@pydantic/genai-prices'
import type { ModelInfo, ModelPrice, PriceCalculation, PriceCalculationResult, PriceOptions, Provider, Usage } from '@pydantic/genai-prices'
import type { PricedEvent, StoredEvent } from '../events.js'
import type { PriceBook, RateSchedule } from './book.js'

/** One LLM call, as the cost stage sees it. */
export interface PriceInput {
  /** As sent in the event, e.g. `openai`, `anthropic`, `unknown`. */
  provider: string
  model: string
  /**
   * Event time, epoch ms. Selects date- and time-of-day-dependent prices, so a replay prices
   * the same as the live run. Must be a valid time for models with such prices, else unpriced.
   */
  ts: number
  promptTokens: number
  completionTokens: number
  /** Cache-read tokens (see the convention table in this module's header). */
  cachedTokens: number
  /** Cache-write tokens (Anthropic `cache_creation_input_tokens`): same convention as cache reads. Absent = 0. */
  cacheWriteTokens?: number
  /** Already counted in `completionTokens`; informational, never added again. */
  reasoningTokens: number
  /** Dollars supplied by the caller; wins over the computed cost when finite and >= 0 ({@link UNPRICED_COST}: unpriced). */
  callerCost: number | null
  /**
   * The price book's rates for this call ({@link PriceBook.schedule} at the event's effective
   * revision); null, absent, or no step in force at `ts`: genai-prices prices it.
   */
  schedule?: RateSchedule | null
}

/**
 * The `callerCost` of an imported event that was unpriced where it was first accepted
 * (StoredEvent.costSource `unpriced`, DESIGN §7 Import): it stays unpriced, cost 0, whatever
 * the prices here say. -Infinity: no caller can send it (events refuse a negative cost), and
 * every other unusable value (NaN, other negatives, +Infinity) still falls back to a price.
 */
export const UNPRICED_COST = -Infinity

/**
 * What pricing reads of a stored event: the one mapping from event fields (and the price book)
 * to a {@link PriceInput}, used by the cost stage, the engine's on-demand pricing, re-pricing
 * and cluster owners alike, so all count the same cost for the same event: the book's schedule
 * at the event's effective revision (its acceptance revision `priceRev`, or a newer reprice
 * covering it). Without a book (transitional callers) the schedule is null.
 */
export function priceInputOf(e: StoredEvent, book: PriceBook | null): PriceInput
/** @deprecated transitional: without the book (schedule null); pass the engine's book. */
export function priceInputOf(e: StoredEvent): PriceInput
export function priceInputOf(e: StoredEvent, book?: PriceBook | null): PriceInput {
  const callerCost = e.costSource === 'unpriced' ? UNPRICED_COST : e.cost
  let schedule: RateSchedule | null = null
  // A caller's cost wins: no need to look its schedule up. `typeof`: `.map(priceInputOf)` passes an index here.
  if (typeof book === 'object' && book !== null && !(callerCost !== null && callerCost >= 0 && callerCost !== Infinity) && callerCost !== UNPRICED_COST) {
    const rev = book.effectiveRev(e.project, e.model, e.ts, e.priceRev ?? 0)
    schedule = book.schedule(e.project, e.provider, e.model, rev)
  }
  return {
    provider: e.provider,
    model: e.model,
    ts: e.ts,
    promptTokens: e.prompt,
    completionTokens: e.completion,
    cachedTokens: e.cached,
    cacheWriteTokens: (e as { cacheWrite?: number }).cacheWrite ?? 0,
    reasoningTokens: e.reasoning,
    callerCost,
    schedule
  }
}

/**
 * Prices a stored event on the main thread with the book (memoised schedules and price plans:
 * well under a µs): the same function and inputs as the cost stage's workers.
 */
export function priceEvent(e: StoredEvent, book: PriceBook): PriceOutput {
  return computeCost(priceInputOf(e, book))
}

/** {@link priceEvent}, written into the event itself (no copy): an event decoded for one caller. */
export function priceInPlace(e: StoredEvent, book: PriceBook): PricedEvent {
  const p = priceEvent(e, book)
  const out = e as PricedEvent
  out.costNanos = p.costNanos
  out.unpriced = p.unpriced
  return out
}

/** A price: integer nano-dollars (`Math.round(dollars * 1e9)`). */
export interface PriceOutput {
  costNanos: number
  /** True when no price was found (cost 0). A caller-supplied cost is never unpriced. */
  unpriced: boolean
}

/** A configured price, dollars per 1M tokens. */
export interface PriceOverride {
  input_mtok: number
  output_mtok: number
  /** Price of cache-read tokens; the input price when absent. */
  cache_read_mtok?: number
  /** Price of cache-write tokens; the input price when absent. */
  cache_write_mtok?: number
}

/**
 * Overrides keyed by `"provider/model"` or by bare `"model"`. In the price book they are the
 * configuration's override layer (src/pricing/book.ts: names match as book entries do, families
 * included). The transitional `overrides` argument of {@link computeCost} matches as before the
 * book: qualified key first, then the bare model, exactly (case-sensitive).
 */
export type PriceOverrides = Readonly<Record<string, PriceOverride>>

/** genai-prices providers whose usage excludes cache reads from the input count. */
export const CACHE_EXCLUSIVE_PROVIDERS: ReadonlySet<string> = new Set(['anthropic', 'aws', 'cursor'])

/** Providers that serve Claude through Anthropic's Messages API (and everything else OpenAI-style). */
export const CLAUDE_VIA_ANTHROPIC_API: ReadonlySet<string> = new Set(['google', 'azure'])

/** Entries kept per memo; past it the oldest goes (FIFO), so garbage model names cannot grow memory. */
export const PRICE_CACHE_MAX = 4096

const NANOS_PER_DOLLAR = 1e9
const MTOK = 1e6
const DAY_MS = 86_400_000
/** Resolution only looks models up; the date is irrelevant there but must be valid. */
const RESOLVE_DATE = new Date(0)
const ZERO_USAGE: Usage = usage(0, 0, 0, 0)

/**
 * How a (provider, model) pair is priced, worked out once and memoised. calcPrice spends its
 * 10–40 µs finding the model and re-validating its price table on every call; a plan does that
 * work once, and the hot path never calls calcPrice.
 * - `linear`: an unconditional, untiered price table. Cost is then linear in the four usage
 *   parts, so the coefficients are MEASURED through calcPrice itself (no re-implementation of
 *   its unit rules) and a call is a few multiplications.
 * - `scheduled`: tables that change on a start date (o3, newer Claude models) or by time of
 *   day (DeepSeek's off-peak discount): the table is picked by the event time with genai-prices'
 *   rule (the LAST entry whose constraint holds; an entry without constraint always holds;
 *   else the first), then priced by its own plan.
 * - `tiered`: prices that step up past an input size (Gemini 2.5, long-context Claude). genai-
 *   prices picks every key's tier by the call's total input tokens, so each band between tier
 *   starts is one linear table: the band is picked by input tokens, then priced linearly.
 *
 * A table or constraint this module cannot read makes the model unknown; calcPrice itself would
 * throw on it (it validates the same shapes), so the answer — unpriced — is the same.
 * `test/pricing/compute-cost.test.ts` pins every model of the bundled data against calcPrice.
 */
type Plan = Linear | Tiered | Scheduled

interface Linear {
  kind: 'linear'
  /** Dollars per call (per-request prices). */
  base: number
  /** Dollars per 1M tokens of each usage part. */
  input: number
  cacheRead: number
  cacheWrite: number
  output: number
  reasoning: number
}

interface Tiered {
  kind: 'tiered'
  /** Ascending tier starts; band j applies when bounds[j-1] < input tokens <= bounds[j]. */
  bounds: number[]
  /** One more than bounds. */
  plans: Linear[]
}

interface Scheduled {
  kind: 'scheduled'
  /** When `plans[i]` applies: always (null), from an instant on, or daily in a UTC window. */
  when: Array<null | { from: number } | { startSec: number; endSec: number }>
  plans: Array<Linear | Tiered>
}

type Resolved = { kind: 'unknown' } | { kind: 'known'; exclusive: boolean; plan: Plan }

/** A Map that forgets its oldest entry when full. */
class BoundedMemo<V> {
  readonly #max: number
  readonly #map = new Map<string, V>()

  constructor(max: number) {
    this.#max = max
  }

  get(key: string): V | undefined {
    return this.#map.get(key)
  }

  set(key: string, value: V): void {
    if (this.#map.size >= this.#max) {
      // Map iterates in insertion order: the first key is the oldest.
      this.#map.delete(this.#map.keys().next().value as string)
    }
    this.#map.set(key, value)
  }

  get size(): number {
    return this.#map.size
  }

  clear(): void {
    this.#map.clear()
  }
}

const resolvedMemo = new BoundedMemo<Resolved>(PRICE_CACHE_MAX)
const inferMemo = new BoundedMemo<string>(PRICE_CACHE_MAX)
const providerIdMemo = new BoundedMemo<string>(PRICE_CACHE_MAX)

/**
 * Prices one call. Order: a valid `callerCost` wins; then the book's rates in force at `ts`
 * (`input.schedule`); then (transitional callers without a book only) an override; then the
 * pricing data; else `{ costNanos: 0, unpriced: true }`. Never throws (a throwing calcPrice
 * counts as unpriced).
 */
export function computeCost(input: PriceInput, overrides?: PriceOverrides): PriceOutput {
  const callerCost = input.callerCost
  if (callerCost !== null && callerCost >= 0 && callerCost !== Infinity) {
    return { costNanos: toNanos(callerCost), unpriced: false }
  }
  if (callerCost === UNPRICED_COST) return { costNanos: 0, unpriced: true }
  const provider = typeof input.provider === 'string' ? input.provider : ''
  const model = typeof input.model === 'string' ? input.model : ''
  const prompt = tokens(input.promptTokens)
  const completion = tokens(input.completionTokens)
  const cachedRaw = tokens(input.cachedTokens)
  const cacheWriteRaw = tokens(input.cacheWriteTokens)
  const reasoning = Math.min(tokens(input.reasoningTokens), completion)

  const schedule = input.schedule
  if (schedule != null && schedule.length > 0) {
    const rates = ratesAt(schedule, input.ts)
    if (rates !== undefined) {
      const exclusive = isCacheExclusive(conventionProviderId(provider, model), model)
      const cached = exclusive ? cachedRaw : Math.min(cachedRaw, prompt)
      const cacheWrite = exclusive ? cacheWriteRaw : Math.min(cacheWriteRaw, prompt - cached)
      const uncached = exclusive ? prompt : prompt - cached - cacheWrite
      const dollars =
        (uncached * rates.input + cached * rates.cached_input + cacheWrite * rates.cache_write + (completion - reasoning) * rates.output + reasoning * rates.reasoning) / MTOK
      return priced(dollars)
    }
  } else if (overrides !== undefined) {
    const o = findOverride(overrides, provider, model)
    if (o !== undefined) {
      const exclusive = isCacheExclusive(conventionProviderId(provider, model), model)
      const cached = exclusive ? cachedRaw : Math.min(cachedRaw, prompt)
      const cacheWrite = exclusive ? cacheWriteRaw : Math.min(cacheWriteRaw, prompt - cached)
      const uncached = exclusive ? prompt : prompt - cached - cacheWrite
      const cacheRead = o.cache_read_mtok ?? o.input_mtok
      const cacheWriteRate = o.cache_write_mtok ?? o.input_mtok
      const dollars = (uncached * o.input_mtok + cached * cacheRead + cacheWrite * cacheWriteRate + completion * o.output_mtok) / MTOK
      return priced(dollars)
    }
  }

  const key = memoKey(provider, model)
  let r = resolvedMemo.get(key)
  if (r === undefined) {
    r = resolve(provider, model)
    resolvedMemo.set(key, r)
  }
  if (r.kind === 'unknown') return { costNanos: 0, unpriced: true }

  const inputTotal = r.exclusive ? prompt + cachedRaw + cacheWriteRaw : prompt
  const cached = r.exclusive ? cachedRaw : Math.min(cachedRaw, prompt)
  const cacheWrite = r.exclusive ? cacheWriteRaw : Math.min(cacheWriteRaw, prompt - cached)
  let plan = r.plan
  if (plan.kind === 'scheduled') {
    // new Date() clips like genai-prices does; an invalid time cannot pick a table.
    const t = new Date(input.ts).getTime()
    if (Number.isNaN(t)) return { costNanos: 0, unpriced: true }
    plan = pickScheduled(plan, t)
  }
  if (plan.kind === 'tiered') plan = pickTier(plan, inputTotal)
  const dollars =
    plan.base +
    ((inputTotal - cached - cacheWrite) * plan.input +
      cached * plan.cacheRead +
      cacheWrite * plan.cacheWrite +
      (completion - reasoning) * plan.output +
      reasoning * plan.reasoning) /
      MTOK
  return priced(dollars)
}

/** The rates of the last step with `from <= ts` (see book.ts stepAt; inlined here so workers need no book). */
function ratesAt(schedule: RateSchedule, ts: number): RateSchedule[number]['rates'] | undefined {
  for (let i = schedule.length - 1; i >= 0; i--) if (schedule[i].from <= ts) return schedule[i].rates
  return undefined
}

/**
 * The slow reference: straight through calcPrice on every call, with the same conventions,
 * clamping and override handling as {@link computeCost} but no memo. Tests pin the fast path
 * against it; benchmarks measure what the memo saves.
 * @internal
 */
export function computeCostReference(input: PriceInput, overrides?: PriceOverrides): PriceOutput {
  const callerCost = input.callerCost
  if (callerCost !== null && callerCost >= 0 && callerCost !== Infinity) {
    return { costNanos: toNanos(callerCost), unpriced: false }
  }
  if (callerCost === UNPRICED_COST) return { costNanos: 0, unpriced: true }
  if (input.schedule != null && ratesAt(input.schedule, input.ts) !== undefined) return computeCost(input, overrides)
  if (input.schedule == null && overrides !== undefined && findOverride(overrides, input.provider, input.model) !== undefined) {
    return computeCost(input, overrides)
  }
  const prompt = tokens(input.promptTokens)
  const completion = tokens(input.completionTokens)
  const cachedRaw = tokens(input.cachedTokens)
  const cacheWriteRaw = tokens(input.cacheWriteTokens)
  const reasoning = Math.min(tokens(input.reasoningTokens), completion)
  const timestamp = new Date(input.ts)
  // Same provider rule as resolve(), but priced against the full catalogue every time.
  let options: PriceOptions = { providerId: input.provider, timestamp }
  let probe = input.provider ? tryCalc(ZERO_USAGE, input.model, options) : null
  if (probe === null && (!input.provider || findProvider({ providerId: input.provider }) === undefined)) {
    options = { timestamp }
    probe = tryCalc(ZERO_USAGE, input.model, options)
  }
  if (probe === null || probe === undefined) return { costNanos: 0, unpriced: true }
  const exclusive = isCacheExclusive(probe.provider.id, input.model)
  const inputTotal = exclusive ? prompt + cachedRaw + cacheWriteRaw : prompt
  const cached = exclusive ? cachedRaw : Math.min(cachedRaw, prompt)
  const cacheWrite = exclusive ? cacheWriteRaw : Math.min(cacheWriteRaw, prompt - cached)
  const result = tryCalc(usage(inputTotal, cached, completion, reasoning, cacheWrite), input.model, options)
  if (result === null || result === undefined) return { costNanos: 0, unpriced: true }
  return priced(result.total_price)
}

/**
 * The genai-prices provider id for a model name (via the providers' model patterns, e.g.
 * `gpt-` → `openai`, `claude` → `anthropic`), else `'unknown'`. Memoised (bounded).
 */
export function inferProvider(model: string): string {
  let id = inferMemo.get(model)
  if (id === undefined) {
    try {
      id = findProvider({ modelId: model.toLowerCase().trim() })?.id ?? 'unknown'
    } catch {
      id = 'unknown'
    }
    inferMemo.set(model, id)
  }
  return id
}

/**
 * genai-prices' id for a provider name (`bedrock` → `aws`, `vertex_ai` → `google`), or
 * undefined when it does not know the provider. Memoised (bounded).
 */
export function normaliseProvider(provider: string): string | undefined {
  let id = providerIdMemo.get(provider)
  if (id === undefined) {
    try {
      id = (provider ? findProvider({ providerId: provider })?.id : undefined) ?? ''
    } catch {
      id = ''
    }
    providerIdMemo.set(provider, id)
  }
  return id === '' ? undefined : id
}

/**
 * The genai-prices model that prices (provider, model) at `ts`, by the same provider rule the
 * pricing path follows (a known provider is trusted; an unknown one falls back to inferring it
 * from the model name), with its price table in force at `ts`; null when none. Not memoised:
 * for matching names and display, not the hot path.
 */
export function genaiModelOf(provider: string, model: string, ts = 0): PriceCalculation | null {
  const timestamp = new Date(ts)
  if (Number.isNaN(timestamp.getTime())) return null
  let found = provider ? tryCalc(ZERO_USAGE, model, { providerId: provider, timestamp }) : null
  if (found === null && (!provider || findProvider({ providerId: provider }) === undefined)) {
    found = tryCalc(ZERO_USAGE, model, { timestamp })
  }
  return found ?? null
}

/**
 * True when `promptTokens` EXCLUDES cache reads for this (genai-prices provider id, model):
 * Anthropic's usage shape. See the table in this module's header.
 */
export function isCacheExclusive(providerId: string, model: string): boolean {
  if (CACHE_EXCLUSIVE_PROVIDERS.has(providerId)) return true
  return CLAUDE_VIA_ANTHROPIC_API.has(providerId) && model.toLowerCase().includes('claude')
}

/**
 * Checks overrides once, at construction (config already validates them with zod; this guards
 * the worker path). Throws a TypeError naming the offending key and field.
 */
export function validatePriceOverrides(overrides: unknown, name = 'overrides'): PriceOverrides {
  if (typeof overrides !== 'object' || overrides === null || Array.isArray(overrides)) {
    throw new TypeError(`${name} must be an object of model -> prices`)
  }
  for (const [key, o] of Object.entries(overrides)) {
    const at = `${name}[${JSON.stringify(key)}]`
    if (typeof o !== 'object' || o === null) throw new TypeError(`${at} must be an object`)
    for (const field of ['input_mtok', 'output_mtok', 'cache_read_mtok', 'cache_write_mtok'] as const) {
      const v = (o as Record<string, unknown>)[field]
      const optional = field === 'cache_read_mtok' || field === 'cache_write_mtok'
      if (optional && v === undefined) continue
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
        throw new TypeError(`${at}.${field} must be a finite number >= 0`)
      }
    }
  }
  return overrides as PriceOverrides
}

/** Forgets every memoised lookup (tests, or after swapping price data). */
export function clearPriceCache(): void {
  resolvedMemo.clear()
  inferMemo.clear()
  providerIdMemo.clear()
}

/** How many (provider, model) resolutions are memoised; never above {@link PRICE_CACHE_MAX}. */
export function priceCacheSize(): number {
  return resolvedMemo.size
}

/** Works out once how (provider, model) is priced. */
function resolve(provider: string, model: string): Resolved {
  // A provider genai-prices knows is trusted: a model it does not list there is unpriced rather
  // than guessed from another provider. An unknown provider name ('unknown', a private proxy)
  // falls back to inferring the provider from the model name.
  let found = provider ? tryCalc(ZERO_USAGE, model, { providerId: provider, timestamp: RESOLVE_DATE }) : null
  if (found === null && (!provider || findProvider({ providerId: provider }) === undefined)) {
    found = tryCalc(ZERO_USAGE, model, { timestamp: RESOLVE_DATE })
  }
  // undefined: found but calcPrice threw on zero usage (broken price data): nothing to price with.
  if (found === null || found === undefined) return { kind: 'unknown' }

  const exclusive = isCacheExclusive(found.provider.id, model)
  // Measurements run against a one-model provider whose model matches exactly the name we
  // measure with: no catalogue scan, no fallback providers, litellm-style names still match,
  // and provider-specific rules keyed on ids (Groq's Whisper minimum) still apply.
  const info: ModelInfo = { ...found.model, match: { equals: model.toLowerCase().trim() } }
  const single: Provider = { ...found.provider, models: [info], fallback_model_providers: undefined }
  const prices = info.prices
  if (!Array.isArray(prices)) {
    const plan = compile(single, info, prices, model)
    return plan === undefined ? { kind: 'unknown' } : { kind: 'known', exclusive, plan }
  }

  const when: Scheduled['when'] = []
  for (const { constraint: c } of prices) {
    const rule =
      c === undefined
        ? null
        : c.type === 'start_date'
          ? { from: Date.parse(c.start_date) }
          : c.type === 'time_of_date'
            ? { startSec: secondOfDay(c.start_time), endSec: secondOfDay(c.end_time) }
            : { from: NaN }
    if (rule !== null && Object.values(rule).some(Number.isNaN)) return { kind: 'unknown' }
    when.push(rule)
  }
  const plans: Scheduled['plans'] = []
  for (const entry of prices) {
    const plan = compile(single, info, entry.prices, model)
    if (plan === undefined) return { kind: 'unknown' }
    plans.push(plan)
  }
  return { kind: 'known', exclusive, plan: { kind: 'scheduled', when, plans } }
}

/** The plan for one unconditional price table. */
function compile(single: Provider, info: ModelInfo, prices: ModelPrice, model: string): Linear | Tiered | undefined {
  const tieredKeys = Object.keys(prices).filter((k) => prices[k] !== undefined && typeof prices[k] !== 'number')
  if (tieredKeys.length === 0) return measure(single, info, prices, model)

  const tiers = new Map<string, { base: number; tiers: Array<{ start: number; price: number }> }>()
  for (const k of tieredKeys) {
    const v = prices[k] as unknown
    if (!isTierTable(v)) return undefined
    tiers.set(k, { base: v.base, tiers: [...v.tiers].sort((x, y) => x.start - y.start) })
  }
  const bounds = [...new Set([...tiers.values()].flatMap((t) => t.tiers.map((x) => x.start)))].sort((x, y) => x - y)
  const plans: Linear[] = []
  for (let band = 0; band <= bounds.length; band++) {
    // In band j every input size exceeds exactly the starts <= bounds[j-1] (genai-prices compares
    // with a strict >), so each key's price there is its last tier starting at or below that.
    const floor = band === 0 ? -Infinity : bounds[band - 1]
    const flat: ModelPrice = { ...prices }
    for (const [k, t] of tiers) {
      let price = t.base
      for (const tier of t.tiers) if (tier.start <= floor) price = tier.price
      flat[k] = price
    }
    const linear = measure(single, info, flat, model)
    if (linear === undefined) return undefined
    plans.push(linear)
  }
  return { kind: 'tiered', bounds, plans }
}

/** Coefficients of an untiered table, measured through calcPrice at five points. */
function measure(single: Provider, info: ModelInfo, prices: ModelPrice, model: string): Linear | undefined {
  const provider: Provider = { ...single, models: [{ ...info, prices }] }
  const at = (u: Usage) => tryCalc(u, model, { provider, timestamp: RESOLVE_DATE })?.total_price ?? NaN
  const base = at(ZERO_USAGE)
  const linear: Linear = {
    kind: 'linear',
    base,
    input: at(usage(MTOK, 0, 0, 0)) - base,
    cacheRead: at(usage(MTOK, MTOK, 0, 0)) - base,
    cacheWrite: at(usage(MTOK, 0, 0, 0, MTOK)) - base,
    output: at(usage(0, 0, MTOK, 0)) - base,
    reasoning: at(usage(0, 0, MTOK, MTOK)) - base
  }
  // A probe that threw (broken price data) leaves NaN: calcPrice would throw on every call too.
  const ok = [linear.base, linear.input, linear.cacheRead, linear.cacheWrite, linear.output, linear.reasoning].every(Number.isFinite)
  return ok ? linear : undefined
}

function isTierTable(v: unknown): v is { base: number; tiers: Array<{ start: number; price: number }> } {
  if (typeof v !== 'object' || v === null) return false
  const t = v as { base?: unknown; tiers?: unknown }
  return (
    typeof t.base === 'number' &&
    Array.isArray(t.tiers) &&
    t.tiers.every((x: { start?: unknown; price?: unknown }) => typeof x?.start === 'number' && typeof x.price === 'number')
  )
}

/** The band for this many input tokens: one past the count of bounds it exceeds. */
function pickTier(plan: Tiered, inputTokens: number): Linear {
  let band = 0
  while (band < plan.bounds.length && inputTokens > plan.bounds[band]) band++
  return plan.plans[band]
}

/** The genai-prices rule: the last table whose constraint holds at t, else the first. */
function pickScheduled(plan: Scheduled, t: number): Linear | Tiered {
  // Seconds into the UTC day, milliseconds included, as genai-prices computes it.
  const sec = (((t % DAY_MS) + DAY_MS) % DAY_MS) / 1000
  for (let i = plan.when.length - 1; i >= 0; i--) {
    const w = plan.when[i]
    if (w === null) return plan.plans[i]
    if ('from' in w) {
      if (t >= w.from) return plan.plans[i]
    } else if (w.endSec < w.startSec ? sec >= w.startSec || sec < w.endSec : sec >= w.startSec && sec < w.endSec) {
      // A window whose end is before its start wraps past midnight.
      return plan.plans[i]
    }
  }
  return plan.plans[0]
}

const TIME_OF_DAY = /^(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|([+-])(\d{2}):(\d{2}))$/

/** "HH:MM:SS[.frac](Z|±HH:MM)" as seconds into the UTC day (genai-prices' format), else NaN. */
function secondOfDay(text: string): number {
  const m = TIME_OF_DAY.exec(text)
  if (m === null) return NaN
  const [, hh, mm, ss, frac = '', zone, sign, zh = '00', zm = '00'] = m
  const [h, min, s, oh, om] = [hh, mm, ss, zh, zm].map(Number)
  if (h > 23 || min > 59 || s > 59 || oh > 23 || om > 59) return NaN
  const offset = zone === 'Z' ? 0 : (sign === '+' ? 1 : -1) * (oh * 60 + om) * 60
  return (h * 3600 + min * 60 + s + Number(`0.${frac}`) - offset + 86_400) % 86_400
}

function usage(input: number, cacheRead: number, output: number, reasoning: number, cacheWrite = 0): Usage {
  return { input_tokens: input, cache_read_tokens: cacheRead, cache_write_tokens: cacheWrite, output_tokens: output, output_reasoning_tokens: reasoning }
}

/** calcPrice, with a throw turned into `undefined` (found but not priceable) — null is "not found". */
function tryCalc(u: Usage, model: string, options: PriceOptions): PriceCalculationResult | undefined {
  try {
    return calcPrice(u, model, options)
  } catch {
    return undefined
  }
}

function findOverride(overrides: PriceOverrides, provider: string, model: string): PriceOverride | undefined {
  // Object.hasOwn: a model called "constructor" must not find Object.prototype's.
  const qualified = `${provider}/${model}`
  if (Object.hasOwn(overrides, qualified)) return overrides[qualified]
  if (Object.hasOwn(overrides, model)) return overrides[model]
  return undefined
}

/**
 * The genai-prices provider whose usage convention applies to an overridden model: the named
 * provider as genai-prices knows it (`bedrock` → `aws`), else the one the model name suggests —
 * the same rule the pricing-data path follows.
 */
function conventionProviderId(provider: string, model: string): string {
  return normaliseProvider(provider) ?? inferProvider(model)
}

/** Unambiguous without a separator that a model name could contain. */
function memoKey(provider: string, model: string): string {
  return `${provider.length}:${provider}${model}`
}

/** A usable token count: negative, NaN and non-numbers are 0; capped so sums stay finite. */
function tokens(n: number | undefined): number {
  return n !== undefined && n > 0 ? Math.min(n, Number.MAX_SAFE_INTEGER) : 0
}

function toNanos(dollars: number): number {
  return Math.min(Math.round(dollars * NANOS_PER_DOLLAR), Number.MAX_SAFE_INTEGER)
}

function priced(dollars: number): PriceOutput {
  // NaN fails both tests; a negative total can only come from broken price data.
  if (!(dollars >= 0)) return { costNanos: 0, unpriced: true }
  return { costNanos: toNanos(dollars), unpriced: false }
}

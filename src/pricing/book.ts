/**
 * The price book: every price an event can be charged, with its history. APPEND-ONLY.
 *
 * An event's cost is a pure function of durable facts (ISSUE14.md, "The one idea"):
 *
 *     cost(e) = e.cost (caller-supplied) when present, else
 *               price(e's tokens, e.ts, book.schedule(e.project, e.provider, e.model, effRev))
 *     effRev  = max(e.priceRev, rev of every reprice of e.project covering e whose rev > e.priceRev)
 *
 * Three layers price a (provider, model) at an event time `ts`, as seen from a book revision
 * `rev` (only records with `record.rev <= rev` exist for it):
 *
 *   1. the project's versions: the newest `effective_from <= ts` of the best-matching entry
 *      (an entry = one (provider, model) as PUT); at equal `effective_from` the newer rev wins;
 *   2. the configuration's override layer in force at `rev` (the newest layer with
 *      `layer.rev <= rev`), which prices from the start of time, in every project;
 *   3. genai-prices (schedule `null`, or `ts` before the schedule's first step).
 *
 * Matching names (ISSUE14.md "Matching names"): an entry (P, M) prices (p, m) when the providers
 * agree (case-insensitive after genai-prices' normalisation, `*` = any) and m === M (exact), or m
 * is M plus a dated/version suffix, or genai-prices resolves both names to the same model
 * (family). Exact beats family; a named provider beats `*`. Between entries of one project the
 * best match that HAS a version in force at `ts` prices it: a dated entry (`gpt-4o-2024-08-06`)
 * takes over from the family one (`gpt-4o`) from its own first version on.
 *
 * Nothing is removed except by {@link PriceBook.dropProject} (DELETE /projects). A record may be
 * added at any rev, in any order (cluster mirrors set revs from KV); `rev` is the highest seen
 * or allocated. Memoised schedules of a project are forgotten whenever one of its records is
 * added, so a record added after its rev was first asked for is never missed.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { genaiModelOf, normaliseProvider } from './compute-cost.js'
import type { PriceOverride, PriceOverrides } from './compute-cost.js'

export { priceEvent, priceInPlace, priceInputOf } from './compute-cost.js'

/** Dollars per 1M tokens of each kind. */
export interface Rates {
  input: number
  output: number
  cached_input: number
  cache_write: number
  reasoning: number
}

/** One PUT /prices: a project's price for (provider, model) from `effective_from` on. */
export interface PriceVersion {
  /** 'pv_' + nanoid */
  id: string
  /** Book versions are per project. */
  project: string
  /** As PUT (`*` = any provider). */
  provider: string
  model: string
  rates: Rates
  /** Epoch ms. */
  effective_from: number
  created_at: number
  rev: number
}

/** The configuration's overrides (LLMSCOPE_PRICE_OVERRIDES), all projects, from the start of time, from `rev` on. */
export interface OverrideLayer {
  rev: number
  created_at: number
  overrides: PriceOverrides
}

/** An applied re-pricing: events of `project` in [start, end) (of `model`, or all) are priced at `rev`. */
export interface RepriceRecord {
  id: string
  project: string
  start: number
  end: number
  model: string | null
  rev: number
  created_at: number
}

/** One step of a {@link RateSchedule}. */
export interface ScheduleStep {
  /** Epoch ms from which these rates apply; -Infinity = start of time. */
  from: number
  rates: Rates
  source: 'override'
  /** The PriceVersion's id; null for the configuration's override layer. */
  versionId: string | null
  /** The entry that priced it: provider and model as PUT or as the override key names them. */
  entryProvider: string
  entryModel: string
}

/**
 * Rates by event time, ascending `from`: an event at `ts` takes the last step with
 * `from <= ts`; before the first step (or for a null schedule) genai-prices prices it.
 */
export type RateSchedule = ReadonlyArray<ScheduleStep>

/** How an entry's name matched an event's (provider, model); 0 = no match, higher is better. */
export const MATCH_NONE = 0
/** Family by genai-prices (it resolves both names to one model), entry provider `*`. */
export const MATCH_FAMILY_ANY = 1
/** Family by genai-prices, same provider. */
export const MATCH_FAMILY = 2
/** The event's name is the entry's plus a dated/version suffix, entry provider `*`. */
export const MATCH_SUFFIX_ANY = 3
/** Suffix, same provider. */
export const MATCH_SUFFIX = 4
/** Exact model name, entry provider `*`. */
export const MATCH_EXACT_ANY = 5
/** Exact model name, same provider. */
export const MATCH_EXACT = 6

/** Where a (provider, model)'s price at (ts, rev) comes from (GET /prices). */
export type PriceSource =
  | { kind: 'version'; version: PriceVersion; rates: Rates; match: 'exact' | 'family' }
  | { kind: 'override'; key: string; rates: Rates; layerRev: number; match: 'exact' | 'family' }
  | { kind: 'genai-prices'; providerId: string; modelId: string; rates: Rates | null }
  | { kind: 'unpriced' }

/** The installed genai-prices version, for `source: "genai-prices@VERSION"`. */
export const GENAI_PRICES_VERSION: string = readGenaiVersion()

/** Memoised schedules past this many are all forgotten at once (bounded; rebuilt on demand). */
export const SCHEDULE_MEMO_MAX = 100_000

/** Rates as PUT: omitted cached_input and cache_write equal input, reasoning equals output. */
export function fillRates(r: { input: number; output: number; cached_input?: number | null; cache_write?: number | null; reasoning?: number | null }): Rates {
  return {
    input: r.input,
    output: r.output,
    cached_input: r.cached_input ?? r.input,
    cache_write: r.cache_write ?? r.input,
    reasoning: r.reasoning ?? r.output
  }
}

/** The rates of a configured override (`cache_read_mtok`/`cache_write_mtok` default to the input price). */
export function ratesOfOverride(o: PriceOverride): Rates {
  return fillRates({ input: o.input_mtok, output: o.output_mtok, cached_input: o.cache_read_mtok, cache_write: o.cache_write_mtok })
}

// A dated / version suffix after an entry's model name (ISSUE14.md rule 3): -YYYY-MM-DD,
// -YYYYMMDD, @YYYYMMDD, -latest, -vN / -vN:N (bedrock), in any sequence, then optionally an
// ollama tag `:…`.
const SUFFIX = /^(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-latest|-v\d+(?::\d+)?)*(?::.*)?$/s

const providerMemo = new Map<string, string>()
/** 0 none, 1 genai-prices family, 2 suffix (or equal up to case). */
const familyMemo = new Map<string, 0 | 1 | 2>()
const MATCH_MEMO_MAX = 16_384

/** genai-prices' id for a provider name (`bedrock` → `aws`), else the name lowercased; `*` stays. */
export function providerKey(provider: string): string {
  if (provider === '*') return '*'
  let id = providerMemo.get(provider)
  if (id === undefined) {
    id = normaliseProvider(provider) ?? provider.toLowerCase().trim()
    if (providerMemo.size >= MATCH_MEMO_MAX) providerMemo.clear()
    providerMemo.set(provider, id)
  }
  return id
}

/**
 * True when `model` is of `entryModel`'s family: `model` is `entryModel` plus a dated/version
 * suffix, or genai-prices resolves both to the same model (resolved for `provider`; '' = by the
 * model name alone). Case-insensitive. Exact equality is NOT a family match (see {@link matchRank}).
 */
export function familyMatches(entryModel: string, model: string, provider = ''): boolean {
  return familyKind(entryModel, model, provider) !== 0
}

/** 2: suffix (or the same name up to case), 1: genai-prices resolves both to one model, 0: neither. */
function familyKind(entryModel: string, model: string, provider: string): 0 | 1 | 2 {
  const key = `${provider.length}:${provider}${entryModel.length}:${entryModel}${model}`
  let hit = familyMemo.get(key)
  if (hit === undefined) {
    const m = model.toLowerCase().trim()
    const M = entryModel.toLowerCase().trim()
    if (m === M || (M.length > 0 && m.length > M.length && m.startsWith(M) && SUFFIX.test(m.slice(M.length)))) hit = 2
    else {
      const a = genaiModelOf(provider, model)
      const b = a === null ? null : genaiModelOf(provider, entryModel)
      hit = a !== null && b !== null && a.provider.id === b.provider.id && a.model.id === b.model.id ? 1 : 0
    }
    if (familyMemo.size >= MATCH_MEMO_MAX) familyMemo.clear()
    familyMemo.set(key, hit)
  }
  return hit
}

/**
 * How well an entry (entryProvider, entryModel) matches an event's (provider, model): one of the
 * MATCH_* constants. Exact > suffix > genai-prices family; within each, a named provider > `*`.
 * (An entry `gpt-4o` and an entry `gpt-4o-2024-08-06` both resolve `gpt-4o-2024-11-20` to
 * genai-prices' gpt-4o; the suffix match makes `gpt-4o` the better one.)
 */
export function matchRank(entryProvider: string, entryModel: string, provider: string, model: string): number {
  const any = entryProvider === '*'
  if (!any && providerKey(entryProvider) !== providerKey(provider)) return MATCH_NONE
  if (entryModel === model) return any ? MATCH_EXACT_ANY : MATCH_EXACT
  const kind = familyKind(entryModel, model, provider)
  if (kind === 2) return any ? MATCH_SUFFIX_ANY : MATCH_SUFFIX
  if (kind === 1) return any ? MATCH_FAMILY_ANY : MATCH_FAMILY
  return MATCH_NONE
}

/** True when a reprice record covers an event of `model` at `ts` (its model filter by the same name rules, any provider). */
export function repriceCovers(r: RepriceRecord, model: string, ts: number): boolean {
  if (!(ts >= r.start && ts < r.end)) return false
  return r.model === null || r.model === model || familyMatches(r.model, model)
}

/** One entry of a project: the versions PUT for one (provider, model), in rev order. */
interface Entry {
  provider: string
  model: string
  versions: PriceVersion[]
}

/** One entry of an override layer. */
interface LayerEntry {
  key: string
  provider: string
  model: string
  rates: Rates
}

interface Layer {
  layer: OverrideLayer
  entries: LayerEntry[]
}

interface Project {
  /** key `provider\0model` → entry */
  entries: Map<string, Entry>
  /** Ascending rev. */
  reprices: RepriceRecord[]
}

type Memo = Map<string, Map<number, Map<string, Map<string, RateSchedule | null>>>>

/** See the module comment. */
export class PriceBook {
  #rev = 0
  readonly #projects = new Map<string, Project>()
  /** Ascending rev. */
  readonly #layers: Layer[] = []
  /** project → rev → provider → model → schedule. Nested maps: no key string built per event. */
  #memo: Memo = new Map()
  #memoSize = 0

  /** The newest revision: the highest allocated by {@link nextRev} or carried by an added record. */
  get rev(): number {
    return this.#rev
  }

  /** Allocates the next revision (rev + 1) and makes it current. */
  nextRev(): number {
    return ++this.#rev
  }

  /** Raises `rev` to at least `rev` (a cluster mirror that learnt of a newer counter). */
  observeRev(rev: number): void {
    if (rev > this.#rev) this.#rev = rev
  }

  /**
   * Adds a version. One at the same (project, provider, model, effective_from) as an older one
   * replaces it for revisions from its own rev on (the older stays for older revisions). The
   * same id added twice is ignored.
   */
  addVersion(v: PriceVersion): void {
    const p = this.#project(v.project)
    const key = `${v.provider}\u0000${v.model}`
    let e = p.entries.get(key)
    if (e === undefined) {
      e = { provider: v.provider, model: v.model, versions: [] }
      p.entries.set(key, e)
    }
    if (e.versions.some((x) => x.id === v.id)) return
    e.versions.push(v)
    e.versions.sort((a, b) => a.rev - b.rev)
    this.observeRev(v.rev)
    this.#forget(v.project)
  }

  /** Adds the configuration's override layer in force from `l.rev` on (a layer at an existing rev replaces it). */
  addOverrideLayer(l: OverrideLayer): void {
    const entries: LayerEntry[] = []
    for (const [key, o] of Object.entries(l.overrides)) {
      const rates = ratesOfOverride(o)
      // A bare key names a model for any provider; `provider/model` may also be a model name
      // containing a slash (OpenRouter's `openai/gpt-4o`), so both readings are entries.
      entries.push({ key, provider: '*', model: key, rates })
      const slash = key.indexOf('/')
      if (slash > 0 && slash < key.length - 1) entries.push({ key, provider: key.slice(0, slash), model: key.slice(slash + 1), rates })
    }
    const i = this.#layers.findIndex((x) => x.layer.rev === l.rev)
    if (i >= 0) this.#layers[i] = { layer: l, entries }
    else {
      this.#layers.push({ layer: l, entries })
      this.#layers.sort((a, b) => a.layer.rev - b.layer.rev)
    }
    this.observeRev(l.rev)
    this.#memo = new Map()
    this.#memoSize = 0
  }

  /** Adds a reprice record (the same id twice is ignored). */
  addReprice(r: RepriceRecord): void {
    const p = this.#project(r.project)
    if (p.reprices.some((x) => x.id === r.id)) return
    p.reprices.push(r)
    p.reprices.sort((a, b) => a.rev - b.rev)
    this.observeRev(r.rev)
    this.#forget(r.project)
  }

  /** Forgets every version and reprice of a project (DELETE /projects). The override layers stay. */
  dropProject(project: string): void {
    this.#projects.delete(project)
    this.#forget(project)
  }

  /**
   * The revision that prices an event accepted at `priceRev`: the newest reprice of its project
   * covering it ({@link repriceCovers}) with a rev above `priceRev`, else `priceRev`.
   */
  effectiveRev(project: string, model: string, ts: number, priceRev: number): number {
    const p = this.#projects.get(project)
    if (p === undefined) return priceRev
    const rs = p.reprices
    // Ascending rev: the first covering one from the end is the newest.
    for (let i = rs.length - 1; i >= 0 && rs[i].rev > priceRev; i--) {
      if (repriceCovers(rs[i], model, ts)) return rs[i].rev
    }
    return priceRev
  }

  /**
   * The book's rates for (project, provider, model) as of revision `rev`, by event time; null
   * when no book entry matches (genai-prices prices it). Memoised; the same array is returned
   * for the same arguments until a record of the project (or a layer) is added.
   */
  schedule(project: string, provider: string, model: string, rev: number): RateSchedule | null {
    let byRev = this.#memo.get(project)
    if (byRev === undefined) this.#memo.set(project, (byRev = new Map()))
    let byProvider = byRev.get(rev)
    if (byProvider === undefined) byRev.set(rev, (byProvider = new Map()))
    let byModel = byProvider.get(provider)
    if (byModel === undefined) byProvider.set(provider, (byModel = new Map()))
    let s = byModel.get(model)
    if (s === undefined) {
      s = this.#build(project, provider, model, rev)
      if (this.#memoSize >= SCHEDULE_MEMO_MAX) {
        this.#memo = new Map([[project, new Map([[rev, new Map([[provider, (byModel = new Map())]])]])]])
        this.#memoSize = 0
      }
      byModel.set(model, s)
      this.#memoSize++
    }
    return s
  }

  /** The rev of the project's newest reprice, 0 when none (a cursor taken before a reprice answers 409). */
  repriceEpoch(project: string): number {
    const rs = this.#projects.get(project)?.reprices
    return rs === undefined || rs.length === 0 ? 0 : rs[rs.length - 1].rev
  }

  /** The project's reprice records, ascending rev. */
  reprices(project: string): readonly RepriceRecord[] {
    return this.#projects.get(project)?.reprices ?? []
  }

  /**
   * The project's versions (every one ever added, superseded ones included), ordered by
   * provider, model, effective_from, rev. With `rev`: only those that exist at that revision.
   */
  versions(project: string, rev = Infinity): PriceVersion[] {
    const out: PriceVersion[] = []
    for (const e of this.#projects.get(project)?.entries.values() ?? []) for (const v of e.versions) if (v.rev <= rev) out.push(v)
    return out.sort((a, b) => cmp(a.provider, b.provider) || cmp(a.model, b.model) || a.effective_from - b.effective_from || a.rev - b.rev)
  }

  /** The project's entries with a version at `rev`: (provider, model) as PUT. */
  entries(project: string, rev = Infinity): Array<{ provider: string; model: string }> {
    const out: Array<{ provider: string; model: string }> = []
    for (const e of this.#projects.get(project)?.entries.values() ?? []) if (e.versions.some((v) => v.rev <= rev)) out.push({ provider: e.provider, model: e.model })
    return out.sort((a, b) => cmp(a.provider, b.provider) || cmp(a.model, b.model))
  }

  /** The configuration's override layer in force at `rev` (default: the newest), or null. */
  overrideLayer(rev = Infinity): OverrideLayer | null {
    return this.#layerAt(rev)?.layer ?? null
  }

  /** Every override layer, ascending rev. */
  overrideLayers(): OverrideLayer[] {
    return this.#layers.map((l) => l.layer)
  }

  /** Where the price of (provider, model) at (ts, rev) comes from — the same choice {@link schedule} makes. */
  priceSource(project: string, provider: string, model: string, ts: number, rev = this.#rev): PriceSource {
    const s = this.schedule(project, provider, model, rev)
    const step = s === null ? undefined : stepAt(s, ts)
    if (step !== undefined) {
      const match = step.entryModel === model ? 'exact' : 'family' // suffix and genai-prices family alike
      if (step.versionId !== null) {
        const v = this.versions(project, rev).find((x) => x.id === step.versionId)
        if (v !== undefined) return { kind: 'version', version: v, rates: step.rates, match }
      }
      const layer = this.#layerAt(rev)
      const key = layer?.entries.find((x) => x.provider === step.entryProvider && x.model === step.entryModel)?.key ?? step.entryModel
      return { kind: 'override', key, rates: step.rates, layerRev: layer?.layer.rev ?? 0, match }
    }
    const g = genaiModelOf(provider, model, ts)
    if (g === null) return { kind: 'unpriced' }
    return { kind: 'genai-prices', providerId: g.provider.id, modelId: g.model.id, rates: genaiRates(provider, model, ts) }
  }

  #project(project: string): Project {
    let p = this.#projects.get(project)
    if (p === undefined) this.#projects.set(project, (p = { entries: new Map(), reprices: [] }))
    return p
  }

  #forget(project: string): void {
    const byRev = this.#memo.get(project)
    if (byRev === undefined) return
    for (const byProvider of byRev.values()) for (const byModel of byProvider.values()) this.#memoSize -= byModel.size
    this.#memo.delete(project)
  }

  #layerAt(rev: number): Layer | undefined {
    for (let i = this.#layers.length - 1; i >= 0; i--) if (this.#layers[i].layer.rev <= rev) return this.#layers[i]
    return undefined
  }

  #build(project: string, provider: string, model: string, rev: number): RateSchedule | null {
    const steps: ScheduleStep[] = []
    // The override layer: its best-matching entry, from the start of time.
    const layer = this.#layerAt(rev)
    if (layer !== undefined) {
      let best: LayerEntry | undefined
      let bestRank = MATCH_NONE
      for (const le of layer.entries) {
        const r = matchRank(le.provider, le.model, provider, model)
        if (r > bestRank || (r === bestRank && r > MATCH_NONE && best !== undefined && tieBreak(le, best) < 0)) {
          best = le
          bestRank = r
        }
      }
      if (best !== undefined) steps.push({ from: -Infinity, rates: best.rates, source: 'override', versionId: null, entryProvider: best.provider, entryModel: best.model })
    }
    // The project's matching entries, best first, each with its versions in force at `rev`
    // (ascending effective_from; at equal effective_from the newest rev).
    const candidates: Array<{ rank: number; entry: Entry; versions: PriceVersion[] }> = []
    for (const e of this.#projects.get(project)?.entries.values() ?? []) {
      const rank = matchRank(e.provider, e.model, provider, model)
      if (rank === MATCH_NONE) continue
      const byFrom = new Map<number, PriceVersion>()
      for (const v of e.versions) {
        if (v.rev > rev) continue
        const old = byFrom.get(v.effective_from)
        if (old === undefined || v.rev >= old.rev) byFrom.set(v.effective_from, v)
      }
      if (byFrom.size === 0) continue
      candidates.push({ rank, entry: e, versions: [...byFrom.values()].sort((a, b) => a.effective_from - b.effective_from) })
    }
    candidates.sort((a, b) => b.rank - a.rank || tieBreak(a.entry, b.entry))
    const starts = [...new Set(candidates.flatMap((c) => c.versions.map((v) => v.effective_from)))].sort((a, b) => a - b)
    let last: PriceVersion | undefined
    for (const t of starts) {
      // At t, the best entry that has a version in force prices; its newest version <= t.
      let pick: { v: PriceVersion; e: Entry } | undefined
      for (const c of candidates) {
        let v: PriceVersion | undefined
        for (const x of c.versions) if (x.effective_from <= t) v = x
        if (v !== undefined) {
          pick = { v, e: c.entry }
          break
        }
      }
      if (pick === undefined || pick.v === last) continue
      last = pick.v
      steps.push({ from: t, rates: pick.v.rates, source: 'override', versionId: pick.v.id, entryProvider: pick.e.provider, entryModel: pick.e.model })
    }
    return steps.length === 0 ? null : Object.freeze(steps)
  }
}

/** The step of a schedule in force at `ts`, or undefined (genai-prices). */
export function stepAt(s: RateSchedule, ts: number): ScheduleStep | undefined {
  // Schedules are short (a handful of versions): a scan from the end beats a binary search.
  for (let i = s.length - 1; i >= 0; i--) if (s[i].from <= ts) return s[i]
  return undefined
}

/**
 * genai-prices' rates for (provider, model) at `ts` in dollars per 1M tokens, for display; null
 * when it has no price. Tiered prices show their base tier; a key genai-prices does not list
 * takes the default (cached_input, cache_write = input; reasoning = output).
 */
export function genaiRates(provider: string, model: string, ts: number = Date.now()): Rates | null {
  const g = genaiModelOf(provider, model, ts)
  if (g === null) return null
  const p = g.model_price
  const num = (k: string): number | undefined => {
    const v = p[k] as unknown
    if (typeof v === 'number') return v
    if (typeof v === 'object' && v !== null && typeof (v as { base?: unknown }).base === 'number') return (v as { base: number }).base
    return undefined
  }
  const input = num('input_mtok') ?? 0
  const output = num('output_mtok') ?? 0
  return fillRates({ input, output, cached_input: num('cache_read_mtok'), cache_write: num('cache_write_mtok'), reasoning: num('output_reasoning_mtok') })
}

function tieBreak(a: { provider: string; model: string }, b: { provider: string; model: string }): number {
  // The longer (more specific) model name first, then by name: deterministic whatever the order of adding.
  return b.model.length - a.model.length || cmp(a.model, b.model) || cmp(a.provider, b.provider)
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function readGenaiVersion(): string {
  try {
    const main = createRequire(import.meta.url).resolve('@pydantic/genai-prices')
    const pkg = JSON.parse(readFileSync(join(dirname(main), '..', 'package.json'), 'utf8')) as { version?: unknown }
    return typeof pkg.version === 'string' ? pkg.version : 'unknown'
  } catch {
    return 'unknown'
  }
}

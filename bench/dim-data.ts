/**
 * The dimensions bench's data and queries, deterministic from fixed seeds so LLMScope, DuckDB
 * and ClickHouse see the same rows and answer the same questions.
 *
 * Shape (DESIGN §5–§6): 30 days from 2026-01-01, 3 projects taking 60 / 30 / 10% of the events,
 * 100,000 distinct users (60,000 / 30,000 / 10,000 per project, each user in one project),
 * users drawn Zipf with s = 1 inside their project (in the big project the busiest user sends
 * 8.6% of its events, the top 1% of users 60%, the median user 0.0003%: a few heavy customers
 * and a long tail; at 200,000 events many tail users never appear),
 * sessions of one user and one half-hour (`s-<user>-<half-hour>`, so their number grows with
 * the data and passes the 100,000 cap), 2 distinct tags of 20, metadata `feature` (10 values,
 * Zipf), `env` (prod 80%, staging 15%, dev 5%) and `prompt_version` (a number 1–5), and 50
 * models (48 priced by the pricing data, 2 private and unpriced). Timestamps are uniform over
 * the 30 days and arrive in random order, as in bench/analytics.ts.
 */
import { computeCost } from '../src/pricing/compute-cost.js'
import { rng } from './lib.js'

export const DAY = 86_400_000
export const HOUR = 3_600_000
export const T0 = Date.parse('2026-01-01T00:00:00Z')
export const DAYS = 30
export const T1 = T0 + DAYS * DAY

export const PROJECTS = ['dim-alpha', 'dim-beta', 'dim-gamma'] as const
const PROJECT_SHARE = [0.6, 0.3, 0.1]
/** Users per project; ids are global (`user-<n>`), so 100,000 distinct users in all. */
export const USERS = [60_000, 30_000, 10_000] as const
const USER_OFFSET = [0, 60_000, 90_000]
export const ZIPF_S = 1

const MODEL_NAMES = [
  'gpt-4o', 'gpt-4o-mini', 'gpt-4', 'gpt-4-turbo', 'gpt-3.5-turbo', 'gpt-4.1', 'gpt-4.1-mini', 'gpt-4.1-nano', 'o1', 'o1-mini',
  'o3', 'o3-mini', 'o4-mini', 'gpt-5', 'gpt-5-mini', 'gpt-5-nano', 'gpt-4o-2024-08-06', 'gpt-4o-2024-05-13', 'gpt-4o-mini-2024-07-18', 'chatgpt-4o-latest',
  'gpt-4-0613', 'gpt-3.5-turbo-0125', 'o1-preview', 'gpt-4-32k', 'claude-3-5-sonnet-20241022', 'claude-3-5-haiku-20241022', 'claude-3-opus-20240229', 'claude-3-haiku-20240307', 'claude-sonnet-4-20250514', 'claude-opus-4-20250514',
  'claude-3-7-sonnet-20250219', 'claude-3-sonnet-20240229', 'gemini-1.5-pro', 'gemini-1.5-flash', 'gemini-2.0-flash', 'gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-1.0-pro', 'mistral-large-latest', 'mistral-small-latest',
  'open-mistral-nemo', 'codestral-latest', 'command-r', 'command-r-plus', 'deepseek-chat', 'deepseek-reasoner', 'grok-2', 'grok-3', 'acme-private-large', 'acme-private-small'
]
const providerOf = (m: string) =>
  m.startsWith('claude') ? 'anthropic'
  : m.startsWith('gemini') ? 'google'
  : /^(mistral|open-mistral|codestral)/.test(m) ? 'mistral'
  : m.startsWith('deepseek') ? 'deepseek'
  : m.startsWith('grok') ? 'x-ai'
  : m.startsWith('command') ? 'cohere'
  : m.startsWith('acme') ? 'acme'
  : 'openai'
export const MODELS = MODEL_NAMES.map((name) => ({ name, provider: providerOf(name) }))

export const TAGS = Array.from({ length: 20 }, (_, i) => `tag-${i}`)
export const FEATURES = ['chat', 'search', 'summarize', 'translate', 'code-review', 'autocomplete', 'extract', 'classify', 'rewrite', 'agent']
const ENVS = ['prod', 'staging', 'dev']

/** One generated call. `costNanos` is what the pricing code charges for it. */
export interface DimEvent {
  project: number
  ts: number
  model: number
  prompt: number
  completion: number
  latency: number
  error: boolean
  user: string
  session: string
  tags: [string, string]
  feature: string
  env: string
  version: number
  costNanos: number
}

/** Cumulative Zipf(s) weights over n ranks, normalised to 1. */
function zipfCdf(n: number, s: number): Float64Array {
  const cdf = new Float64Array(n)
  let sum = 0
  for (let k = 0; k < n; k++) cdf[k] = sum += 1 / (k + 1) ** s
  for (let k = 0; k < n; k++) cdf[k] /= sum
  return cdf
}

/** The first index whose cumulative weight exceeds u. */
function pick(cdf: Float64Array, u: number): number {
  let lo = 0
  let hi = cdf.length - 1
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (cdf[mid] > u) hi = mid
    else lo = mid + 1
  }
  return lo
}

const userCdf = USERS.map((n) => zipfCdf(n, ZIPF_S))
const featureCdf = zipfCdf(FEATURES.length, 1)
/** Rank → user: a fixed permutation (48271 is prime to every population), so heavy users are not simply the lowest ids. */
const userId = (project: number, rank: number) => `user-${USER_OFFSET[project] + ((rank * 48271) % USERS[project])}`
/** A user id of `project` chosen uniformly (for filtered queries). */
export const anyUser = (project: number, u: number) => userId(project, Math.floor(u * USERS[project]))

/** The n events, always the same for the same n and seed. */
export function* dimEvents(n: number, seed = 11): Generator<DimEvent> {
  const r = rng(seed)
  for (let i = 0; i < n; i++) {
    const p = r()
    const project = p < PROJECT_SHARE[0] ? 0 : p < PROJECT_SHARE[0] + PROJECT_SHARE[1] ? 1 : 2
    const ts = T0 + Math.floor(r() * DAYS * DAY)
    const model = Math.floor(r() * MODELS.length)
    const prompt = Math.floor(r() * 4000)
    const completion = Math.floor(r() * 1000)
    const latency = Math.round(r() * 3000 * 1000) / 1000
    const error = r() < 0.02
    const user = userId(project, pick(userCdf[project], r()))
    const t1 = Math.floor(r() * TAGS.length)
    const t2 = (t1 + 1 + Math.floor(r() * (TAGS.length - 1))) % TAGS.length
    const e = r()
    const m = MODELS[model]
    yield {
      project,
      ts,
      model,
      prompt,
      completion,
      latency,
      error,
      user,
      session: `s-${user.slice(5)}-${Math.floor(ts / 1_800_000)}`,
      tags: [TAGS[t1], TAGS[t2]],
      feature: FEATURES[pick(featureCdf, r())],
      env: ENVS[e < 0.8 ? 0 : e < 0.95 ? 1 : 2],
      version: 1 + Math.floor(r() * 5),
      costNanos: computeCost({ provider: m.provider, model: m.name, ts, promptTokens: prompt, completionTokens: completion, cachedTokens: 0, reasoningTokens: 0, callerCost: null }).costNanos
    }
  }
}

/** The event as LLMScope's HTTP API takes it; `dims: false` drops user, session, tags and metadata. */
export function toJson(e: DimEvent, dims: boolean): Record<string, unknown> {
  const m = MODELS[e.model]
  const out: Record<string, unknown> = { timestamp: new Date(e.ts).toISOString(), model: m.name, provider: m.provider, prompt_tokens: e.prompt, completion_tokens: e.completion, latency_ms: e.latency }
  if (e.error) out.status = 'error'
  if (dims) {
    out.user_id = e.user
    out.session_id = e.session
    out.tags = e.tags
    out.metadata = { feature: e.feature, env: e.env, prompt_version: e.version }
  }
  return out
}

export type QueryKind = 'breakdown 30 days' | 'breakdown 1 hour' | 'metrics ?user_id='

export interface DimQuery {
  kind: QueryKind
  project: number
  start: number
  end: number
  /** For `metrics ?user_id=`. */
  user?: string
}

/**
 * The queries, in the order every engine runs them: breakdowns by user over the whole 30 days
 * (projects in turn), over a random hour at ms precision, and filtered metrics for a random
 * user (uniform over the project's users, so many are light ones) over a random range.
 */
export function dimQueries(counts: Record<QueryKind, number>, seed = 23): DimQuery[] {
  const r = rng(seed)
  const out: DimQuery[] = []
  for (let i = 0; i < counts['breakdown 30 days']; i++) out.push({ kind: 'breakdown 30 days', project: i % PROJECTS.length, start: T0, end: T1 })
  for (let i = 0; i < counts['breakdown 1 hour']; i++) {
    const start = T0 + Math.floor(r() * (DAYS * DAY - HOUR))
    out.push({ kind: 'breakdown 1 hour', project: Math.floor(r() * PROJECTS.length), start, end: start + HOUR })
  }
  for (let i = 0; i < counts['metrics ?user_id=']; i++) {
    const project = Math.floor(r() * PROJECTS.length)
    const a = T0 + Math.floor(r() * DAYS * DAY)
    const b = T0 + Math.floor(r() * DAYS * DAY)
    out.push({ kind: 'metrics ?user_id=', project, start: Math.min(a, b), end: Math.max(a, b) + 1, user: anyUser(project, r()) })
  }
  return out
}

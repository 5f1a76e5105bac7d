/**
 * What a rule reads each evaluation, as plain queries: its window, its groups' window (a rule
 * with `group_by`), the same windows shifted back 1…N whole days (a rule with `baseline`) and
 * the project's history check. The evaluator asks for them through read-only functions the
 * topology passes in; cluster mode (src/cluster/engine.ts) fetches exactly
 * {@link ruleQueries}' list from the partitions before each tick, so both sides must agree on
 * these shapes and keys.
 *
 *   window        (now − W, now]                     → WindowFn        → Aggregate
 *   groups        (now − W, now] by `group_by`        → WindowGroupsFn  → top 1,000 groups + count past the cap
 *   baseline d    (now − W − d·24h, now − d·24h]      → same fn as above, d = 1 … N
 *   history       [0, now − N·24h]  (no filters)      → WindowFn: the project holds N days when requests > 0
 */
import type { Aggregate } from '../analytics/series.js'
import type { WindowQuery } from '../analytics/reader.js'
import type { Breakdown, BreakdownSort } from '../queries.js'
import type { Rule } from '../store/rules.js'
import { filtersOf } from '../filters.js'
import type { Filters } from '../analytics/reader.js'
import { DAY_MS } from '../analytics/time.js'

/** Most groups one rule evaluates (DESIGN §8); the rest are counted (`groups_capped`). */
export const MAX_RULE_GROUPS = 1000


/** One rule's groups query: its window split by the dimension `by`, the first `limit` by `sort`. */
export interface GroupWindowQuery extends WindowQuery {
  /** A DIM of DESIGN §6: model, provider, user_id, session_id, tag, metadata.KEY. */
  by: string
  sort: BreakdownSort
  limit: number
  /** Whether the groups' latency sketches are needed (a `p95_latency` rule); without, they may be empty. */
  sketches: boolean
}

/** A group's statistics over the window; `value` null is the group of events without the dimension. */
export interface WindowGroup {
  value: string | null
  agg: Aggregate
}

/** The answer of a groups query. */
export interface WindowGroups {
  /** At most `limit` groups, largest first by `sort` (ties by value ascending, null last), as GET /analytics/breakdown. */
  groups: WindowGroup[]
  /** Groups in the window past `limit` (not evaluated). */
  capped: number
}

/**
 * Window statistics: totals and latency sketch of the project's events matching the filters
 * with `start <= ts < end`. Read-only; called between messages of the aggregators.
 */
export type WindowFn = (q: WindowQuery) => Aggregate

/** The groups of a window (see {@link GroupWindowQuery}). Read-only, like {@link WindowFn}. */
export type WindowGroupsFn = (q: GroupWindowQuery) => WindowGroups

/**
 * Many groups queries at once, one answer each in order: queries that differ only in their sort
 * (rules of different conditions over the same window, filters and dimension) share one pass
 * over the rows. Optional: without it the evaluator asks {@link WindowGroupsFn} one by one.
 */
export type WindowGroupsManyFn = (qs: readonly GroupWindowQuery[]) => WindowGroups[]

/** One pass over a window's rows answering several sorts (src/queries.ts `breakdownMany`). */
export type GroupsPass = (q: WindowQuery, by: string, sorts: readonly BreakdownSort[], limit: number, sketches: boolean) => { count: number; bySort: Map<BreakdownSort, Array<{ value: string | null; agg: Aggregate }>> }

/** {@link WindowGroupsManyFn} over a {@link GroupsPass}: one pass per (window, filters, dimension, limit). */
export function windowGroupsMany(qs: readonly GroupWindowQuery[], pass: GroupsPass): WindowGroups[] {
  const classes = new Map<string, { q: GroupWindowQuery; sorts: Set<BreakdownSort>; sketches: boolean; answer?: ReturnType<GroupsPass> }>()
  const classOf = (q: GroupWindowQuery) => JSON.stringify([windowKey(q), q.by, q.limit])
  for (const q of qs) {
    const k = classOf(q)
    const c = classes.get(k)
    if (c === undefined) classes.set(k, { q, sorts: new Set([q.sort]), sketches: q.sketches })
    else {
      c.sorts.add(q.sort)
      c.sketches ||= q.sketches
    }
  }
  for (const c of classes.values()) c.answer = pass(c.q, c.q.by, [...c.sorts], c.q.limit, c.sketches)
  return qs.map((q) => {
    const a = classes.get(classOf(q))!.answer!
    const groups = a.bySort.get(q.sort) ?? []
    return { groups, capped: Math.max(0, a.count - groups.length) }
  })
}

/** A rule's filters (its `model` and its `filters` object) as queries take them. */
export function ruleFilters(rule: Rule): Filters {
  const f = filtersOf(rule.filters ?? {})
  return rule.model === null ? f : { ...f, models: new Set([rule.model]) }
}

/**
 * Which groups a grouped rule evaluates when it has more than 1,000: the largest by what its
 * condition measures — the most expensive for `cost_per_hour`, the busiest in tokens for
 * `tokens_per_minute`, and by requests for the rest (request rate, and the per-request
 * statistics — latency, error rate — whose value means most where there are most requests).
 */
export function groupSort(condition: Rule['condition']): BreakdownSort {
  return condition === 'cost_per_hour' ? 'cost' : condition === 'tokens_per_minute' ? 'tokens' : 'requests'
}

/** The rule's window at `now` shifted back `days` whole days: (now − W − d·24h, now − d·24h] as half-open [start, end). */
export function ruleWindow(rule: Rule, now: number, days = 0): WindowQuery {
  const end = now + 1 - days * DAY_MS
  return { project: rule.project ?? 'default', filters: ruleFilters(rule), start: end - rule.window_seconds * 1000, end }
}

/** The rule's groups query at `now` shifted back `days` whole days. */
export function ruleGroupWindow(rule: Rule, now: number, days = 0): GroupWindowQuery {
  return { ...ruleWindow(rule, now, days), by: rule.group_by as string, sort: groupSort(rule.condition), limit: MAX_RULE_GROUPS, sketches: rule.condition === 'p95_latency' }
}

/**
 * The history check of a baseline over `days`: the project's events (no filters) stamped at or
 * before now − days·24h. The project "holds N days of history" when this has a request.
 */
export function historyWindow(project: string, now: number, days: number): WindowQuery {
  return { project, filters: {}, start: 0, end: now - days * DAY_MS + 1 }
}

/** Every query a rule needs at `now` (cluster mode prefetches these; the evaluator asks for the same). */
export interface RuleQueries {
  windows: WindowQuery[]
  groups: GroupWindowQuery[]
}

/**
 * The queries of `rule` evaluated at `now`: its window or its groups' window, and with a
 * baseline of N days the N shifted ones and the history check. `historyKnown(project, days)`
 * true leaves the history check out (the evaluator remembers a project that had it).
 */
export function ruleQueries(rule: Rule, now: number, historyKnown: (project: string, days: number) => boolean = () => false): RuleQueries {
  const out: RuleQueries = { windows: [], groups: [] }
  const days = rule.baseline?.days ?? 0
  for (let d = 0; d <= days; d++) {
    if (rule.group_by != null) out.groups.push(ruleGroupWindow(rule, now, d))
    else out.windows.push(ruleWindow(rule, now, d))
  }
  const project = rule.project ?? 'default'
  if (days > 0 && !historyKnown(project, days)) out.windows.push(historyWindow(project, now, days))
  return out
}

/** A stable key of a window query (queries with equal keys have equal answers). */
export function windowKey(q: WindowQuery): string {
  const f = q.filters
  return JSON.stringify([q.project, q.start, q.end, f.models === undefined ? null : [...f.models].sort(), f.providers === undefined ? null : [...f.providers].sort(), f.status ?? null, f.user_id ?? null, f.session_id ?? null, f.tag ?? null, f.metadata ?? null])
}

/** A stable key of a groups query. */
export function groupWindowKey(q: GroupWindowQuery): string {
  return JSON.stringify([windowKey(q), q.by, q.sort, q.limit, q.sketches])
}

/**
 * A breakdown (src/queries.ts `breakdown`, or `clusterBreakdown` in cluster mode) as a groups
 * answer. `capped` is exact when the breakdown says how many groups it saw (`count`); without
 * it, 1 when anything was left out (at least one group).
 */
export function windowGroupsOf(b: Breakdown, limit: number): WindowGroups {
  const count = (b as Breakdown & { count?: number }).count
  const capped = typeof count === 'number' ? Math.max(0, count - b.groups.length) : b.other !== null && b.groups.length >= limit ? 1 : 0
  return { groups: b.groups.map((g) => ({ value: g.value, agg: g.agg })), capped }
}

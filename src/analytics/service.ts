/**
 * The analytics questions routes ask, answered asynchronously: on a single node from memory
 * after a barrier (read-your-writes), in cluster mode by merging every partition owner's
 * partial answer (src/cluster/engine.ts). Routes depend on this, never on where the state is.
 */
import { metrics, costs, timeseries, breakdown, dimensions, type BreakdownSort, type Breakdown, type QuerySource, type RangeQuery } from '../queries.js'
import type { Aggregate, TimeBucket } from './aggregate.js'
import { search, type SearchAfter, type SearchHit, type SearchSort } from './search.js'

export type CostRow = { model: string; provider: string; agg: Aggregate }
export type DimensionInfo = { name: string; values: number; capped: boolean }

export interface Analytics {
  metrics(q: RangeQuery): Promise<Aggregate>
  costs(q: RangeQuery): Promise<CostRow[]>
  timeseries(q: RangeQuery, intervalMs: number): Promise<TimeBucket[]>
  breakdown(q: RangeQuery, by: string, sort: BreakdownSort, limit: number): Promise<Breakdown>
  dimensions(project: string): Promise<DimensionInfo[]>
  /**
   * `GET /events` and export (analytics/search.ts): the first `limit` matches of `q` strictly
   * after `after` in the `sort` order (key desc, seq desc), as hits; the events are read by seq.
   */
  search(q: RangeQuery, sort: SearchSort, after: SearchAfter | null, limit: number): Promise<SearchHit[]>
}

/** A single node's answers: each waits until every acknowledged event is visible, then reads memory. */
export function localAnalytics(source: () => QuerySource, sync: () => Promise<void>): Analytics {
  return {
    metrics: async (q) => {
      await sync()
      return metrics(source(), q)
    },
    costs: async (q) => {
      await sync()
      return costs(source(), q)
    },
    timeseries: async (q, intervalMs) => {
      await sync()
      return timeseries(source(), q, intervalMs)
    },
    breakdown: async (q, by, sort, limit) => {
      await sync()
      return breakdown(source(), q, by, sort, limit)
    },
    dimensions: async (project) => {
      await sync()
      return dimensions(source(), project)
    },
    search: async (q, sort, after, limit) => {
      await sync()
      return search(source(), q, sort, after, limit)
    }
  }
}

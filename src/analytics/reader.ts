/**
 * The read-only contract between the analytics state (the topology's actors) and whoever reads
 * it (queries.ts, the alert evaluator's windows): queries depend on this, never on the
 * topology's internals, and nothing read through it may be mutated. Reads happen between
 * actor messages (the event loop runs one at a time), after a barrier when they must see every
 * acknowledged event (read-your-writes).
 */
import type { SeriesStore } from './series.js'
import type { DimensionDictionary } from './dimensions.js'
import type { Postings } from './postings.js'
import type { DimTotals } from './dim-totals.js'

/** One (project, model) aggregator as queries see it. */
export interface AggregatorView {
  readonly model: string
  /** Its series by provider (read only). */
  view(): ReadonlyMap<string, SeriesStore>
}

/** One project's analytics state. */
export interface ProjectView {
  readonly id: string
  readonly dims: DimensionDictionary
  /** Every event's hours and days (no rows). */
  readonly rollup: SeriesStore
  aggregators(): Iterable<AggregatorView>
  aggregator(model: string): AggregatorView | undefined
  /** Cells of each user or session (built on first use; see analytics/postings.ts). */
  postings(dim: 'user' | 'session'): Postings
  /** All-time totals per user or session (built on first use; null while retention folded rows). */
  totals(dim: 'user' | 'session'): DimTotals | null
  /** The series a posting cell names, or undefined when it no longer exists. */
  series(ref: number): { model: string; provider: string; store: SeriesStore } | undefined
}

export interface AnalyticsReader {
  /** The project's state, or undefined when it holds no event yet. */
  project(id: string): ProjectView | undefined
}

/**
 * Filters of DESIGN §6 (AND of all given). `metadata` maps a key to the value as a string
 * (numbers and booleans as their JSON text).
 */
export interface Filters {
  models?: ReadonlySet<string>
  providers?: ReadonlySet<string>
  status?: 'success' | 'error'
  user_id?: string
  session_id?: string
  tag?: string
  metadata?: Readonly<Record<string, string>>
}

/** What the alert evaluator asks for: one rule's window, `[start, end)`. */
export interface WindowQuery {
  project: string
  filters: Filters
  start: number
  end: number
}

/** Whether any filter needs the rows' dimensions or status (the pre-aggregates cannot answer it). */
export function needsRows(f: Filters): boolean {
  return f.status !== undefined || f.user_id !== undefined || f.session_id !== undefined || f.tag !== undefined || (f.metadata !== undefined && Object.keys(f.metadata).length > 0)
}

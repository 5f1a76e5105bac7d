/**
 * Counters of the OTLP receiver, one set per engine (kept beside it, not inside it, so the
 * engine does not depend on the receiver). /metrics reads them with {@link otlpStats}.
 */
import type { Engine } from '../engine.js'

export interface OtlpStats {
  /** Export requests answered 200 (partial success included). */
  requests: number
  /** Spans seen in those requests. */
  spans: number
  /** Spans that became events. */
  ingested: number
  /** Spans that are not an LLM call (no model, agent/tool/workflow spans, duplicates). */
  ignored: number
  /** GenAI spans refused as invalid (reported as `rejectedSpans`). */
  rejected: number
  /** Requests refused whole: undecodable, malformed, too large after gunzip. */
  badRequests: number
}

const byEngine = new WeakMap<Engine, OtlpStats>()

/** The counters for this engine (made on first use, all zero). */
export function otlpStats(engine: Engine): OtlpStats {
  let s = byEngine.get(engine)
  if (s === undefined) {
    s = { requests: 0, spans: 0, ingested: 0, ignored: 0, rejected: 0, badRequests: 0 }
    byEngine.set(engine, s)
  }
  return s
}

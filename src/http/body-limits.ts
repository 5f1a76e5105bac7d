/**
 * Body limits per route: each route refuses, with a 413 and unread, a body larger than its
 * largest valid body can be. fastify compares a request's `Content-Length` with the route's
 * `bodyLimit` before it reads a byte (and counts the bytes of a chunked body as they come), so
 * a 6 MB single event is answered at once instead of being read and parsed in full before
 * its 400 — which it was while every route shared the batch route's 32 MB.
 *
 * `LLMSCOPE_BODY_LIMIT_BYTES` stays the ceiling of every route; under it:
 *
 * | route | limit |
 * | --- | --- |
 * | POST /events/ingest | {@link eventBodyLimit}: the largest valid event |
 * | POST /events/batch | `LLMSCOPE_MAX_BATCH` such events (JSON array or NDJSON) |
 * | POST /v1/traces | the ceiling: an export request carries spans of any kind, GenAI ones only become events |
 * | every other route | {@link ADMIN_BODY_LIMIT} (rules, budgets, prices, keys, projects) |
 */
import type { Config } from '../config.js'
import type { MetadataLimits } from '../events.js'

/**
 * Characters of an event's string fields at their longest (src/events.ts's schema): `id` and
 * `client_id` 64 each, `model` 256, `provider` 64, `user_id` and `session_id` 256 each, 16
 * tags of 64 — 2,048 — and room for the timestamps and `cost_source` of an exported EVENT.
 */
const EVENT_STRING_CHARS = 2048 + 512
/** The bytes one string character can take in a JSON body: a `\uXXXX` escape. */
const ESCAPED_CHAR = 6
/** Field names, numbers, punctuation and white space around them. */
const EVENT_SLACK = 16 * 1024

/**
 * The largest body one valid event can need: every character of its strings and of its
 * `metadata` (at most `maxBytes` as JSON) written as a `\uXXXX` escape, plus 16 KiB for
 * names, numbers and white space: 130,048 bytes at the default 16 KiB metadata limit.
 */
export function eventBodyLimit(limits: MetadataLimits): number {
  return ESCAPED_CHAR * (limits.maxBytes + EVENT_STRING_CHARS) + EVENT_SLACK
}

/**
 * Every route but ingestion: the largest of their bodies is an alert rule or budget with 40
 * filters of 256-character values (~21,000 characters), under 128 KiB even fully escaped.
 */
export const ADMIN_BODY_LIMIT = 256 * 1024

export interface BodyLimits {
  /** POST /events/ingest. */
  readonly event: number
  /** POST /events/batch. */
  readonly batch: number
  /** POST /v1/traces (before and after gunzip). */
  readonly otlp: number
  /** Every other route (fastify's instance-wide `bodyLimit`). */
  readonly other: number
}

/** The body limit of each route for a configuration (see the table above). */
export function bodyLimits(config: Pick<Config, 'bodyLimitBytes' | 'maxBatch' | 'metadata'>): BodyLimits {
  const ceiling = config.bodyLimitBytes
  const event = eventBodyLimit(config.metadata)
  return Object.freeze({
    event: Math.min(ceiling, event),
    // Each event plus its comma (or newline), and the brackets.
    batch: Math.min(ceiling, config.maxBatch * (event + 1) + 2),
    otlp: ceiling,
    other: Math.min(ceiling, ADMIN_BODY_LIMIT)
  })
}

/**
 * Every error LLMScope answers with, in one place (fastify's `lib/errors.js` idea).
 *
 * On the wire an error keeps fastify's shape — `{ statusCode, error, code, message }` — plus
 * `details`, a list of `{ path, message }` naming each offending field. Codes are stable:
 * clients and tests may switch on them, and `test/errors.test.ts` checks that each one is
 * documented in the README.
 */
import createError from '@fastify/error'

/** One problem with one field; `path` is dotted, with `[i]` for array items (e.g. `[3].prompt_tokens`). */
export interface ErrorDetail {
  path: string
  message: string
}

/** An error carrying the HTTP status, a stable code and optional field details. */
export interface LLMScopeError extends Error {
  statusCode: number
  code: string
  details?: ErrorDetail[]
  /** Seconds, for 429/503: becomes the Retry-After header. */
  retryAfter?: number
}

const codes = {
  LLMS_ERR_VALIDATION: createError('LLMS_ERR_VALIDATION', '%s', 400),
  LLMS_ERR_BAD_JSON: createError('LLMS_ERR_BAD_JSON', '%s', 400),
  LLMS_ERR_BAD_QUERY: createError('LLMS_ERR_BAD_QUERY', '%s', 400),
  LLMS_ERR_UNAUTHORIZED: createError('LLMS_ERR_UNAUTHORIZED', '%s', 401),
  LLMS_ERR_FORBIDDEN: createError('LLMS_ERR_FORBIDDEN', '%s', 403),
  LLMS_ERR_NOT_FOUND: createError('LLMS_ERR_NOT_FOUND', '%s', 404),
  LLMS_ERR_CONFLICT: createError('LLMS_ERR_CONFLICT', '%s', 409),
  LLMS_ERR_BATCH_TOO_LARGE: createError('LLMS_ERR_BATCH_TOO_LARGE', '%s', 413),
  LLMS_ERR_RATE_LIMITED: createError('LLMS_ERR_RATE_LIMITED', '%s', 429),
  LLMS_ERR_OVERLOADED: createError('LLMS_ERR_OVERLOADED', '%s', 503),
  LLMS_ERR_NOT_READY: createError('LLMS_ERR_NOT_READY', '%s', 503),
  LLMS_ERR_SHUTTING_DOWN: createError('LLMS_ERR_SHUTTING_DOWN', '%s', 503),
  LLMS_ERR_STORAGE: createError('LLMS_ERR_STORAGE', '%s', 503),
  /** Cluster mode: the stream did not acknowledge in time, or a partition has no live owner (the message names it). */
  LLMS_ERR_UNAVAILABLE: createError('LLMS_ERR_UNAVAILABLE', '%s', 503),
  LLMS_ERR_INTERNAL: createError('LLMS_ERR_INTERNAL', '%s', 500)
} as const

export type ErrorCode = keyof typeof codes

/** Every code LLMScope itself emits (fastify's own FST_ERR_* codes pass through unchanged). */
export const ERROR_CODES = Object.keys(codes) as ErrorCode[]

/**
 * Builds an error with `code`, a human message and optional field details.
 * @example throw llmsError('LLMS_ERR_NOT_FOUND', 'event evt_x not found')
 */
export function llmsError(
  code: ErrorCode,
  message: string,
  extra: { details?: ErrorDetail[]; retryAfter?: number } = {}
): LLMScopeError {
  const err = new codes[code](message) as LLMScopeError
  if (extra.details !== undefined) err.details = extra.details
  if (extra.retryAfter !== undefined) err.retryAfter = extra.retryAfter
  return err
}

/** Joins a zod-style path (`['3', 'metadata', 'a']`) into `[3].metadata.a`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = ''
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`
    else out += out === '' ? String(part) : `.${String(part)}`
  }
  return out
}

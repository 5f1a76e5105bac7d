/**
 * One error handler and one not-found handler: every error leaves in fastify's shape
 * `{ statusCode, error, code, message }` plus `details` (field paths), never with a stack
 * or an internal path. 5xx other than our own 503s are logged and answered generically.
 */
import { STATUS_CODES } from 'node:http'
import type { FastifyError, FastifyInstance } from 'fastify'
import type { ErrorDetail } from '../errors.js'

interface WireError {
  statusCode: number
  error: string
  code: string
  message: string
  details: ErrorDetail[]
}

/** Maps fastify's own client errors to a body with a field path where one applies. */
function fastifyDetails(err: FastifyError): ErrorDetail[] {
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return [{ path: '(content-type)', message: err.message }]
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return [{ path: '(body)', message: err.message }]
    default:
      return []
  }
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError & { details?: ErrorDetail[]; retryAfter?: number }, request, reply) => {
    let status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500
    // JSON.parse failures reach us as 400 SyntaxErrors without a code.
    if (err instanceof SyntaxError && status === 400 && err.code === undefined) {
      err.code = 'FST_ERR_CTP_INVALID_JSON_BODY'
    }
    let body: WireError
    if (status >= 500 && !(status === 503 && typeof err.code === 'string' && err.code.startsWith('LLMS_ERR_'))) {
      request.log.error({ err }, 'request failed')
      status = 500
      body = { statusCode: 500, error: STATUS_CODES[500]!, code: 'LLMS_ERR_INTERNAL', message: 'internal error', details: [] }
    } else if (err.code === 'LLMS_ERR_STORAGE') {
      // The storage error's own text may name files in the data dir: logged, not answered.
      request.log.error({ err }, 'event log write failed')
      body = { statusCode: status, error: STATUS_CODES[status] ?? 'Error', code: err.code, message: 'the event log could not be written; retry later', details: [] }
    } else {
      body = {
        statusCode: status,
        error: STATUS_CODES[status] ?? 'Error',
        code: typeof err.code === 'string' ? err.code : 'LLMS_ERR_VALIDATION',
        message: err.message,
        details: err.details ?? fastifyDetails(err)
      }
    }
    if (err.retryAfter !== undefined) reply.header('retry-after', String(err.retryAfter))
    reply.code(status).type('application/json; charset=utf-8').send(body)
  })

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0]
    reply.code(404).send({
      statusCode: 404,
      error: 'Not Found',
      code: 'LLMS_ERR_NOT_FOUND',
      message: `route ${request.method} ${path} not found`,
      details: []
    })
  })
}

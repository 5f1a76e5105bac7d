import t from 'tap'
import { readFileSync } from 'node:fs'
import { ERROR_CODES, llmsError, formatPath } from '../src/errors.js'

t.test('every error code is documented in the README', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  for (const code of ERROR_CODES) t.match(readme, code, `${code} documented`)
})

t.test('llmsError carries status, code, details and retryAfter', async (t) => {
  const err = llmsError('LLMS_ERR_OVERLOADED', 'busy', { retryAfter: 2, details: [{ path: 'x', message: 'y' }] })
  t.equal(err.statusCode, 503)
  t.equal(err.code, 'LLMS_ERR_OVERLOADED')
  t.equal(err.message, 'busy')
  t.equal(err.retryAfter, 2)
  t.same(err.details, [{ path: 'x', message: 'y' }])
  t.equal(llmsError('LLMS_ERR_NOT_FOUND', 'x').statusCode, 404)
  t.equal(llmsError('LLMS_ERR_FORBIDDEN', 'x').statusCode, 403)
  t.equal(llmsError('LLMS_ERR_BATCH_TOO_LARGE', 'x').statusCode, 413)
})

t.test('formatPath joins zod paths', async (t) => {
  t.equal(formatPath([3, 'metadata', 'a']), '[3].metadata.a')
  t.equal(formatPath(['prompt_tokens']), 'prompt_tokens')
  t.equal(formatPath([]), '')
})

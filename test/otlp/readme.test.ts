/** The README publishes the alias and provider tables the receiver actually uses. */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { ALIASES, DIMENSION_ALIASES, LLM_OPERATIONS, OPENINFERENCE_CALL_KINDS, PROVIDER_ALIASES } from '../../src/otlp/aliases.js'

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
const section = readme.slice(readme.indexOf('### OpenTelemetry (POST /v1/traces)'), readme.indexOf('## Client'))

t.test('every attribute alias is in the README, in priority order', async (t) => {
  t.ok(section.length > 1000, 'the section exists')
  for (const alias of ALIASES) {
    let last = -1
    for (const attr of alias.attributes) {
      const at = section.indexOf(`\`${attr}\``)
      t.ok(at >= 0, `${attr} documented`)
      t.ok(at > last, `${attr} after the one before it`)
      last = at
    }
  }
})

t.test('every provider alias and model-call operation is in the README', async (t) => {
  for (const [name, id] of Object.entries(PROVIDER_ALIASES)) {
    t.ok(section.includes(`\`${name}\``), name)
    t.ok(section.includes(`\`${id}\``), id)
  }
  for (const op of LLM_OPERATIONS) t.ok(section.includes(`\`${op}\``), op)
  for (const kind of OPENINFERENCE_CALL_KINDS) t.ok(section.includes(`\`${kind}\``), kind)
})

t.test('the dimension table lists every spelling, in priority order, in its own row', async (t) => {
  for (const alias of DIMENSION_ALIASES) {
    const start = section.indexOf(`\n| \`${alias.field}\` |`)
    t.ok(start >= 0, `a row for ${alias.field}`)
    const row = section.slice(start + 1, section.indexOf('\n', start + 1))
    // Past the field's own cell, so that a spelling equal to the field name is found in its place.
    let last = row.indexOf('|', 2)
    for (const attr of alias.attributes) {
      const at = row.indexOf(`\`${attr}\``, last + 1)
      t.ok(at > last, `${alias.field}: ${attr} documented after the one before it`)
      last = at
    }
  }
})

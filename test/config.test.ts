import t from 'tap'
import { loadConfig, ConfigError, parseApiKeys, flagsToEnv, CONFIG_VARIABLES } from '../src/config.js'

t.test('defaults give the embedded setup', async (t) => {
  const c = loadConfig({})
  t.equal(c.port, 3000)
  t.equal(c.host, '127.0.0.1')
  t.equal(c.dataDir, './data')
  t.same(c.apiKeys, [])
  t.equal(c.maxBatch, 10_000)
  t.equal(c.snapshotIntervalMs, 30_000)
  t.ok(Object.isFrozen(c), 'config is frozen')
  t.ok(Object.isFrozen(c.metadata), 'nested limits are frozen')
})

t.test('a bad value names the variable in one line', async (t) => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ LLMSCOPE_SNAPSHOT_INTERVAL_S: '0' }, 'LLMSCOPE_SNAPSHOT_INTERVAL_S'],
    [{ LLMSCOPE_LOG_LEVEL: 'loud' }, 'LLMSCOPE_LOG_LEVEL'],
    [{ LLMSCOPE_MAX_BATCH: '1.5' }, 'LLMSCOPE_MAX_BATCH'],
    [{ LLMSCOPE_PRICE_OVERRIDES: '{not json' }, 'LLMSCOPE_PRICE_OVERRIDES'],
    [{ LLMSCOPE_PRICE_OVERRIDES: '{"m":{"input_mtok":-1,"output_mtok":1}}' }, 'LLMSCOPE_PRICE_OVERRIDES'],
    [{ LLMSCOPE_API_KEYS: 'short' }, 'LLMSCOPE_API_KEYS'],
    [{ LLMSCOPE_API_KEYS: 'long-enough-key:superuser' }, 'LLMSCOPE_API_KEYS']
  ]
  for (const [env, variable] of cases) {
    const err = t.throws(() => loadConfig(env)) as unknown as ConfigError
    t.type(err, ConfigError)
    t.equal(err.variable, variable, `${JSON.stringify(env)} names ${variable}`)
    t.match(err.message, new RegExp(`^invalid configuration: ${variable} `))
    t.notMatch(err.message, /\n/, 'one line')
  }
})

t.test('keys never appear in a config error', async (t) => {
  const err = t.throws(() => loadConfig({ LLMSCOPE_API_KEYS: 'good-key-123456:wizard' })) as unknown as Error
  t.notMatch(err.message, /good-key-123456/)
})

t.test('api keys parse with scopes and projects; a bare key is an owner key', async (t) => {
  t.same(parseApiKeys(' a-long-key-1 , b-long-key-2:read,c-long-key-3:ingest,d-long-key-4:admin,'), [
    { key: 'a-long-key-1', scope: 'owner', project: null },
    { key: 'b-long-key-2', scope: 'read', project: 'default' },
    { key: 'c-long-key-3', scope: 'ingest', project: 'default' },
    { key: 'd-long-key-4', scope: 'admin', project: 'default' }
  ])
  t.same(parseApiKeys('e-long-key-5:owner,f-long-key-6:read:team-a,g-long-key-7:admin:b2,h-long-key-8:ingest:default'), [
    { key: 'e-long-key-5', scope: 'owner', project: null },
    { key: 'f-long-key-6', scope: 'read', project: 'team-a' },
    { key: 'g-long-key-7', scope: 'admin', project: 'b2' },
    { key: 'h-long-key-8', scope: 'ingest', project: 'default' }
  ])
  // Read from the right: a key may itself hold colons.
  t.same(parseApiKeys('with:colon-key:read,x:y:z-long:ingest:proj'), [
    { key: 'with:colon-key', scope: 'read', project: 'default' },
    { key: 'x:y:z-long', scope: 'ingest', project: 'proj' }
  ])
  t.same(parseApiKeys('a-long-key-1:read:' + 'p'.repeat(63)), [{ key: 'a-long-key-1', scope: 'read', project: 'p'.repeat(63) }])
})

t.test('a bad project in LLMSCOPE_API_KEYS stops the start with one line naming the variable, never the key', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['secret-key-123:read:Team_A', /project "Team_A" that is not a slug/],
    ['secret-key-123:read:-lead', /not a slug/],
    ['secret-key-123:admin:' + 'p'.repeat(64), /not a slug/],
    ['secret-key-123:ingest:', /not a slug/],
    ['secret-key-123:owner:team-a', /owner key bound to a project/],
    ['secret-key-123:wizard:team-a', /unknown scope "team-a"/]
  ]
  for (const [raw, reason] of cases) {
    const err = t.throws(() => loadConfig({ LLMSCOPE_API_KEYS: raw })) as unknown as ConfigError
    t.type(err, ConfigError)
    t.equal(err.variable, 'LLMSCOPE_API_KEYS')
    t.match(err.message, /^invalid configuration: LLMSCOPE_API_KEYS /)
    t.match(err.message, reason, raw)
    t.notMatch(err.message, /secret-key-123/, 'the key is not printed')
    t.notMatch(err.message, /\n/, 'one line')
  }
})

t.test('CLI flags mirror the environment and win over it', async (t) => {
  t.same(flagsToEnv(['--port', '4000', '--data-dir=/tmp/x']), { PORT: '4000', LLMSCOPE_DATA_DIR: '/tmp/x' })
  const c = loadConfig({ PORT: '5000' }, ['--port', '4001'])
  t.equal(c.port, 4001)
  t.throws(() => flagsToEnv(['--nope']), /--nope is not a known flag/)
  t.throws(() => flagsToEnv(['--port']), /--port needs a value/)
})

t.test('price overrides are parsed', async (t) => {
  const c = loadConfig({ LLMSCOPE_PRICE_OVERRIDES: '{"my-model":{"input_mtok":1,"output_mtok":2}}' })
  t.same(c.priceOverrides, { 'my-model': { input_mtok: 1, output_mtok: 2 } })
})

t.test('every variable is documented in the README', async (t) => {
  const { readFileSync } = await import('node:fs')
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  for (const v of CONFIG_VARIABLES) t.match(readme, `\`${v}\``, `${v} in README`)
})

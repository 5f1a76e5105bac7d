/**
 * Cluster-mode configuration (DESIGN §9, README: Cluster mode): LLMSCOPE_NATS_URL and the
 * settings it needs are validated like every other variable (a bad value: one line naming it),
 * good values parse into `config.cluster`, no NATS URL means a single node (`cluster` null), and
 * `--help` documents every one of them and `llmscope cluster status`.
 */
import t, { type Test } from 'tap'
import { loadConfig, ConfigError, parseNatsUrls, usage, CONFIG_VARIABLES } from '../../src/config.js'

const CLUSTER_VARIABLES = ['LLMSCOPE_NATS_URL', 'LLMSCOPE_NODE_ID', 'LLMSCOPE_LEASE_S', 'LLMSCOPE_PARTITIONS', 'LLMSCOPE_STREAM_REPLICAS', 'LLMSCOPE_QUERY_TIMEOUT_MS', 'LLMSCOPE_CLUSTER_NAME']
const NATS = { LLMSCOPE_NATS_URL: 'nats://127.0.0.1:4222' }

/** The ConfigError `env` gives (t.throws fails the test when none is thrown). */
function configError(t: Test, env: Record<string, string>): ConfigError {
  let caught: unknown
  try {
    loadConfig(env)
  } catch (err) {
    caught = err
  }
  t.type(caught, ConfigError, `${JSON.stringify(env)} is refused with a ConfigError`)
  return caught as ConfigError
}

t.test('every cluster variable is a configuration variable', async (t) => {
  for (const name of CLUSTER_VARIABLES) t.ok(CONFIG_VARIABLES.includes(name), name)
})

t.test('no NATS URL: a single node (cluster null), whatever else is set', async (t) => {
  t.equal(loadConfig({}).cluster, null)
  t.equal(loadConfig({ LLMSCOPE_NATS_URL: '' }).cluster, null, 'an empty value is unset')
  t.equal(loadConfig({ LLMSCOPE_NODE_ID: 'n1', LLMSCOPE_PARTITIONS: '4', LLMSCOPE_CLUSTER_NAME: 'x' }).cluster, null, 'cluster settings alone do not switch cluster mode on')
})

t.test('defaults with only a NATS URL', async (t) => {
  const c = loadConfig(NATS).cluster
  t.ok(c)
  t.same(c, {
    servers: ['nats://127.0.0.1:4222'],
    nodeId: null,
    leaseMs: 10_000,
    partitions: 16,
    replicas: 0,
    queryTimeoutMs: 5000,
    name: 'llmscope',
    dedupeWindowMs: 24 * 3600_000
  })
  t.ok(Object.isFrozen(c), 'cluster config is frozen')
  t.ok(Object.isFrozen(c!.servers), 'its server list is frozen')
})

t.test('good values parse', async (t) => {
  const c = loadConfig({
    LLMSCOPE_NATS_URL: ' nats://10.0.0.1:4222, 10.0.0.2:4223 ,nats-3.internal:4224,tls://secure.example:4443,localhost,',
    LLMSCOPE_NODE_ID: 'Node_A-1',
    LLMSCOPE_LEASE_S: '2',
    LLMSCOPE_PARTITIONS: '1024',
    LLMSCOPE_STREAM_REPLICAS: '3',
    LLMSCOPE_QUERY_TIMEOUT_MS: '100',
    LLMSCOPE_CLUSTER_NAME: 'team_a-2'
  }).cluster
  t.same(c, {
    servers: ['nats://10.0.0.1:4222', 'nats://10.0.0.2:4223', 'nats://nats-3.internal:4224', 'tls://secure.example:4443', 'nats://localhost'],
    nodeId: 'Node_A-1',
    leaseMs: 2000,
    partitions: 1024,
    replicas: 3,
    queryTimeoutMs: 100,
    name: 'team_a-2',
    dedupeWindowMs: 24 * 3600_000
  })
  // The bounds are inclusive at both ends.
  const hi = loadConfig({ ...NATS, LLMSCOPE_LEASE_S: '600', LLMSCOPE_PARTITIONS: '1', LLMSCOPE_STREAM_REPLICAS: '5', LLMSCOPE_QUERY_TIMEOUT_MS: '600000', LLMSCOPE_NODE_ID: 'n'.repeat(64), LLMSCOPE_CLUSTER_NAME: '0' + 'x'.repeat(31) }).cluster!
  t.equal(hi.leaseMs, 600_000)
  t.equal(hi.partitions, 1)
  t.equal(hi.replicas, 5)
  t.equal(hi.queryTimeoutMs, 600_000)
  t.equal(hi.nodeId, 'n'.repeat(64))
  t.equal(hi.name, '0' + 'x'.repeat(31))
  t.equal(loadConfig({ ...NATS, LLMSCOPE_STREAM_REPLICAS: '0' }).cluster!.replicas, 0, '0 = automatic')
})

t.test('parseNatsUrls: host:port gets nats://, the scheme is kept, blanks are skipped', async (t) => {
  t.same(parseNatsUrls('127.0.0.1:4222'), ['nats://127.0.0.1:4222'])
  t.same(parseNatsUrls('NATS://Host.Example:4222'), ['NATS://Host.Example:4222'], 'the scheme is matched case-insensitively')
  t.same(parseNatsUrls('[::1]:4222,nats://[fe80::1]:5222'), ['nats://[::1]:4222', 'nats://[fe80::1]:5222'], 'IPv6')
  t.same(parseNatsUrls('a:1,b:2,c:3'), ['nats://a:1', 'nats://b:2', 'nats://c:3'])
  t.same(parseNatsUrls(''), [])
  t.same(parseNatsUrls(' , ,'), [])
})

t.test('a bad cluster value names its variable in one line', async (t) => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ LLMSCOPE_NATS_URL: 'http://x' }, 'LLMSCOPE_NATS_URL'],
    [{ LLMSCOPE_NATS_URL: 'https://nats.example:4222' }, 'LLMSCOPE_NATS_URL'],
    [{ LLMSCOPE_NATS_URL: 'nats://127.0.0.1:4222,http://x:1' }, 'LLMSCOPE_NATS_URL'],
    [{ LLMSCOPE_NATS_URL: 'nats://' }, 'LLMSCOPE_NATS_URL'],
    [{ LLMSCOPE_NATS_URL: 'nats://host:99999' }, 'LLMSCOPE_NATS_URL'],
    [{ LLMSCOPE_NATS_URL: 'a host:4222' }, 'LLMSCOPE_NATS_URL'],
    [{ LLMSCOPE_NATS_URL: 'ws://127.0.0.1:8080' }, 'LLMSCOPE_NATS_URL'],
    [{ LLMSCOPE_NATS_URL: 'wss://nats.example' }, 'LLMSCOPE_NATS_URL'],
    [{ LLMSCOPE_NATS_URL: 'nats://user:pw@127.0.0.1:4222' }, 'LLMSCOPE_NATS_URL'],
    [{ ...NATS, LLMSCOPE_PARTITIONS: '0' }, 'LLMSCOPE_PARTITIONS'],
    [{ ...NATS, LLMSCOPE_PARTITIONS: '1025' }, 'LLMSCOPE_PARTITIONS'],
    [{ ...NATS, LLMSCOPE_PARTITIONS: '2.5' }, 'LLMSCOPE_PARTITIONS'],
    [{ ...NATS, LLMSCOPE_PARTITIONS: 'many' }, 'LLMSCOPE_PARTITIONS'],
    [{ ...NATS, LLMSCOPE_LEASE_S: '1' }, 'LLMSCOPE_LEASE_S'],
    [{ ...NATS, LLMSCOPE_LEASE_S: '601' }, 'LLMSCOPE_LEASE_S'],
    [{ ...NATS, LLMSCOPE_LEASE_S: '-5' }, 'LLMSCOPE_LEASE_S'],
    [{ ...NATS, LLMSCOPE_STREAM_REPLICAS: '6' }, 'LLMSCOPE_STREAM_REPLICAS'],
    [{ ...NATS, LLMSCOPE_STREAM_REPLICAS: '-1' }, 'LLMSCOPE_STREAM_REPLICAS'],
    [{ ...NATS, LLMSCOPE_QUERY_TIMEOUT_MS: '99' }, 'LLMSCOPE_QUERY_TIMEOUT_MS'],
    [{ ...NATS, LLMSCOPE_QUERY_TIMEOUT_MS: '600001' }, 'LLMSCOPE_QUERY_TIMEOUT_MS'],
    [{ ...NATS, LLMSCOPE_NODE_ID: 'a b' }, 'LLMSCOPE_NODE_ID'],
    [{ ...NATS, LLMSCOPE_NODE_ID: 'a.b' }, 'LLMSCOPE_NODE_ID'],
    [{ ...NATS, LLMSCOPE_NODE_ID: 'n*' }, 'LLMSCOPE_NODE_ID'],
    [{ ...NATS, LLMSCOPE_NODE_ID: 'n'.repeat(65) }, 'LLMSCOPE_NODE_ID'],
    [{ ...NATS, LLMSCOPE_CLUSTER_NAME: 'A.B' }, 'LLMSCOPE_CLUSTER_NAME'],
    [{ ...NATS, LLMSCOPE_CLUSTER_NAME: 'Upper' }, 'LLMSCOPE_CLUSTER_NAME'],
    [{ ...NATS, LLMSCOPE_CLUSTER_NAME: '-lead' }, 'LLMSCOPE_CLUSTER_NAME'],
    [{ ...NATS, LLMSCOPE_CLUSTER_NAME: 'a>b' }, 'LLMSCOPE_CLUSTER_NAME'],
    [{ ...NATS, LLMSCOPE_CLUSTER_NAME: 'x'.repeat(33) }, 'LLMSCOPE_CLUSTER_NAME'],
    // Refused without a NATS URL too: a typo is found before cluster mode is switched on.
    [{ LLMSCOPE_PARTITIONS: '0' }, 'LLMSCOPE_PARTITIONS'],
    [{ LLMSCOPE_CLUSTER_NAME: 'A.B' }, 'LLMSCOPE_CLUSTER_NAME']
  ]
  for (const [env, variable] of cases) {
    const err = configError(t, env)
    if (!(err instanceof ConfigError)) continue
    t.equal(err.variable, variable, `${JSON.stringify(env)} names ${variable}`)
    t.match(err.message, new RegExp(`^invalid configuration: ${variable} `))
    t.notMatch(err.message, /\n/, 'one line')
  }
})

t.test('the reasons say what a good value looks like', async (t) => {
  t.match(configError(t, { LLMSCOPE_NATS_URL: 'http://x' }).message, /"http:\/\/x".*nats:\/\/127\.0\.0\.1:4222/)
  t.match(configError(t, { ...NATS, LLMSCOPE_NODE_ID: 'a b' }).message, /letters, digits, _ or -.*"a b"/)
  t.match(configError(t, { ...NATS, LLMSCOPE_CLUSTER_NAME: 'A.B' }).message, /a-z, 0-9, _ or -.*"A\.B"/)
  t.match(configError(t, { ...NATS, LLMSCOPE_LEASE_S: '1' }).message, /2.*"1"/)
  t.match(configError(t, { ...NATS, LLMSCOPE_PARTITIONS: '0' }).message, /1.*"0"/)
  t.match(configError(t, { LLMSCOPE_NATS_URL: 'ws://127.0.0.1:8080' }).message, /WebSocket/i)
})

t.test('a NATS URL with credentials is refused without echoing them', async (t) => {
  for (const url of ['nats://alice:s3cret-pw@127.0.0.1:4222', 'http://alice:s3cret-pw@x', 'bob:s3cret-pw@host:4222']) {
    const err = configError(t, { LLMSCOPE_NATS_URL: url })
    t.equal(err.variable, 'LLMSCOPE_NATS_URL')
    t.notMatch(err.message, /s3cret-pw/, `${url}: the password is not printed`)
  }
})

t.test('--help lists every cluster variable with its default and the cluster status command', async (t) => {
  const text = usage('1.2.3')
  t.match(text, /^ +llmscope cluster status\b.*LLMSCOPE_NATS_URL/m, 'the cluster status command')
  for (const name of CLUSTER_VARIABLES) t.match(text, new RegExp(`^  ${name} +default `, 'm'), `documents ${name} with its default`)
  t.match(text, /^ {2}LLMSCOPE_NATS_URL +default ""$/m)
  t.match(text, /^ {2}LLMSCOPE_NODE_ID +default \(none\)$/m, 'the node id has no fixed default')
  t.match(text, /^ {2}LLMSCOPE_LEASE_S +default 10$/m)
  t.match(text, /^ {2}LLMSCOPE_PARTITIONS +default 16$/m)
  t.match(text, /^ {2}LLMSCOPE_STREAM_REPLICAS +default 0$/m)
  t.match(text, /^ {2}LLMSCOPE_QUERY_TIMEOUT_MS +default 5000$/m)
  t.match(text, /^ {2}LLMSCOPE_CLUSTER_NAME +default "llmscope"$/m)
  // Each has a line saying what it does, right below.
  const lines = text.split('\n')
  for (const name of CLUSTER_VARIABLES) {
    const i = lines.findIndex((l) => l.startsWith(`  ${name} `))
    t.match(lines[i + 1], /^ {4,}cluster mode: \S/, `${name} is explained`)
  }
})

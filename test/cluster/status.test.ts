/**
 * `llmscope cluster status`, cluster /ready and /metrics (DESIGN §9, README: Cluster mode), on
 * one real nats-server and real server processes (`node dist/main.js`):
 * - two nodes own all 4 partitions between them; status prints both, exit 0; /metrics agrees
 *   with /ready;
 * - one node killed (-9): status stops listing it at once, and after its leases expire the other
 *   owns all 4 (exit 0 again);
 * - NATS unreachable: exit 1 with one line; no node answering: exit 2 with one line; partitions
 *   nobody serves: exit 2 naming them;
 * - a node without LLMSCOPE_NODE_ID keeps the name in its data dir's node-id file across restarts;
 * - a node with LLMSCOPE_PARTITIONS other than the stream's refuses to start with one line.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from '@nats-io/transport-node'
import { clusterStatusCommand, formatStatus } from '../../src/cluster/status.js'
import { loadConfig } from '../../src/config.js'
import type { ClusterStatus } from '../../src/cluster/engine.js'
import { startNats, freePort } from '../helpers/nats.js'
import { ENTRY, FILE_TIMEOUT_MS, START_TIMEOUT_MS, startServer, type Server } from '../helpers/server.js'
import { until } from '../helpers/cluster.js'

t.setTimeout(FILE_TIMEOUT_MS)

const OWNER_KEY = 'status-test-owner-key'
const PARTITIONS = 4
const LEASE_S = 2

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `node dist/main.js ...args` with only `env` (and PATH); bounded. */
function runCli(args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [ENTRY, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`llmscope ${args.join(' ')} did not exit within ${timeoutMs} ms:\n${stdout}${stderr}`))
    }, timeoutMs)
    proc.on('error', reject)
    proc.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** The non-blank lines of `s`. */
const lines = (s: string) => s.split('\n').filter((l) => l.trim() !== '')

/** The status table's row for `node`: [node, owned count, partitions, lag, restored_from, alerts]. */
function row(stdout: string, node: string): string[] | undefined {
  return lines(stdout).map((l) => l.split(/\s+/)).find((cols) => cols[0] === node)
}

async function readyCluster(url: string): Promise<ClusterStatus | null> {
  try {
    const r = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(5000) })
    if (r.status !== 200) return null
    const body = (await r.json()) as { cluster?: ClusterStatus }
    return body.cluster ?? null
  } catch {
    return null
  }
}

/** One gauge's value from /metrics (unlabelled). */
async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) })).text()
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
  if (m === null) throw new Error(`/metrics has no ${name}`)
  return Number(m[1])
}

t.test('formatStatus: one row per node, then the partitions nobody serves', async (t) => {
  const st = (node: string, owned: number[], extra: Partial<ClusterStatus> = {}): ClusterStatus => ({ node, partitions: 4, owned, unowned: [], lag: 0, restored_from: null, nodes: [], alerts_lease: false, lease_ms: 2000, ...extra })
  const all = formatStatus([st('a', [0, 2], { alerts_lease: true, restored_from: 'snapshot', lag: 7 }), st('bb', [1, 3])], 4)
  t.same(all.unowned, [])
  t.same(lines(all.text), ['NODE  OWNED  PARTITIONS  LAG  RESTORED_FROM  ALERTS', 'a     2      0,2         7    snapshot       lease', 'bb    2      1,3         0    -              -', '2 node(s), 4 partitions, every partition owned'])
  const some = formatStatus([st('a', [0]), st('b', [])], 4)
  t.same(some.unowned, [1, 2, 3])
  t.match(some.text, /^b +0 +- +0 +- +-$/m, 'a node owning nothing shows -')
  t.match(some.text, /^2 node\(s\), 4 partitions, unowned: 1,2,3$/m)
})

t.test('clusterStatusCommand: partitions nobody serves give exit 2; a garbled answer is skipped', async (t) => {
  const nats = await startNats({ servers: 1 })
  t.teardown(() => nats.stop())
  const nc = await connect({ servers: nats.urls[0] })
  t.teardown(() => nc.close())
  const cfg = loadConfig({ LLMSCOPE_NATS_URL: nats.urls[0]!, LLMSCOPE_CLUSTER_NAME: 'fake', LLMSCOPE_PARTITIONS: '9' }).cluster!
  const answer = (data: string) => nc.subscribe('fake.status', { callback: (_err, m) => void m.respond(new TextEncoder().encode(data)) })
  const st: ClusterStatus = { node: 'n1', partitions: 4, owned: [0, 1], unowned: [2, 3], lag: 3, restored_from: 'snapshot', nodes: ['n1'], alerts_lease: true, lease_ms: 2000 }
  answer(JSON.stringify(st))
  answer('not json')
  answer('{"hello":1}')
  await nc.flush()
  let out = ''
  let err = ''
  const code = await clusterStatusCommand(cfg, (s) => (out += s), (s) => (err += s))
  t.equal(code, 2)
  t.equal(err, '')
  t.same(row(out, 'n1'), ['n1', '2', '0,1', '3', 'snapshot', 'lease'])
  t.match(out, /^1 node\(s\), 4 partitions, unowned: 2,3$/m, 'the stream\'s 4 partitions (from the node), not LLMSCOPE_PARTITIONS=9')
  answer(JSON.stringify({ ...st, node: 'n2', owned: [2, 3] }))
  await nc.flush()
  out = ''
  t.equal(await clusterStatusCommand(cfg, (s) => (out += s), (s) => (err += s)), 0)
  t.match(out, /^2 node\(s\), 4 partitions, every partition owned$/m)
})

t.test('cluster status before NATS: usage errors and configuration errors are one line, exit 1', async (t) => {
  const noUrl = await runCli(['cluster', 'status'], {})
  t.equal(noUrl.code, 1)
  t.equal(noUrl.stdout, '')
  t.match(noUrl.stderr, /^llmscope: cluster status needs LLMSCOPE_NATS_URL[^\n]*\n$/)

  const unknown = await runCli(['cluster', 'stats'], { LLMSCOPE_NATS_URL: 'nats://127.0.0.1:1' })
  t.equal(unknown.code, 1)
  t.match(unknown.stderr, /^llmscope: unknown command[^\n]*cluster status[^\n]*\n$/)

  const bad = await runCli(['cluster', 'status'], { LLMSCOPE_NATS_URL: 'nats://127.0.0.1:1', LLMSCOPE_CLUSTER_NAME: 'A.B' })
  t.equal(bad.code, 1)
  t.match(bad.stderr, /^llmscope: invalid configuration: LLMSCOPE_CLUSTER_NAME [^\n]*\n$/)
})

t.test('cluster status with NATS at a closed port: exit 1, one clear line', async (t) => {
  const port = await freePort()
  const r = await runCli(['cluster', 'status'], { LLMSCOPE_NATS_URL: `127.0.0.1:${port}` })
  t.equal(r.code, 1)
  t.equal(r.stdout, '', 'no table')
  t.equal(lines(r.stderr).length, 1, `one line: ${r.stderr}`)
  t.match(r.stderr, new RegExp(`^llmscope: cannot reach the cluster at nats://127\\.0\\.0\\.1:${port}: \\S`))
})

t.test('two nodes, one killed, one restarted: status, /ready and /metrics', async (t) => {
  const nats = await startNats({ servers: 1 })
  t.teardown(() => nats.stop())
  const root = mkdtempSync(join(tmpdir(), 'llmscope-status-'))
  const servers: Server[] = []
  t.teardown(async () => {
    for (const s of servers) {
      if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL')
      await s.exited
    }
    rmSync(root, { recursive: true, force: true })
  })
  const name = `st${process.pid}`
  const base: Record<string, string> = {
    LLMSCOPE_NATS_URL: nats.urls[0]!.replace(/^nats:\/\//, ''),
    LLMSCOPE_LEASE_S: String(LEASE_S),
    LLMSCOPE_PARTITIONS: String(PARTITIONS),
    LLMSCOPE_CLUSTER_NAME: name,
    LLMSCOPE_API_KEYS: OWNER_KEY
  }
  const start = async (env: Record<string, string>): Promise<Server> => {
    const s = await startServer({ ...base, ...env })
    servers.push(s)
    return s
  }
  const status = (env: Record<string, string> = {}) => runCli(['cluster', 'status'], { ...base, ...env })

  // No node yet: NATS answers, nobody serves the cluster.
  const empty = await status()
  t.equal(empty.code, 2, 'no node answers: exit 2')
  t.equal(empty.stdout, '')
  t.equal(lines(empty.stderr).length, 1, `one line: ${empty.stderr}`)
  t.match(empty.stderr, new RegExp(`^llmscope: no node of cluster "${name}" answered`))

  const a = await start({ LLMSCOPE_NODE_ID: 'alpha', LLMSCOPE_DATA_DIR: join(root, 'a') })
  const b = await start({ LLMSCOPE_NODE_ID: 'beta', LLMSCOPE_DATA_DIR: join(root, 'b') })

  // Both ready, and the partitions split between them: all 4, each once, nobody sees one unowned.
  let ra: ClusterStatus | null = null
  let rb: ClusterStatus | null = null
  await until(async () => {
    ra = await readyCluster(a.url)
    rb = await readyCluster(b.url)
    if (ra === null || rb === null) return false
    const owned = [...ra.owned, ...rb.owned].sort()
    return ra.owned.length > 0 && rb.owned.length > 0 && owned.join() === '0,1,2,3' && ra.unowned.length === 0 && rb.unowned.length === 0
  }, 'alpha and beta to own the 4 partitions between them')
  t.equal(ra!.node, 'alpha')
  t.equal(rb!.node, 'beta')
  t.equal(ra!.partitions, PARTITIONS)
  t.same([...ra!.nodes].sort(), ['alpha', 'beta'], 'each sees both nodes')
  t.equal(typeof ra!.lag, 'number')
  t.ok(ra!.restored_from === 'stream' || ra!.restored_from === 'snapshot', `restored_from ${ra!.restored_from}`)
  t.equal(Number(ra!.alerts_lease) + Number(rb!.alerts_lease), 1, 'one node holds the alerts lease')

  // The command lists both, with what their /ready shows (asked until it is stable).
  let st: Run = { code: null, stdout: '', stderr: '' }
  await until(async () => {
    st = await status()
    const [ca, cb] = [await readyCluster(a.url), await readyCluster(b.url)]
    return st.code === 0 && ca !== null && cb !== null && row(st.stdout, 'alpha')?.[2] === ca.owned.join(',') && row(st.stdout, 'beta')?.[2] === cb.owned.join(',')
  }, 'cluster status to show what /ready shows', 30_000)
  t.equal(st.code, 0)
  t.equal(st.stderr, '')
  t.match(st.stdout, /^NODE +OWNED +PARTITIONS +LAG +RESTORED_FROM +ALERTS$/m)
  t.ok(row(st.stdout, 'alpha'), 'alpha listed')
  t.ok(row(st.stdout, 'beta'), 'beta listed')
  t.equal(Number(row(st.stdout, 'alpha')![1]) + Number(row(st.stdout, 'beta')![1]), PARTITIONS, 'owned counts add up to 4')
  t.match(st.stdout, /^2 node\(s\), 4 partitions, every partition owned$/m)
  t.equal([row(st.stdout, 'alpha')![5], row(st.stdout, 'beta')![5]].filter((x) => x === 'lease').length, 1, 'one alerts lease shown')
  // A different LLMSCOPE_PARTITIONS where the command runs does not change the stream's count.
  const other = await status({ LLMSCOPE_PARTITIONS: '8' })
  t.match(other.stdout, /4 partitions, every partition owned/, 'the partition count comes from the nodes')

  // /metrics carries the same figures as /ready.
  for (const [s, id] of [[a, 'alpha'], [b, 'beta']] as const) {
    await until(async () => {
      const before = await readyCluster(s.url)
      const owned = await gauge(s.url, 'llmscope_cluster_partitions_owned')
      const after = await readyCluster(s.url)
      return before !== null && after !== null && before.owned.length === after.owned.length && owned === after.owned.length
    }, `${id}: llmscope_cluster_partitions_owned equal to /ready's owned`, 30_000)
    t.equal(await gauge(s.url, 'llmscope_cluster_partitions'), PARTITIONS, `${id}: llmscope_cluster_partitions 4`)
    t.equal(await gauge(s.url, 'llmscope_cluster_partitions_unowned'), 0, `${id}: nothing unowned`)
    t.equal(await gauge(s.url, 'llmscope_cluster_nodes'), 2, `${id}: 2 nodes`)
    t.equal(await gauge(s.url, 'llmscope_cluster_lag_events'), (await readyCluster(s.url))!.lag, `${id}: lag as /ready`)
    t.pass(`${id}: /metrics agrees with /ready`)
  }
  const alertsA = await gauge(a.url, 'llmscope_cluster_alerts_lease')
  const alertsB = await gauge(b.url, 'llmscope_cluster_alerts_lease')
  t.equal(alertsA + alertsB, 1, 'llmscope_cluster_alerts_lease: one holder')

  // kill -9 beta: status stops listing it at once; within two lease times alpha owns all 4.
  b.proc.kill('SIGKILL')
  await b.exited
  const killedAt = Date.now()
  // Watched from now, while the command runs: when alpha's /ready first shows all 4.
  const takenOver = until(async () => (await readyCluster(a.url))?.owned.length === PARTITIONS, 'alpha to own every partition after beta was killed', 60_000).then(() => Date.now() - killedAt)
  const gone = await status()
  t.notOk(row(gone.stdout, 'beta'), 'beta is gone from status at once')
  t.ok(row(gone.stdout, 'alpha'), 'alpha still listed')
  // Exit 2 with beta's partitions unowned until its leases expire, 0 once alpha took them.
  if (gone.code === 2) t.match(gone.stdout, /^1 node\(s\), 4 partitions, unowned: \d(,\d)*$/m, 'beta\'s partitions listed as unowned meanwhile')
  else t.equal(gone.code, 0, 'or already taken over')
  const takeoverMs = await takenOver
  t.comment(`alpha owned all 4 partitions ${takeoverMs} ms after beta's kill -9 (lease ${LEASE_S} s)`)
  // DESIGN §9: within two lease times; a little slack for a machine shared with other work.
  t.ok(takeoverMs < LEASE_S * 1000 * 2 + 5000, `taken over in ${takeoverMs} ms`)
  const after = await status()
  t.equal(after.code, 0, 'exit 0 again')
  t.match(row(after.stdout, 'alpha'), ['alpha', '4', '0,1,2,3'], 'alpha owns all 4')
  t.notOk(row(after.stdout, 'beta'))
  t.match(after.stdout, /^1 node\(s\), 4 partitions, every partition owned$/m)
  t.equal(await gauge(a.url, 'llmscope_cluster_partitions_owned'), PARTITIONS, 'alpha\'s /metrics: 4 owned')
  await until(async () => (await gauge(a.url, 'llmscope_cluster_nodes')) === 1, 'alpha to see beta\'s heartbeat expire', 30_000)

  // A node without LLMSCOPE_NODE_ID: named on first start, the name kept in <data dir>/node-id.
  const dirC = join(root, 'c', 'data')
  const c1 = await start({ LLMSCOPE_DATA_DIR: dirC })
  let rc: ClusterStatus | null = null
  await until(async () => (rc = await readyCluster(c1.url)) !== null && rc.owned.length > 0, 'the unnamed node to own a partition')
  const made = rc!.node
  t.match(made, /^[A-Za-z0-9_-]{1,64}$/, `a made name: ${made}`)
  t.ok(existsSync(join(dirC, 'node-id')), 'node-id kept in the data dir')
  t.equal(readFileSync(join(dirC, 'node-id'), 'utf8').trim(), made)
  await until(async () => {
    const s = await status()
    return s.code === 0 && row(s.stdout, made) !== undefined && row(s.stdout, 'alpha') !== undefined
  }, 'status to list the new node', 30_000)
  c1.proc.kill('SIGTERM')
  t.same(await c1.exited, { code: 0, signal: null }, 'SIGTERM: exit 0')
  const c2 = await start({ LLMSCOPE_DATA_DIR: dirC })
  await until(async () => (rc = await readyCluster(c2.url)) !== null, 'the restarted node to be ready')
  t.equal(rc!.node, made, 'the same name after a restart')
  await until(async () => {
    const s = await status()
    return s.code === 0 && row(s.stdout, made) !== undefined && /^2 node\(s\)/m.test(s.stdout)
  }, 'status to list the restarted node under its kept name', 30_000)

  // A node with another partition count than the stream's refuses to start, in one line.
  const refused = await runCli([], { ...base, LLMSCOPE_PARTITIONS: '8', LLMSCOPE_NODE_ID: 'gamma', LLMSCOPE_DATA_DIR: join(root, 'g'), PORT: '0', LLMSCOPE_LOG_LEVEL: 'warn' }, START_TIMEOUT_MS)
  t.not(refused.code, 0, `exit code ${refused.code}`)
  t.not(refused.code, null, 'it exited by itself')
  t.equal(lines(refused.stderr).length, 1, `one line on stderr: ${refused.stderr}`)
  t.match(refused.stderr, /^llmscope: [^\n]*4 partitions[^\n]*LLMSCOPE_PARTITIONS[^\n]*8/, 'says the stream has 4 and LLMSCOPE_PARTITIONS is 8')
  t.notMatch(refused.stdout + refused.stderr, /Server listening/, 'it never listened')
  // ... and did not disturb the cluster.
  const still = await status()
  t.equal(still.code, 0)
  t.notOk(row(still.stdout, 'gamma'), 'gamma never joined')
})

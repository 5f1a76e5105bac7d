/**
 * The `llmscope` command (`node dist/main.js`, the package's bin): --help and --version answer
 * without opening the data dir; logs are JSON lines when stdout is not a terminal and
 * pino-pretty lines on one; a long log replay reports progress about every 10%.
 */
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CONFIG_VARIABLES, cliAction } from '../src/config.js'
import { replayProgress } from '../src/log.js'
import { makeApp, adminHeaders, event } from './helpers/app.js'
import { ENTRY, FILE_TIMEOUT_MS, START_TIMEOUT_MS, startServer, waitReady } from './helpers/server.js'

// Real processes on a possibly busy machine: more time than the suite's per-file default.
t.setTimeout(FILE_TIMEOUT_MS)

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version
const run = (args: string[], env: Record<string, string> = {}, cwd?: string) =>
  spawnSync(process.execPath, [ENTRY, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, cwd, encoding: 'utf8', timeout: START_TIMEOUT_MS })

t.test('--help lists every flag and every environment variable, exits 0, opens nothing', async (t) => {
  const dir = t.testdir()
  const dataDir = join(dir, 'data')
  // A bad PORT too: --help answers before the configuration is validated.
  const r = run(['--help'], { LLMSCOPE_DATA_DIR: dataDir, PORT: 'not-a-port' }, dir)
  t.equal(r.status, 0)
  t.equal(r.stderr, '')
  t.match(r.stdout, /^llmscope \d+\.\d+\.\d+/)
  t.match(r.stdout, /Usage: llmscope/)
  for (const flag of ['--port', '--host', '--data-dir', '--api-keys', '--log-level', '--help', '--version']) t.match(r.stdout, flag, `documents ${flag}`)
  for (const name of CONFIG_VARIABLES) t.match(r.stdout, new RegExp(`^  ${name} +default `, 'm'), `documents ${name} with its default`)
  t.match(r.stdout, /^ {2}PORT +default 3000, flag --port$/m)
  t.notOk(existsSync(dataDir), 'the data dir was not created')
  t.notOk(existsSync(join(dir, 'data')), 'nor ./data')
  t.equal(run(['-h']).stdout, r.stdout, '-h is --help')
})

t.test('--version prints the package version and exits 0', async (t) => {
  const dir = t.testdir()
  const r = run(['--version'], { LLMSCOPE_DATA_DIR: join(dir, 'data') }, dir)
  t.equal(r.status, 0)
  t.equal(r.stdout, `${version}\n`)
  t.equal(r.stderr, '')
  t.notOk(existsSync(join(dir, 'data')))
  t.equal(run(['-v']).stdout, `${version}\n`)
})

t.test('cliAction finds --help/--version among flags, not in a flag\'s value', async (t) => {
  t.equal(cliAction(['--port', '1', '--version']), 'version')
  t.equal(cliAction(['--data-dir=/x', '-h']), 'help')
  t.equal(cliAction(['--host', '--help']), null, 'the value of --host, not a request for help')
  t.equal(cliAction([]), null)
})

t.test('a bad flag stops the start with one line, exit 1', async (t) => {
  const dir = t.testdir()
  const r = run(['--prot', '4000'], { LLMSCOPE_DATA_DIR: join(dir, 'data') }, dir)
  t.equal(r.status, 1)
  t.equal(r.stdout, '')
  t.match(r.stderr, /^llmscope: invalid configuration: --prot is not a known flag \(known: --port, --host, --data-dir, --api-keys, --log-level\)\n$/)
  const port = run(['--port', 'x'], { LLMSCOPE_DATA_DIR: join(dir, 'data') }, dir)
  t.equal(port.status, 1)
  t.match(port.stderr, /^llmscope: invalid configuration: PORT /)
  t.equal(port.stderr.split('\n').length, 2, 'one line')
})

t.test('replayProgress: a report about every 10% of a long replay, and one at the end', async (t) => {
  const seen: number[] = []
  const p = replayProgress((_done, _total, percent) => seen.push(percent))
  for (let done = 8192; done < 100_000; done += 8192) p(done, 100_000)
  p(100_000, 100_000)
  // Marks at 10,000, 20,000, …; each report says where the chunk that crossed one ended.
  t.same(seen, [16, 24, 32, 40, 57, 65, 73, 81, 90, 100])
  for (let i = 1; i < seen.length; i++) t.ok(seen[i] - seen[i - 1] >= 8, 'about 10% apart')

  const big: number[] = []
  const q = replayProgress((_d, _t, percent) => big.push(percent))
  q(45_000, 100_000) // one chunk across several marks: one report, not a burst
  q(50_000, 100_000)
  q(100_000, 100_000)
  q(100_000, 100_000)
  t.same(big, [45, 50, 100])

  const none: number[] = []
  const r = replayProgress((_d, _t, percent) => none.push(percent))
  r(5000, 9999)
  r(9999, 9999)
  t.same(none, [], 'a short replay says nothing')
})

t.test('the server logs JSON lines off a terminal, and replay progress during a long restore', async (t) => {
  const dir = t.testdir()
  // 25,000 events in the log and no snapshot: a crash before the first one.
  const built = await makeApp(t, { dir, inlinePricing: true })
  for (let b = 0; b < 5; b++) {
    const batch = Array.from({ length: 5000 }, (_, i) => event({ prompt_tokens: i, model: `m${i % 3}` }))
    const r = await built.app.inject({ method: 'POST', url: '/events/batch', headers: { ...adminHeaders, 'content-type': 'application/json' }, payload: JSON.stringify(batch) })
    t.equal(r.statusCode, 202)
  }
  await built.engine.destroy()
  await built.close()

  const server = await startServer({ LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: 'cli-test-key-01' })
  t.teardown(() => {
    server.proc.kill('SIGKILL')
  })
  await waitReady(server.url)
  // /ready answers 200 as soon as recovery is done; the "ready" line is logged just after, and
  // reaches this process through a pipe some time later: wait for it, not for /ready alone.
  // Only complete lines are read (a line still being written is not JSON yet).
  await server.waitForLine(/"msg":"ready"/)
  const lines = server.lines()
  for (const line of lines) t.doesNotThrow(() => JSON.parse(line), `a JSON line: ${line.slice(0, 80)}`)
  const progress = lines.map((l) => JSON.parse(l) as { msg: string; done?: number; total?: number; percent?: number }).filter((l) => l.msg.startsWith('replaying event log'))
  t.ok(progress.length >= 2, `${progress.length} progress lines`)
  t.ok(progress.every((p) => p.total === 25_000))
  t.same(progress.at(-1), { ...progress.at(-1), done: 25_000, percent: 100, msg: 'replaying event log: 100%' })
  for (let i = 1; i < progress.length; i++) t.ok(progress[i].done! > progress[i - 1].done!, 'moving forward')
  const ready = lines.map((l) => JSON.parse(l) as { msg: string; replayed?: number }).find((l) => l.msg === 'ready')
  t.equal(ready?.replayed, 25_000)
  server.proc.kill('SIGTERM')
  t.same(await server.exited, { code: 0, signal: null })
})

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0
t.test('on a terminal the logs are pino-pretty lines', { skip: hasScript ? false : 'util-linux `script` (a pseudo-terminal) is not installed' }, async (t) => {
  const dir = t.testdir()
  const cmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(ENTRY)} --port 0 --data-dir ${JSON.stringify(join(dir, 'data'))} --api-keys cli-test-key-02`
  const proc = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: { PATH: process.env.PATH ?? '', TERM: 'dumb' } })
  let out = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise((resolve) => proc.on('exit', resolve))
  // The ready line's fields (pretty-printed, coloured) include `replayed`: wait for it, or for
  // the process to end, or a generous deadline (then the assertions below say what was missing).
  let ended = false
  void exited.then(() => (ended = true))
  const deadline = Date.now() + START_TIMEOUT_MS
  while (!/replayed/.test(out) && !ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  process.kill(-proc.pid!, 'SIGTERM')
  await exited
  t.match(out, /\[\d\d:\d\d:\d\d\.\d{3}\] .*INFO.*: .*Server listening at http:\/\/127\.0\.0\.1:\d+/, 'a pretty line')
  t.notMatch(out, /"level":\d+/, 'no JSON lines')
  t.notMatch(out, /cli-test-key-02/, 'the key is not printed')
})

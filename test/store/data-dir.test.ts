/**
 * An unusable data dir stops the start with one clear line and a non-zero exit — not a stack
 * trace, not a crash loop — and a database that fills up at runtime makes ingestion answer
 * 503 LLMS_ERR_STORAGE while reads go on. The built server is started as a real process.
 */
import t, { type Test } from 'tap'
import { spawn, execFileSync } from 'node:child_process'
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ENTRY, FILE_TIMEOUT_MS, START_TIMEOUT_MS, startServer, waitReady } from '../helpers/server.js'

// Real processes on a possibly busy machine: more time than the suite's per-file default.
t.setTimeout(FILE_TIMEOUT_MS)

const KEY = 'data-dir-key-1'
const headers = { 'x-api-key': KEY, 'content-type': 'application/json' }

/** Runs the server expecting it to refuse to start; resolves with its exit code and output. */
function failedStart(env: Record<string, string>): Promise<{ code: number | null; out: string; ms: number }> {
  const t0 = Date.now()
  const proc = spawn(process.execPath, [ENTRY], { env: { PATH: process.env.PATH ?? '', PORT: '0', LLMSCOPE_API_KEYS: KEY, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout.on('data', (d: Buffer) => (out += d))
  proc.stderr.on('data', (d: Buffer) => (out += d))
  // Generous: a start on a busy CI machine can take many seconds before it refuses.
  const timer = setTimeout(() => proc.kill('SIGKILL'), START_TIMEOUT_MS)
  return new Promise((resolve) => proc.on('exit', (code) => {
    clearTimeout(timer)
    resolve({ code, out, ms: Date.now() - t0 })
  }))
}

function oneClearLine(t: Test, r: { code: number | null; out: string }, pattern: RegExp): void {
  t.equal(r.code, 1, 'exits 1')
  const lines = r.out.trim().split('\n')
  t.equal(lines.length, 1, `one line: ${r.out.trim()}`)
  t.match(lines[0], /^llmscope: cannot start: /)
  t.match(lines[0], pattern)
  t.notMatch(r.out, /\n\s+at /, 'no stack trace')
}

/**
 * A fresh tmpfs (outside tap's fixtures, which are removed before teardowns run), unmounted
 * and removed at teardown; null (test skipped) where mounting is not allowed.
 */
function mountTmpfs(t: Test, options: string): string | null {
  const mnt = mkdtempSync(join(tmpdir(), 'llmscope-mnt-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', mnt], { stdio: 'ignore' })
  } catch {
    rmSync(mnt, { recursive: true, force: true })
    t.comment('skipped: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)')
    return null
  }
  t.teardown(async () => {
    // After the server (registered later, so torn down first) has exited.
    await new Promise((r) => setTimeout(r, 100))
    try {
      execFileSync('umount', ['-l', mnt], { stdio: 'ignore' })
    } catch {}
    rmSync(mnt, { recursive: true, force: true })
  })
  return mnt
}

t.test('a data dir that is a file, or under a file, stops the start with one line', async (t) => {
  const dir = t.testdir({ 'a-file': 'not a directory' })
  oneClearLine(t, await failedStart({ LLMSCOPE_DATA_DIR: join(dir, 'a-file') }), /data dir .*a-file is not usable/)
  oneClearLine(t, await failedStart({ LLMSCOPE_DATA_DIR: join(dir, 'a-file', 'data') }), /not usable: ENOTDIR/)
})

t.test('a read-only data dir (read-only mount: refuses root too) stops the start with one line', async (t) => {
  const mnt = mountTmpfs(t, 'ro,size=1m')
  if (mnt === null) return
  oneClearLine(t, await failedStart({ LLMSCOPE_DATA_DIR: mnt }), /data dir .* is not usable: .*(EROFS|read-only)/i)
})

t.test('a full database: 503 LLMS_ERR_STORAGE at runtime, reads go on; a restart says "full" in one line', async (t) => {
  const dir = t.testdir()
  const max = String(1024 * 1024)
  const env = { LLMSCOPE_DATA_DIR: dir, LLMSCOPE_API_KEYS: KEY, LLMSCOPE_MAX_DB_BYTES: max }
  const server = await startServer(env)
  t.teardown(() => {
    server.proc.kill('SIGKILL')
  })
  await waitReady(server.url)
  const acked: string[] = []
  let refused: { status: number; body: { code: string; message: string }; retryAfter: string | null } | null = null
  const meta = { note: 'x'.repeat(400) }
  for (let i = 0; i < 200 && refused === null; i++) {
    const batch = Array.from({ length: 200 }, (_, k) => ({ model: 'gpt-4o', prompt_tokens: k, latency_ms: 5, metadata: meta }))
    const r = await fetch(`${server.url}/events/batch`, { method: 'POST', headers, body: JSON.stringify(batch) })
    if (r.status === 202) acked.push(...((await r.json()) as { event_ids: string[] }).event_ids)
    else refused = { status: r.status, body: (await r.json()) as { code: string; message: string }, retryAfter: r.headers.get('retry-after') }
  }
  t.ok(acked.length > 0, `${acked.length} events accepted before the database was full`)
  t.ok(refused !== null, 'ingestion was refused once full')
  t.equal(refused!.status, 503)
  t.equal(refused!.body.code, 'LLMS_ERR_STORAGE')
  t.equal(refused!.retryAfter, '1')
  // Still serving: reads answer, and what was acknowledged is all there.
  t.equal(server.proc.exitCode, null, 'the process is alive')
  const m = (await (await fetch(`${server.url}/analytics/metrics`, { headers })).json()) as { total_requests: number }
  t.equal(m.total_requests, acked.length)
  t.equal((await fetch(`${server.url}/events/${acked[acked.length - 1]}`, { headers })).status, 200)
  t.equal((await fetch(`${server.url}/health`)).status, 200)
  server.proc.kill('SIGKILL')
  await server.exited
  // The answer does not name files; the log says why.
  t.match(server.output(), /the database is full \(\d+ of 1048576 bytes, LLMSCOPE_MAX_DB_BYTES\)/)

  // Same quota: the start says why it cannot run, once.
  oneClearLine(t, await failedStart(env), /is full: the database uses \d+ bytes, LLMSCOPE_MAX_DB_BYTES is 1048576/)
  // A larger quota: every acknowledged event is back.
  const again = await startServer({ ...env, LLMSCOPE_MAX_DB_BYTES: String(64 * 1024 * 1024) })
  t.teardown(() => {
    again.proc.kill('SIGKILL')
  })
  await waitReady(again.url)
  const m2 = (await (await fetch(`${again.url}/analytics/metrics`, { headers })).json()) as { total_requests: number }
  t.equal(m2.total_requests, acked.length)
})

t.test('a disk that runs out of space (a 2 MiB tmpfs): 503 LLMS_ERR_STORAGE, no crash', async (t) => {
  const mnt = mountTmpfs(t, 'size=2m')
  if (mnt === null) return
  writeFileSync(join(mnt, '.keep'), '')
  const server = await startServer({ LLMSCOPE_DATA_DIR: mnt, LLMSCOPE_API_KEYS: KEY })
  t.teardown(() => {
    server.proc.kill('SIGKILL')
  })
  await waitReady(server.url)
  let acked = 0
  let code: string | null = null
  const meta = { note: 'y'.repeat(400) }
  for (let i = 0; i < 100 && code === null; i++) {
    const batch = Array.from({ length: 200 }, () => ({ model: 'gpt-4o', prompt_tokens: 3, latency_ms: 5, metadata: meta }))
    const r = await fetch(`${server.url}/events/batch`, { method: 'POST', headers, body: JSON.stringify(batch) })
    if (r.status === 202) acked += 200
    else code = ((await r.json()) as { code: string }).code
  }
  t.equal(code, 'LLMS_ERR_STORAGE', `refused after ${acked} events`)
  await new Promise((r) => setTimeout(r, 300))
  t.equal(server.proc.exitCode, null, 'still running after the failed commit')
  const m = (await (await fetch(`${server.url}/analytics/metrics`, { headers })).json()) as { total_requests: number }
  t.equal(m.total_requests, acked, 'reads answer, with every acknowledged event')
})

/**
 * Starts the built server (`node dist/main.js`) as a real process on a free port.
 *
 * Deadlines are generous (a start under a busy CI machine can take many seconds) and every wait
 * is for a condition: the "Server listening" log line, /ready answering 200, a log line.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export const ENTRY = fileURLToPath(new URL('../../dist/main.js', import.meta.url))

/** How long a process start or a recovery may take before a test gives up on it. */
export const START_TIMEOUT_MS = 90_000

/**
 * A per-file time limit for files that start real processes (`t.setTimeout(FILE_TIMEOUT_MS)` at
 * the top): twice the suite's default from .taprc, so a busy machine slows them without failing them.
 */
export const FILE_TIMEOUT_MS = 360_000

export interface Server {
  proc: ChildProcess
  url: string
  /** Everything written to stdout and stderr so far. */
  output: () => string
  /** The complete lines (those ended by a newline) written so far, blank ones left out. */
  lines: () => string[]
  /** Resolves with the first complete output line matching `pattern`; rejects on exit or after `timeoutMs`. */
  waitForLine: (pattern: RegExp, timeoutMs?: number) => Promise<string>
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** Spawns the server and resolves once it listens (parsed from its JSON log). */
export async function startServer(env: Record<string, string>, timeoutMs = START_TIMEOUT_MS): Promise<Server> {
  if (!existsSync(ENTRY)) throw new Error(`${ENTRY} is missing: run \`npm run build\` (npm test does it first)`)
  const proc = spawn(process.execPath, [ENTRY], {
    env: { PATH: process.env.PATH ?? '', PORT: '0', LLMSCOPE_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  let exitedYet = false
  const listeners = new Set<() => void>()
  const onData = (d: Buffer) => {
    out += d.toString()
    for (const l of listeners) l()
  }
  proc.stdout!.on('data', onData)
  proc.stderr!.on('data', onData)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => {
      exitedYet = true
      resolve({ code, signal })
      for (const l of listeners) l()
    })
  )
  const lines = () => {
    const end = out.lastIndexOf('\n')
    return end < 0 ? [] : out.slice(0, end).split('\n').filter((l) => l.trim() !== '')
  }
  const waitForLine = (pattern: RegExp, ms = START_TIMEOUT_MS) =>
    new Promise<string>((resolve, reject) => {
      const done = () => {
        listeners.delete(check)
        clearTimeout(timer)
      }
      const check = () => {
        const line = lines().find((l) => pattern.test(l))
        if (line !== undefined) {
          done()
          resolve(line)
        } else if (exitedYet) {
          done()
          reject(new Error(`the server exited before logging ${pattern}:\n${out}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`the server did not log ${pattern} in ${ms} ms:\n${out}`))
      }, ms)
      listeners.add(check)
      check()
    })
  const listening = await waitForLine(/"msg":"Server listening at http:\/\/127\.0\.0\.1:\d+"/, timeoutMs).catch((err: Error) => {
    proc.kill('SIGKILL')
    throw err
  })
  const url = /"msg":"Server listening at (http:\/\/127\.0\.0\.1:\d+)"/.exec(listening)![1]
  return { proc, url, output: () => out, lines, waitForLine, exited }
}

/** Polls /ready until 200. */
export async function waitReady(url: string, timeoutMs = START_TIMEOUT_MS): Promise<void> {
  const end = Date.now() + timeoutMs
  let last = 'no answer'
  while (Date.now() < end) {
    try {
      const r = await fetch(`${url}/ready`)
      if (r.status === 200) return
      last = `HTTP ${r.status}`
    } catch (err) {
      last = (err as Error).message
    }
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`server never became ready in ${timeoutMs} ms (last: ${last})`)
}

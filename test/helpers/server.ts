/** Starts the built server (`node dist/main.js`) as a real process on a free port. */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export const ENTRY = fileURLToPath(new URL('../../dist/main.js', import.meta.url))

export interface Server {
  proc: ChildProcess
  url: string
  output: () => string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** Spawns the server and resolves once it listens (parsed from its JSON log). */
export async function startServer(env: Record<string, string>, timeoutMs = 20_000): Promise<Server> {
  if (!existsSync(ENTRY)) throw new Error(`${ENTRY} is missing: run \`npm run build\` (npm test does it first)`)
  const proc = spawn(process.execPath, [ENTRY], {
    env: { PATH: process.env.PATH ?? '', PORT: '0', LLMSCOPE_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not listen in ${timeoutMs} ms:\n${out}`)), timeoutMs)
    const check = () => {
      const m = /"msg":"Server listening at (http:\/\/127\.0\.0\.1:\d+)"/.exec(out)
      if (m !== null) {
        clearTimeout(timer)
        proc.stdout!.off('data', check)
        resolve(m[1])
      }
    }
    proc.stdout!.on('data', check)
    exited.then(() => {
      clearTimeout(timer)
      reject(new Error(`server exited before listening:\n${out}`))
    })
  })
  return { proc, url, output: () => out, exited }
}

/** Polls /ready until 200. */
export async function waitReady(url: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    try {
      const r = await fetch(`${url}/ready`)
      if (r.status === 200) return
    } catch {}
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error('server never became ready')
}

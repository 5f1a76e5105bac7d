/**
 * `llmscope export`: every event matching the filters, streamed from `GET /events?format=…`
 * (DESIGN §7) to a file or stdout.
 *
 * Memory stays bounded whatever the export's size: each chunk of the answer is written before
 * the next is read (a slow disk or a slow pipe stops the reading, and the server's socket
 * stops the server's iteration in turn). A file is written under `FILE.part` and renamed only
 * once the answer ended complete, so an interrupted export never leaves a file that looks whole.
 */
import { createWriteStream, renameSync, rmSync, statSync } from 'node:fs'
import { once } from 'node:events'
import { basename, dirname, join } from 'node:path'
import {
  CliFailure,
  EXIT_FAILED,
  EXIT_OK,
  ProgressLine,
  planOrExit,
  UsageError,
  authHeaders,
  bytes,
  connection,
  count,
  defaultSleep,
  describeRefusal,
  intFlag,
  networkMessage,
  parseFlags,
  processIO,
  retryDelay,
  retryable,
  seconds,
  type CliIO,
  type FlagSpec
} from './common.js'

export const EXPORT_USAGE = `Usage: llmscope export [--url URL] [--key KEY] [--project P] [FILTERS] [--start T] [--end T]
                       [--sort time|latency|cost] [--format ndjson|csv] [-o FILE | -O] [-q]

Streams every event matching the filters from GET /events?format=… to FILE (or stdout), in
the server's order (newest first; --sort latency|cost: largest first). Memory stays bounded.

  --url URL          the server (default $LLMSCOPE_URL, else http://127.0.0.1:3000)
  --key KEY          a read key (default $LLMSCOPE_API_KEY, else $LLMSCOPE_KEY)
  --project P        the project to act in (an owner key; X-LLMScope-Project)
  --start T, --end T the range [start, end) on the events' own time: ISO 8601 or epoch ms
  --model M          also --provider, --status success|error, --user ID, --session ID, --tag X
  --metadata.KEY V   a metadata filter (--metadata.plan pro)
  --filter NAME=V    any filter by its query name (--filter user_id=u_1); all filters combine (AND)
  --sort S           time (default), latency or cost
  --format F         ndjson (default; lines are EVENT objects, importable) or csv;
                     -o FILE.csv picks csv
  -o, --output FILE  write to FILE (written as FILE.part, renamed when complete); - is stdout
  -O, --remote-name  write to the file name the server suggests, in the current directory
  --max-retries N    retries of a busy server (429, 502-504) or a network failure before the
                     answer starts (default 5)
  -q, --quiet        no summary on stderr
  -h, --help         this help

Exit codes: 0 done, 1 failed (the server's message on stderr), 2 usage error.
`

const SPEC: FlagSpec = {
  values: {
    '--url': 'url',
    '--key': 'key',
    '--project': 'project',
    '--start': 'start',
    '--end': 'end',
    '--model': 'model',
    '--provider': 'provider',
    '--status': 'status',
    '--user': 'user_id',
    '--session': 'session_id',
    '--tag': 'tag',
    '--sort': 'sort',
    '--format': 'format',
    '-o': 'output',
    '--output': 'output',
    '--max-retries': 'max-retries'
  },
  switches: { '-h': 'help', '--help': 'help', '-q': 'quiet', '--quiet': 'quiet', '-O': 'remote-name', '--remote-name': 'remote-name' },
  filters: true
}

/** The filter flags spelled as their own options; merged with --filter/--metadata.* ones. */
const FILTER_FLAGS = ['model', 'provider', 'status', 'user_id', 'session_id', 'tag'] as const

const MEDIA: Record<string, string> = { ndjson: 'application/x-ndjson', csv: 'text/csv' }

/** What an export request asks for, from the command line. */
export interface ExportPlan {
  url: string
  headers: Record<string, string>
  format: 'ndjson' | 'csv'
  /** null: stdout. */
  output: string | null
  remoteName: boolean
  maxRetries: number
  quiet: boolean
}

/** The request an export command line makes (a {@link UsageError} for a bad one). */
export function exportPlan(argv: readonly string[], env: CliIO['env']): ExportPlan | 'help' {
  const f = parseFlags(argv, SPEC)
  if (f.switches.has('help')) return 'help'
  if (f.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(f.positionals[0])} (the output file is -o FILE)`)
  const conn = connection(f.values, env)
  const output = f.values.get('output') ?? null
  const remoteName = f.switches.has('remote-name')
  if (remoteName && output !== null) throw new UsageError('-O and -o exclude each other')
  const formatFlag = f.values.get('format')
  if (formatFlag !== undefined && MEDIA[formatFlag] === undefined) throw new UsageError(`--format: ${JSON.stringify(formatFlag)} is not ndjson or csv`)
  const format = (formatFlag ?? (output !== null && /\.csv$/i.test(output) ? 'csv' : 'ndjson')) as 'ndjson' | 'csv'
  const sort = f.values.get('sort')
  if (sort !== undefined && !['time', 'latency', 'cost'].includes(sort)) throw new UsageError(`--sort: ${JSON.stringify(sort)} is not time, latency or cost`)

  const q = new URLSearchParams({ format })
  if (sort !== undefined) q.set('sort', sort)
  if (f.values.has('start')) q.set('start_time', f.values.get('start')!)
  if (f.values.has('end')) q.set('end_time', f.values.get('end')!)
  for (const name of FILTER_FLAGS) {
    const v = f.values.get(name)
    if (v === undefined) continue
    if (f.filters.some(([n]) => n === name)) throw new UsageError(`the filter ${name} is given twice`)
    q.set(name, v)
  }
  for (const [name, v] of f.filters) q.set(name, v)
  return {
    url: `${conn.url}/events?${q}`,
    headers: { ...authHeaders(conn), accept: MEDIA[format] },
    format,
    output: output === '-' ? null : output,
    remoteName,
    maxRetries: intFlag(f.values, 'max-retries', 5, 0, 100),
    quiet: f.switches.has('quiet')
  }
}

/** The file name of a `Content-Disposition: attachment; filename=…`, made safe; null if none. */
export function suggestedName(disposition: string | null): string | null {
  if (disposition === null) return null
  const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(disposition)
  const plain = /filename\s*=\s*(?:"([^"]*)"|([^;\s]+))/.exec(disposition)
  let name: string | undefined
  try {
    name = star !== null ? decodeURIComponent(star[1].trim()) : (plain?.[1] ?? plain?.[2])
  } catch {
    name = plain?.[1] ?? plain?.[2]
  }
  if (name === undefined) return null
  // Only the last path segment, and only characters every file system takes.
  const safe = basename(name.replace(/\\/g, '/')).replace(/[^A-Za-z0-9._-]/g, '_')
  return safe === '' || /^\.+$/.test(safe) ? null : safe
}

/**
 * Runs `llmscope export` with `argv` (the words after `export`); resolves with the exit code.
 * Failures are one line on stderr.
 */
export async function exportCommand(argv: readonly string[], io: CliIO = processIO()): Promise<number> {
  const plan = planOrExit<ExportPlan>('export', EXPORT_USAGE, io, () => exportPlan(argv, io.env))
  if (typeof plan === 'number') return plan
  const progress = new ProgressLine(io.stderr)
  try {
    await runExport(plan, io, progress)
    return EXIT_OK
  } catch (err) {
    progress.done()
    if (err instanceof CliFailure) {
      if (err.message !== '') io.stderr.write(`llmscope export: ${err.message}\n`)
      return EXIT_FAILED
    }
    throw err
  }
}

async function runExport(plan: ExportPlan, io: CliIO, progress: ProgressLine): Promise<void> {
  const doFetch = io.fetch ?? globalThis.fetch
  const sleep = io.sleep ?? defaultSleep
  const started = Date.now()

  // Retried only until the answer starts: once bytes were written, a retry would repeat them.
  let res: Response
  for (let attempt = 0; ; attempt++) {
    let why: string
    let retryAfter: string | null = null
    try {
      res = await doFetch(plan.url, { headers: plan.headers })
      if (res.ok) break
      const text = await res.text()
      why = describeRefusal(res.status, text)
      if (!retryable(res.status)) throw new CliFailure(`the server refused the export: ${why}`)
      retryAfter = res.headers.get('retry-after')
    } catch (err) {
      if (err instanceof CliFailure) throw err
      why = `cannot reach ${new URL(plan.url).origin}: ${networkMessage(err)}`
    }
    if (attempt >= plan.maxRetries) throw new CliFailure(`${why}${plan.maxRetries > 0 ? ` (after ${plan.maxRetries} retries)` : ''}`)
    const wait = retryDelay(attempt, retryAfter)
    progress.show(`${why}; retrying in ${seconds(wait)}`, true)
    await sleep(wait)
  }
  const type = res.headers.get('content-type') ?? ''
  if (!type.startsWith(MEDIA[plan.format])) {
    await res.body?.cancel().catch(() => {})
    throw new CliFailure(`the server answered ${type || 'no content type'}, not ${MEDIA[plan.format]}: does it export (GET /events?format=${plan.format})?`)
  }

  let target: string | null = plan.output
  if (plan.remoteName) {
    target = suggestedName(res.headers.get('content-disposition'))
    if (target === null) {
      await res.body?.cancel().catch(() => {})
      throw new CliFailure('-O: the server suggested no file name (Content-Disposition); use -o FILE')
    }
  }
  // A regular file (or a new one) is written aside and renamed when complete; anything else
  // (/dev/stdout, a FIFO) is written in place.
  let part: string | null = null
  if (target !== null) {
    let regular = true
    try {
      regular = statSync(target).isFile()
    } catch {}
    if (regular) part = join(dirname(target), `${basename(target)}.part`)
  }
  let dest: NodeJS.WritableStream
  if (target === null) dest = io.stdout
  else {
    const file = createWriteStream(part ?? target)
    dest = file
    try {
      await once(file, 'open')
    } catch (err) {
      await res.body?.cancel().catch(() => {})
      throw new CliFailure(`cannot write ${target}: ${(err as Error).message}`)
    }
  }

  let written = 0
  let newlines = 0
  let endsWithNewline = true
  let writeError: Error | null = null
  const onError = (err: Error) => (writeError ??= err)
  dest.on('error', onError)
  const label = target ?? 'stdout'
  const figures = () => {
    const records = plan.format === 'ndjson' ? newlines + (endsWithNewline ? 0 : 1) : Math.max(0, newlines - 1 + (endsWithNewline ? 0 : 1))
    return { records, what: `${plan.format === 'ndjson' ? 'event' : 'row'}${records === 1 ? '' : 's'}` }
  }
  try {
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        if (writeError !== null) break
        written += chunk.length
        for (let i = 0; i < chunk.length; i++) if (chunk[i] === 10) newlines++
        if (chunk.length > 0) endsWithNewline = chunk[chunk.length - 1] === 10
        const { records, what } = figures()
        progress.show(`exporting to ${label}: ${count(records)} ${what} · ${bytes(written)} · ${count(records / Math.max(0.001, (Date.now() - started) / 1000))} ${plan.format === 'ndjson' ? 'events' : 'rows'}/s`)
        // Bounded memory: wait for the destination to take the chunk before reading the next.
        if (!dest.write(chunk)) await once(dest as NodeJS.EventEmitter, 'drain') // rejects on 'error'
      }
    } catch (err) {
      if (writeError === null) throw new CliFailure(`the export broke off after ${bytes(written)}: ${networkMessage(err)}${part !== null ? ' (nothing was kept)' : ''}`)
    }
    if (writeError !== null) {
      await res.body?.cancel().catch(() => {})
      // A reader that closed the pipe (`| head`) stopped the export on purpose: no message.
      if ((writeError as NodeJS.ErrnoException).code === 'EPIPE') throw new CliFailure('')
      throw new CliFailure(`cannot write ${label}: ${(writeError as Error).message}`)
    }
    if (dest !== io.stdout) {
      dest.end()
      await once(dest as NodeJS.EventEmitter, 'close')
      if (writeError !== null) throw new CliFailure(`cannot write ${label}: ${(writeError as Error).message}`)
      if (part !== null) renameSync(part, target!)
      part = null
    }
  } finally {
    dest.off('error', onError)
    if (part !== null) {
      // The file is given up: a write still in flight fails once it is destroyed (Node 24 emits
      // ERR_STREAM_DESTROYED for it after this turn), which must not become an uncaught error.
      dest.on('error', () => {})
      ;(dest as NodeJS.WritableStream & { destroy?: () => void }).destroy?.()
      rmSync(part, { force: true })
    }
  }
  progress.done()
  const { records, what } = figures()
  if (!plan.quiet) io.stderr.write(`exported ${count(records)} ${what} (${bytes(written)}) to ${label} in ${seconds(Date.now() - started)}\n`)
}

/**
 * `llmscope import`: NDJSON events (a file or stdin; EVENT objects as `llmscope export` writes
 * them, or plain events) posted to `/events/batch` in batches, as `application/x-ndjson`.
 *
 * Exactly once, two ways (DESIGN §7):
 * - Ids. Every line is sent with an idempotency key: an EVENT's `client_id` or `id`, a plain
 *   event's own `id`, or else one derived from the line (its number and a hash of its bytes,
 *   `imp-…`; `--no-ids` sends such lines as they are). The server counts an id it already
 *   accepted (within its dedupe window) once, so a batch re-sent after a lost answer, or a
 *   whole file imported twice, changes nothing.
 * - A state file (`FILE.llmscope-import`, or `--state PATH`) holding the byte offset and line
 *   of the end of the last batch the server acknowledged, rewritten (write + rename) after
 *   each one. `--resume` starts there instead of at the top, so a restarted import of a large
 *   file does not send it all again. The file is removed once the import completes. It is
 *   only a shortcut: if it lags (a crash between an acknowledgement and its write), the ids
 *   make the re-sent lines no-ops.
 *
 * Memory is bounded by two batches (each ≤ `--batch-size` events, ≤ `--batch-bytes` bytes): one
 * is in flight while the next is read and prepared (so the reading overlaps the server's work),
 * and the reading stops when that one is ready before the server answered the other. Batches
 * are sent one after the other, so what is acknowledged is always a prefix of the input.
 */
import * as crypto from 'node:crypto'
import { createReadStream, existsSync, openSync, readFileSync, readSync, closeSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import {
  CliFailure,
  EXIT_FAILED,
  EXIT_OK,
  ProgressLine,
  planOrExit,
  UsageError,
  authHeaders,
  connection,
  count,
  defaultSleep,
  describeRefusal,
  intFlag,
  networkMessage,
  parseError,
  parseFlags,
  processIO,
  retryDelay,
  retryable,
  seconds,
  type CliIO,
  type Connection,
  type FlagSpec
} from './common.js'

/** Most events in one batch: the server's default `LLMSCOPE_MAX_BATCH`. */
export const MAX_BATCH_EVENTS = 10_000
/** Default bytes of one batch; the server's body limit is 32 MiB by default. */
export const DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
/** The longest line read; a longer one is an error rather than unbounded memory. */
export const MAX_LINE_BYTES = 64 * 1024 * 1024
/** The state file next to an input FILE. */
export const STATE_SUFFIX = '.llmscope-import'

export const IMPORT_USAGE = `Usage: llmscope import [--url URL] [--key KEY] [--project P] [--resume] [--skip-invalid] [FILE | -]

Posts NDJSON events (one per line: EVENT objects as \`llmscope export\` writes them, or events as
POST /events/ingest takes them) from FILE, or stdin (- or no FILE), to /events/batch.

  --url URL            the server (default $LLMSCOPE_URL, else http://127.0.0.1:3000)
  --key KEY            an ingest key (default $LLMSCOPE_API_KEY, else $LLMSCOPE_KEY)
  --project P          the project to import into (an owner key; X-LLMScope-Project)
  --resume             skip what an earlier, interrupted import of FILE had sent (its state
                       file FILE${STATE_SUFFIX} says how far the server acknowledged)
  --state PATH         the state file (default FILE${STATE_SUFFIX}; none for stdin unless given)
  --skip-invalid       report a bad line (not JSON, or refused by the server) and go on;
                       without it the import stops at the first one, exit 1
  --no-ids             do not give lines without an id one derived from the line (imp-…)
  --batch-size N       events per request (default and most ${MAX_BATCH_EVENTS})
  --batch-bytes N      bytes per request (default ${DEFAULT_BATCH_BYTES})
  --max-retries N      retries of one batch on 429, 502-504 or a network failure (default 10)
  --timeout S          seconds to wait for one answer (default 120; then it is retried)
  -q, --quiet          no summary (errors are still printed)
  -h, --help           this help

Every event is sent with its id (an EVENT's client_id or id), so an event the server already
has is counted once: importing a file twice, or resuming, never counts an event twice.
A progress line on stderr when it is a terminal; a one-line summary at the end.
Exit codes: 0 done, 1 failed (the line or the server's message on stderr), 2 usage error.
`

const SPEC: FlagSpec = {
  values: {
    '--url': 'url',
    '--key': 'key',
    '--project': 'project',
    '--state': 'state',
    '--batch-size': 'batch-size',
    '--batch-bytes': 'batch-bytes',
    '--max-retries': 'max-retries',
    '--timeout': 'timeout'
  },
  switches: { '-h': 'help', '--help': 'help', '-q': 'quiet', '--quiet': 'quiet', '--resume': 'resume', '--skip-invalid': 'skip-invalid', '--no-ids': 'no-ids' }
}

/** What an import command line asks for. */
export interface ImportPlan {
  conn: Connection
  /** null: stdin. */
  input: string | null
  /** null: no state file (stdin without --state). */
  statePath: string | null
  resume: boolean
  skipInvalid: boolean
  ids: boolean
  batchSize: number
  batchBytes: number
  maxRetries: number
  timeoutMs: number
  quiet: boolean
}

/** The plan of an import command line (a {@link UsageError} for a bad one). */
export function importPlan(argv: readonly string[], env: CliIO['env'], stdinIsTTY = false): ImportPlan | 'help' {
  const f = parseFlags(argv, SPEC)
  if (f.switches.has('help')) return 'help'
  if (f.positionals.length > 1) throw new UsageError(`one input at most (FILE or -), got ${f.positionals.length}`)
  const conn = connection(f.values, env)
  const arg = f.positionals[0] ?? '-'
  const input = arg === '-' ? null : arg
  if (input === null && stdinIsTTY) throw new UsageError('no input: give a FILE, or pipe NDJSON to stdin')
  const resume = f.switches.has('resume')
  const statePath = f.values.get('state') ?? (input === null ? null : `${input}${STATE_SUFFIX}`)
  if (resume && statePath === null) throw new UsageError('--resume with stdin needs --state PATH (where an earlier import of the same input kept its place)')
  return {
    conn,
    input,
    statePath,
    resume,
    skipInvalid: f.switches.has('skip-invalid'),
    ids: !f.switches.has('no-ids'),
    batchSize: intFlag(f.values, 'batch-size', MAX_BATCH_EVENTS, 1, MAX_BATCH_EVENTS),
    batchBytes: intFlag(f.values, 'batch-bytes', DEFAULT_BATCH_BYTES, 1024, MAX_LINE_BYTES),
    maxRetries: intFlag(f.values, 'max-retries', 10, 0, 1000),
    timeoutMs: intFlag(f.values, 'timeout', 120, 1, 3600) * 1000,
    quiet: f.switches.has('quiet')
  }
}

/** The state file's content (version 1). */
export interface ImportState {
  version: 1
  /** Bytes of the input acknowledged: the end of the last line of the last acknowledged batch. */
  offset: number
  /** Line number of that line (1-based; 0 before any). */
  line: number
  /** Events acknowledged so far, over every run of this import. */
  events: number
}

/** Reads a state file; a {@link CliFailure} naming what is wrong with it. */
export function readState(path: string): ImportState {
  let s: Partial<ImportState>
  try {
    s = JSON.parse(readFileSync(path, 'utf8')) as Partial<ImportState>
  } catch (err) {
    throw new CliFailure(`cannot read the state file ${path}: ${(err as Error).message} (remove it to start over)`)
  }
  const int = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
  if (s?.version !== 1 || !int(s.offset) || !int(s.line) || !int(s.events)) throw new CliFailure(`the state file ${path} is not one this version wrote (remove it to start over)`)
  return s as ImportState
}

function writeState(path: string, s: ImportState): void {
  const tmp = `${path}.tmp`
  writeFileSync(tmp, JSON.stringify(s) + '\n')
  renameSync(tmp, path)
}

/**
 * The id given to a line without one: stable for the same line at the same place, so importing
 * the same file again sends the same ids; `imp-` + 22 base64url characters + the line in base 36.
 */
export function derivedId(line: number, bytes: Uint8Array): string {
  return `imp-${sha256(bytes).slice(0, 22)}-${line.toString(36)}`
}

/** SHA-256 as base64url: the one-shot `crypto.hash` where Node has it (20.12+, 3× faster). */
const sha256: (b: Uint8Array) => string =
  typeof (crypto as { hash?: unknown }).hash === 'function'
    ? (b) => (crypto as unknown as { hash: (alg: string, data: Uint8Array, enc: string) => string }).hash('sha256', b, 'base64url')
    : (b) => crypto.createHash('sha256').update(b).digest('base64url')

/** One line ready to send. */
interface Item {
  body: Buffer
  line: number
  /** Byte offset just past this line (and its newline). */
  end: number
}

interface Stats {
  sent: number
  duplicates: number
  invalid: number
  batches: number
  retries: number
  /** Lines skipped by --resume. */
  resumedAt: number
}

/** The event index a 400 names (`[3].prompt_tokens`, `… index 3 …`), or null. */
export function refusedIndex(text: string): number | null {
  const e = parseError(text)
  const path = e?.details?.[0]?.path
  const m = typeof path === 'string' ? /^\[(\d+)\]/.exec(path) : null
  if (m !== null) return Number(m[1])
  const n = typeof e?.message === 'string' ? /\bindex (\d+)\b/.exec(e.message) : null
  return n === null ? null : Number(n[1])
}

/** What a 400 says about event `index`: its details without the `[index].` prefix. */
function refusalReason(text: string, index: number): string {
  const e = parseError(text)
  const prefix = `[${index}]`
  const details = (e?.details ?? []).filter((d) => typeof d.path === 'string' && d.path.startsWith(prefix))
  if (details.length === 0) return e?.message ?? text
  return details.map((d) => `${d.path!.slice(prefix.length).replace(/^\./, '') || '(event)'}: ${d.message ?? ''}`).join('; ')
}

/**
 * Runs `llmscope import` with `argv` (the words after `import`); resolves with the exit code.
 */
export async function importCommand(argv: readonly string[], io: CliIO = processIO()): Promise<number> {
  const plan = planOrExit<ImportPlan>('import', IMPORT_USAGE, io, () => importPlan(argv, io.env, io.stdin.isTTY === true))
  if (typeof plan === 'number') return plan
  const importer = new Importer(plan, io)
  try {
    await importer.run()
    return EXIT_OK
  } catch (err) {
    importer.progress.done()
    if (err instanceof CliFailure) {
      io.stderr.write(`llmscope import: ${err.message}${importer.whereToResume()}\n`)
      return EXIT_FAILED
    }
    throw err
  }
}

class Importer {
  readonly progress: ProgressLine
  readonly #plan: ImportPlan
  readonly #io: CliIO
  readonly #fetch: typeof fetch
  readonly #sleep: (ms: number) => Promise<void>
  readonly #url: string
  readonly #headers: Record<string, string>
  readonly #started = Date.now()
  readonly #stats: Stats = { sent: 0, duplicates: 0, invalid: 0, batches: 0, retries: 0, resumedAt: 0 }
  /** Where the acknowledged part of the input ends (what the state file says). */
  #state: ImportState = { version: 1, offset: 0, line: 0, events: 0 }
  /** Events per request; halved when the server answers 413 for a batch. */
  #batchSize: number
  #size: number | null = null
  #read = 0
  #batch: Item[] = []
  #batchBytes = 0
  /** The last step sent or queued (a batch, an acknowledgement); each runs after the one before. */
  #tail: Promise<void> = Promise.resolve()

  constructor(plan: ImportPlan, io: CliIO) {
    this.#plan = plan
    this.#io = io
    this.progress = new ProgressLine(io.stderr)
    this.#fetch = io.fetch ?? globalThis.fetch
    this.#sleep = io.sleep ?? defaultSleep
    this.#url = `${plan.conn.url}/events/batch`
    this.#headers = { ...authHeaders(plan.conn), 'content-type': 'application/x-ndjson' }
    this.#batchSize = plan.batchSize
  }

  /** ` (… --resume continues …)` after a failure, when there is a state file to resume from. */
  whereToResume(): string {
    const p = this.#plan
    if (p.statePath === null || this.#state.offset === 0) return ''
    return `\n(the server acknowledged lines 1 to ${count(this.#state.line)}; \`llmscope import --resume\` with the same input continues after them)`
  }

  async run(): Promise<void> {
    const p = this.#plan
    const name = p.input ?? 'stdin'
    if (p.input !== null) {
      try {
        this.#size = statSync(p.input).size
      } catch (err) {
        throw new CliFailure(`cannot read ${p.input}: ${(err as Error).message}`)
      }
    }
    if (p.statePath !== null && existsSync(p.statePath)) {
      if (p.resume) {
        this.#state = readState(p.statePath)
        this.#checkResumable(this.#state)
        this.#stats.resumedAt = this.#state.line
      } else if (!p.quiet) {
        this.#io.stderr.write(`llmscope import: ${p.statePath} is left from an earlier import: starting from the top anyway (events the server already has are counted once, by id; --resume skips them)\n`)
      }
    } else if (p.resume && !p.quiet) {
      this.#io.stderr.write(`llmscope import: no state file ${p.statePath}: nothing to resume, starting from the top\n`)
    }

    const skip = this.#state.offset
    const stream: AsyncIterable<Buffer> = p.input === null ? (this.#io.stdin as AsyncIterable<Buffer>) : createReadStream(p.input, { start: skip, highWaterMark: 1 << 20 })
    try {
      await this.#readAll(stream, p.input === null ? skip : 0)
      await this.#flush()
    } finally {
      // A failure while a batch is in flight is reported once that batch is settled (so the
      // state file and the message say how far the server got).
      await this.#tail.catch(() => {})
    }
    await this.#tail

    if (p.statePath !== null) rmSync(p.statePath, { force: true })
    this.progress.done()
    if (!p.quiet) {
      const s = this.#stats
      const ms = Date.now() - this.#started
      const parts = [`${count(s.sent - s.duplicates)} new, ${count(s.duplicates)} already there`]
      if (s.invalid > 0) parts.push(`${count(s.invalid)} invalid line${s.invalid === 1 ? '' : 's'} skipped`)
      if (s.resumedAt > 0) parts.push(`resumed after line ${count(s.resumedAt)}`)
      if (s.retries > 0) parts.push(`${count(s.retries)} retr${s.retries === 1 ? 'y' : 'ies'}`)
      this.#io.stderr.write(`imported ${count(s.sent)} events from ${name} in ${count(s.batches)} batch${s.batches === 1 ? '' : 'es'}, ${seconds(ms)} (${count(s.sent / Math.max(0.001, ms / 1000))} events/s): ${parts.join('; ')}\n`)
    }
  }

  /** A state file must fit the input: its offset inside it, just past a newline. */
  #checkResumable(s: ImportState): void {
    const p = this.#plan
    if (p.input === null || s.offset === 0) return
    const unfit = (why: string) => new CliFailure(`the state file ${p.statePath} does not fit ${p.input}: ${why} (a different or rewritten file? remove the state file to start over)`)
    if (this.#size! < s.offset) throw unfit(`it says ${count(s.offset)} bytes were sent, the file has ${count(this.#size!)}`)
    const fd = openSync(p.input, 'r')
    try {
      const b = Buffer.alloc(1)
      readSync(fd, b, 0, 1, s.offset - 1)
      if (b[0] !== 10 && s.offset !== this.#size) throw unfit(`byte ${count(s.offset)} does not end a line`)
    } finally {
      closeSync(fd)
    }
  }

  /** Splits the input into lines; `skip` bytes at its start are passed over (stdin resumed). */
  async #readAll(stream: AsyncIterable<Buffer>, skip: number): Promise<void> {
    let base = this.#state.offset - skip // absolute offset of the current chunk's first byte
    let line = this.#state.line
    let carry: Buffer[] = []
    let carryBytes = 0
    let toSkip = skip
    let lastSkipped = 10
    for await (const raw of stream) {
      let chunk = typeof raw === 'string' ? Buffer.from(raw) : raw
      if (toSkip > 0) {
        const n = Math.min(toSkip, chunk.length)
        lastSkipped = chunk[n - 1]
        toSkip -= n
        base += n
        chunk = chunk.subarray(n)
        if (toSkip === 0 && lastSkipped !== 10) throw new CliFailure(`the state file ${this.#plan.statePath} does not fit this input: byte ${count(skip)} does not end a line`)
        if (chunk.length === 0) continue
      }
      this.#read = base + chunk.length
      let start = 0
      for (;;) {
        const nl = chunk.indexOf(10, start)
        if (nl < 0) break
        const piece = chunk.subarray(start, nl)
        const text = carryBytes === 0 ? piece : Buffer.concat([...carry, piece])
        carry = []
        carryBytes = 0
        start = nl + 1
        await this.#line(text, ++line, base + start)
      }
      if (start < chunk.length) {
        carry.push(chunk.subarray(start))
        carryBytes += chunk.length - start
        if (carryBytes > MAX_LINE_BYTES) throw new CliFailure(`line ${count(line + 1)} is longer than ${count(MAX_LINE_BYTES)} bytes`)
      }
      base += chunk.length
    }
    if (toSkip > 0) throw new CliFailure(`the input ended before byte ${count(skip)}, where the state file ${this.#plan.statePath} says the import stopped`)
    if (carryBytes > 0) await this.#line(Buffer.concat(carry), ++line, base)
  }

  /** One line: checked, given an id if it has none, added to the batch (sent when full). */
  async #line(bytes: Buffer, line: number, end: number): Promise<void> {
    let i = 0
    let j = bytes.length
    while (i < j && (bytes[i] === 32 || bytes[i] === 9 || bytes[i] === 13)) i++
    while (j > i && (bytes[j - 1] === 32 || bytes[j - 1] === 9 || bytes[j - 1] === 13)) j--
    if (i === j) return // a blank line
    let body = bytes.subarray(i, j)
    let value: unknown
    try {
      value = JSON.parse(body.toString('utf8'))
    } catch (err) {
      return this.#invalid(line, end, `not valid JSON: ${(err as Error).message}`)
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return this.#invalid(line, end, 'not a JSON object (one event per line)')
    const v = value as Record<string, unknown>
    if (this.#plan.ids && typeof v.client_id !== 'string' && typeof v.id !== 'string') {
      // The id goes in front of the line's own bytes (`{"id":"…",` + the rest), which are sent
      // as they are: cheaper than serialising the event again, and nothing else changes.
      let empty = true
      for (const _ in v) {
        empty = false
        break
      }
      body = Buffer.concat([Buffer.from(`{"id":"${derivedId(line, body)}"${empty ? '' : ','}`), body.subarray(1)])
    }
    if (this.#batch.length > 0 && (this.#batch.length >= this.#batchSize || this.#batchBytes + body.length + 1 > this.#plan.batchBytes)) await this.#flush()
    this.#batch.push({ body, line, end })
    this.#batchBytes += body.length + 1
  }

  async #invalid(line: number, end: number, why: string): Promise<void> {
    if (!this.#plan.skipInvalid) {
      // Send what came before, so a resume after the fix starts at this line.
      await this.#flush()
      await this.#tail
      throw new CliFailure(`line ${count(line)}: ${why}`)
    }
    this.#skipped(line, why)
    // Done with this line: recorded once what came before it is (a non-empty batch records it
    // itself when it is acknowledged, as it ends after it).
    if (this.#batch.length === 0) this.#after(() => this.#ack(line, end, 0))
  }

  /** Queues `step` after every earlier one; a failure stops the queue and is rethrown by whoever awaits #tail. */
  #after(step: () => Promise<void> | void): void {
    const next = this.#tail.then(step)
    next.catch(() => {}) // observed through #tail
    this.#tail = next
  }

  #skipped(line: number, why: string): void {
    this.#stats.invalid++
    this.progress.done()
    this.#io.stderr.write(`llmscope import: line ${count(line)} skipped: ${why}\n`)
  }

  async #flush(): Promise<void> {
    if (this.#batch.length === 0) return
    const batch = this.#batch
    this.#batch = []
    this.#batchBytes = 0
    // One batch in flight: wait for the one before (its failure is thrown here), then send this
    // one without waiting, and read on.
    await this.#tail
    this.#after(() => this.#send(batch, batch[batch.length - 1].end, batch[batch.length - 1].line))
  }

  /** The acknowledged part now ends at `end` (line `line`), `events` more events taken. */
  #ack(line: number, end: number, events: number): void {
    const next: ImportState = { version: 1, offset: end, line, events: this.#state.events + events }
    if (this.#plan.statePath !== null) {
      try {
        writeState(this.#plan.statePath, next)
      } catch (err) {
        throw new CliFailure(`cannot write the state file ${this.#plan.statePath}: ${(err as Error).message} (--state PATH puts it elsewhere)`)
      }
    }
    this.#state = next
  }

  #show(extra = '', force = false): void {
    if (!this.progress.enabled) return
    const s = this.#stats
    const pct = this.#size !== null && this.#size > 0 ? `${Math.floor((100 * Math.min(this.#read, this.#size)) / this.#size)}% · ` : ''
    const rate = s.sent / Math.max(0.001, (Date.now() - this.#started) / 1000)
    this.progress.show(`importing ${this.#plan.input ?? 'stdin'}: ${pct}line ${count(this.#state.line)} · ${count(s.sent)} sent · ${count(s.duplicates)} already there · ${count(rate)} events/s${extra}`, force)
  }

  /** Sends `items` until the server acknowledges them; the batch ends at `end`, line `line`. */
  async #send(items: Item[], end: number, line: number): Promise<void> {
    let attempt = 0
    for (;;) {
      if (items.length === 0) {
        this.#ack(line, end, 0)
        return
      }
      const body = Buffer.concat(items.flatMap((it) => [it.body, NEWLINE]))
      let status: number
      let text: string
      let retryAfter: string | null = null
      let why: string
      try {
        const res = await this.#fetch(this.#url, { method: 'POST', headers: this.#headers, body, signal: AbortSignal.timeout(this.#plan.timeoutMs) })
        status = res.status
        text = await res.text()
        retryAfter = res.headers.get('retry-after')
        why = describeRefusal(status, text)
      } catch (err) {
        status = 0
        text = ''
        why = `cannot reach ${this.#plan.conn.url}: ${networkMessage(err)}`
      }
      if (status >= 200 && status < 300) {
        const answer = parseError(text) as { duplicates?: unknown } | null
        const d = answer?.duplicates
        this.#stats.duplicates += typeof d === 'number' ? d : Array.isArray(d) ? d.length : 0
        this.#stats.sent += items.length
        this.#stats.batches++
        this.#ack(line, end, items.length)
        this.#show()
        return
      }
      if (status === 400) {
        const i = refusedIndex(text)
        if (i === null || i >= items.length) throw new CliFailure(`the server refused a batch (lines ${count(items[0].line)} to ${count(items[items.length - 1].line)}): ${why}`)
        const reason = refusalReason(text, i)
        if (!this.#plan.skipInvalid) {
          // What came before the refused line is sent, so a resume starts at it.
          if (i > 0) await this.#send(items.slice(0, i), items[i - 1].end, items[i - 1].line)
          throw new CliFailure(`line ${count(items[i].line)}: refused by the server: ${reason}`)
        }
        this.#skipped(items[i].line, `refused by the server: ${reason}`)
        items = items.filter((_, k) => k !== i)
        continue
      }
      if (status === 413 && items.length > 1) {
        // Too large for this server (its LLMSCOPE_MAX_BATCH or body limit): halves from now on.
        const half = Math.ceil(items.length / 2)
        this.#batchSize = Math.min(this.#batchSize, half)
        await this.#send(items.slice(0, half), items[half - 1].end, items[half - 1].line)
        await this.#send(items.slice(half), end, line)
        return
      }
      if (status === 413) throw new CliFailure(`line ${count(items[0].line)}: the server takes no event this large: ${why}`)
      if (status !== 0 && !retryable(status)) throw new CliFailure(`the server refused the import: ${why}`)
      if (attempt >= this.#plan.maxRetries) throw new CliFailure(`${why} (gave up after ${count(attempt)} retr${attempt === 1 ? 'y' : 'ies'} of lines ${count(items[0].line)} to ${count(items[items.length - 1].line)})`)
      const wait = retryDelay(attempt, retryAfter)
      attempt++
      this.#stats.retries++
      this.#show(` · ${why}; retry ${attempt} in ${seconds(wait)}`, true)
      await this.#sleep(wait)
    }
  }
}

const NEWLINE = Buffer.from('\n')

/**
 * What `llmscope export` and `llmscope import` share: their flags, the server they talk to,
 * the way they read a refusal, wait before a retry, and print figures.
 *
 * Exit codes of both commands: 0 done, 1 failed (the server refused, the network failed past
 * the retries, a bad input line), 2 a usage error (bad or missing flag; nothing was sent).
 */
import { backoffDelay, parseRetryAfter, type BackoffPolicy } from '../backoff.js'
import { RETRYABLE_STATUS } from '../client/retry.js'

/** Exit codes (see the module comment). */
export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_USAGE = 2

/** The server when neither `--url` nor LLMSCOPE_URL says another. */
export const DEFAULT_URL = 'http://127.0.0.1:3000'

/** Where a command reads and writes; the process's own streams, or a test's. */
export interface CliIO {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean }
  stdout: NodeJS.WritableStream & { isTTY?: boolean }
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number }
  env: Readonly<Record<string, string | undefined>>
  /** Defaults to the global fetch (undici). */
  fetch?: typeof fetch
  /** Waits before a retry; tests pass one that does not sleep. */
  sleep?: (ms: number) => Promise<void>
}

/** The process's streams and environment. */
export function processIO(): CliIO {
  return { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env }
}

/** A bad command line: printed with the command's usage hint, exit 2. */
export class UsageError extends Error {
  override name = 'UsageError'
}

/** A failure worth one line on stderr, exit 1. */
export class CliFailure extends Error {
  override name = 'CliFailure'
}

/** How a command's flags are spelled: value flags (with aliases) and switches. */
export interface FlagSpec {
  /** `--flag` (or `-x`) → the option's name; each takes a value (`--flag v` or `--flag=v`). */
  values: Readonly<Record<string, string>>
  /** `--flag` → the option's name; no value. */
  switches: Readonly<Record<string, string>>
  /** Accept `--metadata.KEY VALUE` and `--filter KEY=VALUE` as query filters. */
  filters?: boolean
}

export interface ParsedFlags {
  values: Map<string, string>
  switches: Set<string>
  /** Query filters in the order given, `[name, value]` (`metadata.plan`, `pro`). */
  filters: Array<[string, string]>
  positionals: string[]
}

/** A filter name the server knows (DESIGN §6): the fixed ones or `metadata.KEY`. */
const FILTER_NAME = /^(model|provider|status|user_id|session_id|tag|metadata\.[^\s=&]+)$/

/**
 * Parses a command line against `spec`. A flag given twice, an unknown flag or a missing value
 * is a {@link UsageError} naming it. `--` ends the flags; `-` alone is a positional (stdin).
 */
export function parseFlags(argv: readonly string[], spec: FlagSpec): ParsedFlags {
  const out: ParsedFlags = { values: new Map(), switches: new Set(), filters: [], positionals: [] }
  const filterNames = new Set<string>()
  const addFilter = (name: string, value: string, as: string) => {
    if (!FILTER_NAME.test(name)) throw new UsageError(`${as}: ${JSON.stringify(name)} is not a filter (model, provider, status, user_id, session_id, tag or metadata.KEY)`)
    if (filterNames.has(name)) throw new UsageError(`${as}: the filter ${name} is given twice`)
    filterNames.add(name)
    out.filters.push([name, value])
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--') {
      out.positionals.push(...argv.slice(i + 1))
      break
    }
    if (!arg.startsWith('-') || arg === '-') {
      out.positionals.push(arg)
      continue
    }
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1
    const flag = eq > 0 ? arg.slice(0, eq) : arg
    const inline = eq > 0 ? arg.slice(eq + 1) : undefined
    const value = (): string => {
      if (inline !== undefined) return inline
      if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value`)
      return argv[++i]
    }
    if (spec.switches[flag] !== undefined) {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value`)
      out.switches.add(spec.switches[flag])
    } else if (spec.values[flag] !== undefined) {
      const name = spec.values[flag]
      if (out.values.has(name)) throw new UsageError(`${flag} is given twice`)
      out.values.set(name, value())
    } else if (spec.filters === true && flag.startsWith('--metadata.') && flag.length > '--metadata.'.length) {
      addFilter(flag.slice(2), value(), flag)
    } else if (spec.filters === true && flag === '--filter') {
      const f = value()
      const at = f.indexOf('=')
      if (at < 1) throw new UsageError(`--filter takes NAME=VALUE (user_id=u_1, metadata.plan=pro), got ${JSON.stringify(f)}`)
      addFilter(f.slice(0, at), f.slice(at + 1), '--filter')
    } else {
      throw new UsageError(`${flag} is not a known flag (see --help)`)
    }
  }
  return out
}

/** The server and credentials every command needs. */
export interface Connection {
  /** The server's origin and base path, without a trailing slash. */
  url: string
  key: string
  /** `X-LLMScope-Project` (an owner key acting in another project), or null. */
  project: string | null
}

/**
 * `--url` (else LLMSCOPE_URL, else http://127.0.0.1:3000), `--key` (else LLMSCOPE_API_KEY, else
 * LLMSCOPE_KEY, the README's variable) and `--project`.
 */
export function connection(values: ReadonlyMap<string, string>, env: CliIO['env']): Connection {
  const raw = values.get('url') ?? env.LLMSCOPE_URL ?? DEFAULT_URL
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    throw new UsageError(`--url: ${JSON.stringify(raw)} is not a URL (http://host:port)`)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--url: ${JSON.stringify(raw)} is not an http or https URL`)
  if (u.search !== '' || u.hash !== '') throw new UsageError(`--url: ${JSON.stringify(raw)} must not carry a query or fragment`)
  const key = values.get('key') ?? env.LLMSCOPE_API_KEY ?? env.LLMSCOPE_KEY
  if (key === undefined || key === '') throw new UsageError('no API key: pass --key KEY or set LLMSCOPE_API_KEY')
  const project = values.get('project') ?? null
  if (project !== null && !/^[a-z0-9][a-z0-9-]{0,62}$/.test(project)) throw new UsageError(`--project: ${JSON.stringify(project)} is not a project id (a slug: a-z, 0-9, -)`)
  return { url: u.href.replace(/\/+$/, ''), key, project }
}

/** The headers of every request: the key, and the project when one is named. */
export function authHeaders(c: Connection): Record<string, string> {
  return c.project === null ? { 'x-api-key': c.key } : { 'x-api-key': c.key, 'x-llmscope-project': c.project }
}

/** A positive integer flag within `[min, max]`, or `fallback` when absent. */
export function intFlag(values: ReadonlyMap<string, string>, name: string, fallback: number, min: number, max: number): number {
  const raw = values.get(name)
  if (raw === undefined) return fallback
  const n = Number(raw)
  if (!/^\d+$/.test(raw) || n < min || n > max) throw new UsageError(`--${name}: ${JSON.stringify(raw)} is not an integer from ${min} to ${max}`)
  return n
}

/** A server's error answer (fastify's shape, DESIGN §3). */
export interface ServerError {
  statusCode?: number
  code?: string
  message?: string
  details?: Array<{ path?: string; message?: string }>
}

/** An error body as an object when it is one; null otherwise (a proxy's HTML page…). */
export function parseError(text: string): ServerError | null {
  try {
    const v = JSON.parse(text) as unknown
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as ServerError) : null
  } catch {
    return null
  }
}

/** One line for a refusal: `HTTP 400 LLMS_ERR_VALIDATION: message`, or the body's start. */
export function describeRefusal(status: number, text: string): string {
  const e = parseError(text)
  if (e !== null && typeof e.message === 'string') return `HTTP ${status}${typeof e.code === 'string' ? ` ${e.code}` : ''}: ${e.message}`
  const body = text.replace(/\s+/g, ' ').trim()
  return `HTTP ${status}${body === '' ? '' : `: ${body.length > 200 ? body.slice(0, 199) + '…' : body}`}`
}

/** Answers worth another try: rate limited, or the server (or a proxy) briefly unable. */
export function retryable(status: number): boolean {
  return RETRYABLE_STATUS.has(status)
}

/** The retry policy of both commands: 0.5 s doubling up to 30 s, or the server's Retry-After. */
export const RETRY_POLICY: BackoffPolicy = { baseMs: 500, maxMs: 30_000 }

/** Milliseconds before retry number `attempt` (0-based), honouring a `Retry-After` header. */
export function retryDelay(attempt: number, retryAfter: string | null): number {
  return backoffDelay(attempt, RETRY_POLICY, parseRetryAfter(retryAfter, Date.now()))
}

export const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The message of a network failure, with its cause (undici puts the reason there). */
export function networkMessage(err: unknown): string {
  const e = err as Error & { cause?: Error & { code?: string } }
  if (e?.name === 'TimeoutError') return 'no answer in time'
  const cause = e?.cause
  if (cause !== undefined && cause !== null) return `${e.message}: ${cause.code ?? cause.message ?? String(cause)}`
  return e?.message ?? String(err)
}

/** `12,345` */
export function count(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

/** `1.5 MB` (decimal units, as download tools print them). */
export function bytes(n: number): string {
  if (n < 1000) return `${n} B`
  const units = ['kB', 'MB', 'GB', 'TB']
  let v = n
  let u = -1
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000
    u++
  }
  return `${v.toFixed(1)} ${units[u]}`
}

/** `2.1 s` */
export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}

/**
 * A status line that rewrites itself on a terminal (`\r`, erase to the end of the line), at
 * most every `everyMs`; `done()` ends it with a newline. Off a terminal it prints nothing.
 */
export class ProgressLine {
  readonly #out: CliIO['stderr']
  readonly #everyMs: number
  #last = 0
  #shown = false
  constructor(out: CliIO['stderr'], everyMs = 200) {
    this.#out = out
    this.#everyMs = everyMs
  }
  get enabled(): boolean {
    return this.#out.isTTY === true
  }
  /** Shows `text` unless one was shown less than `everyMs` ago (`force`: now). */
  show(text: string, force = false): void {
    if (!this.enabled) return
    const now = Date.now()
    if (!force && now - this.#last < this.#everyMs) return
    this.#last = now
    const width = (this.#out.columns ?? 100) - 1
    this.#out.write(`\r\x1b[K${text.length > width ? text.slice(0, Math.max(0, width - 1)) + '…' : text}`)
    this.#shown = true
  }
  /** Clears the line (before a final summary or an error is printed). */
  done(): void {
    if (this.#shown) this.#out.write('\r\x1b[K')
    this.#shown = false
  }
}

/**
 * A command line's plan, or the exit code when there is none to run: `--help` prints `usage`
 * (exit 0), a {@link UsageError} prints its message and where the options are listed (exit 2).
 */
export function planOrExit<P>(command: string, usage: string, io: CliIO, plan: () => P | 'help'): P | number {
  let p: P | 'help'
  try {
    p = plan()
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    io.stderr.write(`llmscope ${command}: ${err.message}\n(llmscope ${command} --help lists the options)\n`)
    return EXIT_USAGE
  }
  if (p === 'help') {
    io.stdout.write(usage)
    return EXIT_OK
  }
  return p
}

/**
 * Configuration: read once from the environment (and a few CLI flags), validated with zod,
 * defaulted, then frozen (fastify's `initial-config-validation` idea). A bad value stops the
 * start with one line naming the variable.
 */
import { DEFAULT_NOT_DIMENSIONS, type DimensionLimits } from './analytics/dimensions.js'
import { readFileSync } from 'node:fs'
import { z } from 'zod'

/**
 * What a key may do. `ingest`, `read` and `admin` act inside one project (`admin` may do
 * everything there); `owner` manages the instance (projects, keys of any project) and may act
 * in any project (README: Projects).
 */
export type Scope = 'ingest' | 'read' | 'admin' | 'owner'
export const SCOPES: readonly Scope[] = ['ingest', 'read', 'admin', 'owner']

/** A project id: a slug (README: Projects). */
export const PROJECT_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/

/** The project that always exists: where a request acts when it names none. */
export const DEFAULT_PROJECT = 'default'

/** Whether `s` is a well-formed project id. */
export function isProjectId(s: unknown): s is string {
  return typeof s === 'string' && PROJECT_ID_PATTERN.test(s)
}

export interface ApiKeySpec {
  key: string
  scope: Scope
  /** The project an `ingest`/`read`/`admin` key acts in; null for an `owner` key. */
  project: string | null
}

const priceOverride = z.strictObject({
  input_mtok: z.number().finite().nonnegative(),
  output_mtok: z.number().finite().nonnegative(),
  cache_read_mtok: z.number().finite().nonnegative().optional(),
  cache_write_mtok: z.number().finite().nonnegative().optional()
})

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max)

/** Each entry: env variable → [CLI flag, schema]. The order is the README's table order. */
const schema = z.object({
  PORT: int(0, 65535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  LLMSCOPE_DATA_DIR: z.string().min(1).default('./data'),
  LLMSCOPE_API_KEYS: z.string().default(''),
  LLMSCOPE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LLMSCOPE_SNAPSHOT_INTERVAL_S: int(1, 86_400).default(30),
  LLMSCOPE_BODY_LIMIT_BYTES: int(1024, 512 * 1024 * 1024).default(32 * 1024 * 1024),
  LLMSCOPE_MAX_BATCH: int(1, 100_000).default(10_000),
  LLMSCOPE_METADATA_MAX_BYTES: int(2, 1024 * 1024).default(16 * 1024),
  LLMSCOPE_METADATA_MAX_DEPTH: int(1, 64).default(8),
  LLMSCOPE_METADATA_MAX_KEYS: int(1, 10_000).default(256),
  LLMSCOPE_HIGH_WATER_EVENTS: int(1, 100_000_000).default(500_000),
  LLMSCOPE_MAX_MODELS: int(1, 100_000).default(1000),
  LLMSCOPE_MAX_DIMENSION_VALUES: int(1, 10_000_000).default(100_000),
  LLMSCOPE_MAX_METADATA_DIMENSIONS: int(0, 1000).default(32),
  LLMSCOPE_MAX_METADATA_VALUES: int(1, 10_000_000).default(10_000),
  LLMSCOPE_MAX_ATTRIBUTE_SETS: int(1, 100_000_000).default(1_000_000),
  LLMSCOPE_METADATA_NOT_DIMENSIONS: z.string().default(DEFAULT_NOT_DIMENSIONS.join(',')),
  LLMSCOPE_COST_THREADS: int(1, 64).default(1),
  LLMSCOPE_COST_BATCH: int(1, 1_000_000).default(2048),
  LLMSCOPE_PRICE_OVERRIDES: z.string().default('{}'),
  LLMSCOPE_RETENTION_DAYS: int(0, 100_000).default(0),
  LLMSCOPE_RETENTION_EVENTS: int(0, 2_000_000_000).default(0),
  LLMSCOPE_MAX_DB_BYTES: int(1024 * 1024, 2 ** 50).default(64 * 1024 ** 3),
  // Hours, fractions allowed (0.5 = 30 minutes); at most a year.
  LLMSCOPE_DEDUPE_WINDOW_HOURS: z.coerce.number().positive().max(8760).default(24),
  LLMSCOPE_RATE_LIMIT_MAX: int(0, 100_000_000).default(0),
  LLMSCOPE_RATE_LIMIT_WINDOW_S: int(1, 86_400).default(60),
  LLMSCOPE_AUTH_FAILURE_MAX: int(0, 100_000_000).default(120),
  LLMSCOPE_CORS_ORIGINS: z.string().default(''),
  LLMSCOPE_NATS_URL: z.string().default(''),
  LLMSCOPE_NODE_ID: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1 to 64 letters, digits, _ or -').optional(),
  LLMSCOPE_LEASE_S: int(2, 600).default(10),
  LLMSCOPE_PARTITIONS: int(1, 1024).default(16),
  LLMSCOPE_STREAM_REPLICAS: int(0, 5).default(0),
  LLMSCOPE_QUERY_TIMEOUT_MS: int(100, 600_000).default(5000),
  LLMSCOPE_CLUSTER_NAME: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'must be 1 to 32 of a-z, 0-9, _ or -, starting with a letter or digit').default('llmscope')
})

export type EnvInput = Record<string, string | undefined>

/** The validated, frozen configuration. */
export interface Config {
  readonly port: number
  readonly host: string
  readonly dataDir: string
  /** Keys from LLMSCOPE_API_KEYS; empty means "make one on first start". */
  readonly apiKeys: readonly ApiKeySpec[]
  readonly logLevel: string
  readonly snapshotIntervalMs: number
  readonly bodyLimitBytes: number
  readonly maxBatch: number
  readonly metadata: { readonly maxBytes: number; readonly maxDepth: number; readonly maxKeys: number }
  /** Events accepted but not yet aggregated past which ingestion answers 503. */
  readonly highWaterEvents: number
  readonly maxModels: number
  /** Caps of each project's dimension dictionaries (README: Dimensions). */
  readonly dimensionLimits: DimensionLimits
  readonly costThreads: number
  readonly costBatch: number
  readonly priceOverrides: Readonly<Record<string, z.infer<typeof priceOverride>>>
  /**
   * Raw-row retention (see SeriesStore.retain): rows of events whose UTC day is older than
   * the last `days` days, and the oldest hours of a series past `events` raw rows, are folded
   * into hour aggregates. 0 = no limit.
   */
  readonly retention: { readonly days: number; readonly events: number }
  /** LMDB map size: the most the data dir's database may grow to. */
  readonly maxDbBytes: number
  /**
   * How long (receive time) an event's client `id` stays taken in its project: a copy within
   * it is answered with the first one's event_id and counted once (DESIGN §7, Idempotency).
   */
  readonly dedupeWindowMs: number
  /**
   * Requests per window: `max` per API key (0 = off), `authFailureMax` per client address for
   * requests with a missing or unknown key (0 = off).
   */
  readonly rateLimit: { readonly max: number; readonly windowMs: number; readonly authFailureMax: number }
  /** Origins allowed to call the API from a browser; `*` = any; empty = same-origin only. */
  readonly corsOrigins: readonly string[]
  /** Cluster mode (DESIGN §9), or null for a single node (LLMSCOPE_NATS_URL unset). */
  readonly cluster: ClusterConfig | null
}

/** Cluster mode settings (README: Cluster mode). */
export interface ClusterConfig {
  /** NATS servers to connect to (any of them; the client learns the rest). */
  readonly servers: readonly string[]
  /** This node's name; null = the one kept in the data dir (made on first start). */
  readonly nodeId: string | null
  /** A partition lease lives this long without renewal (renewed every third of it). */
  readonly leaseMs: number
  /** Partitions of the event stream, fixed when the stream is made (a node with another count refuses to start). */
  readonly partitions: number
  /** Stream and KV replicas; 0 = min(3, servers in the NATS cluster). */
  readonly replicas: number
  /** How long a query waits for every partition's owner before answering 503. */
  readonly queryTimeoutMs: number
  /** Prefix of every stream, bucket and subject: several clusters may share one NATS. */
  readonly name: string
  /** The event stream's `duplicate_window`: {@link Config.dedupeWindowMs} (absent: its default, 24 hours). */
  readonly dedupeWindowMs?: number
}

/**
 * Parses LLMSCOPE_NATS_URL: a comma list of nats://host:port (or host:port; tls:// too).
 * Refused: other schemes (ws:// and wss:// included: the Node client speaks TCP, and would send
 * the NATS protocol to a WebSocket port) and credentials in the URL (the client ignores them, and
 * they would be printed in logs); a refused item is echoed without its user:password part.
 */
export function parseNatsUrls(raw: string): string[] {
  const out: string[] = []
  for (const part of raw.split(',')) {
    const item = part.trim()
    if (item === '') continue
    const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(item) ? item : `nats://${item}`
    const shown = `"${item.replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/i, '$1***@').slice(0, 100)}"`
    let url: URL | undefined
    try {
      url = new URL(withScheme)
    } catch {}
    if (url !== undefined && (url.protocol === 'ws:' || url.protocol === 'wss:')) {
      throw new ConfigError('LLMSCOPE_NATS_URL', `has ${shown}: WebSocket is not supported here, use the server's client port (nats://host:4222)`)
    }
    if (url !== undefined && (url.username !== '' || url.password !== '')) {
      throw new ConfigError('LLMSCOPE_NATS_URL', `has ${shown}: credentials in the URL are not supported (write nats://host:port)`)
    }
    if (url === undefined || !['nats:', 'tls:'].includes(url.protocol) || url.hostname === '') {
      throw new ConfigError('LLMSCOPE_NATS_URL', `has ${shown}, not a NATS server address such as nats://127.0.0.1:4222`)
    }
    out.push(withScheme)
  }
  return out
}

/** Thrown for a bad configuration value; `message` is the one line to print. */
export class ConfigError extends Error {
  readonly variable: string
  constructor(variable: string, reason: string) {
    super(`invalid configuration: ${variable} ${reason}`)
    this.name = 'ConfigError'
    this.variable = variable
  }
}

const FLAGS: Record<string, string> = {
  '--port': 'PORT',
  '--host': 'HOST',
  '--data-dir': 'LLMSCOPE_DATA_DIR',
  '--api-keys': 'LLMSCOPE_API_KEYS',
  '--log-level': 'LLMSCOPE_LOG_LEVEL'
}

/** Reads `--flag value` / `--flag=value` pairs into env-variable names; unknown flags are an error. */
export function flagsToEnv(argv: readonly string[]): EnvInput {
  const out: EnvInput = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const eq = arg.indexOf('=')
    const flag = eq === -1 ? arg : arg.slice(0, eq)
    const name = FLAGS[flag]
    if (name === undefined) throw new ConfigError(arg, `is not a known flag (known: ${Object.keys(FLAGS).join(', ')})`)
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1)
    if (value === undefined) throw new ConfigError(flag, 'needs a value')
    out[name] = value
  }
  return out
}

/**
 * Parses LLMSCOPE_API_KEYS: `secret` (owner), `secret:SCOPE` (project `default`; `secret:owner`
 * is an owner key too), `secret:SCOPE:PROJECT`. Read from the right, so a key may itself
 * contain colons (`a:b:read` is the key `a:b` with scope read). An owner key has no project:
 * `secret:owner:PROJECT` is refused.
 */
export function parseApiKeys(raw: string): ApiKeySpec[] {
  const out: ApiKeySpec[] = []
  const isScope = (s: string | undefined): s is Scope => s !== undefined && (SCOPES as readonly string[]).includes(s)
  const forms = 'write key, key:SCOPE or key:SCOPE:PROJECT, SCOPE one of ingest, read, admin, owner'
  for (const part of raw.split(',')) {
    const item = part.trim()
    if (item === '') continue
    const parts = item.split(':')
    let key = item
    let scope: Scope = 'owner'
    let project: string | null = null
    if (parts.length >= 3 && isScope(parts[parts.length - 2])) {
      scope = parts[parts.length - 2] as Scope
      const p = parts[parts.length - 1]
      key = parts.slice(0, -2).join(':')
      if (scope === 'owner') throw new ConfigError('LLMSCOPE_API_KEYS', 'has an owner key bound to a project: an owner key acts in every project (write key or key:owner)')
      // The project is not secret, but print it only when it is short enough to be one.
      if (!PROJECT_ID_PATTERN.test(p)) throw new ConfigError('LLMSCOPE_API_KEYS', `has a project ${p.length <= 63 ? `"${p}" ` : ''}that is not a slug (${PROJECT_ID_PATTERN.source})`)
      project = p
    } else if (parts.length >= 2) {
      const s = parts[parts.length - 1]
      // Never echo the key itself: config errors are printed (the part after the last colon
      // is where a scope belongs, so it is named — short, as a scope is).
      if (!isScope(s)) throw new ConfigError('LLMSCOPE_API_KEYS', `has an unknown scope${s.length <= 16 ? ` "${s}"` : ''} (${forms})`)
      scope = s
      key = parts.slice(0, -1).join(':')
      project = scope === 'owner' ? null : DEFAULT_PROJECT
    }
    if (key.length < 8) throw new ConfigError('LLMSCOPE_API_KEYS', 'has a key shorter than 8 characters')
    if (/\s/.test(key)) throw new ConfigError('LLMSCOPE_API_KEYS', 'has a key containing white space')
    out.push({ key, scope, project })
  }
  return out
}

/** Parses `https://a.example,http://localhost:5173` (or `*`) into origins; each must be a bare origin. */
export function parseOrigins(raw: string): string[] {
  const out: string[] = []
  for (const part of raw.split(',')) {
    const item = part.trim()
    if (item === '') continue
    if (item === '*') {
      out.push(item)
      continue
    }
    let url: URL | undefined
    try {
      url = new URL(item)
    } catch {}
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.origin !== item.replace(/\/$/, '')) {
      throw new ConfigError('LLMSCOPE_CORS_ORIGINS', `has "${item.slice(0, 100)}", not an origin such as https://app.example.com (scheme, host, optional port; no path) or *`)
    }
    out.push(url.origin)
  }
  return out
}

/**
 * Validates the environment (plus CLI flags, which win) into a frozen `Config`.
 * @throws ConfigError naming the first bad variable.
 */
export function loadConfig(env: EnvInput = process.env, argv: readonly string[] = []): Config {
  const merged: EnvInput = {}
  for (const name of Object.keys(schema.shape)) {
    const v = env[name]
    if (v !== undefined && v !== '') merged[name] = v
  }
  Object.assign(merged, flagsToEnv(argv))
  const parsed = schema.safeParse(merged)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const variable = String(issue.path[0] ?? 'configuration')
    throw new ConfigError(variable, `${issue.message.toLowerCase()} (got ${JSON.stringify(merged[variable])})`)
  }
  const e = parsed.data

  let overridesRaw: unknown
  try {
    overridesRaw = JSON.parse(e.LLMSCOPE_PRICE_OVERRIDES)
  } catch {
    throw new ConfigError('LLMSCOPE_PRICE_OVERRIDES', 'is not valid JSON')
  }
  const overrides = z.record(z.string().min(1), priceOverride).safeParse(overridesRaw)
  if (!overrides.success) {
    const issue = overrides.error.issues[0]
    throw new ConfigError('LLMSCOPE_PRICE_OVERRIDES', `at ${issue.path.join('.') || '(root)'}: ${issue.message.toLowerCase()}`)
  }

  const corsOrigins = parseOrigins(e.LLMSCOPE_CORS_ORIGINS)
  const config: { -readonly [K in keyof Config]: Config[K] } = {
    port: e.PORT,
    host: e.HOST,
    dataDir: e.LLMSCOPE_DATA_DIR,
    apiKeys: Object.freeze(parseApiKeys(e.LLMSCOPE_API_KEYS)),
    logLevel: e.LLMSCOPE_LOG_LEVEL,
    snapshotIntervalMs: e.LLMSCOPE_SNAPSHOT_INTERVAL_S * 1000,
    bodyLimitBytes: e.LLMSCOPE_BODY_LIMIT_BYTES,
    maxBatch: e.LLMSCOPE_MAX_BATCH,
    metadata: Object.freeze({
      maxBytes: e.LLMSCOPE_METADATA_MAX_BYTES,
      maxDepth: e.LLMSCOPE_METADATA_MAX_DEPTH,
      maxKeys: e.LLMSCOPE_METADATA_MAX_KEYS
    }),
    highWaterEvents: e.LLMSCOPE_HIGH_WATER_EVENTS,
    maxModels: e.LLMSCOPE_MAX_MODELS,
    dimensionLimits: Object.freeze({
      maxValues: e.LLMSCOPE_MAX_DIMENSION_VALUES,
      maxMetaKeys: e.LLMSCOPE_MAX_METADATA_DIMENSIONS,
      maxMetaValues: e.LLMSCOPE_MAX_METADATA_VALUES,
      maxAttrSets: e.LLMSCOPE_MAX_ATTRIBUTE_SETS,
      notDimensions: Object.freeze(e.LLMSCOPE_METADATA_NOT_DIMENSIONS.split(',').map((k) => k.trim()).filter((k) => k !== ''))
    }),
    costThreads: e.LLMSCOPE_COST_THREADS,
    costBatch: e.LLMSCOPE_COST_BATCH,
    priceOverrides: Object.freeze(overrides.data),
    retention: Object.freeze({ days: e.LLMSCOPE_RETENTION_DAYS, events: e.LLMSCOPE_RETENTION_EVENTS }),
    maxDbBytes: e.LLMSCOPE_MAX_DB_BYTES,
    dedupeWindowMs: Math.round(e.LLMSCOPE_DEDUPE_WINDOW_HOURS * 3600_000),
    rateLimit: Object.freeze({
      max: e.LLMSCOPE_RATE_LIMIT_MAX,
      windowMs: e.LLMSCOPE_RATE_LIMIT_WINDOW_S * 1000,
      authFailureMax: e.LLMSCOPE_AUTH_FAILURE_MAX
    }),
    corsOrigins: Object.freeze(corsOrigins),
    cluster: null
  }
  const servers = parseNatsUrls(e.LLMSCOPE_NATS_URL)
  if (servers.length > 0) {
    config.cluster = Object.freeze({
      servers: Object.freeze(servers),
      nodeId: e.LLMSCOPE_NODE_ID ?? null,
      leaseMs: e.LLMSCOPE_LEASE_S * 1000,
      partitions: e.LLMSCOPE_PARTITIONS,
      replicas: e.LLMSCOPE_STREAM_REPLICAS,
      queryTimeoutMs: e.LLMSCOPE_QUERY_TIMEOUT_MS,
      name: e.LLMSCOPE_CLUSTER_NAME,
      dedupeWindowMs: config.dedupeWindowMs
    })
  }
  return Object.freeze(config)
}

/** The README's configuration table is generated from the same names (see test/config.test.ts). */
export const CONFIG_VARIABLES = Object.keys(schema.shape)

/** One line per variable for `--help` (the README's table has the long form). */
const HELP: Partial<Record<string, string>> = {
  PORT: 'TCP port (0 = any free port)',
  HOST: 'interface to bind; 0.0.0.0 to serve beyond this machine',
  LLMSCOPE_DATA_DIR: 'LMDB environment, generated key',
  LLMSCOPE_API_KEYS: 'comma list of keys: `secret` is an owner key; `secret:ingest|read|admin` acts in project default, `secret:SCOPE:PROJECT` in PROJECT; empty: an owner key is made on first start',
  LLMSCOPE_LOG_LEVEL: 'fatal, error, warn, info, debug, trace or silent',
  LLMSCOPE_SNAPSHOT_INTERVAL_S: 'seconds between state snapshots',
  LLMSCOPE_BODY_LIMIT_BYTES: 'largest request body of any route (413 beyond): /events/batch and /v1/traces; /events/ingest takes one event\'s worth, admin routes 256 KiB',
  LLMSCOPE_MAX_BATCH: 'most events in one /events/batch (413 beyond)',
  LLMSCOPE_METADATA_MAX_BYTES: 'largest `metadata` (its JSON, UTF-8)',
  LLMSCOPE_METADATA_MAX_DEPTH: 'deepest nesting of `metadata`',
  LLMSCOPE_METADATA_MAX_KEYS: 'most keys in `metadata`, through all levels',
  LLMSCOPE_HIGH_WATER_EVENTS: 'accepted-but-unpriced events past which ingestion answers 503',
  LLMSCOPE_MAX_MODELS: 'model aggregators per project; further models count under (other models)',
  LLMSCOPE_MAX_DIMENSION_VALUES: 'distinct user_id, session_id and tag values kept per project, each; further values count under "(other)"',
  LLMSCOPE_MAX_METADATA_DIMENSIONS: 'top-level metadata keys that are dimensions per project (first seen first)',
  LLMSCOPE_MAX_METADATA_VALUES: 'distinct values kept per metadata key per project; further values count under "(other)"',
  LLMSCOPE_MAX_ATTRIBUTE_SETS: 'distinct combinations of tags and metadata values kept per project',
  LLMSCOPE_METADATA_NOT_DIMENSIONS: 'metadata keys that are never dimensions (comma list): per-call identifiers such as the OTLP receiver\'s trace_id, span_id, response_id',
  LLMSCOPE_COST_THREADS: 'worker threads that price events',
  LLMSCOPE_COST_BATCH: 'events per pricing task',
  LLMSCOPE_PRICE_OVERRIDES: 'JSON: {"model": {"input_mtok": 1, "output_mtok": 2}} ($ per 1M tokens)',
  LLMSCOPE_RETENTION_DAYS: 'days of raw rows kept in memory; older ones fold into hour aggregates (0 = no limit)',
  LLMSCOPE_RETENTION_EVENTS: 'raw rows kept per series; older hours fold into aggregates (0 = no limit)',
  LLMSCOPE_MAX_DB_BYTES: 'the most the LMDB database may grow to',
  LLMSCOPE_DEDUPE_WINDOW_HOURS: 'hours (receive time) an event\'s client `id` stays taken in its project: a copy sent within them is counted once',
  LLMSCOPE_RATE_LIMIT_MAX: 'requests per key per window (0 = off)',
  LLMSCOPE_RATE_LIMIT_WINDOW_S: 'rate-limit window, seconds',
  LLMSCOPE_AUTH_FAILURE_MAX: 'requests with a missing or unknown key per client address per window (0 = off)',
  LLMSCOPE_CORS_ORIGINS: 'origins allowed to call the API from a browser (comma list, or *)',
  LLMSCOPE_NATS_URL: 'cluster mode: NATS servers with JetStream (comma list of nats://host:port); empty = single node',
  LLMSCOPE_NODE_ID: 'cluster mode: this node\'s name (default: made on first start, kept in the data dir)',
  LLMSCOPE_LEASE_S: 'cluster mode: seconds a partition lease lives without renewal',
  LLMSCOPE_PARTITIONS: 'cluster mode: partitions of the event stream (fixed when the stream is made)',
  LLMSCOPE_STREAM_REPLICAS: 'cluster mode: stream and KV replicas (0 = min(3, NATS servers))',
  LLMSCOPE_QUERY_TIMEOUT_MS: 'cluster mode: how long a query waits for every partition before answering 503',
  LLMSCOPE_CLUSTER_NAME: 'cluster mode: prefix of the stream, buckets and subjects (several clusters may share one NATS)'
}

/** The package's version, from package.json (one level above both src/ and dist/). */
export function packageVersion(): string {
  // Walk up from this file: src/ and dist/ sit one level below the package root, the bench
  // build (dist-bench/src/) two.
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version: string }
      if (pkg.name === 'llmscope') return pkg.version
    } catch {}
  }
  return 'unknown'
}

/** What the command line asks for besides serving: `--help`/`-h` or `--version`/`-v`, else null. */
export function cliAction(argv: readonly string[]): 'help' | 'version' | null {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--help' || arg === '-h') return 'help'
    if (arg === '--version' || arg === '-v') return 'version'
    // Skip a flag's separate value (`--host --help` asks for a host named "--help", which fails at listen).
    if (FLAGS[arg] !== undefined) i++
  }
  return null
}

/** The `--help` text: every flag and every environment variable with its default. */
export function usage(version: string): string {
  const shape = schema.shape as Record<string, z.ZodType>
  const flagOf = new Map(Object.entries(FLAGS).map(([flag, name]) => [name, flag]))
  const lines = [
    `llmscope ${version} — self-hosted observability for LLM calls`,
    '',
    'Usage: llmscope [--port N] [--host ADDR] [--data-dir PATH] [--api-keys LIST] [--log-level LEVEL]',
    '       llmscope cluster status   (every node of the cluster at LLMSCOPE_NATS_URL: partitions, lag, leases)',
    '       llmscope export [FILTERS] [-o FILE]   (events of a running server as NDJSON or CSV; llmscope export --help)',
    '       llmscope import [FILE | -]            (NDJSON events into a running server, resumable; llmscope import --help)',
    '       llmscope --help | --version',
    '',
    'Options (each mirrors an environment variable and wins over it; --flag value or --flag=value):'
  ]
  for (const [flag, name] of Object.entries(FLAGS)) lines.push(`  ${flag.padEnd(14)} ${name}`)
  lines.push(`  ${'-h, --help'.padEnd(14)} print this help and exit`, `  ${'-v, --version'.padEnd(14)} print the version and exit`, '', 'Environment:')
  const width = Math.max(...CONFIG_VARIABLES.map((n) => n.length))
  for (const name of CONFIG_VARIABLES) {
    const d = shape[name].safeParse(undefined)
    // LLMSCOPE_NODE_ID has no fixed default (undefined would print as "undefined").
    const def = !d.success ? '(required)' : d.data === undefined ? '(none)' : JSON.stringify(d.data)
    const flag = flagOf.get(name)
    lines.push(`  ${name.padEnd(width)}  default ${def}${flag === undefined ? '' : `, flag ${flag}`}`)
    const help = HELP[name]
    if (help !== undefined) lines.push(`  ${''.padEnd(width)}  ${help}`)
  }
  lines.push('', 'Logs are human-readable on a terminal, JSON lines otherwise. SIGTERM/SIGINT: drain, snapshot, exit 0.', 'Docs: http://HOST:PORT/docs (OpenAPI at /openapi.json); metrics at /metrics.')
  return lines.join('\n') + '\n'
}

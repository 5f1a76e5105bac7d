/**
 * The one LMDB environment in the data dir and its named databases. Writes are
 * asynchronous and group-committed by lmdb-js: every put issued in the same event turn
 * (and while a commit is in flight) shares one transaction, so many concurrent requests
 * cost one commit, never one each.
 */
import { mkdirSync, accessSync, constants, statSync } from 'node:fs'
import { open, type RootDatabase, type Database } from 'lmdb'
import { DedupeIndex, type DedupeEntry, type DedupeJournalRecord, type DedupeOptions } from './dedupe.js'

export interface Stores {
  readonly root: RootDatabase
  /** seq of a batch's first event → that append's events (one put per append). */
  readonly events: Database<EventRecord, number>
  /** snapshot, schema version: binary values written by `snapshots.ts`. */
  readonly meta: Database<Buffer, string>
  /** alert rules by id. */
  readonly rules: Database<unknown, string>
  /** alert events (transitions, reminders, delivery outcomes) by sequence number: `alert-events.ts`. */
  readonly alertEvents: Database<unknown, number>
  /** API keys made through `POST /keys` (digests, never the keys): `api-keys.ts`. */
  readonly apiKeys: Database<unknown, string>
  /** projects and tombstones of deleted ones, by id: `projects.ts`. */
  readonly projects: Database<unknown, string>
  /** The price book: versions, override layers, re-pricing records, its revision: `prices.ts`. */
  readonly prices: Database<unknown, string>
  /** Budgets and their fired records (one per budget, period, threshold and group), by id: `budgets.ts`. */
  readonly budgets: Database<unknown, string>
  /** The dedupe index of client ids (`dedupe.ts`, over the `dedupe` and `dedupe-exp` databases). */
  readonly dedupe: DedupeIndex
  /** Bytes the database file uses (its highest page in use), from LMDB's own statistics. */
  usedBytes(): number
  /** The configured most the database may use (LLMSCOPE_MAX_DB_BYTES). */
  readonly maxBytes: number
  close(): Promise<void>
}

/** Thrown by {@link openStores} when the data dir cannot hold the database; `message` is the one line to print. */
export class DataDirError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'DataDirError'
  }
}

export interface StoreOptions {
  /** Most bytes the database may grow to (default 64 GiB); ingestion answers 503 past it. */
  maxBytes?: number
  /** The dedupe index's window and clock (default: 24 hours, Date.now). */
  dedupe?: DedupeOptions
}

/** The dedupe window when none is configured (LLMSCOPE_DEDUPE_WINDOW_HOURS's default). */
export const DEFAULT_DEDUPE_WINDOW_MS = 24 * 3600_000

/** Room a start needs beyond what is used: a snapshot, alert events, a few log appends. */
const START_HEADROOM_BYTES = 256 * 1024

/**
 * One append in the log: events at seq = key, key+1, … in order. Every format is read
 * (src/store/event-log.ts decodes them); which one is written is said there.
 */
export type EventRecord = EventRecordV1 | EventRecordV2 | EventRecordV3 | EventRecordV4 | EventRecordV5 | EventRecordV6 | EventRecordV7

/**
 * Every format may carry `pr`: the price book's revision when the append was accepted (every
 * event of the record shares it; absent = 0, records written before the book). EventLog.append
 * writes it when it is not 0 (src/pricing/book.ts: what fixes an event's cost).
 */
export interface PriceRevField {
  pr?: number
}

/** Format 1: one array (row) per event. */
export interface EventRecordV1 extends PriceRevField {
  v: 1
  ev: unknown[]
}

/**
 * Format 3: format 1 plus each event's project and dimensions (`dx`, null for project
 * `default` without dimensions); an event removed by a purge is a null row (a hole). Written
 * only when some event of the append needs it, so a user without projects or dimensions
 * writes format 1 as before.
 */
export interface EventRecordV3 extends PriceRevField {
  v: 3
  ev: Array<unknown[] | null>
  dx: Array<[string, string | null, string | null, readonly string[] | null] | null>
}

/**
 * What formats 5 and 6 add, per event (DESIGN §7): `cid` the client ids, one string with `\n`
 * between the events' ids (an empty one: none), and,
 * when any event of the record has one, `cs` where an imported cost came from (0 none, 1
 * computed, 2 unpriced; see StoredEvent.costSource), and when any event of the record has cache
 * writes, `cw` their counts (0 none; a record without `cw` reads as 0 for all). `dx` as in format 3, absent when every
 * event is of project `default` without dimensions. Written only when some event of the append
 * carries a client id, an imported cost or a cache write, so appends without them write formats 1–4 as before.
 */
export interface ExtrasV5 {
  dx?: Array<[string, string | null, string | null, readonly string[] | null] | null>
  cid: string
  cs?: Array<0 | 1 | 2>
  cw?: number[]
}

/** Format 5: format 1 (rows, null for a purged event) plus {@link ExtrasV5}. */
export interface EventRecordV5 extends ExtrasV5, PriceRevField {
  v: 5
  ev: Array<unknown[] | null>
}

/** Format 6: format 2 (columns) plus {@link ExtrasV5}. */
export interface EventRecordV6 extends Omit<EventRecordV2, 'v'>, ExtrasV5 {
  v: 6
}

/**
 * Format 7: format 2's columns without `meta`, plus each event's metadata, project, dimensions
 * and client id as a msgpack value of its own, a "part": `[meta, project, user, session, tags,
 * clientId]` without its trailing nulls, or nil when the event has none of them (metadata null,
 * project `default`, no dimensions, no client id).
 * The parts lie back to back in `px`; `po` holds where each ends (Uint32 × n, bytes as in
 * format 2). So one event is read by unpacking its part alone, where a format 4/6 record
 * decodes every event's metadata object and dimension tuple to return one (a search page,
 * an export in time order). `cs` and `cw` as in {@link ExtrasV5}, each absent when no
 * event has one. Written for appends of columns (see EventLog) with any metadata, project,
 * dimension or extra; appends with none of them write format 2.
 */
export interface EventRecordV7 extends Omit<EventRecordV2, 'v' | 'meta' | 'rnd'>, Pick<ExtrasV5, 'cs' | 'cw'> {
  v: 7
  /** The ids' random parts as in format 2, as bytes (ASCII): read as a view, where a string is decoded whole. */
  rnd: Uint8Array
  px: Uint8Array
  po: Uint8Array
  /**
   * Uint8 per event, 1 where a purge removed the event (a hole: its columns zero, its part
   * nil); absent when none was removed. Written by purges only, for records of 64–256 events.
   */
  gone?: Uint8Array
}

/** Format 4: format 2 plus `dx` as in format 3. */
export interface EventRecordV4 extends Omit<EventRecordV2, 'v'> {
  v: 4
  dx: Array<[string, string | null, string | null, readonly string[] | null] | null>
}

/**
 * Format 2: columns. Each column is the bytes of a typed array (platform order,
 * little-endian everywhere Node runs) — bytes, not typed arrays: lmdb-js's msgpack decoding
 * of typed arrays misread them (found by the round-trip test in test/store/event-log.test.ts).
 */
export interface EventRecordV2 extends PriceRevField {
  v: 2
  n: number
  /** Float64 × 5 per event: ts, recv, latency, ttft (NaN = null), cost (NaN = null). */
  num: Uint8Array
  /** Token counts × 5 per event: prompt, completion, total, cached, reasoning; Uint32 when `tok32`, else Float64. */
  tok: Uint8Array
  /** Every token count of the record fits in 32 bits (the usual case: 20 bytes an event instead of 40). */
  tok32: boolean
  /** Uint8 per event: 1 = status error. */
  err: Uint8Array
  /** Uint16 × 2 per event: model, provider, as indexes into `names`. */
  str: Uint8Array
  names: string[]
  /** The 12-character random part of each event id, concatenated (the rest is `evt_<seq base36>_`). */
  rnd: string
  meta: Array<Record<string, unknown> | null>
}

/**
 * Opens (creating if needed) the data dir's LMDB environment and proves it can write there
 * (a synchronous probe put), so an unusable data dir — not a directory, read-only, out of
 * space, past `maxBytes` — stops the start with one clear {@link DataDirError} instead of
 * failing later on the first commit (and, under a supervisor, in a crash loop).
 */
export function openStores(dataDir: string, opts: StoreOptions = {}): Stores {
  const maxBytes = opts.maxBytes ?? 64 * 1024 ** 3
  try {
    mkdirSync(dataDir, { recursive: true })
    if (!statSync(dataDir).isDirectory()) throw new Error('not a directory')
    accessSync(dataDir, constants.W_OK | constants.R_OK)
  } catch (err) {
    throw new DataDirError(`data dir ${dataDir} is not usable: ${reason(err)}`)
  }
  let root: RootDatabase
  try {
    root = open({
      path: `${dataDir}/llmscope.lmdb`,
      // The initial map; lmdb-js grows it as the file grows. The quota is enforced by us (maxBytes).
      mapSize: Math.min(maxBytes, 64 * 1024 ** 3),
      maxDbs: 16
    })
  } catch (err) {
    throw new DataDirError(`data dir ${dataDir}: cannot open the database: ${reason(err)}`)
  }
  const stats = root.getStats() as { pageSize: number; lastPageNumber: number }
  const pageSize = stats.pageSize
  // `getStats()` also walks LMDB's free list, which showed in a single-event ingest profile
  // (the log reads the used size every 5 ms); the highest page in use is in `mdb_env_info`,
  // an order of magnitude cheaper (figures in bench/RESULTS.md, "Micro-benchmark notes"),
  // which lmdb-js's environment exposes as `info()` but does not type. Fall back to
  // `getStats()` if a release ever drops it.
  const env = (root as unknown as { env?: { info?: () => { lastPageNumber?: unknown } } }).env
  const cheap = typeof env?.info === 'function' && typeof env.info().lastPageNumber === 'number'
  const usedBytes = cheap
    ? () => ((env!.info!().lastPageNumber as number) + 1) * pageSize
    : () => ((root.getStats() as { lastPageNumber: number }).lastPageNumber + 1) * pageSize
  const events = root.openDB<EventRecord, number>('events', { sharedStructuresKey: Symbol.for('structures') })
  const meta = root.openDB<Buffer, string>('meta', { encoding: 'binary' })
  const rules = root.openDB<unknown, string>('rules', {})
  const alertEvents = root.openDB<unknown, number>('alert-events', {})
  const apiKeys = root.openDB<unknown, string>('api-keys', {})
  const projects = root.openDB<unknown, string>('projects', {})
  const prices = root.openDB<unknown, string>('prices', {})
  const budgets = root.openDB<unknown, string>('budgets', {})
  const fail = (why: string): never => {
    try {
      root.close()
    } catch {}
    throw new DataDirError(why)
  }
  const used = usedBytes()
  if (used + START_HEADROOM_BYTES > maxBytes) {
    fail(`data dir ${dataDir} is full: the database uses ${used} bytes, LLMSCOPE_MAX_DB_BYTES is ${maxBytes} (raise it, or move the data dir)`)
  }
  try {
    // Proves the disk takes a commit now (read-only file system, no space left, bad permissions).
    meta.putSync('probe', Buffer.alloc(4096))
    meta.removeSync('probe')
  } catch (err) {
    fail(`data dir ${dataDir} is not writable: ${reason(err)}`)
  }
  // After the checks: its sweep timer starts here when earlier entries are waiting to expire.
  // Entries are small arrays of primitives: ordered-binary encodes them in about half
  // msgpack's time (one put per event with an id is on the ingest path).
  const dedupe = new DedupeIndex(
    root.openDB<DedupeEntry, string>('dedupe', { encoding: 'ordered-binary' }),
    root.openDB<DedupeJournalRecord, number>('dedupe-exp', {}),
    opts.dedupe ?? { windowMs: DEFAULT_DEDUPE_WINDOW_MS }
  )
  let closing: Promise<void> | undefined
  return {
    root,
    events,
    meta,
    rules,
    alertEvents,
    apiKeys,
    projects,
    prices,
    budgets,
    dedupe,
    usedBytes,
    maxBytes,
    close() {
      closing ??= (async () => {
        await dedupe.close()
        await root.flushed
        await root.close()
      })()
      return closing
    }
  }
}

function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  return e.code !== undefined && !e.message.includes(e.code) ? `${e.message} (${e.code})` : e.message
}

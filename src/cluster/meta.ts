/**
 * Cluster mode's metadata (DESIGN §9): projects, API keys and rules live in the KV bucket
 * `${name}-meta` (keys `project.<id>`, `apikey.<id>`, `rule.<id>`), alert event records in
 * `${name}-alerts` (key `aev.<seq>`), values JSON. The buckets are the truth; every node mirrors
 * them into its stores' memory (reads stay synchronous Map lookups) and its LMDB (a cache).
 *
 *     store write ──► MetaBacking (KV put / delete / compare-and-set) ──► bucket
 *                                                                          │ watch (every node)
 *     store memory + LMDB cache + onChange listeners ◄── applyRemote ◄──────┘
 *
 * A write through a backing resolves only once this node's watcher has applied it (so the node
 * that answered a 201 lists the record in its next answer), and a create is a compare-and-set
 * against what this node mirrors, so an id is unique cluster-wide (a second create of a
 * project id answers 409 on any node). `attach` loads each bucket whole before it resolves: a
 * node started with an empty data dir knows every project, key, rule and alert event.
 */
import { Kvm, type Bucket, type KV, type KvWatchEntry } from '@nats-io/kv'
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream'
import type { NatsConnection, QueuedIterator } from '@nats-io/nats-core'
import { nanoid } from 'nanoid'
import { llmsError } from '../errors.js'
import type { Log } from '../log.js'
import type { MetaBacking } from '../store/backing.js'
import type { ProjectStore } from '../store/projects.js'
import type { ApiKeyStore } from '../store/api-keys.js'
import type { RuleStore } from '../store/rules.js'
import type { AlertEventStore } from '../store/alert-events.js'

/** Key prefixes in the meta bucket, one per store (`config` and other keys are not ours). */
export const META_PREFIX = { projects: 'project.', apiKeys: 'apikey.', rules: 'rule.' } as const
/** Key prefix of alert event records in the alerts bucket. */
export const ALERT_PREFIX = 'aev.'
/** Barrier records (`caughtUp`), in both buckets: `sync.<random>`, read by no store. */
const SYNC_PREFIX = 'sync.'

/** How long a write waits to be applied here, and a load to complete, before answering 503. */
const APPLY_TIMEOUT_MS = 10_000
const LOAD_TIMEOUT_MS = 60_000

export interface ClusterMetaOptions {
  nc: NatsConnection
  metaBucket: string
  alertsBucket: string
  log: Log
  /** A write not applied here within this answers 503 (default 10 s). */
  applyTimeoutMs?: number
  /** A bucket not loaded within this fails `attach` (default 60 s). */
  loadTimeoutMs?: number
}

export interface MetaStores {
  projects: ProjectStore
  apiKeys: ApiKeyStore
  rules: RuleStore
  alertEvents: AlertEventStore
  /**
   * Further stores of the meta bucket, each under its own key prefix (issue 14: `price.` for the
   * price book, cluster/price-log.ts; `budget.` for budgets): the same backing contract as the
   * stores above.
   */
  more?: ReadonlyArray<{ prefix: string; store: MirroredStore }>
}

/** What a store mirrored from the meta bucket implements (as RuleStore does). */
export interface MirroredStore {
  attachBacking(backing: MetaBacking, log: Log): void
  /** One change (undefined: removed), by the key without its prefix. */
  applyRemote(id: string, value: unknown): void
  /** The bucket's records at start, by the key without its prefix. */
  loadRemote(records: Map<string, unknown>): unknown
}

export class ClusterMeta {
  readonly #opts: ClusterMetaOptions
  #meta: BucketMirror | null = null
  #alerts: BucketMirror | null = null
  #stopped = false

  constructor(opts: ClusterMetaOptions) {
    this.#opts = opts
  }

  /**
   * Switches the stores to KV and loads every record; resolves when the local stores mirror the
   * buckets (listeners have heard every difference from what the data dir held). Writes `default`
   * to the bucket when no node has yet. Call before the node serves, and before
   * `projects.ensure(configured)`.
   * @throws when a bucket does not exist or cannot be loaded in time (this ClusterMeta is then stopped).
   */
  async attach(stores: MetaStores): Promise<void> {
    if (this.#meta !== null || this.#stopped) throw new Error('ClusterMeta.attach: attached or stopped already')
    try {
      await this.#attach(stores)
    } catch (err) {
      await this.stop()
      throw err
    }
  }

  async #attach(stores: MetaStores): Promise<void> {
    const { nc, log } = this.#opts
    const applyMs = this.#opts.applyTimeoutMs ?? APPLY_TIMEOUT_MS
    const loadMs = this.#opts.loadTimeoutMs ?? LOAD_TIMEOUT_MS
    const kvm = new Kvm(nc)
    const [metaKv, alertsKv] = await Promise.all([kvm.open(this.#opts.metaBucket), kvm.open(this.#opts.alertsBucket)])
    // Binding does not look: a missing bucket must fail here, before any store leaves its data dir.
    await Promise.all([metaKv.status(), alertsKv.status()])

    const more = stores.more ?? []
    const meta = new BucketMirror(metaKv, this.#opts.metaBucket, log, applyMs, (key, value) => {
      for (const [store, prefix] of [[stores.projects, META_PREFIX.projects], [stores.apiKeys, META_PREFIX.apiKeys], [stores.rules, META_PREFIX.rules]] as const) {
        if (key.startsWith(prefix)) return store.applyRemote(key.slice(prefix.length), value)
      }
      for (const m of more) if (key.startsWith(m.prefix)) return m.store.applyRemote(key.slice(m.prefix.length), value)
    })
    const alerts = new BucketMirror(alertsKv, this.#opts.alertsBucket, log, applyMs, (key, value) => {
      if (key.startsWith(ALERT_PREFIX)) stores.alertEvents.applyRemote(key.slice(ALERT_PREFIX.length), value)
    })
    this.#meta = meta
    this.#alerts = alerts
    const projects = meta.backing(META_PREFIX.projects)
    stores.projects.attachBacking(projects, log)
    stores.apiKeys.attachBacking(meta.backing(META_PREFIX.apiKeys), log)
    stores.rules.attachBacking(meta.backing(META_PREFIX.rules), log)
    stores.alertEvents.attachBacking(alerts.backing(ALERT_PREFIX))
    for (const m of more) m.store.attachBacking(meta.backing(m.prefix), log)

    const [metaRecords, alertRecords] = await Promise.all([meta.start(loadMs), alerts.start(loadMs)])
    const missing = stores.projects.loadRemote(sub(metaRecords, META_PREFIX.projects))
    stores.apiKeys.loadRemote(sub(metaRecords, META_PREFIX.apiKeys))
    stores.rules.loadRemote(sub(metaRecords, META_PREFIX.rules))
    stores.alertEvents.loadRemote(sub(alertRecords, ALERT_PREFIX))
    for (const m of more) m.store.loadRemote(sub(metaRecords, m.prefix))
    meta.loaded()
    alerts.loaded()
    // false: another node wrote it first, and this node now mirrors that one.
    for (const [id, value] of missing) await projects.create(id, value)
    log.info({ projects: stores.projects.size, keys: stores.apiKeys.size, rules: stores.rules.size, alertEvents: stores.alertEvents.size }, 'cluster metadata loaded')
  }

  /**
   * Resolves once this node mirrors every change both buckets held when it was called. The node
   * that takes the alerts lease calls it before recording, so its sequence numbers continue after
   * every record the previous holder made.
   */
  async caughtUp(): Promise<void> {
    if (this.#meta === null || this.#alerts === null) throw new Error('ClusterMeta.caughtUp: not attached')
    await Promise.all([this.#meta.caughtUp(), this.#alerts.caughtUp()])
  }

  /**
   * Removes the delete markers older than `olderMs` from both buckets (each revoked key, deleted
   * rule and pruned alert event leaves one, which every node would otherwise read at every start).
   * A node that starts later simply finds those keys absent, which means the same. Answers how many
   * markers went. Whoever holds the alerts lease may call it now and then (e.g. hourly).
   */
  async compact(olderMs = 30 * 60_000): Promise<number> {
    if (this.#meta === null || this.#alerts === null) throw new Error('ClusterMeta.compact: not attached')
    const [m, a] = await Promise.all([this.#meta.purgeDeletes(olderMs), this.#alerts.purgeDeletes(olderMs)])
    return m + a
  }

  /** Stops watching (writes through the stores fail from now on); the connection stays open. Safe twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    await Promise.all([this.#meta?.stop(), this.#alerts?.stop()])
  }
}

/** The records under `prefix`, by the rest of their key. */
function sub(records: ReadonlyMap<string, unknown>, prefix: string): Map<string, unknown> {
  const out = new Map<string, unknown>()
  for (const [k, v] of records) if (k.startsWith(prefix)) out.set(k.slice(prefix.length), v)
  return out
}

interface Waiter {
  done: () => boolean
  resolve: () => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * One bucket watched from its start: every entry is applied in stream order, and `applied` is the
 * revision (stream sequence) of the newest. Until `loaded()`, entries are gathered for the stores'
 * `loadRemote` instead of applied one by one.
 */
class BucketMirror {
  readonly #kv: KV
  readonly #name: string
  /** Names this process's barrier record. */
  readonly #token = nanoid(12)
  readonly #log: Log
  readonly #applyMs: number
  readonly #apply: (key: string, value: unknown) => void
  /** Newest revision of each key holding a value (removed keys leave, so pruned alert events do not pile up here). */
  readonly #revs = new Map<string, number>()
  /** The entry applied last: what a waiting `remove` looks for (its marker answers no revision). */
  #last: { key: string; rev: number; live: boolean } | null = null
  #applied = 0
  #initial: Map<string, unknown> | null = new Map()
  #waiters: Waiter[] = []
  #iter: QueuedIterator<KvWatchEntry> | null = null
  #ended: Error | null = null
  #loop: Promise<void> | null = null

  constructor(kv: KV, name: string, log: Log, applyMs: number, apply: (key: string, value: unknown) => void) {
    this.#kv = kv
    this.#name = name
    this.#log = log
    this.#applyMs = applyMs
    this.#apply = apply
  }

  /** Watches the bucket; resolves with every record it held (`undefined`: a delete marker) once read. */
  async start(loadMs: number): Promise<Map<string, unknown>> {
    this.#iter = await this.#kv.watch()
    this.#loop = this.#run(this.#iter)
    await this.caughtUp(loadMs)
    return this.#initial!
  }

  /** From now on entries go to the stores one by one. */
  loaded(): void {
    this.#initial = null
  }

  /**
   * Resolves once every change the bucket held when called is applied (or gathered): a barrier
   * record written now, and seen come back. (The stream's last sequence is no such mark: it may be
   * a delete marker since purged, never delivered.) The barrier is removed after, leaving a delete
   * marker for `compact`.
   */
  async caughtUp(timeoutMs = this.#applyMs): Promise<void> {
    const key = `${SYNC_PREFIX}${this.#token}`
    const rev = await this.#write(() => this.#kv.put(key, String(Date.now())))
    await this.#until(() => this.#applied >= rev, timeoutMs)
    await this.#kv.delete(key).catch((err: unknown) => this.#log.warn({ err, bucket: this.#name }, 'cluster metadata barrier not removed'))
  }

  /** The store-facing writes of this bucket, for the records under `prefix`. */
  backing(prefix: string): MetaBacking {
    return {
      put: async (id, value) => {
        const rev = await this.#write(() => this.#kv.put(prefix + id, JSON.stringify(value)))
        await this.#until(() => this.#applied >= rev)
      },
      remove: async (id) => {
        const key = prefix + id
        const before = this.#applied
        // A delete answers no revision: wait for a marker of this key applied after the call (or a
        // newer value), the waiter set before the write so the marker cannot pass unseen.
        const applied = this.#until(() => (this.#last !== null && this.#last.key === key && this.#last.rev > before) || (this.#revs.get(key) ?? 0) > before)
        applied.catch(() => {})
        await this.#write(() => this.#kv.delete(key))
        await applied
      },
      create: async (id, value) => {
        const key = prefix + id
        const seen = this.#revs.get(key)
        const data = JSON.stringify(value)
        let rev: number
        try {
          rev = seen !== undefined ? await this.#kv.update(key, data, seen) : await this.#kv.create(key, data)
        } catch (err) {
          if (!(err instanceof JetStreamApiError) || (err.code !== JetStreamApiCodes.StreamWrongLastSequence && err.code !== JetStreamApiCodes.StreamWrongLastSequenceUnknown)) {
            throw unavailable(`cannot write ${key}`, err)
          }
          // Another write came first: mirror it before answering, so the caller's next read sees it.
          const current = await this.#write(() => this.#kv.get(key))
          if (current !== null) await this.#until(() => this.#applied >= current.revision)
          return false
        }
        await this.#until(() => this.#applied >= rev)
        return true
      }
    }
  }

  async purgeDeletes(olderMs: number): Promise<number> {
    const r = await this.#write(() => (this.#kv as Bucket).purgeDeletes(olderMs))
    return r.purged
  }

  async stop(): Promise<void> {
    this.#iter?.stop()
    this.#fail(new Error('cluster metadata stopped'))
    await this.#loop
  }

  async #write<T>(op: () => Promise<T>): Promise<T> {
    if (this.#ended !== null) throw unavailable('cluster metadata is not being watched', this.#ended)
    try {
      return await op()
    } catch (err) {
      throw unavailable('cannot write cluster metadata', err)
    }
  }

  async #run(iter: QueuedIterator<KvWatchEntry>): Promise<void> {
    try {
      for await (const e of iter) this.#onEntry(e)
      this.#fail(new Error('the watch of cluster metadata ended'))
    } catch (err) {
      this.#log.error({ err }, 'the watch of cluster metadata failed')
      this.#fail(err instanceof Error ? err : new Error(String(err)))
    }
  }

  #onEntry(e: KvWatchEntry): void {
    const live = e.operation === 'PUT'
    // undefined: a delete marker (DEL or PURGE).
    let value: unknown
    let readable = true
    if (live) {
      try {
        value = e.json()
      } catch (err) {
        readable = false
        this.#log.warn({ err, key: e.key, revision: e.revision }, 'cluster metadata record is not JSON: ignored')
      }
    }
    if (live) this.#revs.set(e.key, e.revision)
    else this.#revs.delete(e.key)
    this.#last = { key: e.key, rev: e.revision, live }
    if (!readable) {
      // Nothing to apply; its revision still counts as seen.
    } else if (this.#initial !== null) this.#initial.set(e.key, value)
    else {
      try {
        this.#apply(e.key, value)
      } catch (err) {
        // One bad record must not stop the mirror.
        this.#log.error({ err, key: e.key }, 'cluster metadata change could not be applied')
      }
    }
    this.#applied = Math.max(this.#applied, e.revision)
    if (this.#waiters.length > 0) {
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.done()) return true
        clearTimeout(w.timer)
        w.resolve()
        return false
      })
    }
  }

  #until(done: () => boolean, timeoutMs = this.#applyMs): Promise<void> {
    if (done()) return Promise.resolve()
    if (this.#ended !== null) return Promise.reject(unavailable('cluster metadata is not being watched', this.#ended))
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        done,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters = this.#waiters.filter((x) => x !== w)
          reject(llmsError('LLMS_ERR_UNAVAILABLE', `cluster metadata: a change was not applied on this node within ${timeoutMs} ms; retry`, { retryAfter: 1 }))
        }, timeoutMs).unref()
      }
      this.#waiters.push(w)
    })
  }

  #fail(err: Error): void {
    this.#ended ??= err
    for (const w of this.#waiters) {
      clearTimeout(w.timer)
      w.reject(unavailable('cluster metadata is not being watched', err))
    }
    this.#waiters = []
  }
}

function unavailable(what: string, cause: unknown) {
  return llmsError('LLMS_ERR_UNAVAILABLE', `${what}: ${(cause as Error)?.message ?? String(cause)}`, { retryAfter: 1 })
}

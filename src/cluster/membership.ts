/**
 * Node membership and partition ownership by KV leases (DESIGN §9, CLUSTER.md).
 *
 * Everything lives in the cluster bucket (`names.clusterBucket`, history 1, TTL = the lease):
 *
 *   node.<id>      heartbeat, put every lease/3          ── a node is live while its key exists
 *   lease.p<N>     holder of partition N                 ── taken with `create` (fails if held),
 *   lease.alerts   holder of the alert evaluator            renewed with `update(rev)` (CAS)
 *                                                           every lease/3, deleted with its rev
 *
 * Values are JSON `{node, at}` (`at`: wall-clock ms of the write, for humans and for recognising
 * our own write after a lost acknowledgement). Nobody renewing → the bucket's max age expires the
 * key, so a killed node's leases free themselves after one lease time.
 *
 * Safety: a node serves a partition only while it holds the lease by its own clock: a lease not
 * renewed for (lease − one guard period) since the renewal that last succeeded was *sent* is lost
 * (`release(p, 'lost')`). The server's expiry counts from when it *received* that write, later.
 * The guard looks every quarter of its period, so the loss lands at most a quarter period past its
 * deadline (plus event-loop lateness), leaving most of a guard period before the server's expiry.
 * The taking side keeps a guard period too: a key found *expired* (not deleted) is taken only a
 * guard period after it was found so, for a holder whose timers run late under load.
 * A renewal refused by CAS (someone else wrote the key) is lost at once, so is a watch event
 * showing another holder. A process frozen for longer than a lease can still wake up believing
 * it serves (no fencing tokens): the guard catches it on its next run.
 *
 * Assignment: rendezvous (HRW) ranking with bounded loads over the live nodes gives each
 * partition a desired owner; every node computes the same map from the same live set, loads
 * differ by one at most, and a node joining or leaving moves few partitions. A node
 *   - takes a free partition desired for it at once,
 *   - takes any partition free for longer than one lease (its desired owner is not coming),
 *   - hands a partition desired for another live node over (release 'rebalance', then delete
 *     the lease), a few at a time: the next only once the previous ones have a new holder.
 * Views of the live set can differ for a moment (a heartbeat seen here before there); nothing
 * moves unless the mover's own view says so, and the desired map is stable for a stable set.
 *
 * The watch (`kv.watch`) reacts at once to writes and deletes. NATS 2.9 does not tell watchers
 * when max age expires a key, so a periodic pass (every lease/3) `get`s each key whose holder
 * has not written for half a lease: null means it expired.
 */
import type { NatsConnection } from '@nats-io/transport-node'
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream'
import { Kvm, type KV, type KvEntry } from '@nats-io/kv'
import type { Log } from '../log.js'

export interface MembershipOptions {
  nc: NatsConnection
  /** The cluster bucket (`names.clusterBucket`): history 1, TTL = leaseMs; made by connectCluster. */
  bucket: string
  nodeId: string
  partitions: number
  /** Lease time, ms; renewals and passes run every third of it. */
  leaseMs: number
  log: Log
  /**
   * Called after the lease of p was obtained; the node serves p once it resolves (load snapshot,
   * replay). If it throws, the lease is deleted (release is not called: p was never served) and
   * this node does not try p again for one lease time.
   */
  acquire(p: number): Promise<void>
  /**
   * Called when the node stops serving p: before the lease is deleted for 'rebalance' and 'stop'
   * (so a snapshot can be written; the lease is renewed meanwhile), after losing it for 'lost'.
   * A throw is logged; the lease is deleted all the same.
   */
  release(p: number, reason: 'rebalance' | 'lost' | 'stop'): Promise<void>
  /** Test hook: a clock for lease bookkeeping, ms (default performance.now). */
  clock?: () => number
  /** Partitions handed over at once (released, not yet taken by their new owner); default 2. */
  maxHandovers?: number
  /** A Kvm to open the bucket with (default `new Kvm(nc)`). */
  kvm?: Kvm
}

export interface MembershipStats {
  node: string
  partitions: number
  owned: number[]
  /** Partitions whose lease has no holder, or a holder whose heartbeat is gone. */
  unowned: number[]
  nodes: string[]
  alerts: boolean
  /** Lease renewals that succeeded. */
  renewals: number
  /** Leases lost (not renewed in time, or taken by another node). */
  lost: number
}

/** `lease.alerts` or a partition number. */
type LeaseId = number | 'alerts'

/** What this node knows of one key of the bucket. */
interface Seen {
  /** Holder (the value's `node`), null when deleted or expired. */
  node: string | null
  /** Newest revision seen; older watch events are ignored. */
  rev: number
  /** Local clock when the key was last written (as far as we know). */
  seenAt: number
}

/** A lease this node holds. */
interface Held {
  id: LeaseId
  key: string
  rev: number
  /** Local clock when the write that gave `rev` was sent. */
  renewedAt: number
  state: 'acquiring' | 'serving' | 'releasing' | 'lost'
  /** The renewal in flight, if any. */
  renewing: Promise<void> | null
  /** Renewals whose outcome is unknown (timed out since the last success): their value's `at` and send time. */
  unsure: { at: number; sentAt: number }[]
}

const leaseKey = (id: LeaseId) => (id === 'alerts' ? 'lease.alerts' : `lease.p${id}`)
const nodeKey = (id: string) => `node.${id}`

const isWrongSeq = (err: unknown): boolean =>
  err instanceof JetStreamApiError &&
  (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)

const errText = (err: unknown) => (err instanceof Error ? err.message : String(err))

/** 32-bit mix (murmur3 fmix32) of FNV-1a over `node`, then the partition: the HRW weight of (node, p). */
export function hrwScore(node: string, p: number): number {
  let h = 0x811c9dc5
  for (let i = 0; i < node.length; i++) {
    h ^= node.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= 0xff
  h = Math.imul(h, 0x01000193)
  for (let s = 0; s < 32; s += 8) {
    h ^= (p >>> s) & 0xff
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/**
 * The desired owner of every partition: rendezvous hashing with bounded loads. All (partition,
 * node) pairs in order of HRW weight, each partition given to the first node of its pairs that
 * still has room; room is floor(P/N) each, plus one for the first P mod N nodes to need it. So
 * loads differ by one at most, and the same live set gives the same map on every node.
 * Empty `nodes` → every entry null.
 */
export function assignPartitions(nodes: readonly string[], partitions: number): (string | null)[] {
  const out: (string | null)[] = new Array(partitions).fill(null)
  const sorted = [...new Set(nodes)].sort()
  if (sorted.length === 0) return out
  const pairs: { p: number; n: number; w: number }[] = []
  for (let p = 0; p < partitions; p++) {
    for (let n = 0; n < sorted.length; n++) pairs.push({ p, n, w: hrwScore(sorted[n]!, p) })
  }
  pairs.sort((a, b) => b.w - a.w || a.n - b.n || a.p - b.p)
  const base = Math.floor(partitions / sorted.length)
  let extra = partitions % sorted.length
  const load = new Array<number>(sorted.length).fill(0)
  for (const { p, n } of pairs) {
    if (out[p] !== null) continue
    if (load[n]! < base) {
      load[n]!++
      out[p] = sorted[n]!
    } else if (load[n] === base && extra > 0) {
      extra--
      load[n]!++
      out[p] = sorted[n]!
    }
  }
  return out
}

/** This node's membership: heartbeat, partition leases, the alerts lease. */
export class Membership {
  readonly #o: MembershipOptions
  readonly #clock: () => number
  readonly #maxHandovers: number
  #kv: KV | null = null
  /** Effective lease time: min(leaseMs, the bucket's TTL). */
  #ttl: number
  #guardMs: number

  #phase: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' | 'crashed' = 'new'
  #stopped: Promise<void> | null = null
  #starting: Promise<void> | null = null
  #timers: NodeJS.Timeout[] = []
  #watch: { stop(): void } | null = null
  #watchEpoch = 0

  readonly #view = new Map<string, Seen>()
  readonly #held = new Map<LeaseId, Held>()
  readonly #owned = new Set<number>()
  /** Local clock when each partition was first seen free (absent: held by someone). */
  readonly #freeSince = new Map<number, number>()
  /** Leases found expired (not deleted) by a get → when; not taken for a guard period after. */
  readonly #expiredAt = new Map<LeaseId, number>()
  /** Creates in flight. */
  readonly #attempting = new Set<LeaseId>()
  /** Partitions whose acquire threw: not tried again before this clock time. */
  readonly #backoff = new Map<number, number>()
  /** Partitions this node handed over, and when (they count as in flight until taken). */
  readonly #handedOver = new Map<number, number>()
  /** Acquire/release work in flight (stop waits for it). */
  readonly #work = new Set<Promise<void>>()
  readonly #listeners = new Set<() => void>()

  #passQueued = false
  #passRunning = false
  #passAgain = false
  #renewals = 0
  #lost = 0
  #desiredCache: { key: string; map: (string | null)[] } | null = null

  constructor(opts: MembershipOptions) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(opts.nodeId)) throw new Error(`nodeId must be 1 to 64 letters, digits, _ or - (got ${JSON.stringify(opts.nodeId)})`)
    if (!Number.isInteger(opts.partitions) || opts.partitions < 1) throw new Error(`partitions must be a positive integer (got ${opts.partitions})`)
    if (!Number.isFinite(opts.leaseMs) || opts.leaseMs < 300) throw new Error(`leaseMs must be at least 300 (got ${opts.leaseMs})`)
    this.#o = opts
    this.#clock = opts.clock ?? (() => performance.now())
    this.#maxHandovers = Math.max(1, opts.maxHandovers ?? 2)
    this.#ttl = opts.leaseMs
    this.#guardMs = guardPeriod(opts.leaseMs)
  }

  get nodeId(): string {
    return this.#o.nodeId
  }

  /** Opens the bucket, writes the heartbeat, loads the bucket's state and starts taking partitions. */
  async start(): Promise<void> {
    if (this.#phase !== 'new') throw new Error(`Membership.start: already ${this.#phase}`)
    this.#phase = 'starting'
    this.#starting = this.#start()
    try {
      await this.#starting
    } catch (err) {
      if (this.#phase === 'starting') {
        this.#phase = 'stopped'
        for (const t of this.#timers) clearInterval(t)
        this.#timers = []
        this.#watch?.stop()
        this.#watch = null
      }
      throw err
    }
  }

  async #start(): Promise<void> {
    const { bucket, log, nodeId } = this.#o
    const kvm = this.#o.kvm ?? new Kvm(this.#o.nc)
    const kv = await kvm.open(bucket)
    let ttl: number
    try {
      ttl = (await kv.status()).ttl
    } catch (err) {
      throw new Error(`cluster bucket ${bucket} is not readable (connectCluster makes it): ${errText(err)}`)
    }
    if (!(ttl > 0)) {
      throw new Error(`cluster bucket ${bucket} has no TTL: leases of a dead node would never expire`)
    }
    if (ttl !== this.#o.leaseMs) {
      // A bucket TTL shorter than our lease would expire our leases before we count them lost.
      log.warn({ bucket, bucketTtlMs: ttl, leaseMs: this.#o.leaseMs }, 'cluster: the lease bucket was made with another lease time; using the shorter')
    }
    this.#ttl = Math.min(ttl, this.#o.leaseMs)
    this.#guardMs = guardPeriod(this.#ttl)
    this.#kv = kv
    // The heartbeat first: the watch's initial set then holds at least one key, and its last
    // initial entry (isUpdate true) says the whole bucket was read.
    await kv.put(nodeKey(nodeId), this.#value())
    const { loaded } = await this.#startWatch()
    const waited = await Promise.race([loaded.then(() => true), new Promise<boolean>((r) => this.#timer(setTimeout(() => r(false), this.#ttl)))])
    if (!waited) log.warn({ bucket }, 'cluster: the lease bucket did not load within a lease time; going on with what was seen')
    if (this.#phase !== 'starting') return
    const now = this.#clock()
    for (let p = 0; p < this.#o.partitions; p++) {
      if ((this.#view.get(leaseKey(p))?.node ?? null) === null) this.#freeSince.set(p, now)
    }
    this.#phase = 'running'
    const every = Math.max(50, Math.floor(this.#ttl / 3))
    this.#timer(setInterval(() => this.#tick(), every))
    this.#timer(setInterval(() => this.#guard(), Math.max(10, Math.floor(this.#guardMs / 4))))
    log.info({ node: nodeId, partitions: this.#o.partitions, leaseMs: this.#ttl }, 'cluster: membership started')
    this.#emit()
    this.#schedule()
  }

  /**
   * Releases every lease at once (release(p, 'stop') then delete with its revision), then the
   * heartbeat. Partitions being acquired are released once acquired. Safe twice.
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop()
    return this.#stopped
  }

  async #stop(): Promise<void> {
    if (this.#phase === 'new' || this.#phase === 'crashed' || this.#phase === 'stopped') {
      if (this.#phase === 'new') this.#phase = 'stopped'
      return
    }
    this.#phase = 'stopping'
    const { log, nodeId } = this.#o
    // Stopped while starting: let start settle (it sees 'stopping' and takes nothing).
    await this.#starting?.catch(() => {})
    if (this.#kv === null) {
      this.#phase = 'stopped'
      return
    }
    // Acquires and handovers in flight finish first (their leases keep being renewed).
    while (this.#work.size > 0) await Promise.allSettled([...this.#work])
    await Promise.allSettled(
      [...this.#held.values()].map(async (h) => {
        if (h.state === 'lost') return
        if (h.id !== 'alerts' && h.state === 'serving') {
          h.state = 'releasing'
          this.#owned.delete(h.id)
          this.#emit()
          await this.#callRelease(h.id, 'stop')
        }
        h.state = 'releasing'
        await this.#deleteLease(h)
        this.#held.delete(h.id)
      })
    )
    for (const t of this.#timers) clearInterval(t)
    this.#timers = []
    this.#watch?.stop()
    this.#watch = null
    try {
      await this.#kv!.delete(nodeKey(nodeId))
    } catch (err) {
      log.warn({ err: errText(err) }, 'cluster: could not delete the heartbeat; it expires after one lease')
    }
    this.#phase = 'stopped'
    log.info({ node: nodeId }, 'cluster: membership stopped, leases released')
    this.#emit()
  }

  /** Test hook: stops renewing and watching without releasing anything (what kill -9 leaves). */
  crash(): void {
    if (this.#phase === 'stopped' || this.#phase === 'crashed') return
    this.#phase = 'crashed'
    for (const t of this.#timers) clearInterval(t)
    this.#timers = []
    this.#watch?.stop()
    this.#watch = null
  }

  /** Partitions this node serves (acquire resolved, not released). */
  owned(): ReadonlySet<number> {
    return new Set(this.#owned)
  }

  /** Every partition's lease holder as seen in the bucket (null: none). */
  owners(): ReadonlyMap<number, string | null> {
    const out = new Map<number, string | null>()
    for (let p = 0; p < this.#o.partitions; p++) out.set(p, this.#view.get(leaseKey(p))?.node ?? null)
    return out
  }

  /** Live nodes (a heartbeat key exists), this one included while it runs; sorted. */
  nodes(): string[] {
    const out = new Set<string>()
    for (const [key, s] of this.#view) {
      if (s.node !== null && key.startsWith('node.')) out.add(key.slice(5))
    }
    if (this.#phase === 'running' || this.#phase === 'starting' || this.#phase === 'stopping') out.add(this.#o.nodeId)
    else out.delete(this.#o.nodeId)
    return [...out].sort()
  }

  /** Whether this node holds `lease.alerts` now (renewed within the lease by its own clock). */
  holdsAlerts(): boolean {
    if (this.#phase !== 'running') return false
    const h = this.#held.get('alerts')
    return h !== undefined && h.state === 'serving' && this.#clock() - h.renewedAt < this.#ttl - this.#guardMs
  }

  /** Calls `fn` after any change of owned partitions, lease holders, live nodes or the alerts lease. */
  onChange(fn: () => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  stats(): MembershipStats {
    const nodes = this.nodes()
    const live = new Set(nodes)
    const unowned: number[] = []
    for (const [p, node] of this.owners()) if (node === null || !live.has(node)) unowned.push(p)
    return {
      node: this.#o.nodeId,
      partitions: this.#o.partitions,
      owned: [...this.#owned].sort((a, b) => a - b),
      unowned,
      nodes,
      alerts: this.holdsAlerts(),
      renewals: this.#renewals,
      lost: this.#lost
    }
  }

  // ── the bucket's view ─────────────────────────────────────────────────────────────────────

  #value(at = Date.now()): string {
    return JSON.stringify({ node: this.#o.nodeId, at })
  }

  /** Opens the watch; `loaded` resolves once its initial set (every key's last value) was applied. */
  async #startWatch(): Promise<{ loaded: Promise<void> }> {
    const epoch = ++this.#watchEpoch
    const iter = await this.#kv!.watch({ key: '>' })
    if (this.#phase !== 'starting' && this.#phase !== 'running') {
      iter.stop()
      return { loaded: Promise.resolve() }
    }
    this.#watch = iter
    let loadedResolve!: () => void
    const loaded = new Promise<void>((r) => (loadedResolve = r))
    void (async () => {
      try {
        for await (const e of iter) {
          this.#apply(e)
          if (e.isUpdate) loadedResolve()
        }
      } catch (err) {
        this.#o.log.warn({ err: errText(err) }, 'cluster: lease watch failed')
      }
      // Ended without stop(): the next tick opens a new one.
      if (this.#watchEpoch === epoch && this.#watch === iter) this.#watch = null
    })()
    return { loaded }
  }

  /** Applies an entry (watch or get) newer than what we know. */
  #apply(e: KvEntry): void {
    if (this.#phase === 'crashed' || this.#phase === 'stopped') return
    const old = this.#view.get(e.key)
    if (old !== undefined && e.revision <= old.rev) return
    let node: string | null = null
    if (e.operation === 'PUT') {
      if (e.key.startsWith('node.')) node = e.key.slice(5)
      else {
        try {
          const v = e.json<{ node?: unknown }>()
          node = typeof v.node === 'string' ? v.node : null
        } catch {
          node = null
        }
      }
    }
    this.#setSeen(e.key, node, e.revision)
  }

  #setSeen(key: string, node: string | null, rev: number): void {
    const old = this.#view.get(key)
    this.#view.set(key, { node, rev, seenAt: this.#clock() })
    const changed = (old?.node ?? null) !== node
    if (key.startsWith('lease.')) {
      const id: LeaseId = key === 'lease.alerts' ? 'alerts' : Number(key.slice(7))
      if (typeof id === 'number') {
        if (node === null) {
          if (!this.#freeSince.has(id)) this.#freeSince.set(id, this.#clock())
        } else {
          this.#freeSince.delete(id)
          this.#handedOver.delete(id)
        }
      }
      if (node !== null) this.#expiredAt.delete(id)
      // Someone else wrote a lease we hold (after it expired on the server): lost, now.
      const h = this.#held.get(id)
      if (h !== undefined && rev > h.rev && node !== this.#o.nodeId && h.state !== 'releasing') {
        this.#lose(h, node === null ? 'the lease was deleted' : `node ${node} holds it`)
      }
    }
    if (changed) {
      this.#emit()
      this.#schedule()
    }
  }

  /** Others' live keys not written for `ms` (our own are known without looking). */
  #stale(ms: number): string[] {
    const now = this.#clock()
    const out: string[] = []
    for (const [key, s] of this.#view) {
      if (s.node === null || now - s.seenAt < ms) continue
      if (key === nodeKey(this.#o.nodeId)) continue
      const id: LeaseId | null = key === 'lease.alerts' ? 'alerts' : key.startsWith('lease.p') ? Number(key.slice(7)) : null
      if (id !== null && this.#held.has(id)) continue
      out.push(key)
    }
    return out
  }

  /** Keys whose holder has not written for half a lease: get them (NATS 2.9 expiries are silent). */
  async #refreshStale(): Promise<void> {
    const stale = this.#stale(this.#ttl / 2)
    await Promise.all(
      stale.map(async (key) => {
        try {
          const e = await this.#kv!.get(key)
          if (e === null) {
            const s = this.#view.get(key)
            if (s !== undefined && s.node !== null) {
              this.#o.log.info({ node: this.#o.nodeId, key, holder: s.node, unwrittenMs: Math.round(this.#clock() - s.seenAt) }, 'cluster: found a key expired')
              if (key.startsWith('lease.')) this.#expiredAt.set(key === 'lease.alerts' ? 'alerts' : Number(key.slice(7)), this.#clock())
              this.#setSeen(key, null, s.rev)
            }
          } else this.#apply(e)
        } catch (err) {
          this.#o.log.debug({ key, err: errText(err) }, 'cluster: lease get failed')
        }
      })
    )
  }

  // ── the passes ────────────────────────────────────────────────────────────────────────────

  /** A fresh read of the phase (TypeScript narrows `this.#phase` across awaits). */
  #crashed(): boolean {
    return this.#phase === 'crashed'
  }

  #timer(t: NodeJS.Timeout): NodeJS.Timeout {
    t.unref()
    this.#timers.push(t)
    return t
  }

  #emit(): void {
    for (const fn of this.#listeners) {
      try {
        fn()
      } catch (err) {
        this.#o.log.error({ err: errText(err) }, 'cluster: membership listener threw')
      }
    }
  }

  /** Every lease/3: heartbeat, renewals, a pass (and a new watch if the old one ended). */
  #tick(): void {
    if (this.#phase !== 'running' && this.#phase !== 'stopping') return
    const kv = this.#kv!
    kv.put(nodeKey(this.#o.nodeId), this.#value()).catch((err: unknown) => this.#o.log.warn({ err: errText(err) }, 'cluster: heartbeat failed'))
    for (const h of this.#held.values()) {
      if (h.state !== 'lost' && h.renewing === null) h.renewing = this.#renew(h).finally(() => (h.renewing = null))
    }
    if (this.#phase === 'running') {
      if (this.#watch === null) {
        this.#startWatch().catch((err: unknown) => this.#o.log.warn({ err: errText(err) }, 'cluster: could not restart the lease watch'))
      }
      this.#schedule()
    }
  }

  async #renew(h: Held): Promise<void> {
    const sentAt = this.#clock()
    const at = Date.now()
    try {
      const rev = await this.#kv!.update(h.key, this.#value(at), h.rev, Math.max(100, Math.floor(this.#ttl / 3)))
      if (this.#phase === 'crashed' || h.state === 'lost') return
      h.rev = rev
      h.renewedAt = sentAt
      h.unsure = []
      this.#renewals++
    } catch (err) {
      if (this.#phase === 'crashed' || h.state === 'lost') return
      if (!isWrongSeq(err)) {
        // Timeout or disconnect: it may have been written. Try again next tick; the guard decides.
        if (h.unsure.length < 16) h.unsure.push({ at, sentAt })
        this.#o.log.debug({ key: h.key, err: errText(err) }, 'cluster: lease renewal failed')
        return
      }
      // Refused by CAS: our own earlier write whose answer was lost, or someone else's.
      try {
        const e = await this.#kv!.get(h.key)
        if (e !== null && e.operation === 'PUT' && h.unsure.length > 0) {
          const v = e.json<{ node?: unknown; at?: unknown }>()
          const mine = v.node === this.#o.nodeId ? h.unsure.find((u) => u.at === v.at) : undefined
          if (mine !== undefined && (h.state as Held['state']) !== 'lost') {
            h.rev = e.revision
            h.renewedAt = mine.sentAt
            h.unsure = []
            return
          }
        }
      } catch {}
      this.#lose(h, 'the renewal was refused')
    }
  }

  /** Leases not renewed within (lease − guard period) since their last renewal was sent are lost. */
  #guard(): void {
    if (this.#phase !== 'running' && this.#phase !== 'stopping') return
    const now = this.#clock()
    for (const h of this.#held.values()) {
      if (h.state !== 'lost' && now - h.renewedAt >= this.#ttl - this.#guardMs) this.#lose(h, 'not renewed within the lease')
    }
    // A key unwritten for a whole lease has expired by now (silently on NATS 2.9): look at once
    // rather than at the next tick, so a dead node's partitions move a lease after its last write.
    if (this.#phase === 'running' && this.#stale(this.#ttl).length > 0) this.#schedule()
    // An expired lease whose grace has run out: a pass takes it now.
    if (this.#phase === 'running') {
      for (const [id, at] of this.#expiredAt) {
        if (now - at >= this.#ttl) this.#expiredAt.delete(id)
        else if (now - at >= this.#guardMs) this.#schedule()
      }
    }
  }

  /** Found expired less than a guard period ago: its holder may not have counted it lost yet. */
  #inGrace(id: LeaseId, now: number): boolean {
    const at = this.#expiredAt.get(id)
    if (at === undefined) return false
    if (now - at < this.#guardMs) return true
    this.#expiredAt.delete(id)
    return false
  }

  #lose(h: Held, why: string): void {
    if (h.state === 'lost' || h.state === 'releasing') return
    const prev = h.state
    h.state = 'lost'
    this.#lost++
    this.#o.log.warn({ node: this.#o.nodeId, lease: h.key, why }, 'cluster: lease lost')
    if (h.id === 'alerts') {
      this.#held.delete('alerts')
      this.#emit()
      this.#schedule()
      return
    }
    if (prev === 'acquiring') return // the acquire's continuation releases it once it settles
    const p = h.id
    this.#owned.delete(p)
    this.#held.delete(p)
    this.#emit()
    this.#track(
      (async () => {
        await this.#callRelease(p, 'lost')
        await this.#deleteLease(h, true)
        this.#schedule()
      })()
    )
  }

  #schedule(): void {
    if (this.#passQueued || this.#phase !== 'running') return
    this.#passQueued = true
    setImmediate(() => {
      this.#passQueued = false
      void this.#pass()
    })
  }

  #desired(nodes: string[]): (string | null)[] {
    const key = nodes.join('\u0000')
    if (this.#desiredCache?.key !== key) this.#desiredCache = { key, map: assignPartitions(nodes, this.#o.partitions) }
    return this.#desiredCache.map
  }

  async #pass(): Promise<void> {
    if (this.#passRunning) {
      this.#passAgain = true
      return
    }
    this.#passRunning = true
    try {
      do {
        this.#passAgain = false
        if (this.#phase !== 'running') return
        await this.#refreshStale()
        if (this.#phase !== 'running') return
        this.#decide()
      } while (this.#passAgain)
    } catch (err) {
      this.#o.log.error({ err: errText(err) }, 'cluster: membership pass failed')
    } finally {
      this.#passRunning = false
    }
  }

  /** One look at the bucket: take, hand over. Never waits; the work runs on its own. */
  #decide(): void {
    const me = this.#o.nodeId
    const now = this.#clock()
    const nodes = this.nodes()
    const live = new Set(nodes)
    const desired = this.#desired(nodes)
    let inFlight = 0
    for (const h of this.#held.values()) if (h.state === 'releasing') inFlight++
    for (const [p, at] of this.#handedOver) {
      if (now - at >= this.#ttl || (this.#view.get(leaseKey(p))?.node ?? null) !== null) this.#handedOver.delete(p)
      else inFlight++
    }
    for (let p = 0; p < this.#o.partitions; p++) {
      const want = desired[p] ?? null
      const h = this.#held.get(p)
      if (h !== undefined) {
        if (h.state === 'serving' && want !== null && want !== me && live.has(want) && inFlight < this.#maxHandovers) {
          inFlight++
          this.#handOver(h, p, want)
        }
        continue
      }
      if (this.#attempting.has(p) || (this.#backoff.get(p) ?? -Infinity) > now || this.#inGrace(p, now)) continue
      // A holder that is us but not in #held is a previous run of this node: wait for expiry.
      if ((this.#view.get(leaseKey(p))?.node ?? null) !== null) continue
      const freeFor = now - (this.#freeSince.get(p) ?? now)
      if (want === me || freeFor >= this.#ttl) this.#take(p, want === me ? 'desired here' : `free for ${freeFor} ms`)
    }
    if (!this.#held.has('alerts') && !this.#attempting.has('alerts') && (this.#view.get(leaseKey('alerts'))?.node ?? null) === null && !this.#inGrace('alerts', now)) this.#take('alerts')
  }

  #track(work: Promise<void>): void {
    this.#work.add(work)
    void work.finally(() => this.#work.delete(work))
  }

  #take(id: LeaseId, why = 'free'): void {
    const key = leaseKey(id)
    this.#attempting.add(id)
    const sentAt = this.#clock()
    this.#track(
      (async () => {
        let rev: number
        try {
          rev = await this.#kv!.create(key, this.#value())
        } catch (err) {
          this.#attempting.delete(id)
          if (this.#phase !== 'running') return
          if (isWrongSeq(err)) {
            // Held after all: learn by whom (the watch may be behind).
            const e = await this.#kv!.get(key).catch(() => null)
            if (e !== null) this.#apply(e)
          } else this.#o.log.debug({ key, err: errText(err) }, 'cluster: lease create failed')
          return
        }
        this.#attempting.delete(id)
        if (this.#phase === 'crashed') return
        const h: Held = { id, key, rev, renewedAt: sentAt, state: id === 'alerts' ? 'serving' : 'acquiring', renewing: null, unsure: [] }
        this.#held.set(id, h)
        const seen = this.#view.get(key)
        if (seen === undefined || seen.rev < rev) this.#setSeen(key, this.#o.nodeId, rev)
        if (this.#phase !== 'running') {
          // Stopping meanwhile: give it back untouched.
          h.state = 'releasing'
          await this.#deleteLease(h)
          this.#held.delete(id)
          return
        }
        if (id === 'alerts') {
          this.#o.log.info({ node: this.#o.nodeId }, 'cluster: holds the alerts lease')
          this.#emit()
          return
        }
        this.#o.log.info({ node: this.#o.nodeId, partition: id, why, ms: Math.round(this.#clock() - sentAt) }, 'cluster: took the lease of a partition')
        await this.#acquire(h, id)
      })()
    )
  }

  async #acquire(h: Held, p: number): Promise<void> {
    const { log, nodeId } = this.#o
    try {
      await this.#o.acquire(p)
    } catch (err) {
      if (this.#phase === 'crashed') return
      log.warn({ node: nodeId, partition: p, err: errText(err) }, 'cluster: acquire failed; lease given back')
      this.#backoff.set(p, this.#clock() + this.#ttl)
      if (h.state === 'acquiring') {
        h.state = 'releasing'
        await this.#deleteLease(h)
      }
      this.#held.delete(p)
      this.#schedule()
      return
    }
    if (this.#phase === 'crashed') return
    if (h.state === 'lost') {
      this.#held.delete(p)
      await this.#callRelease(p, 'lost')
      await this.#deleteLease(h, true)
      this.#schedule()
      return
    }
    h.state = 'serving'
    this.#owned.add(p)
    log.info({ node: nodeId, partition: p }, 'cluster: serving partition')
    this.#emit()
    this.#schedule()
  }

  #handOver(h: Held, p: number, to: string): void {
    h.state = 'releasing'
    this.#owned.delete(p)
    this.#emit()
    this.#o.log.info({ node: this.#o.nodeId, partition: p, to }, 'cluster: handing partition over')
    this.#track(
      (async () => {
        await this.#callRelease(p, 'rebalance')
        if (this.#phase === 'crashed') return
        await this.#deleteLease(h)
        this.#held.delete(p)
        this.#handedOver.set(p, this.#clock())
        this.#schedule()
      })()
    )
  }

  async #callRelease(p: number, reason: 'rebalance' | 'lost' | 'stop'): Promise<void> {
    try {
      await this.#o.release(p, reason)
    } catch (err) {
      this.#o.log.error({ node: this.#o.nodeId, partition: p, reason, err: errText(err) }, 'cluster: release threw; the lease goes all the same')
    }
  }

  /** Deletes a lease we hold (or held: `quiet` when it may be gone) with its revision, after any renewal in flight. */
  async #deleteLease(h: Held, quiet = false): Promise<void> {
    if (this.#phase === 'crashed') return
    await h.renewing
    if (this.#crashed()) return
    try {
      await this.#kv!.delete(h.key, { previousSeq: h.rev })
      const seen = this.#view.get(h.key)
      if (seen !== undefined && seen.rev <= h.rev && seen.node !== null) this.#setSeen(h.key, null, h.rev)
    } catch (err) {
      if (!quiet && !isWrongSeq(err)) this.#o.log.warn({ key: h.key, err: errText(err) }, 'cluster: could not delete a lease; it expires after one lease')
    }
  }
}

/** How often the guard checks lease deadlines: a tenth of the lease, 50 ms to 1 s. */
function guardPeriod(leaseMs: number): number {
  return Math.max(50, Math.min(1000, Math.floor(leaseMs / 10)))
}
